/**
 * Idempotency records are kept for CREDITS_IDEMPOTENCY_TTL_HOURS (24 h by default, 24 h at
 * least; a configured value is what every write path stores) and then pruned by the
 * service's background job: only expired records go, the money movements they point at
 * stay, and GetOperation then reports the key as unknown.
 */
import { expect } from 'chai';
import type { ConsumeResponse, GetOperationResponse } from '../../../gen/shieldx/credits/v1/credits';
import { OperationState } from '../../../gen/shieldx/credits/v1/credits';
import { metricValue, scrapeMetrics } from '../../../platform/prometheus-text';
import type { RunningService } from '../../../platform/server';
import { waitFor } from '../../../testing/harness';
import { Credits, db, failure, key, keyStored, payment, startCredits, tenant } from '../../../testing/credits-kit';
import { probeKey } from '../store/idempotency';

describe('credits idempotency retention', function () {
  this.timeout(60_000);
  let service: RunningService;
  let credits: Credits;

  before(async () => {
    service = await startCredits({ CREDITS_IDEMPOTENCY_PRUNE_INTERVAL_SECONDS: '1' });
    credits = new Credits(service);
  });
  after(async () => {
    credits?.close();
    await service?.shutdown();
  });

  it('keeps records for the TTL, then prunes only expired ones and never a money movement', async () => {
    const t = tenant('retention');
    await credits.call('topUp', { tenantId: t, amount: 100n, idempotencyKey: key('seed'), reference: '', payment: payment(), metadata: {} });
    const old = key('old');
    const fresh = key('fresh');
    const consumed = await credits.call<object, ConsumeResponse>('consume', { tenantId: t, amount: 5n, idempotencyKey: old, reference: '', metadata: {} });
    await credits.call('consume', { tenantId: t, amount: 7n, idempotencyKey: fresh, reference: '', metadata: {} });

    // Kept for 24 h by default.
    const { rows: ttl } = await db().query(
      `SELECT key, extract(epoch FROM expires_at - created_at)::int AS seconds FROM credit_idempotency_keys WHERE tenant_id = $1 AND key = ANY($2)`,
      [t, [old, fresh]],
    );
    expect(ttl.map((r) => r.seconds)).to.deep.equal([86_400, 86_400]);

    // Age one record past its expiry (as 24 h passing would); the job (every second here) removes it.
    await db().query(`UPDATE credit_idempotency_keys SET expires_at = now() - interval '1 second' WHERE tenant_id = $1 AND key = $2`, [t, old]);
    await waitFor('the expired record to be pruned', async () => {
      const { rows } = await db().query('SELECT 1 FROM credit_idempotency_keys WHERE tenant_id = $1 AND key = $2', [t, old]);
      return rows.length === 0 ? true : undefined;
    });

    expect((await failure(credits.call('getOperation', { tenantId: t, idempotencyKey: old }))).reason).to.equal('OPERATION_NOT_FOUND');
    const kept = await credits.call<object, GetOperationResponse>('getOperation', { tenantId: t, idempotencyKey: fresh });
    expect(kept.state).to.equal(OperationState.OPERATION_STATE_SUCCEEDED);
    // The consume the pruned key recorded is still in the ledger, and the balance is untouched.
    const { rows } = await db().query(
      `SELECT (SELECT count(*) FROM credit_transactions WHERE id = $2)::int AS movement, (SELECT balance FROM credit_accounts WHERE tenant_id = $1) AS balance`,
      [t, consumed.transaction!.id],
    );
    expect(rows[0]).to.deep.equal({ movement: 1, balance: '88' });
  });

  it('refuses a retention shorter than 24 hours at start', async () => {
    let error: unknown;
    try {
      const bad = await startCredits({ CREDITS_IDEMPOTENCY_TTL_HOURS: '23' });
      await bad.shutdown();
    } catch (e) {
      error = e;
    }
    expect(String(error)).to.contain('CREDITS_IDEMPOTENCY_TTL_HOURS');
  });
});

describe('credits idempotency retention, configured', function () {
  this.timeout(60_000);
  const HOURS = 48;
  let service: RunningService;
  let credits: Credits;

  before(async () => {
    service = await startCredits({ CREDITS_IDEMPOTENCY_TTL_HOURS: String(HOURS), CREDITS_IDEMPOTENCY_PRUNE_INTERVAL_SECONDS: '1' });
    credits = new Credits(service);
  });
  after(async () => {
    credits?.close();
    await service?.shutdown();
  });

  const batches = async (path: string) => metricValue(await scrapeMetrics(service), 'credits_consume_batches_total', { path }) ?? 0;

  /** Seconds between each record's creation and its expiry, by key. */
  async function retention(keys: readonly string[]): Promise<Record<string, number>> {
    const { rows } = await db().query(
      `SELECT key, extract(epoch FROM expires_at - created_at)::int AS seconds FROM credit_idempotency_keys WHERE key = ANY($1)`,
      [keys],
    );
    return Object.fromEntries(rows.map((r) => [r.key, r.seconds]));
  }

  // Every way a record is written stores the configured retention: the claim of TopUp, Reserve and
  // BatchConsume and of a transactional Consume batch, and Consume's fast-path function; successes and stored failures.
  it('keeps records for the configured CREDITS_IDEMPOTENCY_TTL_HOURS, on every write path', async () => {
    const t = tenant('retention48');
    const keys = { topUp: key('top'), reserve: key('res'), batch: key('batch'), fast: key('fast'), failed: key('failed') };
    await credits.call('topUp', { tenantId: t, amount: 100n, idempotencyKey: keys.topUp, reference: '', payment: payment(), metadata: {} });
    await credits.call('reserve', { tenantId: t, amount: 5n, idempotencyKey: keys.reserve, reference: '', metadata: {}, ttl: { seconds: 600n, nanos: 0 } });
    await credits.call('batchConsume', { tenantId: t, idempotencyKey: keys.batch, atomic: false, items: [{ tenantId: t, amount: 1n, reference: '', metadata: {} }] });
    // This instance committed the account last: its consume takes the fast path (credits_consume_batch).
    const fastBefore = await batches('fast');
    await credits.call('consume', { tenantId: t, amount: 2n, idempotencyKey: keys.fast, reference: '', metadata: {} });
    expect(await batches('fast'), 'a fast-path consume').to.equal(fastBefore + 1);
    // An account this instance does not know: the transactional path, and a stored failure.
    const transactionalBefore = await batches('transactional');
    const unknown = tenant('retention48-none');
    expect((await failure(credits.call('consume', { tenantId: unknown, amount: 1n, idempotencyKey: keys.failed, reference: '', metadata: {} }))).reason).to.equal(
      'TENANT_NOT_FOUND',
    );
    expect(await batches('transactional'), 'a transactional consume').to.equal(transactionalBefore + 1);

    const hours = HOURS * 3600;
    expect(await retention(Object.values(keys))).to.deep.equal(Object.fromEntries(Object.values(keys).map((k) => [k, hours])));
  });

  // Pruning goes by each record's stored expiry: past the 24 h default but inside the configured 48 h, a record stays.
  it('prunes a record only once the configured retention has passed', async () => {
    const t = tenant('retention48');
    await credits.call('topUp', { tenantId: t, amount: 100n, idempotencyKey: key('seed'), reference: '', payment: payment(), metadata: {} });
    const [within, past] = [key('30h'), key('49h')];
    for (const k of [within, past]) await credits.call('consume', { tenantId: t, amount: 1n, idempotencyKey: k, reference: '', metadata: {} });
    // As if 30 h and 49 h had passed since each was written.
    const age = (k: string, hoursAgo: number) =>
      db().query(
        `UPDATE credit_idempotency_keys SET created_at = created_at - make_interval(hours => $3), expires_at = expires_at - make_interval(hours => $3)
          WHERE tenant_id = $1 AND key = $2`,
        [t, k, hoursAgo],
      );
    await age(within, 30);
    await age(past, 49);
    await waitFor('the record past its retention to be pruned', async () => ((await keyStored(t, past)) ? undefined : true));
    // The same prune statement saw the other one, and one more run (every second) does not take it either.
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    expect(await keyStored(t, within), 'the record inside its retention').to.equal(true);
    const kept = await credits.call<object, GetOperationResponse>('getOperation', { tenantId: t, idempotencyKey: within });
    expect(kept.state).to.equal(OperationState.OPERATION_STATE_SUCCEEDED);
  });
});

// GetOperation's probe for a key findRecord did not see: running now, committed since the read, or absent.
describe('credits idempotency key probe', () => {
  it('tells a running call from a committed one and from nothing', async () => {
    const t = tenant('probe');
    expect(await probeKey(db(), t, key('none'))).to.equal('absent');
    const committed = key('done');
    await db().query(`INSERT INTO credit_idempotency_keys (tenant_id, key, method, request_hash, state, response, completed_at, expires_at) VALUES ($1, $2, 'm', '\\x00', 'SUCCEEDED', '\\x00', now(), now() + interval '1 hour')`, [t, committed]);
    // The race GetOperation must survive: the record committed after its first read.
    expect(await probeKey(db(), t, committed)).to.equal('committed');
    const running = key('running');
    const holder = await db().connect();
    try {
      await holder.query('BEGIN');
      await holder.query(`INSERT INTO credit_idempotency_keys (tenant_id, key, method, request_hash, expires_at) VALUES ($1, $2, 'm', '\\x00', now() + interval '1 hour')`, [t, running]);
      expect(await probeKey(db(), t, running)).to.equal('in_flight');
    } finally {
      await holder.query('ROLLBACK');
      holder.release();
    }
    // The probe itself never leaves a row behind.
    const { rows } = await db().query('SELECT count(*)::int AS n FROM credit_idempotency_keys WHERE tenant_id = $1', [t]);
    expect(rows[0].n).to.equal(1);
  });
});
