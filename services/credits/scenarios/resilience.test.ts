/**
 * Circuit breakers: Redis down → calls go on against PostgreSQL with no
 * client-visible error, and the cache is right again once Redis is back;
 * PostgreSQL down → UNAVAILABLE / DATABASE_UNAVAILABLE (never a hung call),
 * cached balances still served, and recovery without a restart.
 *
 * Redis: a redis-server of this test's own on a fixed free port, stopped and
 * restarted. PostgreSQL: the service reaches the run's database through a TCP
 * proxy in this test, which is closed (sockets cut, port refusing) and reopened.
 * Hanging: the same proxy, in front of PostgreSQL or Redis, stops answering
 * without closing anything, and the connections it had stay dead for good.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { expect } from 'chai';
import type { ConsumeResponse, GetBalanceResponse } from '../../../gen/shieldx/credits/v1/credits';
import { Code } from '../../../platform/service-error';
import type { RunningService } from '../../../platform/server';
import { freePort } from '../../../dev/local-servers';
import { metricValue, scrapeMetrics } from '../../../platform/prometheus-text';
import { testInfrastructure } from '../../../testing/harness';
import { proxyFor, type TcpProxy } from '../../../testing/tcp-proxy';
import { Credits, failure, key, payment, startCredits, tenant } from '../../../testing/credits-kit';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function startRedisOn(port: number): Promise<ChildProcess> {
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: ['ignore', 'pipe', 'ignore'] });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('redis-server did not start')), 10_000);
    child.stdout!.on('data', (chunk: Buffer) => {
      if (chunk.toString().includes('Ready to accept connections')) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  return child;
}

async function stopProcess(child: ChildProcess): Promise<void> {
  // A child killed by a signal has signalCode set and exitCode null: it has exited all the same.
  if (child.exitCode !== null || child.signalCode !== null) return;
  await new Promise<void>((resolve) => {
    child.once('exit', () => resolve());
    child.kill('SIGKILL');
  });
}

async function breakerState(service: RunningService, dependency: string): Promise<number> {
  return metricValue(await scrapeMetrics(service), 'credits_circuit_breaker_state', { dependency }) ?? -1;
}

describe('credits resilience', function () {
  this.timeout(60_000);

  describe('Redis down', () => {
    let redisPort: number;
    let redis: ChildProcess;
    let service: RunningService;
    let credits: Credits;

    before(async () => {
      redisPort = await freePort();
      redis = await startRedisOn(redisPort);
      service = await startCredits({ REDIS_URL: `redis://127.0.0.1:${redisPort}`, CREDITS_BREAKER_RESET_MS: '300' });
      credits = new Credits(service);
    });
    after(async () => {
      credits?.close();
      await service?.shutdown();
      if (redis) await stopProcess(redis);
    });

    // With Redis stopped, consumes and balance reads succeed from PostgreSQL; the breaker opens;
    // once Redis is back the breaker closes and the cache serves the right balance again.
    it('keeps serving from PostgreSQL and recovers by itself', async () => {
      const t = tenant();
      await credits.call('topUp', { tenantId: t, amount: 100n, idempotencyKey: key(), reference: '', payment: payment(), metadata: {} });
      expect((await credits.call<object, GetBalanceResponse>('getBalance', { tenantId: t, consistentRead: false })).fromCache).to.equal(true);

      await stopProcess(redis);
      for (let i = 0; i < 10; i++) {
        const res = await credits.call<object, ConsumeResponse>('consume', { tenantId: t, amount: 1n, idempotencyKey: key(), reference: '', metadata: {} });
        expect(res.account!.balance).to.equal(BigInt(99 - i));
        const read = await credits.call<object, GetBalanceResponse>('getBalance', { tenantId: t, consistentRead: false });
        expect(read.fromCache).to.equal(false);
        expect(read.account!.balance).to.equal(BigInt(99 - i));
      }
      const others = new Map<string, bigint>();
      for (let n = 0; n < 3; n++) {
        const u = tenant();
        await credits.call('topUp', { tenantId: u, amount: 50n, idempotencyKey: key(), reference: '', payment: payment(), metadata: {} });
        await credits.call('consume', { tenantId: u, amount: BigInt(n + 1), idempotencyKey: key(), reference: '', metadata: {} });
        others.set(u, BigInt(50 - n - 1));
      }
      // Tripped: open, or half-open if its 300 ms reset timer fired since the last call (it re-opens on the next).
      expect(await breakerState(service, 'redis')).to.be.oneOf([1, 2]);

      redis = await startRedisOn(redisPort);
      let read: GetBalanceResponse | undefined;
      for (let i = 0; i < 100; i++) {
        await sleep(100);
        read = await credits.call<object, GetBalanceResponse>('getBalance', { tenantId: t, consistentRead: false });
        if (read.fromCache) break;
      }
      expect(read!.fromCache).to.equal(true);
      // The value written before the outage (100) must not come back: the repair rewrote it.
      expect(read!.account!.balance).to.equal(90n);
      expect(await breakerState(service, 'redis')).to.equal(0);
      // Every tenant written during the outage was repaired (in one pipeline), not only the first.
      for (const [u, balance] of others) {
        const cached = await credits.call<object, GetBalanceResponse>('getBalance', { tenantId: u, consistentRead: false });
        expect(cached.fromCache, u).to.equal(true);
        expect(cached.account!.balance, u).to.equal(balance);
      }
    });
  });

  describe('Redis hanging', () => {
    let redisPort: number;
    let redis: ChildProcess;
    let proxy: TcpProxy;
    let service: RunningService;
    let credits: Credits;

    before(async () => {
      redisPort = await freePort();
      redis = await startRedisOn(redisPort);
      const proxied = await proxyFor(`redis://127.0.0.1:${redisPort}`, 6379);
      proxy = proxied.proxy;
      service = await startCredits({ REDIS_URL: proxied.url, CREDITS_BREAKER_RESET_MS: '300' });
      credits = new Credits(service);
    });
    after(async () => {
      credits?.close();
      await service?.shutdown();
      await proxy?.close();
      if (redis) await stopProcess(redis);
    });

    // Redis stops answering without closing anything, and its old connections never answer again:
    // calls go on against PostgreSQL with no client-visible error, and once Redis can be reached again
    // the cache serves the right balance without a restart.
    it('keeps serving from PostgreSQL and recovers although its connections never answer again', async () => {
      const t = tenant();
      await credits.call('topUp', { tenantId: t, amount: 100n, idempotencyKey: key(), reference: '', payment: payment(), metadata: {} });
      expect((await credits.call<object, GetBalanceResponse>('getBalance', { tenantId: t, consistentRead: false })).fromCache).to.equal(true);

      proxy.blackHole();
      for (let i = 0; i < 10; i++) {
        const res = await credits.call<object, ConsumeResponse>('consume', { tenantId: t, amount: 1n, idempotencyKey: key(), reference: '', metadata: {} }, 15_000);
        expect(res.account!.balance).to.equal(BigInt(99 - i));
        const read = await credits.call<object, GetBalanceResponse>('getBalance', { tenantId: t, consistentRead: false }, 15_000);
        expect(read.account!.balance).to.equal(BigInt(99 - i));
      }

      proxy.restore();
      let read: GetBalanceResponse | undefined;
      for (let i = 0; i < 150; i++) {
        await sleep(100);
        read = await credits.call<object, GetBalanceResponse>('getBalance', { tenantId: t, consistentRead: false });
        if (read.fromCache) break;
      }
      expect(read!.fromCache).to.equal(true);
      expect(read!.account!.balance).to.equal(90n);
      expect(await breakerState(service, 'redis')).to.equal(0);
    });
  });

  describe('PostgreSQL away', () => {
    let proxy: TcpProxy;
    let service: RunningService;
    let credits: Credits;

    before(async () => {
      const proxied = await proxyFor(testInfrastructure().databaseUrl, 5432);
      proxy = proxied.proxy;
      // A small pool, so that the black-holed connections below are all of it; short timeouts, so a silent
      // database is given up on well within the calls' deadlines.
      service = await startCredits({
        DATABASE_URL: proxied.url,
        DB_POOL_MAX: '4',
        DB_STATEMENT_TIMEOUT_MS: '1000',
        CREDITS_DB_TIMEOUT_MS: '1000',
        CREDITS_BREAKER_RESET_MS: '500',
      });
      credits = new Credits(service);
    });
    after(async () => {
      credits?.close();
      await service?.shutdown();
      await proxy?.close();
    });

    const consume = (t: string, deadlineMs = 15_000) =>
      credits.call<object, ConsumeResponse>('consume', { tenantId: t, amount: 1n, idempotencyKey: key(), reference: '', metadata: {} }, deadlineMs);

    /** Consumes 1 until a consume succeeds (bounded), then checks the balance it left and the breaker closed. */
    async function recovers(t: string, balance: bigint): Promise<void> {
      let res: ConsumeResponse | undefined;
      for (let i = 0; i < 60 && !res; i++) {
        await sleep(250);
        res = await consume(t, 5_000).catch(() => undefined);
      }
      expect(res?.account?.balance).to.equal(balance);
      expect(await breakerState(service, 'postgres')).to.equal(0);
    }

    // PostgreSQL refuses connections: every call fails fast with UNAVAILABLE DATABASE_UNAVAILABLE (never
    // DEADLINE_EXCEEDED), the breaker opens, cached balances are still served, and calls succeed again once
    // PostgreSQL is back.
    it('fails fast with DATABASE_UNAVAILABLE and recovers by itself', async () => {
      const t = tenant();
      await credits.call('topUp', { tenantId: t, amount: 50n, idempotencyKey: key(), reference: '', payment: payment(), metadata: {} });
      await proxy.close();
      for (let i = 0; i < 8; i++) {
        const err = await failure(consume(t));
        expect(err.code).to.equal(Code.UNAVAILABLE);
        expect(err.reason).to.equal('DATABASE_UNAVAILABLE');
      }
      expect(await breakerState(service, 'postgres')).to.equal(2);
      const cached = await credits.call<object, GetBalanceResponse>('getBalance', { tenantId: t, consistentRead: false });
      expect(cached).to.deep.include({ fromCache: true });
      expect((await failure(credits.call('getBalance', { tenantId: t, consistentRead: true }))).reason).to.equal('DATABASE_UNAVAILABLE');

      await proxy.open();
      await recovers(t, 49n);
    });

    // PostgreSQL stops answering without closing anything (a partition; a failed-over primary whose
    // connections die silently): calls fail with UNAVAILABLE DATABASE_UNAVAILABLE within the client's
    // deadline (never DEADLINE_EXCEEDED), and once PostgreSQL can be reached again the service recovers by
    // itself, although every connection it had stays dead forever: none of them may pin the pool.
    it('fails calls with UNAVAILABLE and recovers although its connections never answer again', async () => {
      const t = tenant();
      await credits.call('topUp', { tenantId: t, amount: 50n, idempotencyKey: key(), reference: '', payment: payment(), metadata: {} });
      // Every pooled connection busy at once, so that all of them are black-holed open.
      await Promise.all(Array.from({ length: 8 }, () => credits.call('getBalance', { tenantId: t, consistentRead: true })));
      proxy.blackHole();
      const failed = await Promise.all(Array.from({ length: 8 }, () => failure(consume(t))));
      for (const err of failed) expect([err.code, err.reason]).to.deep.equal([Code.UNAVAILABLE, 'DATABASE_UNAVAILABLE']);
      expect((await failure(credits.call('getBalance', { tenantId: t, consistentRead: true }, 15_000))).reason).to.equal('DATABASE_UNAVAILABLE');

      proxy.restore();
      // Nothing of the failed calls was applied: they never reached PostgreSQL.
      await recovers(t, 49n);
    });
  });
});
