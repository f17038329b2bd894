/**
 * The in-process balance near cache (near-cache.ts) against a real Redis:
 * coherence through CLIENT TRACKING invalidations, the invalidation that
 * overtakes a read, lost connections; and through the service: reads answered
 * without a Redis round trip, read-your-writes on a replica, another replica's
 * writes seen, and the cache turned off; on a Redis of its own: a flush of
 * every key, and a Redis that refuses CLIENT TRACKING.
 */
import { expect } from 'chai';
import type Redis from 'ioredis';
import { GetBalanceResponse, type ConsumeResponse, type TopUpResponse } from '../../../gen/shieldx/credits/v1/credits';
import { createLogger } from '../../../platform/logger';
import { startRedisServer, type LocalServer } from '../../../dev/local-servers';
import { createRedis } from '../../../platform/redis';
import type { RunningService } from '../../../platform/server';
import { testInfrastructure, uniquePrefix, waitFor } from '../../../testing/harness';
import { RedisCommandLog } from '../../../testing/redis-command-log';
import { findOnPath, skipOrFailInCi } from '../../../testing/require-tool';
import type { AccountBalance as CachedAccount } from '../domain/account';
import { Credits, key, payment, startCredits, tenant } from '../../../testing/credits-kit';
import { NearCache, type NearCacheTiming } from '../store/near-cache';

/** Polls `check` every 5 ms until it holds (the harness' waitFor, for a yes/no condition). */
async function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 5_000): Promise<void> {
  await waitFor(what, async () => ((await check()) ? true : undefined), timeoutMs, 5);
}

function account(tenantId: string, version: bigint, balance: bigint): CachedAccount {
  return { tenantId, version, balance, reserved: 0n, updatedAt: new Date(1_700_000_000_000) };
}

describe('credits balance near cache', function () {
  this.timeout(30_000);

  describe('NearCache on a real Redis', () => {
    let redis: Redis;
    let writer: Redis;
    let near: NearCache;
    let prefix: string;
    const keyOf = (tenantId: string) => `${prefix}balance:{${tenantId}}`;
    const tenantOf = (k: string) => (k.startsWith(`${prefix}balance:{`) ? k.slice(`${prefix}balance:{`.length, -1) : undefined);

    beforeEach(async () => {
      prefix = uniquePrefix('near');
      redis = createRedis(testInfrastructure().redisUrl);
      writer = createRedis(testInfrastructure().redisUrl);
      near = await startNear();
    });

    async function startNear(timing?: NearCacheTiming, ttlMs = 60_000): Promise<NearCache> {
      const started = new NearCache(redis, createLogger('credits-test', process.env.NEAR_LOG ?? 'silent'), tenantOf, 3, ttlMs, timing);
      started.start();
      await until('tracking on', () => started.enabled);
      return started;
    }

    afterEach(async () => {
      await near.close();
      redis.disconnect();
      writer.disconnect();
    });

    /** Whether tracking is on with a subscriber other than `previous`. */
    function onNewConnection(previous: number | undefined): boolean {
      const subscriber = near.subscriberClientId;
      return near.enabled && subscriber !== undefined && subscriber !== previous;
    }

    /** A read as BalanceCache makes it: ticket, GET on the tracked reader, fill. */
    async function read(tenantId: string, value: CachedAccount): Promise<void> {
      const ticket = near.ticket(tenantId)!;
      expect(ticket, 'a ticket while tracking is on').to.not.equal(undefined);
      await near.trackedReader.get(keyOf(tenantId));
      near.fill(ticket, value);
    }

    it('drops an entry when another client changes its key', async () => {
      await writer.set(keyOf('a'), '1|10|0|0');
      await read('a', account('a', 1n, 10n));
      expect(near.get('a')?.balance).to.equal(10n);
      await writer.set(keyOf('a'), '2|9|0|0');
      await until('the invalidation', () => near.get('a') === undefined, 2_000);
    });

    it('keeps nothing from a read that an invalidation overtook', async () => {
      await writer.set(keyOf('b'), '1|10|0|0');
      const ticket = near.ticket('b')!;
      await near.trackedReader.get(keyOf('b'));
      // The key changes after the GET ran but before its value is kept.
      await writer.set(keyOf('b'), '2|9|0|0');
      await until('the invalidation to void the ticket', () => ticket.voided, 2_000);
      near.fill(ticket, account('b', 1n, 10n));
      expect(near.get('b')).to.equal(undefined);
      // The next read keeps its value again.
      await read('b', account('b', 2n, 9n));
      expect(near.get('b')?.balance).to.equal(9n);
    });

    it('keeps nothing from before a lost invalidation connection, then fills again', async () => {
      await writer.set(keyOf('c'), '1|10|0|0');
      await read('c', account('c', 1n, 10n));
      const inFlight = near.ticket('c')!;
      const subscriber = near.subscriberClientId;
      await writer.client('KILL', 'ID', String(subscriber));
      // Changed while no invalidation could reach the cache.
      await writer.set(keyOf('c'), '2|9|0|0');
      // ioredis waits 50 ms before its first reconnect: the cache is seen off in between.
      await until('the cache to turn off', () => !near.enabled, 2_000);
      expect(near.get('c'), 'an entry from before the loss').to.equal(undefined);
      expect(inFlight.voided, 'a read in flight across the loss').to.equal(true);
      await until('tracking on again', () => onNewConnection(subscriber));
      await read('c', account('c', 2n, 9n));
      expect(near.get('c')?.balance).to.equal(9n);
      // And invalidations arrive on the new connection.
      await writer.set(keyOf('c'), '3|8|0|0');
      await until('the invalidation on the new connection', () => near.get('c') === undefined, 2_000);
    });

    // A connection that goes silent without closing (a partition, a hung server) may be holding invalidations back.
    it('serves nothing while the invalidation connection is silent, then reconnects it', async () => {
      await near.close();
      near = await startNear({
        pingEveryMs: 50,
        silenceMaxMs: 200,
      });
      await writer.set(keyOf('e'), '1|10|0|0');
      await read('e', account('e', 1n, 10n));
      expect(near.get('e')?.balance).to.equal(10n);
      const subscriber = near.subscriberClientId;
      // Every client's commands wait for 1.5 s: no PONG comes back, the connections stay open.
      await writer.client('PAUSE', '1500', 'ALL');
      const pausedAt = Date.now();
      await until('the entry to stop being served', () => near.get('e') === undefined, 1_000);
      expect(Date.now() - pausedAt, 'stopped while the connection was still silent').to.be.lessThan(1_500);
      await until('tracking on again, on a new connection', () => onNewConnection(subscriber), 10_000);
      await read('e', account('e', 1n, 10n));
      expect(near.get('e')?.balance).to.equal(10n);
    });

    // Belt and braces beside Redis's own expiry invalidation: an entry is never served past the cache TTL.
    it('serves an entry no longer than the TTL', async () => {
      await near.close();
      near = await startNear(undefined, 100);
      await read('f', account('f', 1n, 10n));
      expect(near.get('f')?.balance).to.equal(10n);
      await new Promise((resolve) => setTimeout(resolve, 150));
      expect(near.get('f')).to.equal(undefined);
    });

    it('keeps at most its bound of entries, oldest out first', async () => {
      for (const t of ['d1', 'd2', 'd3', 'd4']) await read(t, account(t, 1n, 1n));
      expect(['d1', 'd2', 'd3', 'd4'].map((t) => near.get(t) !== undefined)).to.deep.equal([false, true, true, true]);
    });
  });

  describe('through the service', () => {
    let a: RunningService;
    let b: RunningService;
    let ca: Credits;
    let cb: Credits;
    let prefix: string;
    let redis: Redis;

    before(async () => {
      prefix = uniquePrefix('credits');
      // Two replicas on one Redis key space.
      a = await startCredits({ CREDITS_CACHE_KEY_PREFIX: prefix });
      b = await startCredits({ CREDITS_CACHE_KEY_PREFIX: prefix });
      ca = new Credits(a);
      cb = new Credits(b);
      redis = createRedis(testInfrastructure().redisUrl);
    });

    after(async () => {
      ca.close();
      cb.close();
      redis.disconnect();
      await Promise.all([a.shutdown(), b.shutdown()]);
    });

    const balance = (c: Credits, tenantId: string) => c.call<object, GetBalanceResponse>('getBalance', { tenantId, consistentRead: false });
    const localHits = async (service: RunningService) =>
      (await service.registry.getSingleMetric('credits_cache_local_hits_total')!.get()).values[0]?.value ?? 0;

    /** Reads until the replica answers `tenantId` from its near cache (once its tracking is on). */
    const answeringFromMemory = (service: RunningService, client: Credits, tenantId: string) =>
      until(`${service.name} to answer from memory`, async () => {
        const before = await localHits(service);
        await balance(client, tenantId);
        return (await localHits(service)) > before;
      });

    async function funded(amount = 1_000n): Promise<string> {
      const t = tenant('near');
      await ca.call<object, TopUpResponse>('topUp', { tenantId: t, amount, idempotencyKey: key(), reference: 'r', payment: payment(), metadata: {} });
      return t;
    }

    it('answers repeated reads from memory, without a Redis round trip', async () => {
      const t = await funded();
      const log = await RedisCommandLog.open(redis, prefix);
      try {
        // The first reads fill it (once the replica's tracking is on).
        await until('reads answered from memory', async () => (await log.during(() => balance(ca, t))).length === 0);
        const hitsBefore = await localHits(a);
        const commands = await log.during(async () => {
          for (let i = 0; i < 5; i++) {
            const r = await balance(ca, t);
            expect(r.fromCache).to.equal(true);
            expect(r.account?.balance).to.equal(1_000n);
          }
        });
        expect(commands).to.deep.equal([]);
        expect((await localHits(a)) - hitsBefore).to.equal(5);
      } finally {
        await log.close();
      }
    });

    it("answers a replica's caller with its own write at once", async () => {
      const t = await funded();
      await answeringFromMemory(a, ca, t);
      for (let i = 1; i <= 200; i++) {
        const consumed = await ca.call<object, ConsumeResponse>('consume', { tenantId: t, amount: 1n, idempotencyKey: key(), reference: 'r', metadata: {} });
        expect(consumed.account?.balance).to.equal(1_000n - BigInt(i));
        expect((await balance(ca, t)).account?.balance, `read after consume ${i}`).to.equal(consumed.account?.balance);
      }
    });

    it("sees another replica's write once its invalidation arrives", async () => {
      const t = await funded();
      await answeringFromMemory(b, cb, t);
      const consumed = await ca.call<object, ConsumeResponse>('consume', { tenantId: t, amount: 7n, idempotencyKey: key(), reference: 'r', metadata: {} });
      await until('replica b to see the write', async () => (await balance(cb, t)).account?.balance === consumed.account?.balance, 2_000);
    });

    it('is off with CREDITS_CACHE_LOCAL_ENTRIES=0: every read goes to Redis', async () => {
      const offPrefix = uniquePrefix('credits');
      const off = await startCredits({ CREDITS_CACHE_KEY_PREFIX: offPrefix, CREDITS_CACHE_LOCAL_ENTRIES: '0' });
      const client = new Credits(off);
      const log = await RedisCommandLog.open(redis, offPrefix);
      try {
        const t = tenant('near-off');
        await client.call<object, TopUpResponse>('topUp', { tenantId: t, amount: 5n, idempotencyKey: key(), reference: 'r', payment: payment(), metadata: {} });
        await balance(client, t);
        const commands = await log.during(async () => {
          for (let i = 0; i < 3; i++) expect((await balance(client, t)).fromCache).to.equal(true);
        });
        expect(commands.map((c) => c[0])).to.deep.equal(['GET', 'GET', 'GET']);
        expect(await localHits(off)).to.equal(0);
      } finally {
        await log.close();
        client.close();
        await off.shutdown();
      }
    });
  });
  // On a redis-server of its own: these flush every key, or refuse a command to every client.
  describe('on a Redis of its own', () => {
    let server: LocalServer;
    let admin: Redis;

    before(async function () {
      if (!findOnPath('redis-server')) skipOrFailInCi(this, 'redis-server is not on PATH (Debian: apt-get install redis-server)');
      server = await startRedisServer();
      admin = createRedis(server.url);
    });

    after(async () => {
      admin?.disconnect();
      await server?.stop();
    });

    // FLUSHALL, FLUSHDB and a tracking-table overflow arrive as one "invalidate everything" message (a null key list).
    it('empties itself, and voids reads in flight, when Redis is flushed', async () => {
      const reader = createRedis(server.url);
      const near = new NearCache(reader, createLogger('credits-test', 'silent'), (k) => k.slice('b:'.length), 10, 60_000);
      near.start();
      try {
        await until('tracking on', () => near.enabled);
        await admin.mset('b:x', '1|10|0|0', 'b:y', '1|20|0|0');
        for (const [t, balance] of [['x', 10n], ['y', 20n]] as const) {
          const ticket = near.ticket(t)!;
          await near.trackedReader.get(`b:${t}`);
          near.fill(ticket, account(t, 1n, balance));
        }
        expect(near.get('x')?.balance).to.equal(10n);
        const inFlight = near.ticket('x')!;
        await near.trackedReader.get('b:x');
        await admin.flushall();
        await until('the flush to empty it', () => near.get('x') === undefined && near.get('y') === undefined, 2_000);
        expect(inFlight.voided, 'a read in flight across the flush').to.equal(true);
        near.fill(inFlight, account('x', 1n, 10n));
        expect(near.get('x')).to.equal(undefined);
        expect(near.enabled, 'still on: a flush is no lost connection').to.equal(true);
      } finally {
        await near.close();
        reader.disconnect();
      }
    });

    // A managed Redis or proxy may refuse CLIENT TRACKING (here by ACL): reads go to Redis, nothing fails.
    it('stays off where Redis refuses CLIENT TRACKING, and the service reads Redis', async () => {
      await admin.call('ACL', 'SETUSER', 'default', '-client|tracking');
      await admin.call('ACL', 'LOG', 'RESET');
      const prefix = uniquePrefix('credits');
      const service = await startCredits({ REDIS_URL: server.url, CREDITS_CACHE_KEY_PREFIX: prefix });
      const client = new Credits(service);
      const log = await RedisCommandLog.open(admin, prefix, server.url);
      try {
        // The replica has asked, and been refused.
        await until('the refused CLIENT TRACKING in the ACL log', async () => {
          const entries = (await admin.call('ACL', 'LOG')) as unknown[][];
          return entries.some((entry) => entry.includes('client|tracking'));
        });
        const t = tenant('near-refused');
        await client.call<object, TopUpResponse>('topUp', { tenantId: t, amount: 5n, idempotencyKey: key(), reference: 'r', payment: payment(), metadata: {} });
        const commands = await log.during(async () => {
          for (let i = 0; i < 3; i++) {
            const r = await client.call<object, GetBalanceResponse>('getBalance', { tenantId: t, consistentRead: false });
            expect(r.fromCache).to.equal(true);
            expect(r.account?.balance).to.equal(5n);
          }
        });
        expect(commands.map((c) => c[0])).to.deep.equal(['GET', 'GET', 'GET']);
        expect((await service.registry.getSingleMetric('credits_cache_local_hits_total')!.get()).values[0]?.value ?? 0).to.equal(0);
      } finally {
        await log.close();
        client.close();
        await service.shutdown();
        await admin.call('ACL', 'SETUSER', 'default', '+client|tracking');
      }
    });
  });
});
