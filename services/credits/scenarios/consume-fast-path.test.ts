/**
 * The one-round-trip Consume path (ledger.consumeFast + credits_consume_batch):
 * it is taken when the instance knows the accounts' committed states, and it
 * falls back to the transactional path — with the same results — when an
 * account changed elsewhere or a key was already used.
 */
import { expect } from 'chai';
import type { ConsumeResponse, GetBalanceResponse, VerifyAuditChainResponse } from '../../../gen/shieldx/credits/v1/credits';
import type { RunningService } from '../../../platform/server';
import Redis from 'ioredis';
import { testInfrastructure, uniquePrefix } from '../../../testing/harness';
import { Credits, db, failure, key, payment, startCredits, tenant } from '../../../testing/credits-kit';

async function batches(service: RunningService): Promise<Record<string, number>> {
  const metric = service.registry.getSingleMetric('credits_consume_batches_total');
  const out: Record<string, number> = { fast: 0, fallback: 0, transactional: 0 };
  for (const v of (await metric!.get()).values) out[String(v.labels.path)] = v.value;
  return out;
}

describe('credits consume fast path', function () {
  this.timeout(60_000);
  const services: RunningService[] = [];
  const clients: Credits[] = [];

  before(async () => {
    // A generous Redis timeout: the read-your-writes test pauses Redis writes briefly and must not see them time out.
    // No near cache: that test is about the Redis cache. Across replicas the near cache is as fresh as its
    // invalidations, which race the caller's next call (near-cache.ts; with it on, that test failed 2 runs in 15).
    const shared = { CREDITS_CACHE_KEY_PREFIX: uniquePrefix('fast'), CREDITS_REDIS_TIMEOUT_MS: '2000', CREDITS_CACHE_LOCAL_ENTRIES: '0' };
    for (let i = 0; i < 2; i++) {
      services.push(await startCredits(shared));
      clients.push(new Credits(services[i]!));
    }
  });
  after(async () => {
    for (const c of clients) c.close();
    for (const s of services) await s.shutdown();
  });

  const consume = (via: Credits, tenantId: string, amount: bigint, idempotencyKey = key('c'), reference = '') =>
    via.call<object, ConsumeResponse>('consume', { tenantId, amount, idempotencyKey, reference, metadata: { via: 'test' } });

  // After a top-up the instance knows the account: consumes take the fast path and write every row.
  it('applies consumes in one round trip when the account state is known', async () => {
    const [a] = clients as [Credits];
    const t = tenant('fast');
    await a.call('topUp', { tenantId: t, amount: 100n, idempotencyKey: key('seed'), reference: '', payment: payment(), metadata: {} });
    const before = await batches(services[0]!);
    const first = await consume(a, t, 30n);
    const second = await consume(a, t, 20n);
    const after = await batches(services[0]!);
    expect(after.fast - before.fast).to.equal(2);
    expect(after.fallback - before.fallback).to.equal(0);
    expect(first.account!.balance).to.equal(70n);
    expect(second.account!.balance).to.equal(50n);
    expect(second.account!.version).to.equal(first.account!.version + 1n);
    const { rows } = await db().query(
      `SELECT (SELECT balance FROM credit_accounts WHERE tenant_id = $1) AS balance,
              (SELECT count(*) FROM credit_transactions WHERE tenant_id = $1 AND type = 'CONSUME')::int AS txs,
              (SELECT count(*) FROM credit_audit_logs WHERE tenant_id = $1)::int AS audits,
              (SELECT count(*) FROM credit_idempotency_keys WHERE tenant_id = $1 AND state = 'SUCCEEDED')::int AS keys`,
      [t],
    );
    expect(rows[0]).to.deep.equal({ balance: '50', txs: 2, audits: 3, keys: 3 });
    const chain = await a.call<object, VerifyAuditChainResponse>('verifyAuditChain', { tenantId: t });
    expect(chain.valid).to.equal(true);
  });

  // A business failure decided on the fast path is stored and replayed like any other.
  it('stores insufficient credits decided on the fast path', async () => {
    const [a] = clients as [Credits];
    const t = tenant('fast');
    await a.call('topUp', { tenantId: t, amount: 10n, idempotencyKey: key('seed'), reference: '', payment: payment(), metadata: {} });
    const k = key('big');
    const before = await batches(services[0]!);
    expect((await failure(consume(a, t, 11n, k))).reason).to.equal('INSUFFICIENT_CREDITS');
    expect((await batches(services[0]!)).fast - before.fast).to.equal(1);
    const replay = await failure(consume(a, t, 11n, k));
    expect(replay.reason).to.equal('INSUFFICIENT_CREDITS');
    expect(replay.metadata.replayed).to.equal('true');
    expect((await consume(a, t, 10n)).account!.balance).to.equal(0n);
  });

  // Another instance moved the account: the stale state is refused under the lock and the batch is redone transactionally.
  it('falls back when the account changed elsewhere, without losing or doubling anything', async () => {
    const [a, b] = clients as [Credits, Credits];
    const t = tenant('fast');
    await a.call('topUp', { tenantId: t, amount: 100n, idempotencyKey: key('seed'), reference: '', payment: payment(), metadata: {} });
    await consume(a, t, 1n);
    await consume(b, t, 2n); // b did not know the account: transactional, and a's state is now stale
    const before = await batches(services[0]!);
    const res = await consume(a, t, 3n);
    const after = await batches(services[0]!);
    expect(after.fallback - before.fallback).to.equal(1);
    expect(res.account!.balance).to.equal(94n);
    // Fallback refreshed a's state: the next consume is fast again.
    await consume(a, t, 4n);
    expect((await batches(services[0]!)).fast - after.fast).to.equal(1);
    const { rows } = await db().query(
      `SELECT a.balance, a.version, (SELECT count(*) FROM credit_transactions WHERE tenant_id = $1)::int AS txs
         FROM credit_accounts a WHERE tenant_id = $1`,
      [t],
    );
    expect(rows[0]).to.deep.equal({ balance: '90', version: '5', txs: 5 });
    const chain = await a.call<object, VerifyAuditChainResponse>('verifyAuditChain', { tenantId: t });
    expect(chain.valid).to.equal(true);
  });

  // A TopUp (or any other writer) on the same replica waits for the tenant's consume batch in flight and the
  // next batch waits for it (tenant-gate.ts): no batch is decided from a state the TopUp has made stale, so
  // none falls back, and the money adds up.
  it('does not fall back when other writes of the same replica interleave with consumes', async () => {
    const [a] = clients as [Credits];
    const t = tenant('mix');
    await a.call('topUp', { tenantId: t, amount: 10_000n, idempotencyKey: key('seed'), reference: '', payment: payment(), metadata: {} });
    await consume(a, t, 1n);
    const before = await batches(services[0]!);
    const calls: Promise<unknown>[] = [];
    for (let i = 0; i < 120; i++) {
      calls.push(consume(a, t, 2n));
      if (i % 8 === 0) calls.push(a.call('topUp', { tenantId: t, amount: 5n, idempotencyKey: key('top'), reference: '', payment: payment(), metadata: {} }));
      if (i % 8 === 4) calls.push(a.call('reserve', { tenantId: t, amount: 3n, idempotencyKey: key('hold'), reference: '', metadata: {}, ttl: { seconds: 60n, nanos: 0 } }));
    }
    await Promise.all(calls);
    const after = await batches(services[0]!);
    expect(after.fast - before.fast, 'fast batches').to.be.greaterThan(0);
    expect(after.fallback - before.fallback, 'fallback batches').to.equal(0);
    const { rows } = await db().query('SELECT balance::text, reserved::text FROM credit_accounts WHERE tenant_id = $1', [t]);
    // 10,000 - 1 - 120 × 2 + 15 × 5 = 9,834; 15 holds of 3 reserved.
    expect(rows[0]).to.deep.equal({ balance: '9834', reserved: '45' });
  });

  // A repeated key makes the fast path's insert conflict: the transactional path replays (or refuses a different payload).
  it('replays a repeated key and refuses a reused one after a fast-path conflict', async () => {
    const [a] = clients as [Credits];
    const t = tenant('fast');
    await a.call('topUp', { tenantId: t, amount: 100n, idempotencyKey: key('seed'), reference: '', payment: payment(), metadata: {} });
    const k = key('dup');
    const original = await consume(a, t, 5n, k, 'ref');
    const before = await batches(services[0]!);
    const replay = await consume(a, t, 5n, k, 'ref');
    expect((await batches(services[0]!)).fallback - before.fallback).to.equal(1);
    expect(replay.replayed).to.equal(true);
    expect(replay.transaction!.id).to.equal(original.transaction!.id);
    expect((await failure(consume(a, t, 6n, k, 'ref'))).reason).to.equal('IDEMPOTENCY_KEY_REUSED');
    const { rows } = await db().query('SELECT balance FROM credit_accounts WHERE tenant_id = $1', [t]);
    expect(rows[0].balance).to.equal('95');
  });

  // A batch frees its tenant for the next batch as soon as it commits, before its cache write-through: its
  // answers must still wait for that write, so a caller that got a consume back reads (from the cache, through
  // the other instance) a version at least as new — read-your-writes across replicas. Redis writes are paused
  // (CLIENT PAUSE WRITE; reads go on) for well under the cache timeout, so an answer sent before the write lands
  // would meet the old cached version.
  it('answers a consume only after the cache holds its version', async () => {
    const [a, b] = clients as [Credits, Credits];
    const t = tenant('ryw');
    await a.call('topUp', { tenantId: t, amount: 1_000n, idempotencyKey: key('seed'), reference: '', payment: payment(), metadata: {} });
    await consume(a, t, 1n);
    const redis = new Redis(testInfrastructure().redisUrl);
    try {
      for (let round = 0; round < 5; round++) {
        await redis.call('CLIENT', 'PAUSE', '40', 'WRITE');
        const done = await consume(a, t, 1n);
        const seen = await b.call<object, GetBalanceResponse>('getBalance', { tenantId: t, consistentRead: false });
        expect(seen.fromCache, `round ${round}`).to.equal(true);
        expect(seen.account!.version, `round ${round}`).to.equal(done.account!.version);
      }
    } finally {
      await redis.call('CLIENT', 'UNPAUSE');
      redis.disconnect();
    }
  });
});
