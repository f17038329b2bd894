/**
 * Credits through Redis Sentinel (testing/redis-cluster.ts: one master, one replica, one sentinel,
 * all real redis-server processes): the cache works through the master the sentinel names, and
 * after the master is SIGKILLed and the sentinel promotes the replica, the service writes
 * through to the new master without a restart; no call fails meanwhile (PostgreSQL answers).
 */
import { expect } from 'chai';
import type { ConsumeResponse, GetBalanceResponse, TopUpResponse } from '../../../gen/shieldx/credits/v1/credits';
import type { RunningService } from '../../../platform/server';
import { startTestService, waitFor } from '../../../testing/harness';
import { Credits, creditsEnv, key, payment, tenant } from '../../../testing/credits-kit';
import { redisCli, startRedisSentinel, type TestRedisSentinel } from '../../../testing/redis-cluster';
import { requireTool } from '../../../testing/require-tool';
import { creditsService } from '../index';

describe('credits through Redis Sentinel', function () {
  this.timeout(120_000);
  let sentinel: TestRedisSentinel;
  let service: RunningService | undefined;
  let credits: Credits;
  let prefix: string;
  const t = tenant('sentinel');

  before(async function () {
    requireTool(this, 'redis-server', 'Debian package `redis-server`');
    requireTool(this, 'redis-cli', 'Debian package `redis-tools`');
    sentinel = await startRedisSentinel();
    const env = creditsEnv({ REDIS_URL: '', REDIS_SENTINELS: sentinel.sentinels, REDIS_SENTINEL_MASTER: sentinel.masterName });
    prefix = env.CREDITS_CACHE_KEY_PREFIX!;
    service = await startTestService(creditsService as never, env);
    credits = new Credits(service);
  });
  after(async () => {
    credits?.close();
    await service?.shutdown();
    await sentinel?.stop();
  });

  const consume = (amount: bigint) =>
    credits.call<object, ConsumeResponse>('consume', { tenantId: t, amount, idempotencyKey: key(), reference: 'req', metadata: {} });
  const cachedOn = async (port: number) => (await redisCli(port, ['get', `${prefix}balance:{${t}}`])).trim();

  it('follows a failover to the promoted replica without a restart', async () => {
    await credits.call<object, TopUpResponse>('topUp', { tenantId: t, amount: 1_000n, idempotencyKey: key(), reference: 'r', payment: payment(), metadata: {} });
    const first = await consume(1n);
    expect((await cachedOn(sentinel.master.port)).split('|')[1]).to.equal(String(first.account!.balance));
    expect((await credits.call<object, GetBalanceResponse>('getBalance', { tenantId: t, consistentRead: false })).fromCache).to.equal(true);

    await sentinel.master.kill();
    let failures = 0;
    await waitFor(
      'writes reach the promoted replica',
      async () => {
        const answer = await consume(1n).catch(() => {
          failures++;
          return undefined;
        });
        if (answer === undefined) return undefined;
        if ((await sentinel.currentMasterPort()) !== sentinel.replica.port) return undefined;
        return (await cachedOn(sentinel.replica.port)).split('|')[1] === String(answer.account!.balance) ? true : undefined;
      },
      // Sentinel's down-after (1 s) and failover, then ioredis' reconnect; generous for a loaded CI machine.
      60_000,
      200,
    );
    expect(failures).to.equal(0);
    const read = await credits.call<object, GetBalanceResponse>('getBalance', { tenantId: t, consistentRead: false });
    const fresh = await credits.call<object, GetBalanceResponse>('getBalance', { tenantId: t, consistentRead: true });
    expect(read.account!.balance).to.equal(fresh.account!.balance);
  });
});
