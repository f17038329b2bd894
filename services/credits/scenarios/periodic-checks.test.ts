/**
 * The periodic checks read only what changed since their per-tenant checkpoints
 * (migrations/credits/0003): what each run reads, what it catches, what it leaves to
 * the full re-scan, and that the service runs both. Runs on a database of its own (it
 * tampers on purpose, and counts rows across all tenants).
 */
import { expect } from 'chai';
import type pg from 'pg';
import type { TopUpResponse } from '../../../gen/shieldx/credits/v1/credits';
import { createPool } from '../../../platform/db';
import type { RunningService } from '../../../platform/server';
import { createDatabase, testInfrastructure, waitFor } from '../../../testing/harness';
import { metricValue, scrapeMetrics } from '../../../platform/prometheus-text';
import { AuditChain } from '../domain/audit-chain';
import { verifyAuditChains, verifyAuditChainsSinceCheckpoints } from '../store/audit-verify';
import { AUDIT_KEY, asSuperuser, Credits, key, payment, startCredits, tenant } from '../../../testing/credits-kit';
import { checkInvariantsSinceCheckpoints, countInvariantViolations } from '../store/ledger-invariants';

describe('credits periodic checks (incremental, from checkpoints)', function () {
  this.timeout(60_000);
  const chain = new AuditChain(Buffer.from(AUDIT_KEY, 'base64'));
  let database: { url: string; drop: () => Promise<void> };
  let service: RunningService;
  let credits: Credits;
  let admin: pg.Pool;

  before(async () => {
    database = await createDatabase(testInfrastructure().serverUrl, 'credits_checks');
    service = await startCredits({ DATABASE_URL: database.url });
    credits = new Credits(service);
    // The service runs each periodic check once 5 s after start whatever the interval: let those runs
    // (on an empty database) pass, or they would move checkpoints in the middle of a test.
    await waitFor('the first periodic runs', async () => ((metricValue(await scrapeMetrics(service), 'credits_audit_chain_last_verified_timestamp_seconds') ?? 0) > 0 ? true : undefined), 20_000, 100);
    await new Promise((r) => setTimeout(r, 1_000));
    // The services' own pool factory: int8 as bigint, as the checks expect.
    admin = createPool(database.url, { max: 2, statementTimeoutMs: 30_000, applicationName: 'credits-checks-test' });
  });
  after(async () => {
    credits?.close();
    await service?.shutdown();
    await admin?.end();
    await database?.drop();
  });

  const topUp = (t: string, amount = 1000n) =>
    credits.call<object, TopUpResponse>('topUp', { tenantId: t, amount, idempotencyKey: key(), reference: '', payment: payment(), metadata: {} });
  const consume = (t: string, amount = 1n) => credits.call('consume', { tenantId: t, amount, idempotencyKey: key(), reference: '', metadata: {} });
  /** A top-up and `moves` consumes: 1 + moves audit rows. */
  async function history(t: string, moves = 4): Promise<void> {
    await topUp(t);
    for (let i = 0; i < moves; i++) await consume(t, BigInt(i + 1));
  }
  const tamper = (sql: string, params: unknown[]) => asSuperuser(admin, sql, params);
  /** Removes a tenant whose damage a test leaves behind, so the counts of later tests are their own. */
  async function forget(t: string): Promise<void> {
    for (const table of ['credit_audit_logs', 'credit_audit_checkpoints', 'credit_ledger_checkpoints', 'credit_idempotency_keys', 'credit_payments', 'credit_transactions', 'credit_reservations', 'credit_accounts']) {
      await tamper(`DELETE FROM ${table} WHERE tenant_id = $1`, [t]);
    }
  }
  const breaksOf = (res: { breaks: { tenantId: string }[] }, t: string) => res.breaks.filter((b) => b.tenantId === t);
  const checkpoint = async (t: string) =>
    (await admin.query<{ seq: string }>('SELECT seq::text FROM credit_audit_checkpoints WHERE tenant_id = $1', [t])).rows[0]?.seq;
  const incremental = () => verifyAuditChainsSinceCheckpoints(admin, chain);

  describe('audit chain', () => {
    // Each run reads the rows appended since the last one, and nothing when nothing moved.
    it('verifies only the rows appended since its checkpoint', async () => {
      const t = tenant('audit-new');
      await history(t);
      const first = await incremental();
      expect(first.valid).to.equal(true);
      expect(first.rowsChecked).to.equal(5n);
      expect(await checkpoint(t)).to.equal('5');

      for (let i = 0; i < 3; i++) await consume(t);
      const second = await incremental();
      expect(second).to.deep.include({ valid: true, rowsChecked: 3n, tenantsChecked: 1n });
      expect(await checkpoint(t)).to.equal('8');

      const idle = await incremental();
      expect(idle).to.deep.include({ valid: true, rowsChecked: 0n, tenantsChecked: 0n });
      // The full verification agrees.
      expect((await verifyAuditChains(admin, chain, t)).valid).to.equal(true);
    });

    // A row edited after the checkpoint is found, and the tenant stays reported: its checkpoint does not move.
    it('finds an edited new row and keeps reporting it', async () => {
      const t = tenant('audit-edit');
      await history(t);
      await incremental();
      await consume(t);
      await consume(t);
      await tamper('UPDATE credit_audit_logs SET amount = amount + 1 WHERE tenant_id = $1 AND seq = 6', [t]);
      for (let run = 0; run < 2; run++) {
        const res = await incremental();
        expect(res.valid, `run ${run}`).to.equal(false);
        expect(breaksOf(res, t)).to.have.length(1);
        expect(breaksOf(res, t)[0]).to.deep.include({ sequence: 6n, reason: 'hash does not match the row' });
      }
      expect(await checkpoint(t)).to.equal('5');
      await tamper('UPDATE credit_audit_logs SET amount = amount - 1 WHERE tenant_id = $1 AND seq = 6', [t]);
      expect((await incremental()).valid).to.equal(true);
      expect(await checkpoint(t)).to.equal('7');
    });

    // The checkpointed row itself must still carry the hash verified earlier, and must still be there.
    it('finds the checkpointed row changed or deleted', async () => {
      const t = tenant('audit-cp-row');
      await history(t);
      await incremental();
      await consume(t);
      await tamper('UPDATE credit_audit_logs SET hash = sha256(hash) WHERE tenant_id = $1 AND seq = 5', [t]);
      const changed = await incremental();
      expect(breaksOf(changed, t)).to.deep.equal([{ tenantId: t, sequence: 5n, reason: 'hash differs from the one verified earlier' }]);
      await tamper('DELETE FROM credit_audit_logs WHERE tenant_id = $1 AND seq = 5', [t]);
      const deleted = await incremental();
      expect(breaksOf(deleted, t)).to.deep.equal([{ tenantId: t, sequence: 5n, reason: 'row 5 is missing' }]);
      await forget(t);
    });

    // Moving a checkpoint past unverified rows needs the audit key: a forged one is reported once the tenant moves.
    it('refuses a checkpoint forged without the key', async () => {
      const t = tenant('audit-forged');
      await history(t, 2);
      await incremental();
      await consume(t);
      await consume(t);
      // Skip row 4 (say, to hide an edit in it): point the checkpoint at row 4 with a made-up seal.
      await tamper(
        `UPDATE credit_audit_checkpoints c SET seq = 4, hash = l.hash, mac = sha256(l.hash)
           FROM credit_audit_logs l WHERE c.tenant_id = $1 AND l.tenant_id = $1 AND l.seq = 4`,
        [t],
      );
      await consume(t);
      const res = await incremental();
      expect(breaksOf(res, t)).to.deep.equal([{ tenantId: t, sequence: 4n, reason: 'verification checkpoint fails its MAC (altered)' }]);
      await forget(t);
    });

    // A row appended past the head without moving the account (as one written around the service would be)
    // is read by the next incremental run, not left to the daily full one: its hash gives it away.
    it('finds a row appended past the head although the account did not move', async () => {
      const t = tenant('audit-past-head');
      await history(t, 2);
      await incremental();
      expect(await checkpoint(t)).to.equal('3');
      await tamper(
        `INSERT INTO credit_audit_logs (tenant_id, seq, occurred_at, action, amount, balance_after, reserved_after, transaction_id, prev_hash, hash)
         SELECT tenant_id, seq + 1, now(), 'TOP_UP', 5, 5, 0, gen_random_uuid(), hash, sha256(hash)
           FROM credit_audit_logs WHERE tenant_id = $1 ORDER BY seq DESC LIMIT 1`,
        [t],
      );
      const res = await incremental();
      expect(breaksOf(res, t)).to.deep.equal([{ tenantId: t, sequence: 4n, reason: 'hash does not match the row' }]);
      expect(await checkpoint(t)).to.equal('3');
      await forget(t);
    });

    // What the incremental run cannot see — an edit below a checkpoint — the full run finds.
    it('leaves an edit below the checkpoint to the full verification', async () => {
      const t = tenant('audit-below');
      await history(t);
      await incremental();
      await tamper('UPDATE credit_audit_logs SET amount = amount + 1 WHERE tenant_id = $1 AND seq = 2', [t]);
      await consume(t);
      const res = await incremental();
      expect(res.valid).to.equal(true);
      const full = await verifyAuditChains(admin, chain, t);
      expect(full.valid).to.equal(false);
      expect(full.breaks[0]).to.deep.include({ tenantId: t, sequence: 2n });
      await tamper('UPDATE credit_audit_logs SET amount = amount - 1 WHERE tenant_id = $1 AND seq = 2', [t]);
    });
  });

  describe('balance invariants', () => {
    /** Settles every account touched by earlier tests, so counts below are this test's own. */
    before(async () => {
      await checkInvariantsSinceCheckpoints(admin);
    });

    // Only accounts that moved are checked, against their checkpointed sum plus the rows after it.
    it('checks only the accounts that moved since their checkpoint', async () => {
      const t = tenant('inv-new');
      await history(t);
      expect(await checkInvariantsSinceCheckpoints(admin)).to.deep.equal({ violations: 0, checked: 1 });
      expect(await checkInvariantsSinceCheckpoints(admin)).to.deep.equal({ violations: 0, checked: 0 });
      await consume(t, 7n);
      expect(await checkInvariantsSinceCheckpoints(admin)).to.deep.equal({ violations: 0, checked: 1 });
      const { rows } = await admin.query<{ ledger_balance: string; balance: string }>(
        `SELECT c.ledger_balance::text, a.balance::text FROM credit_ledger_checkpoints c JOIN credit_accounts a USING (tenant_id)
          WHERE tenant_id = $1`,
        [t],
      );
      expect(rows[0]!.ledger_balance).to.equal(rows[0]!.balance);
      expect(rows[0]!.balance).to.equal(String(1000 - 1 - 2 - 3 - 4 - 7));
    });

    // A balance or reserved amount that disagrees with the ledger is counted on every run until it is put right.
    it('finds an account that disagrees with its movements or holds, until repaired', async () => {
      const t = tenant('inv-bad');
      await history(t);
      await checkInvariantsSinceCheckpoints(admin);
      await tamper('UPDATE credit_accounts SET balance = balance + 5, version = version + 1 WHERE tenant_id = $1', [t]);
      expect(await checkInvariantsSinceCheckpoints(admin)).to.deep.equal({ violations: 1, checked: 1 });
      expect(await checkInvariantsSinceCheckpoints(admin)).to.deep.equal({ violations: 1, checked: 1 });
      expect(await countInvariantViolations(admin)).to.equal(1);
      await tamper('UPDATE credit_accounts SET balance = balance - 5, reserved = reserved + 1, version = version + 1 WHERE tenant_id = $1', [t]);
      expect(await checkInvariantsSinceCheckpoints(admin)).to.deep.equal({ violations: 1, checked: 1 });
      await tamper('UPDATE credit_accounts SET reserved = reserved - 1, version = version + 1 WHERE tenant_id = $1', [t]);
      expect(await checkInvariantsSinceCheckpoints(admin)).to.deep.equal({ violations: 0, checked: 1 });
      expect(await countInvariantViolations(admin)).to.equal(0);
    });

    // A transaction row edited below the checkpoint, with the account untouched, is the full run's to find.
    it('leaves an edit below the checkpoint to the full check', async () => {
      const t = tenant('inv-below');
      await history(t);
      await checkInvariantsSinceCheckpoints(admin);
      await tamper(`UPDATE credit_transactions SET amount = amount + 1 WHERE tenant_id = $1 AND type = 'CONSUME'`, [t]);
      await consume(t);
      expect(await checkInvariantsSinceCheckpoints(admin)).to.deep.equal({ violations: 0, checked: 1 });
      expect(await countInvariantViolations(admin)).to.equal(1);
      await tamper(`UPDATE credit_transactions SET amount = amount - 1 WHERE tenant_id = $1 AND type = 'CONSUME' AND amount > 1`, [t]);
    });
  });

  // The service runs the incremental checks on their intervals and the full ones on theirs:
  // an edit below both checkpoints reaches the metrics only through a full run.
  // (Runs after the describes above: mocha runs a suite's own tests before its nested suites.)
  it('exports what the full runs find, which the incremental runs cannot see', async () => {
    const t = tenant('svc-below');
    await history(t);
    await incremental();
    await checkInvariantsSinceCheckpoints(admin);
    await tamper('UPDATE credit_audit_logs SET amount = amount + 1 WHERE tenant_id = $1 AND seq = 3', [t]);
    await tamper(`UPDATE credit_transactions SET amount = amount + 1 WHERE tenant_id = $1 AND type = 'TOP_UP'`, [t]);
    expect((await incremental()).valid).to.equal(true);
    expect((await checkInvariantsSinceCheckpoints(admin)).violations).to.equal(0);

    const checker = await startCredits({
      DATABASE_URL: database.url,
      CREDITS_AUDIT_VERIFY_INTERVAL_SECONDS: '1',
      CREDITS_INVARIANT_CHECK_INTERVAL_SECONDS: '1',
      CREDITS_FULL_VERIFY_INTERVAL_SECONDS: '3',
    });
    try {
      const metrics = () => scrapeMetrics(checker);
      // The first runs are incremental: they see nothing wrong.
      await waitFor('a first incremental run', async () => ((metricValue(await metrics(), 'credits_audit_chain_last_verified_timestamp_seconds') ?? 0) > 0 ? true : undefined), 10_000, 100);
      expect(metricValue(await metrics(), 'credits_audit_chain_valid')).to.equal(1);
      expect(metricValue(await metrics(), 'credits_balance_invariant_violations') ?? 0).to.equal(0);
      // Then a full run of each.
      const text = await waitFor(
        'the full runs to report',
        async () => {
          const body = await metrics();
          return metricValue(body, 'credits_audit_chain_valid') === 0 && metricValue(body, 'credits_balance_invariant_violations') === 1 ? body : undefined;
        },
        20_000,
        200,
      );
      expect(text).to.match(/^credits_audit_chain_valid(\{[^}]*\})? 0$/m);
      // The verdict of a full run stands between full runs, though the incremental runs in between see nothing new.
      await new Promise((r) => setTimeout(r, 1_500));
      expect(metricValue(await metrics(), 'credits_audit_chain_valid')).to.equal(0);
      expect(metricValue(await metrics(), 'credits_balance_invariant_violations')).to.equal(1);
    } finally {
      await checker.shutdown();
      await forget(t);
    }
  });
});
