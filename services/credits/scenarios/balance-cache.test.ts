/**
 * The Redis balance cache (balance-cache.ts) on the run's real Redis: the version
 * compare-and-set (a slow writer never replaces a newer balance, single and pipelined
 * writes), the configured TTL on every write; and through the service: the 60 s default
 * TTL, and a plain miss (key gone, Redis up) answered from PostgreSQL, refilled, and
 * counted in credits_cache_requests_total{result}.
 */
import { expect } from 'chai';
import type Redis from 'ioredis';
import { Registry } from 'prom-client';
import type { GetBalanceResponse, TopUpResponse } from '../../../gen/shieldx/credits/v1/credits';
import { createLogger } from '../../../platform/logger';
import { metricValue, scrapeMetrics } from '../../../platform/prometheus-text';
import { createRedis } from '../../../platform/redis';
import type { RunningService } from '../../../platform/server';
import { testInfrastructure, uniquePrefix, waitFor } from '../../../testing/harness';
import type { AccountBalance as CachedAccount } from '../domain/account';
import { BalanceCache } from '../store/balance-cache';
import { DependencyBreaker } from '../store/breakers';
import { CreditsMetrics } from '../credits-metrics';
import { Credits, db, key, payment, startCredits, tenant } from '../../../testing/credits-kit';

function account(tenantId: string, version: bigint, balance: bigint, reserved = 0n): CachedAccount {
  return { tenantId, version, balance, reserved, updatedAt: new Date(1_700_000_000_000 + Number(version)) };
}

describe('credits balance cache', function () {
  this.timeout(30_000);

  describe('BalanceCache on a real Redis', () => {
    const TTL_SECONDS = 7;
    let redis: Redis;
    let breaker: DependencyBreaker;
    let cache: BalanceCache;
    let prefix: string;
    const keyOf = (tenantId: string) => `${prefix}balance:{${tenantId}}`;

    beforeEach(() => {
      // Wired as service.ts wires it (near cache off: these tests read Redis itself).
      prefix = uniquePrefix('balance-cache');
      redis = createRedis(testInfrastructure().redisUrl);
      const metrics = new CreditsMetrics(new Registry());
      breaker = new DependencyBreaker(
        'redis',
        { timeoutMs: 2_000, resetTimeoutMs: 2_000, errorThresholdPercentage: 50, volumeThreshold: 3, rollingCountTimeoutMs: 10_000 },
        metrics,
        () => true,
      );
      cache = new BalanceCache(redis, breaker, metrics, createLogger('credits-test', 'silent'), prefix, TTL_SECONDS, async () => [], 0);
    });

    afterEach(async () => {
      // The keys expire on their own (TTL_SECONDS).
      await cache.close();
      breaker.shutdown();
      redis.disconnect();
    });

    // "A slow writer can never overwrite a newer balance": put of version 4 after version 5 changes nothing.
    it('keeps the newer balance when an older version is written after it (put)', async () => {
      await cache.put(account('a', 5n, 50n));
      await cache.put(account('a', 4n, 40n));
      expect(await redis.get(keyOf('a'))).to.match(/^5\|50\|0\|/);
      expect((await cache.get('a'))?.balance).to.equal(50n);
      // An equal version is no newer either; a newer one replaces it.
      await cache.put(account('a', 5n, 55n));
      expect((await cache.get('a'))?.balance).to.equal(50n);
      await cache.put(account('a', 6n, 60n, 3n));
      expect(await cache.get('a')).to.deep.equal(account('a', 6n, 60n, 3n));
    });

    // The same compare-and-set on the pipelined write of a batch: each key on its own version.
    it('keeps the newer balances when older versions are written after them (putMany)', async () => {
      await cache.putMany([account('b', 5n, 50n), account('c', 2n, 20n)]);
      // b's write is older than what Redis holds, c's newer: only c changes.
      await cache.putMany([account('b', 4n, 40n), account('c', 3n, 30n)]);
      expect(await redis.mget(keyOf('b'), keyOf('c'))).to.satisfy(
        (values: (string | null)[]) => values[0]!.startsWith('5|50|0|') && values[1]!.startsWith('3|30|0|'),
      );
      expect((await cache.get('b'))?.balance).to.equal(50n);
      expect((await cache.get('c'))?.balance).to.equal(30n);
    });

    // Every write (single or pipelined) sets the configured TTL, in seconds.
    it('writes each key with the configured TTL', async () => {
      await cache.put(account('d', 1n, 10n));
      await cache.putMany([account('e', 1n, 10n), account('f', 1n, 10n)]);
      for (const t of ['d', 'e', 'f']) {
        const pttl = await redis.pttl(keyOf(t));
        // Within (0, ttl]; above half of it, so a TTL in another unit (ms) or a default would show.
        expect(pttl, `PTTL of ${t}`).to.be.within(TTL_SECONDS * 500, TTL_SECONDS * 1000);
      }
    });
  });

  describe('through the service', () => {
    let service: RunningService;
    let credits: Credits;
    let redis: Redis;
    let prefix: string;
    const keyOf = (tenantId: string) => `${prefix}balance:{${tenantId}}`;

    before(async () => {
      prefix = uniquePrefix('balance-cache');
      // CREDITS_CACHE_TTL_SECONDS left at its default. The near cache is off so that each cached
      // read is one Redis GET, counted once as a hit or a miss.
      service = await startCredits({ CREDITS_CACHE_KEY_PREFIX: prefix, CREDITS_CACHE_LOCAL_ENTRIES: '0' });
      credits = new Credits(service);
      redis = createRedis(testInfrastructure().redisUrl);
    });

    after(async () => {
      credits?.close();
      await service?.shutdown();
      redis?.disconnect();
    });

    const balance = (tenantId: string) => credits.call<object, GetBalanceResponse>('getBalance', { tenantId, consistentRead: false });
    const cacheRequests = async () => {
      const text = await scrapeMetrics(service);
      return { hit: metricValue(text, 'credits_cache_requests_total', { result: 'hit' }) ?? 0, miss: metricValue(text, 'credits_cache_requests_total', { result: 'miss' }) ?? 0 };
    };

    async function funded(amount: bigint): Promise<string> {
      const t = tenant('cache');
      await credits.call<object, TopUpResponse>('topUp', { tenantId: t, amount, idempotencyKey: key(), reference: '', payment: payment(), metadata: {} });
      return t;
    }

    // The write-through after a commit keeps the balance for 60 s by default.
    it('caches balances for 60 s by default', async () => {
      const t = await funded(10n);
      const pttl = await redis.pttl(keyOf(t));
      expect(pttl).to.be.within(30_000, 60_000);
    });

    // Key gone while Redis is up: GetBalance reads PostgreSQL, refills Redis, and counts a miss, then hits.
    it('answers a miss from PostgreSQL, refills the cache and counts hits and misses', async () => {
      const t = await funded(42n);
      const start = await cacheRequests();
      const hit = await balance(t);
      expect(hit.fromCache).to.equal(true);
      expect(hit.account?.balance).to.equal(42n);
      expect(await cacheRequests()).to.deep.equal({ hit: start.hit + 1, miss: start.miss });

      await redis.del(keyOf(t));
      const miss = await balance(t);
      expect(miss.fromCache, 'answered from PostgreSQL').to.equal(false);
      expect(miss.account?.balance).to.equal(42n);
      expect(await cacheRequests()).to.deep.equal({ hit: start.hit + 1, miss: start.miss + 1 });

      // The read-repair (off the response path) writes PostgreSQL's state back, with the TTL.
      const { rows } = await db().query('SELECT version::text FROM credit_accounts WHERE tenant_id = $1', [t]);
      const refilled = await waitFor('the cache to be refilled', async () => (await redis.get(keyOf(t))) ?? undefined, 5_000, 20);
      expect(refilled).to.match(new RegExp(`^${rows[0].version}\\|42\\|0\\|`));
      expect(await redis.pttl(keyOf(t))).to.be.within(30_000, 60_000);
      const again = await balance(t);
      expect(again.fromCache).to.equal(true);
      expect(again.account).to.deep.equal(miss.account);
      expect(await cacheRequests()).to.deep.equal({ hit: start.hit + 2, miss: start.miss + 1 });
    });
  });
});
