/**
 * Camouflage on a real Redis Cluster (testing/redis-cluster.ts: 3 masters + 3 replicas started
 * from redis-server): every RPC that touches Redis, its keys spread over more than one master,
 * then a master SIGKILLed mid-load: the service keeps answering for the shards still served, is
 * fully back once the replica is promoted, without a restart, and keeps what Redis kept.
 */
import { expect } from 'chai';
import { randomUUID } from 'node:crypto';
import { status as grpcStatus } from '@grpc/grpc-js';
import {
  CamouflageServiceClient,
  ThreatTier,
  type AssessRequest,
  type AssessResponse,
  type AssessStreamRequest,
  type AssessStreamResponse,
  type GetBanditStatsResponse,
  type ListDecoysResponse,
  type RecordOutcomeResponse,
} from '../../../gen/shieldx/camouflage/v1/camouflage';
import type { RunningService } from '../../../platform/server';
import { address, bearer, insecure, startTestService, testKeys, waitFor } from '../../../testing/harness';
import { redisCli, startRedisCluster, type TestRedisCluster } from '../../../testing/redis-cluster';
import { requireTool } from '../../../testing/require-tool';
import { exchange } from '../../../testing/streams';
import { camouflageService } from '../index';

function request(overrides: Partial<AssessRequest> = {}): AssessRequest {
  return {
    clientIp: '198.51.100.20', method: 'GET', path: '/.env', query: '', headers: {},
    userAgent: 'nikto/2.5.0', tlsFingerprint: '', sessionKey: `s-${randomUUID()}`, timestamp: new Date(), previousStatus: 0, policy: 0,
    ...overrides,
  };
}

type Answer<T> = { error: (Error & { code?: number }) | null; response?: T };

describe('camouflage on a Redis Cluster (3 masters + 3 replicas)', function () {
  this.timeout(180_000);
  const prefix = `test:camo-cluster:${randomUUID().slice(0, 8)}:`;
  let cluster: TestRedisCluster;
  let first: RunningService | undefined;
  let second: RunningService | undefined;
  let a: CamouflageServiceClient;
  let b: CamouflageServiceClient;

  const assess = (client: CamouflageServiceClient, req: AssessRequest): Promise<Answer<AssessResponse>> =>
    new Promise((resolve) => client.assess(req, bearer(testKeys.camouflage), { deadline: Date.now() + 15_000 }, (error, response) => resolve({ error, response })));
  const outcome = (client: CamouflageServiceClient, decisionId: string, idempotencyKey: string): Promise<Answer<RecordOutcomeResponse>> =>
    new Promise((resolve) =>
      client.recordOutcome(
        {
          decisionId,
          engagement: { interactions: 4, dwell: { seconds: 30n, nanos: 0 }, honeytokenUsed: false, credentialsSubmitted: false, reachedRealAsset: false },
          idempotencyKey,
        },
        bearer(testKeys.camouflage),
        { deadline: Date.now() + 15_000 },
        (error, response) => resolve({ error, response }),
      ),
    );
  const stats = (client: CamouflageServiceClient, tier = ThreatTier.THREAT_TIER_ATTACK): Promise<Answer<GetBanditStatsResponse>> =>
    new Promise((resolve) => client.getBanditStats({ tier }, bearer(testKeys.camouflage), { deadline: Date.now() + 15_000 }, (error, response) => resolve({ error, response })));
  const listDecoys = (client: CamouflageServiceClient): Promise<Answer<ListDecoysResponse>> =>
    new Promise((resolve) => client.listDecoys({ tier: 0, pageSize: 100, pageToken: '' } as never, bearer(testKeys.camouflage), { deadline: Date.now() + 15_000 }, (error, response) => resolve({ error, response })));
  const register = (client: CamouflageServiceClient, id: string): Promise<Answer<unknown>> =>
    new Promise((resolve) =>
      client.registerDecoy(
        {
          decoy: { id, name: 'Fake panel', kind: 'admin_login', tiers: [ThreatTier.THREAT_TIER_ATTACK], contentType: 'text/html', contentTemplate: '<form></form>', carriesHoneytoken: false, carriesCredentials: false, builtin: false, createdAt: undefined, status: 0, headers: {} },
          idempotencyKey: `register-${id}`,
        },
        bearer(testKeys.admin),
        { deadline: Date.now() + 15_000 },
        (error, response) => resolve({ error, response }),
      ),
    );
  /** Pulls per arm of the attack tier, as GetBanditStats answers them. */
  const pullsOf = (response: GetBanditStatsResponse) => new Map(response.arms.map((arm) => [arm.decoyId, Number(arm.pulls)]));
  /** Keys under the test's prefix on each master (SCAN per node: a cluster node lists only its own keys). */
  const keysPerMaster = async () => {
    const out = new Map<number, number>();
    for (const role of (await cluster.roles()).filter((r) => r.role === 'master')) {
      const text = await redisCli(role.port, ['--scan', '--pattern', `${prefix}*`]);
      out.set(role.port, text.split('\n').filter(Boolean).length);
    }
    return out;
  };

  before(async function () {
    requireTool(this, 'redis-server', 'Debian package `redis-server`');
    requireTool(this, 'redis-cli', 'Debian package `redis-tools`');
    cluster = await startRedisCluster();
    // Two replicas of the service on one cluster, as in production; REDIS_URL unset (the harness sets one).
    const env = { REDIS_URL: '', REDIS_CLUSTER_NODES: cluster.seeds, CAMOUFLAGE_REDIS_PREFIX: prefix };
    first = await startTestService(camouflageService, env);
    second = await startTestService(camouflageService, { ...env, MIGRATE_ON_START: 'false' });
    a = new CamouflageServiceClient(address(first), insecure);
    b = new CamouflageServiceClient(address(second), insecure);
  });
  after(async () => {
    a?.close();
    b?.close();
    await first?.shutdown();
    await second?.shutdown();
    await cluster?.stop();
  });

  it('answers every RPC that touches Redis, its state spread over more than one master', async () => {
    // Assess over many sessions (every shard), a honeytoken minted on one replica and replayed on the other.
    const decisions: string[] = [];
    let token = '';
    for (let i = 0; i < 48; i++) {
      const answer = await assess(i % 2 === 0 ? a : b, request());
      expect(answer.error).to.equal(null);
      decisions.push(answer.response!.decisionId);
      if (token === '' && answer.response!.honeytoken !== '') token = answer.response!.honeytoken;
    }
    expect(token, 'an attack-tier decision served a honeytoken').to.not.equal('');
    const replay = await assess(b, request({ path: '/api/login', userAgent: 'Mozilla/5.0', headers: { authorization: `Bearer ${token}` } }));
    expect(replay.error).to.equal(null);
    expect(replay.response!.honeytokenTriggered).to.equal(true);
    expect(replay.response!.threatLevel).to.equal(10);

    // AssessStream: every item answered.
    const items: AssessStreamRequest[] = Array.from({ length: 20 }, (_, i) => ({ requestId: String(i), request: request() }));
    const stream = exchange<AssessStreamRequest, AssessStreamResponse>(a.assessStream(bearer(testKeys.camouflage)), items, true);
    expect((await stream.ended).error).to.equal(null);
    expect(stream.answers.filter((r) => r.result?.$case === 'response')).to.have.length(20);

    // RecordOutcome on the other replica, then a retry replays; GetBanditStats sums every shard.
    const recorded = await outcome(b, decisions[0]!, 'outcome-0');
    expect(recorded.error).to.equal(null);
    const again = await outcome(a, decisions[0]!, 'outcome-0');
    expect(again.error).to.equal(null);
    expect(again.response!.reward).to.equal(recorded.response!.reward);
    for (const id of decisions.slice(1, 10)) expect((await outcome(a, id, `o-${id}`)).error).to.equal(null);
    const attack = await stats(b);
    expect(attack.error).to.equal(null);
    const pulls = [...pullsOf(attack.response!).values()].reduce((x, y) => x + y, 0);
    expect(pulls, 'pulls summed over the shards').to.be.at.least(48);
    expect(attack.response!.arms.reduce((sum, arm) => sum + arm.rewardSum, 0), 'rewards summed over the shards').to.be.greaterThan(0);

    // RegisterDecoy on one replica, ListDecoys on the other.
    expect((await register(a, 'cluster-panel')).error).to.equal(null);
    const listed = await waitFor('the other replica lists the new decoy', async () => {
      const answer = await listDecoys(b);
      return answer.response?.decoys.some((d) => d.id === 'cluster-panel') ? answer : undefined;
    });
    expect(listed.error).to.equal(null);

    const spread = await keysPerMaster();
    const holding = [...spread.values()].filter((n) => n > 0);
    expect(holding.length, `keys per master: ${JSON.stringify([...spread])}`).to.be.at.least(2);
  });

  it('keeps answering while a master is SIGKILLed mid-load, and is fully back after the failover, without a restart', async () => {
    // What Redis kept: written, then replicated (offsets equal) before the kill.
    const before = await stats(a);
    expect(before.error).to.equal(null);
    const kept = await assess(a, request());
    expect(kept.error).to.equal(null);
    const keptOutcome = await outcome(a, kept.response!.decisionId, 'kept-outcome');
    expect(keptOutcome.error).to.equal(null);
    const roles = await cluster.roles();
    const victim = roles.find((r) => r.role === 'master')!;
    const replicaOf = roles.find((r) => r.masterId === victim.id)!;
    await waitFor('the replica has every write of its master', async () => {
      const master = await redisCli(victim.port, ['info', 'replication']);
      const replica = await redisCli(replicaOf.port, ['info', 'replication']);
      const offset = /master_repl_offset:(\d+)/.exec(master)?.[1];
      return offset !== undefined && replica.includes(`slave_repl_offset:${offset}`) ? true : undefined;
    }, 10_000);
    const statsBefore = pullsOf((await stats(a)).response!);

    // Load: Assess on both replicas, continuously, counting answers by status.
    const counts = { ok: 0, failed: 0, codes: new Set<number>() };
    let loading = true;
    const load = (async () => {
      for (let i = 0; loading && i < 100_000; i++) {
        const answer = await assess(i % 2 === 0 ? a : b, request());
        if (answer.error === null) counts.ok++;
        else {
          counts.failed++;
          counts.codes.add(answer.error.code ?? -1);
        }
      }
    })();
    await waitFor('load under way', async () => (counts.ok > 20 ? true : undefined));
    const killedAt = Date.now();
    await cluster.nodes.find((n) => n.port === victim.port)!.kill();
    const okAtKill = counts.ok;

    // Fully back: one Assess per shard (sessions chosen to cover all 16) and the other RPCs answer, on both replicas.
    const probeSessions = Array.from({ length: 64 }, (_, i) => `probe-${i}`);
    const bound = cluster.nodeTimeoutMs + 15_000;
    await waitFor(
      'every RPC answers again',
      async () => {
        for (const client of [a, b]) {
          for (const sessionKey of probeSessions) if ((await assess(client, request({ sessionKey }))).error !== null) return undefined;
          if ((await stats(client)).error !== null || (await listDecoys(client)).error !== null) return undefined;
        }
        return (await outcome(b, kept.response!.decisionId, 'kept-outcome')).error === null ? true : undefined;
      },
      bound,
      200,
    );
    const recoveredMs = Date.now() - killedAt;
    loading = false;
    await load;
    process.stderr.write(`      recovery after SIGKILL of a master: ${recoveredMs} ms (cluster-node-timeout ${cluster.nodeTimeoutMs} ms); load ok ${counts.ok}, failed ${counts.failed}\n`);

    // It kept answering during the outage (the shards of the other masters), and failures were UNAVAILABLE, never INTERNAL.
    expect(counts.ok).to.be.greaterThan(okAtKill);
    expect([...counts.codes].filter((code) => code !== grpcStatus.UNAVAILABLE && code !== grpcStatus.DEADLINE_EXCEEDED)).to.deep.equal([]);
    // The replica took over, and nothing Redis had kept is lost.
    expect((await cluster.roles()).some((r) => r.port === replicaOf.port && r.role === 'master')).to.equal(true);
    const replayed = await outcome(a, kept.response!.decisionId, 'kept-outcome');
    expect(replayed.error).to.equal(null);
    expect(replayed.response!.reward).to.equal(keptOutcome.response!.reward);
    const after = pullsOf((await stats(a)).response!);
    for (const [arm, pulls] of statsBefore) expect(after.get(arm) ?? 0, arm).to.be.at.least(pulls);
    expect((await listDecoys(a)).response!.decoys.some((d) => d.id === 'cluster-panel')).to.equal(true);
  });
});
