/**
 * The audit hash chain: append-only triggers, detection of rows edited,
 * deleted or inserted by someone who bypassed the triggers (a superuser), the
 * periodic verification metric, and a valid chain under concurrent writers.
 * Runs on a database of its own: it tampers on purpose.
 */
import { expect } from 'chai';
import pg from 'pg';
import type { TopUpResponse, VerifyAuditChainResponse } from '../../../gen/shieldx/credits/v1/credits';
import { metricValue, scrapeMetrics } from '../../../platform/prometheus-text';
import type { RunningService } from '../../../platform/server';
import { createDatabase, testInfrastructure, waitFor } from '../../../testing/harness';
import { AuditChain } from '../domain/audit-chain';
import { AUDIT_KEY, asSuperuser, Credits, key, payment, startCredits, tenant } from '../../../testing/credits-kit';

describe('credits audit chain', function () {
  this.timeout(60_000);
  let database: { url: string; drop: () => Promise<void> };
  let service: RunningService;
  let credits: Credits;
  let admin: pg.Pool;

  before(async () => {
    database = await createDatabase(testInfrastructure().serverUrl, 'credits_audit');
    service = await startCredits({ DATABASE_URL: database.url, CREDITS_AUDIT_VERIFY_INTERVAL_SECONDS: '1' });
    credits = new Credits(service);
    admin = new pg.Pool({ connectionString: database.url, max: 2 });
    admin.on('error', () => undefined);
  });
  after(async () => {
    credits?.close();
    await service?.shutdown();
    await admin?.end();
    await database?.drop();
  });

  async function history(t: string, moves = 4): Promise<void> {
    await credits.call<object, TopUpResponse>('topUp', { tenantId: t, amount: 1000n, idempotencyKey: key(), reference: '', payment: payment(), metadata: {} });
    for (let i = 0; i < moves; i++) {
      await credits.call('consume', { tenantId: t, amount: BigInt(i + 1), idempotencyKey: key(), reference: '', metadata: {} });
    }
  }
  const verify = (tenantId: string) => credits.call<object, VerifyAuditChainResponse>('verifyAuditChain', { tenantId });

  const tamper = (sql: string, params: unknown[]) => asSuperuser(admin, sql, params);
  /** Appends a row past the tenant's head that links to the real previous hash but carries a hash made without the key. */
  const appendForgedRow = async (tenantId: string, amount: bigint) => {
    await tamper(
      `INSERT INTO credit_audit_logs (tenant_id, seq, occurred_at, action, amount, balance_after, reserved_after, transaction_id, prev_hash, hash)
       SELECT tenant_id, seq + 1, now(), 'TOP_UP', $2, $2, 0, gen_random_uuid(), hash, sha256(hash)
         FROM credit_audit_logs WHERE tenant_id = $1 ORDER BY seq DESC LIMIT 1`,
      [tenantId, amount.toString()],
    );
    await tamper('UPDATE credit_accounts SET audit_seq = audit_seq + 1 WHERE tenant_id = $1', [tenantId]);
  };

  // The account's CHECK constraints hold even against a writer around the service (a bug above them, a
  // superuser with the triggers off): no negative balance, reserved or available, no movement of zero.
  it('refuses a negative balance, reserved or available in the table itself', async () => {
    const t = tenant();
    await history(t, 0);
    const before = (await admin.query('SELECT balance::text, reserved::text FROM credit_accounts WHERE tenant_id = $1', [t])).rows[0];
    // A negative balance breaks two constraints; PostgreSQL names the first it checks.
    const attempts: [string, string[]][] = [
      ['UPDATE credit_accounts SET balance = -1 WHERE tenant_id = $1', ['credit_accounts_balance_non_negative', 'credit_accounts_available_non_negative']],
      ['UPDATE credit_accounts SET reserved = -1 WHERE tenant_id = $1', ['credit_accounts_reserved_non_negative']],
      ['UPDATE credit_accounts SET reserved = balance + 1 WHERE tenant_id = $1', ['credit_accounts_available_non_negative']],
      ['UPDATE credit_transactions SET amount = 0 WHERE tenant_id = $1', ['credit_transactions_amount_check']],
    ];
    for (const [sql, constraints] of attempts) {
      const err = (await tamper(sql, [t]).catch((e: unknown) => e)) as { code?: string; constraint?: string };
      expect(err.code, sql).to.equal('23514');
      expect(constraints, sql).to.include(err.constraint);
    }
    expect((await admin.query('SELECT balance::text, reserved::text FROM credit_accounts WHERE tenant_id = $1', [t])).rows[0]).to.deep.equal(before);
  });

  // UPDATE, DELETE and TRUNCATE of audit rows are refused by the append-only trigger itself — its SQLSTATE
  // (42501 insufficient_privilege) and message, not just any error — and the rows stay as they were.
  it('refuses UPDATE, DELETE and TRUNCATE', async () => {
    const t = tenant();
    await history(t, 1);
    const cases: [string, string, unknown[]][] = [
      ['UPDATE', 'UPDATE credit_audit_logs SET amount = 0 WHERE tenant_id = $1', [t]],
      ['DELETE', 'DELETE FROM credit_audit_logs WHERE tenant_id = $1', [t]],
      ['TRUNCATE', 'TRUNCATE credit_audit_logs', []],
    ];
    for (const [op, sql, params] of cases) {
      const err = await admin.query(sql, params).then(
        () => undefined,
        (e: { code?: string; message: string }) => e,
      );
      expect(err, `${op} succeeded`).not.to.equal(undefined);
      expect(err!.code, op).to.equal('42501');
      expect(err!.message, op).to.equal(`credit_audit_logs is append-only: ${op} refused`);
    }
    const { rows } = await admin.query('SELECT count(*)::int AS n FROM credit_audit_logs WHERE tenant_id = $1', [t]);
    expect(rows[0].n).to.equal(2);
    expect((await verify(t)).valid).to.equal(true);
  });

  // An edited row breaks the chain at that row.
  it('detects an edited row', async () => {
    const t = tenant();
    await history(t);
    await tamper('UPDATE credit_audit_logs SET amount = amount + 1 WHERE tenant_id = $1 AND seq = 3', [t]);
    const res = await verify(t);
    expect(res.valid).to.equal(false);
    expect(res.breaks[0]).to.deep.include({ tenantId: t, sequence: 3n });
  });

  // A deleted row (middle or last) is detected.
  it('detects a deleted row', async () => {
    const t = tenant();
    await history(t);
    await tamper('DELETE FROM credit_audit_logs WHERE tenant_id = $1 AND seq = 2', [t]);
    const middle = await verify(t);
    expect(middle.valid).to.equal(false);
    expect(middle.breaks[0]!.sequence).to.equal(2n);
    const u = tenant();
    await history(u);
    await tamper('DELETE FROM credit_audit_logs WHERE tenant_id = $1 AND seq = 5', [u]);
    const tail = await verify(u);
    expect(tail.valid).to.equal(false);
    expect(tail.breaks[0]!.sequence).to.equal(5n);
  });

  // A forged row, even one linking to the real previous hash, fails: its HMAC cannot be computed without the key.
  it('detects an inserted row', async () => {
    const t = tenant();
    await history(t);
    await appendForgedRow(t, 1_000_000n);
    const res = await verify(t);
    expect(res.valid).to.equal(false);
    expect(res.breaks[0]!.sequence).to.equal(6n);
  });

  // A row forged into the MIDDLE of a chain (trigger bypassed): the later rows renumbered up to make room, as an
  // attacker must (seq is the key). Whether or not the attacker also re-links the next row to the forgery and moves
  // the account's head on, the break is reported at the forged row itself — its HMAC cannot be made without the key —
  // and it is the first and only break reported for the tenant.
  it('detects a row inserted in the middle of the chain at that row', async () => {
    for (const cover of [true, false]) {
      const t = tenant();
      await history(t);
      // Rows 3..5 move to 4..6 through a free range, so the primary key never collides on the way.
      await tamper('UPDATE credit_audit_logs SET seq = seq + 1000 WHERE tenant_id = $1 AND seq >= 3', [t]);
      await tamper('UPDATE credit_audit_logs SET seq = seq - 999 WHERE tenant_id = $1 AND seq >= 1000', [t]);
      // The forged row links to row 2's real hash; its own hash is the best an attacker without the key can make.
      await tamper(
        `INSERT INTO credit_audit_logs (tenant_id, seq, occurred_at, action, amount, balance_after, reserved_after, transaction_id, prev_hash, hash)
         SELECT tenant_id, 3, occurred_at, 'TOP_UP', 1000000, balance_after + 1000000, reserved_after, gen_random_uuid(), hash, sha256(hash)
           FROM credit_audit_logs WHERE tenant_id = $1 AND seq = 2`,
        [t],
      );
      if (cover) {
        // Every prev_hash link then holds and the head's sequence matches the chain's length.
        await tamper(
          `UPDATE credit_audit_logs n SET prev_hash = f.hash FROM credit_audit_logs f
            WHERE n.tenant_id = $1 AND f.tenant_id = $1 AND n.seq = 4 AND f.seq = 3`,
          [t],
        );
        await tamper('UPDATE credit_accounts SET audit_seq = audit_seq + 1 WHERE tenant_id = $1', [t]);
      }
      const res = await verify(t);
      expect(res.valid, `cover ${cover}`).to.equal(false);
      expect(res.breaks, `cover ${cover}`).to.deep.equal([{ tenantId: t, sequence: 3n, reason: 'hash does not match the row' }]);
      expect(res.rowsChecked, `cover ${cover}`).to.equal(3n);
    }
  });

  // Keys derived from the audit key are never a stored value: the first row of a tenant named like the
  // derivation's purpose links to that tenant's genesis, which must not be the request-hash key.
  it('never stores a derived key in the chain', async () => {
    const purpose = 'idempotency-request-hash';
    await history(purpose, 0);
    const { rows } = await admin.query('SELECT prev_hash FROM credit_audit_logs WHERE tenant_id = $1 AND seq = 1', [purpose]);
    const chain = new AuditChain(Buffer.from(AUDIT_KEY, 'base64'));
    expect(rows[0].prev_hash).to.deep.equal(chain.genesis(purpose));
    expect(chain.deriveKey(purpose)).to.not.deep.equal(chain.genesis(purpose));
  });

  // The periodic verification exports the broken chain as credits_audit_chain_valid 0.
  it('exports the periodic verification result', async () => {
    // Its own broken chain, so the test stands alone.
    const t = tenant();
    await history(t);
    // A forged row appended past the head: whatever the periodic run has verified of this tenant
    // already, its next (incremental) run reads this row.
    await appendForgedRow(t, 1n);
    const text = await waitFor(
      'credits_audit_chain_valid 0',
      async () => {
        const body = await scrapeMetrics(service);
        return metricValue(body, 'credits_audit_chain_valid') === 0 ? body : undefined;
      },
      10_000,
      200,
    );
    expect(metricValue(text, 'credits_audit_chain_last_verified_timestamp_seconds')).to.be.greaterThan(0);
  });

  // Many concurrent writers on one tenant (consumes, top-ups, reserves) leave one valid, gap-free chain.
  it('stays valid under concurrent writers to one tenant', async () => {
    const t = tenant();
    await history(t, 0);
    const calls: Promise<unknown>[] = [];
    for (let i = 0; i < 60; i++) {
      if (i % 3 === 0) calls.push(credits.call('reserve', { tenantId: t, amount: 1n, idempotencyKey: key(), reference: '', metadata: {}, ttl: { seconds: 60n, nanos: 0 } }));
      else if (i % 5 === 0) calls.push(credits.call('topUp', { tenantId: t, amount: 2n, idempotencyKey: key(), reference: '', payment: payment(), metadata: {} }));
      else calls.push(credits.call('consume', { tenantId: t, amount: 1n, idempotencyKey: key(), reference: '', metadata: {} }));
    }
    await Promise.all(calls);
    const res = await verify(t);
    expect(res).to.deep.include({ valid: true, rowsChecked: 61n });
  });
});
