/**
 * The audit hash chain: append-only triggers, detection of rows edited,
 * deleted or inserted by someone who bypassed the triggers (a superuser), the
 * periodic verification metric, and a valid chain under concurrent writers.
 * Runs on a database of its own: it tampers on purpose.
 */
import { expect } from 'chai';
import pg from 'pg';
import type { TopUpResponse, VerifyAuditChainResponse } from '../../gen/shieldx/credits/v1/credits';
import { metricValue, scrapeMetrics } from '../../platform/prometheus-text';
import type { RunningService } from '../../platform/server';
import { createDatabase, testInfrastructure, waitFor } from '../../test/harness';
import { AuditChain } from './audit-chain';
import { AUDIT_KEY, asSuperuser, Credits, key, payment, startCredits, tenant } from './credits-test-kit';

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

  // UPDATE, DELETE and TRUNCATE of audit rows are refused by the triggers.
  it('refuses UPDATE, DELETE and TRUNCATE', async () => {
    const t = tenant();
    await history(t, 1);
    for (const sql of ['UPDATE credit_audit_logs SET amount = 0 WHERE tenant_id = $1', 'DELETE FROM credit_audit_logs WHERE tenant_id = $1']) {
      let refused = false;
      await admin.query(sql, [t]).catch(() => (refused = true));
      expect(refused, sql).to.equal(true);
    }
    let truncated = true;
    await admin.query('TRUNCATE credit_audit_logs').catch(() => (truncated = false));
    expect(truncated).to.equal(false);
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
