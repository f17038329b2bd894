/**
 * Credits on a real Redis Cluster (testing/redis-cluster.ts: 3 masters + 3 replicas): the balance
 * cache's read, write-through, batch write-through and repair paths, balance keys spread over the
 * masters (tagged by tenant), the near cache off; then a master SIGKILLed mid-load: every call
 * still answers (PostgreSQL behind the breaker) and the cache is back for the failed shard's
 * tenants after the failover, without a restart.
 */
import { expect } from 'chai';
import type { ConsumeResponse, GetBalanceResponse, TopUpResponse } from '../../../gen/shieldx/credits/v1/credits';
import { metricSamples, scrapeMetrics } from '../../../platform/prometheus-text';
import type { RunningService } from '../../../platform/server';
import { waitFor } from '../../../testing/harness';
import { Credits, creditsEnv, key, payment, tenant } from '../../../testing/credits-kit';
import { redisCli, startRedisCluster, type TestRedisCluster } from '../../../testing/redis-cluster';
import { requireTool } from '../../../testing/require-tool';
import { startTestService } from '../../../testing/harness';
import { creditsService } from '../index';

describe('credits on a Redis Cluster (3 masters + 3 replicas)', function () {
  this.timeout(180_000);
  let cluster: TestRedisCluster;
  let service: RunningService | undefined;
  let credits: Credits;
  let prefix: string;
  const tenants = Array.from({ length: 12 }, (_, i) => tenant(`cluster${i}`));

  const topUp = (tenantId: string, amount: bigint) =>
    credits.call<object, TopUpResponse>('topUp', { tenantId, amount, idempotencyKey: key(), reference: 'r', payment: payment(), metadata: {} });
  const consume = (tenantId: string, amount: bigint) =>
    credits.call<object, ConsumeResponse>('consume', { tenantId, amount, idempotencyKey: key(), reference: 'req', metadata: {} });
  const balance = (tenantId: string, consistentRead = false) => credits.call<object, GetBalanceResponse>('getBalance', { tenantId, consistentRead });
  const cacheHits = async () => metricSamples(await scrapeMetrics(service!), 'credits_cache_requests_total', { result: 'hit' }).reduce((s, x) => s + x.value, 0);
  const nearHits = async () => metricSamples(await scrapeMetrics(service!), 'credits_cache_local_hits_total').reduce((s, x) => s + x.value, 0);
  const balanceKey = (tenantId: string) => `${prefix}balance:{${tenantId}}`;
  /** The cached value of a tenant, read from the cluster itself (redis-cli -c follows MOVED). */
  const cached = async (tenantId: string) => (await redisCli(cluster.nodes.find((n) => n.alive())!.port, ['-c', 'get', balanceKey(tenantId)])).trim();

  before(async function () {
    requireTool(this, 'redis-server', 'Debian package `redis-server`');
    requireTool(this, 'redis-cli', 'Debian package `redis-tools`');
    cluster = await startRedisCluster();
    const env = creditsEnv({ REDIS_URL: '', REDIS_CLUSTER_NODES: cluster.seeds, CREDITS_CACHE_LOCAL_ENTRIES: '1000' });
    prefix = env.CREDITS_CACHE_KEY_PREFIX!;
    service = await startTestService(creditsService as never, env);
    credits = new Credits(service);
  });
  after(async () => {
    credits?.close();
    await service?.shutdown();
    await cluster?.stop();
  });

  it('serves GetBalance from the cache and writes Consume through it, tenants spread over the masters', async () => {
    for (const t of tenants) await topUp(t, 1_000n);
    // Concurrent consumes over many tenants: the batcher writes them through in one batch (one CAS per tenant in a cluster).
    await Promise.all(tenants.flatMap((t) => [consume(t, 10n), consume(t, 5n)]));
    const hitsBefore = await cacheHits();
    for (const t of tenants) {
      const fresh = await balance(t, true);
      const fromCache = await balance(t);
      expect(fromCache.fromCache, t).to.equal(true);
      expect(fromCache.account!.balance, t).to.equal(fresh.account!.balance);
      expect(fresh.account!.balance, t).to.equal(985n);
      expect(await cached(t), t).to.match(new RegExp(`^\\d+\\|985\\|`));
    }
    expect(await cacheHits()).to.be.at.least(hitsBefore + tenants.length);
    // The near cache is off in cluster mode: every hit is a Redis hit.
    expect(await nearHits()).to.equal(0);
    const masters = new Set<number>();
    for (const t of tenants) masters.add(await cluster.masterPortOf(balanceKey(t)));
    expect(masters.size, 'balance keys on more than one master').to.be.at.least(2);
  });

  it('answers every call while a master is SIGKILLed mid-load, and caches again after the failover', async () => {
    const roles = await cluster.roles();
    const victim = roles.find((r) => r.role === 'master')!;
    // A tenant whose balance key the victim serves.
    let onVictim: string | undefined;
    for (const t of tenants) if ((await cluster.masterPortOf(balanceKey(t))) === victim.port) onVictim = t;
    expect(onVictim, 'some tenant on the victim master').to.not.equal(undefined);

    let consumed = 0;
    let probes = 0;
    let failures = 0;
    let loading = true;
    const load = (async () => {
      for (let i = 0; loading && i < 100_000; i++) {
        const t = tenants[i % tenants.length]!;
        try {
          await consume(t, 1n);
          consumed++;
          await balance(t);
        } catch {
          failures++;
        }
      }
    })();
    await waitFor('load under way', async () => (consumed > 10 ? true : undefined));
    const killedAt = Date.now();
    await cluster.nodes.find((n) => n.port === victim.port)!.kill();
    // Back: a consume for the victim's tenant is written through to the promoted replica.
    await waitFor(
      'the cache of the failed shard written through again',
      async () => {
        const answer = await consume(onVictim!, 1n);
        probes++;
        const value = await cached(onVictim!).catch(() => '');
        return value.split('|')[1] === String(answer.account!.balance) ? true : undefined;
      },
      cluster.nodeTimeoutMs + 15_000,
      200,
    );
    const recoveredMs = Date.now() - killedAt;
    loading = false;
    await load;
    process.stderr.write(`      credits: cache back ${recoveredMs} ms after SIGKILL of a master; ${consumed} consumes, ${failures} failed calls\n`);
    expect(failures, 'no call failed: PostgreSQL answered while Redis could not').to.equal(0);
    // Every tenant's cached balance is PostgreSQL's again, and nothing was lost or doubled.
    let spent = 0n;
    for (const t of tenants) {
      const fresh = (await balance(t, true)).account!.balance;
      spent += 1_000n - fresh;
      await waitFor(`cached balance of ${t} current`, async () => {
        const read = await balance(t);
        return read.fromCache && read.account!.balance === fresh ? true : undefined;
      }, 10_000);
    }
    expect(spent).to.equal(BigInt(tenants.length * 15 + consumed + probes));
  });
});
