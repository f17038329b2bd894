/**
 * Camouflage through Redis Sentinel (testing/redis-cluster.ts: one master, one replica, one
 * sentinel, all real redis-server processes): Assess and RecordOutcome run through the master the
 * sentinel names; after that master is SIGKILLed and the sentinel promotes the replica, the service
 * follows it without a restart: its calls answer again (meanwhile only UNAVAILABLE or
 * DEADLINE_EXCEEDED, never INTERNAL), its new state lands on the promoted replica, and what Redis
 * had replicated before the kill (bandit pulls, an outcome's idempotent answer) is kept.
 */
import { expect } from 'chai';
import { randomUUID } from 'node:crypto';
import { status as grpcStatus } from '@grpc/grpc-js';
import {
  CamouflageServiceClient,
  ThreatTier,
  type AssessRequest,
  type AssessResponse,
  type GetBanditStatsResponse,
  type RecordOutcomeResponse,
} from '../../../gen/shieldx/camouflage/v1/camouflage';
import type { RunningService } from '../../../platform/server';
import { address, bearer, insecure, startTestService, testKeys, waitFor } from '../../../testing/harness';
import { redisCli, startRedisSentinel, type TestRedisSentinel } from '../../../testing/redis-cluster';
import { requireTool } from '../../../testing/require-tool';
import { camouflageService } from '../index';

function request(overrides: Partial<AssessRequest> = {}): AssessRequest {
  return {
    clientIp: '198.51.100.30', method: 'GET', path: '/.env', query: '', headers: {},
    userAgent: 'nikto/2.5.0', tlsFingerprint: '', sessionKey: `s-${randomUUID()}`, timestamp: new Date(), previousStatus: 0, policy: 0,
    ...overrides,
  };
}

type Answer<T> = { error: (Error & { code?: number }) | null; response?: T };

describe('camouflage through Redis Sentinel', function () {
  this.timeout(120_000);
  const prefix = `test:camo-sentinel:${randomUUID().slice(0, 8)}:`;
  let sentinel: TestRedisSentinel;
  let service: RunningService | undefined;
  let client: CamouflageServiceClient;

  const assess = (req: AssessRequest = request()): Promise<Answer<AssessResponse>> =>
    new Promise((resolve) => client.assess(req, bearer(testKeys.camouflage), { deadline: Date.now() + 10_000 }, (error, response) => resolve({ error, response })));
  const outcome = (decisionId: string, idempotencyKey: string): Promise<Answer<RecordOutcomeResponse>> =>
    new Promise((resolve) =>
      client.recordOutcome(
        {
          decisionId,
          engagement: { interactions: 4, dwell: { seconds: 30n, nanos: 0 }, honeytokenUsed: false, credentialsSubmitted: false, reachedRealAsset: false },
          idempotencyKey,
        },
        bearer(testKeys.camouflage),
        { deadline: Date.now() + 10_000 },
        (error, response) => resolve({ error, response }),
      ),
    );
  const stats = (): Promise<Answer<GetBanditStatsResponse>> =>
    new Promise((resolve) =>
      client.getBanditStats({ tier: ThreatTier.THREAT_TIER_ATTACK }, bearer(testKeys.camouflage), { deadline: Date.now() + 10_000 }, (error, response) => resolve({ error, response })),
    );
  const pullsOf = (response: GetBanditStatsResponse) => new Map(response.arms.map((arm) => [arm.decoyId, Number(arm.pulls)]));
  const keysOn = async (port: number) => (await redisCli(port, ['--scan', '--pattern', `${prefix}*`])).split('\n').filter(Boolean).length;

  before(async function () {
    requireTool(this, 'redis-server', 'Debian package `redis-server`');
    requireTool(this, 'redis-cli', 'Debian package `redis-tools`');
    sentinel = await startRedisSentinel();
    // REDIS_URL unset (the harness sets one): the sentinel is the only way to the master.
    service = await startTestService(camouflageService, {
      REDIS_URL: '',
      REDIS_SENTINELS: sentinel.sentinels,
      REDIS_SENTINEL_MASTER: sentinel.masterName,
      CAMOUFLAGE_REDIS_PREFIX: prefix,
    });
    client = new CamouflageServiceClient(address(service), insecure);
  });
  after(async () => {
    client?.close();
    await service?.shutdown();
    await sentinel?.stop();
  });

  it('assesses and records outcomes through the master the sentinel names, and follows a failover without a restart', async () => {
    // Through the sentinel's master: decisions, an outcome, the bandit's pulls.
    const decisions: string[] = [];
    for (let i = 0; i < 12; i++) {
      const answer = await assess();
      expect(answer.error).to.equal(null);
      decisions.push(answer.response!.decisionId);
    }
    const kept = await outcome(decisions[0]!, 'sentinel-kept');
    expect(kept.error).to.equal(null);
    expect(await keysOn(sentinel.master.port), 'state on the master the sentinel names').to.be.greaterThan(0);
    // What Redis kept: replicated (offsets equal) before the kill.
    await waitFor('the replica has every write of its master', async () => {
      const master = await redisCli(sentinel.master.port, ['info', 'replication']);
      const replica = await redisCli(sentinel.replica.port, ['info', 'replication']);
      const offset = /master_repl_offset:(\d+)/.exec(master)?.[1];
      return offset !== undefined && replica.includes(`slave_repl_offset:${offset}`) ? true : undefined;
    }, 10_000);
    const before = await stats();
    expect(before.error).to.equal(null);
    const pullsBefore = pullsOf(before.response!);
    const keysBefore = await keysOn(sentinel.replica.port);

    await sentinel.master.kill();
    const killedAt = Date.now();
    const codes = new Set<number>();
    let failed = 0;
    let last = '';
    // Bounded: down-after 1 s + the failover (a failed attempt is retried after 2 x failover-timeout),
    // polled every 200 ms for at most 60 s.
    try {
      await waitFor(
        'Assess and RecordOutcome answer through the promoted replica',
        async () => {
          const assessed = await assess();
          if (assessed.error) {
            failed++;
            codes.add(assessed.error.code ?? -1);
            last = `Assess: ${assessed.error.message}`;
            return undefined;
          }
          const recorded = await outcome(assessed.response!.decisionId, `after-${assessed.response!.decisionId}`);
          if (recorded.error) {
            failed++;
            codes.add(recorded.error.code ?? -1);
            last = `RecordOutcome: ${recorded.error.message}`;
            return undefined;
          }
          const master = await sentinel.currentMasterPort();
          last = `sentinel names port ${master} (replica ${sentinel.replica.port})`;
          if (master !== sentinel.replica.port) return undefined;
          return true;
        },
        60_000,
        200,
      );
    } catch (error) {
      throw new Error(`${(error as Error).message}; last: ${last}; failure codes ${[...codes].join(',')}`);
    }
    process.stdout.write(`      camouflage back through the promoted replica ${Date.now() - killedAt} ms after SIGKILL of the master; ${failed} calls failed meanwhile\n`);
    expect([...codes].filter((code) => code !== grpcStatus.UNAVAILABLE && code !== grpcStatus.DEADLINE_EXCEEDED), 'failure codes').to.deep.equal([]);

    // Its new state is on the promoted replica, and nothing Redis kept is lost.
    expect(await keysOn(sentinel.replica.port)).to.be.greaterThan(keysBefore);
    const replayed = await outcome(decisions[0]!, 'sentinel-kept');
    expect(replayed.error).to.equal(null);
    expect(replayed.response!.reward).to.equal(kept.response!.reward);
    const after = await stats();
    expect(after.error).to.equal(null);
    const pullsAfter = pullsOf(after.response!);
    for (const [arm, pulls] of pullsBefore) expect(pullsAfter.get(arm) ?? 0, arm).to.be.at.least(pulls);
    expect([...pullsAfter.values()].reduce((x, y) => x + y, 0)).to.be.greaterThan([...pullsBefore.values()].reduce((x, y) => x + y, 0));
  });
});
