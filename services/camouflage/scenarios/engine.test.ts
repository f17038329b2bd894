import { expect } from 'chai';
import type Redis from 'ioredis';
import { createSeededRandom } from '../domain/bandit-math';
import { ServiceError } from '../../../platform/service-error';
import {
  CHROME_UA,
  T0_MS,
  browserRequest,
  connectTestRedis,
  deletePrefix,
  dumpPrefix,
  scannerRequest,
  uniquePrefix,
} from '../../../testing/camouflage-kit';
import { RedisCommandLog } from '../../../testing/redis-command-log';
import { AssessInput, AssessResult, CamouflageEngine, HoneytokenAlert } from '../store/engine';
import { HONEYTOKEN_PATTERN } from '../domain/honeytokens';
import { rewardForOutcome } from '../domain/outcome-reward';
import { FIRST_BYTE_DELAY_MS_MAX, TIERS, tierForLevel } from '../domain/tiers';

const MINUTE_MS = 60_000;

async function expectReason(promise: Promise<unknown>, reason: string, field?: string): Promise<void> {
  try {
    await promise;
  } catch (thrown) {
    expect(thrown, String(thrown)).to.be.instanceOf(ServiceError);
    const error = thrown as ServiceError;
    expect(error.reason, error.message).to.equal(reason);
    if (field !== undefined) expect(error.fieldViolations[0]?.field, error.message).to.equal(field);
    return;
  }
  expect.fail(`expected ${reason}${field === undefined ? '' : ` on ${field}`}`);
}

describe('camouflage engine (real Redis)', () => {
  let redis: Redis;
  let prefix: string;
  let alerts: HoneytokenAlert[];
  let engine: CamouflageEngine;
  const extraClients: Redis[] = [];

  beforeEach(() => {
    redis = connectTestRedis();
    prefix = uniquePrefix('engine');
    alerts = [];
    engine = new CamouflageEngine({ redis, keyPrefix: prefix, random: createSeededRandom(17), onHoneytokenAlert: (alert) => alerts.push(alert) });
  });

  afterEach(async () => {
    await deletePrefix(redis, prefix);
    for (const client of extraClients.splice(0)) await client.quit();
    await redis.quit();
  });

  /** Scanner requests in one session until a honeytoken decoy is served (UCB1 tries every arm within 9 pulls). */
  async function serveHoneytoken(sessionKey: string): Promise<AssessResult> {
    for (let i = 0; i < 20; i += 1) {
      const result = await engine.assess(scannerRequest({ sessionKey, path: `/.env.${i}`, timestampMs: T0_MS + i * 1_000 }));
      expect(result.tier).to.equal('attack');
      if (result.honeytoken !== undefined) return result;
    }
    return expect.fail('no honeytoken decoy served in 20 attack-tier decisions');
  }

  // Proves a human-paced browsing session stays benign while nikto/sqlmap probing of secrets scores 9-10.
  it('scores known scanner traffic high and ordinary browsing 0-2', async () => {
    const pages = ['/', '/products', '/products/42', '/products/42/reviews', '/cart', '/checkout', '/account', '/help/faq'];
    for (let i = 0; i < 40; i += 1) {
      const result = await engine.assess(
        browserRequest({ path: pages[i % pages.length] as string, timestampMs: T0_MS + i * 7_000, previousStatus: i === 0 ? undefined : 200 }),
      );
      expect(result.threatLevel, `browser request ${i}`).to.be.at.most(2);
      expect(result.tier).to.equal('benign');
      expect(result.honeytoken).to.equal(undefined);
    }
    const nikto = await engine.assess(scannerRequest({ sessionKey: 'nikto' }));
    expect(nikto.threatLevel).to.equal(10);
    expect(nikto.signals.map((s) => s.name)).to.include.members(['scanner-user-agent', 'sensitive-file-probe']);
    const sqlmap = await engine.assess(
      scannerRequest({ sessionKey: 'sqlmap', userAgent: 'sqlmap/1.7.2#stable (https://sqlmap.org)', path: '/index.php', query: "id=1%27%20AND%20SLEEP(5)--%20-" }),
    );
    expect(sqlmap.threatLevel).to.be.at.least(9);
    expect(sqlmap.tier).to.equal('attack');
  });

  // Proves a scripted enumeration session escalates as its pattern emerges, and falls back after quiet time.
  it('escalates a scanner-like session and decays after quiet time', async () => {
    const levels: number[] = [];
    let last: AssessResult | undefined;
    for (let i = 0; i < 260; i += 1) {
      last = await engine.assess({
        clientIp: '192.0.2.44',
        method: 'GET',
        path: `/${['admin', 'backup', 'old', 'test', 'dev', 'api', 'v1', 'v2', 'static', 'uploads'][i % 10]}/${i}`,
        query: '',
        userAgent: 'python-requests/2.31.0',
        headers: { host: 'shop.example.com', accept: '*/*', 'accept-encoding': 'gzip, deflate' },
        sessionKey: 'enumerator',
        timestampMs: T0_MS + i * 50, // 20 requests/s, injected
        previousStatus: i === 0 ? undefined : 404,
      });
      levels.push(last.threatLevel);
    }
    expect(levels[0]).to.equal(1); // only the scripted-client hint at first
    for (let i = 1; i < levels.length; i += 1) expect(levels[i], `request ${i}`).to.be.at.least(levels[i - 1] as number);
    expect(tierForLevel(levels[levels.length - 1] as number)).to.equal('likely_bot');
    expect(last?.signals.map((s) => s.name)).to.include.members(['not-found-ratio', 'path-diversity', 'request-rate']);
    expect(levels.indexOf(4)).to.be.below(12); // the 404 ratio is the first pattern to emerge

    const quiet = (minutes: number) =>
      engine.assess(browserRequest({ userAgent: 'python-requests/2.31.0', headers: { host: 'a' }, sessionKey: 'enumerator', path: '/', timestampMs: T0_MS + 260 * 50 + minutes * MINUTE_MS, previousStatus: 200 }));
    const tenMinutes = await quiet(10);
    expect(tenMinutes.threatLevel).to.be.within(3, 5); // partly decayed: still suspicious
    expect(tenMinutes.signals.map((s) => s.name)).to.not.include('request-rate');
    const hour = await quiet(70);
    expect(hour.threatLevel).to.be.at.most(2);
    expect(hour.tier).to.equal('benign');
  });

  // Proves the session memory: a level-10 session is remembered at 0.8×, halving every 10 quiet minutes.
  it('remembers an earlier attack level and forgets it with a 10-minute half-life', async () => {
    expect((await engine.assess(scannerRequest({ sessionKey: 'returning' }))).threatLevel).to.equal(10);
    const clean = (afterMs: number) => engine.assess(browserRequest({ sessionKey: 'returning', timestampMs: T0_MS + afterMs, previousStatus: 200 }));
    const soon = await clean(1_000);
    expect(soon.threatLevel).to.equal(7); // floor(0.8 × 10 × 2^(-1 s / 600 s)) = floor(7.99)
    expect(soon.signals).to.deep.equal([soon.signals.find((s) => s.name === 'earlier-level')]);
    expect((await clean(10 * MINUTE_MS)).threatLevel).to.equal(4); // floor(0.8 × 10 × 2^-1) = 4
    expect((await clean(40 * MINUTE_MS)).threatLevel).to.equal(0); // floor(0.8 × 10 × 2^-4) = 0
  });

  // Proves the tier rules on many random inputs: tier matches level, benign never gets secrets, delays bounded.
  it('never serves honeytokens or credentials to tiers 0-2, for many random inputs', async () => {
    const random = createSeededRandom(2024);
    const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)] as T;
    const agents = [CHROME_UA, 'curl/8.5.0', '', 'python-requests/2.31.0', 'sqlmap/1.7', 'Mozilla/5.0 zgrab/0.x', 'Go-http-client/1.1'];
    const paths = ['/', '/products/1', '/.env', '/wp-login.php', '/api/v1/users', '/static/app.js', '/.git/config', '/backup.zip', '/search'];
    const queries = ['', 'q=shoes', "id=1'%20OR%201=1--", 'page=3', 'file=../../etc/passwd', 'x=%7B%7B7*7%7D%7D'];
    const tiersSeen = new Set<string>();
    const catalog = new Map((await engine.listDecoys({ pageSize: 200 })).decoys.map((decoy) => [decoy.id, decoy]));
    for (let i = 0; i < 240; i += 1) {
      const headers: Record<string, string> = random() < 0.5 ? { ...browserRequest().headers } : { host: pick(['a.example', '10.0.0.1']) };
      const result = await engine.assess({
        clientIp: '198.51.100.7',
        method: pick(['GET', 'GET', 'POST', 'HEAD']),
        path: pick(paths),
        query: pick(queries),
        userAgent: pick(agents),
        headers,
        sessionKey: `random-${Math.floor(random() * 12)}`,
        timestampMs: T0_MS + i * 900,
        previousStatus: pick([undefined, 200, 404, 403]),
      });
      tiersSeen.add(result.tier);
      expect(result.tier).to.equal(tierForLevel(result.threatLevel));
      expect(result.strategy.responseDelayMs).to.be.at.most(FIRST_BYTE_DELAY_MS_MAX);
      expect(catalog.get(result.decoy.id)?.tiers).to.include(result.tier);
      expect(result.decoyDefinition).to.deep.equal(catalog.get(result.decoy.id));
      if (result.threatLevel <= 2) {
        expect(result.honeytoken).to.equal(undefined);
        expect(result.decoy.carriesHoneytoken).to.equal(false);
        expect(result.decoy.carriesCredentials).to.equal(false);
        expect(result.decoy.content).to.not.match(HONEYTOKEN_PATTERN);
      }
      if (result.decoy.carriesHoneytoken) expect(result.decoy.content).to.contain(result.honeytoken?.token);
    }
    expect([...tiersSeen].sort()).to.deep.equal([...TIERS].sort());
  });

  // Proves the honeytoken round trip: minted → replayed in a later request → level 10, alert, decoy credited once.
  it('turns a replayed honeytoken into level 10, an alert and a credit for its decoy', async () => {
    const origin = await serveHoneytoken('leaker');
    const token = origin.honeytoken?.token as string;
    expect(origin.decoy.content).to.contain(token);
    const before = (await engine.getBanditStats('attack')).arms.find((arm) => arm.decoyId === origin.decoy.id);

    const replay = await engine.assess(
      browserRequest({ userAgent: 'curl/8.5.0', sessionKey: 'thief', headers: { host: 'api.example.com', authorization: `Bearer ${token}` }, timestampMs: T0_MS + 3_600_000 }),
    );
    expect(replay.threatLevel).to.equal(10);
    expect(replay.tier).to.equal('attack');
    expect(replay.signals.map((s) => s.name)).to.include('honeytoken-replayed');
    expect(replay.honeytokenHits).to.deep.equal([
      { tokenPrefix: `${token.slice(0, 8)}…`, originDecisionId: origin.decisionId, originDecoyId: origin.decoy.id, location: 'header:authorization', firstUse: true },
    ]);
    expect(alerts).to.have.length(1);
    expect(alerts[0]).to.deep.include({ originDecisionId: origin.decisionId, originDecoyId: origin.decoy.id, originTier: 'attack', decisionId: replay.decisionId, sessionKey: 'thief', firstUse: true, creditedReward: 1 });
    expect(JSON.stringify(alerts)).to.not.contain(token);

    const after = (await engine.getBanditStats('attack')).arms.find((arm) => arm.decoyId === origin.decoy.id);
    expect((after?.rewardSum ?? 0) - (before?.rewardSum ?? 0)).to.be.closeTo(1, 1e-9);

    // A second sighting alerts again but credits nothing more; a later outcome cannot push the pull past 1.0.
    await engine.assess(browserRequest({ sessionKey: 'thief', query: `key=${token}`, timestampMs: T0_MS + 3_700_000 }));
    expect(alerts).to.have.length(2);
    expect(alerts[1]).to.deep.include({ firstUse: false, creditedReward: 0 });
    const outcome = await engine.recordOutcome(origin.decisionId, { interactions: 3, dwellSeconds: 40, honeytokenUsed: false, credentialsSubmitted: false });
    expect(outcome).to.deep.include({ appliedReward: 0, creditedByHoneytoken: true, replayed: false });
    const final = (await engine.getBanditStats('attack')).arms.find((arm) => arm.decoyId === origin.decoy.id);
    expect(final?.rewardSum).to.be.closeTo(after?.rewardSum ?? -1, 1e-9);
    expect(final?.outcomes).to.equal((after?.outcomes ?? 0) + 1);
  });

  // Proves a failed honeytoken credit (after the decision was committed) is reported, not thrown: Assess still answers.
  it('still assesses when crediting a returning honeytoken fails', async () => {
    const origin = await serveHoneytoken('leaker-broken');
    const token = origin.honeytoken?.token as string;
    // The credit script writes the origin decision's state hash last: make that write fail (WRONGTYPE).
    await redis.set(`${prefix}dec:${origin.decisionId}:s`, 'not-a-hash');
    const creditErrors: { error: unknown; origin: { decisionId: string; decoyId: string } }[] = [];
    const reporting = new CamouflageEngine({
      redis,
      keyPrefix: prefix,
      random: createSeededRandom(5),
      onHoneytokenAlert: (alert) => alerts.push(alert),
      onHoneytokenCreditError: (error, from) => creditErrors.push({ error, origin: from }),
    });
    const replay = await reporting.assess(browserRequest({ sessionKey: 'thief-2', headers: { host: 'api.example.com', authorization: `Bearer ${token}` } }));
    expect(replay.threatLevel).to.equal(10);
    expect(replay.honeytokenHits).to.have.length(1);
    expect(replay.honeytokenHits[0]).to.deep.include({ originDecisionId: origin.decisionId, firstUse: false });
    expect(creditErrors).to.have.length(1);
    expect(creditErrors[0]?.origin).to.deep.equal({ decisionId: origin.decisionId, decoyId: origin.decoy.id });
    expect(String(creditErrors[0]?.error)).to.match(/WRONGTYPE/);
    expect(alerts).to.have.length(1);
    expect(alerts[0]).to.deep.include({ originDecisionId: origin.decisionId, firstUse: false, creditedReward: 0 });
    // The assessment itself was committed: its decision takes an outcome.
    expect((await reporting.recordOutcome(replay.decisionId, { interactions: 1, dwellSeconds: 1, honeytokenUsed: false, credentialsSubmitted: false })).replayed).to.equal(false);
  });

  // Proves an outcome first, then the honeytoken: the credit tops the pull up to exactly 1.0.
  it('credits only the remainder to 1.0 when the outcome came first', async () => {
    const origin = await serveHoneytoken('leaker-2');
    const outcome = await engine.recordOutcome(origin.decisionId, { interactions: 5, dwellSeconds: 60, honeytokenUsed: false, credentialsSubmitted: false });
    expect(outcome.appliedReward).to.be.closeTo(outcome.reward, 1e-6);
    await engine.assess(browserRequest({ sessionKey: 'thief-2', bodyExcerpt: `token=${origin.honeytoken?.token}`, method: 'POST', timestampMs: T0_MS + MINUTE_MS }));
    expect(alerts[0]?.creditedReward).to.be.closeTo(1 - outcome.reward, 1e-6);
  });

  // Proves the memory bound: a session's first 64 tokens live for the honeytoken TTL, later ones only as long as a decision.
  it('bounds long-lived honeytokens per session', async () => {
    const tokens: AssessResult[] = [];
    for (let i = 0; i < 140 && tokens.length < 70; i += 1) {
      const result = await engine.assess(scannerRequest({ sessionKey: 'hammer', path: `/.env.${i}`, timestampMs: T0_MS + i }));
      if (result.honeytoken !== undefined) tokens.push(result);
    }
    expect(tokens.length).to.equal(70);
    const longTtl = await redis.pttl(`${prefix}ht:${tokens[63]?.honeytoken?.token}`);
    const shortTtl = await redis.pttl(`${prefix}ht:${tokens[64]?.honeytoken?.token}`);
    expect(longTtl).to.be.above(900_000);
    expect(shortTtl).to.be.within(1, 900_000);
    expect((tokens[64]?.honeytoken?.expiresAtMs ?? 0) - (tokens[64]?.assessedAtMs ?? 0)).to.equal(900_000);
    // Still a honeytoken while it lives:
    const replay = await engine.assess(browserRequest({ sessionKey: 'x', query: `k=${tokens[69]?.honeytoken?.token}` }));
    expect(replay.threatLevel).to.equal(10);
  });

  // Proves two engine instances on two Redis clients share decisions, outcomes and learned state.
  it('shares learning between two engine instances', async () => {
    const otherRedis = connectTestRedis();
    extraClients.push(otherRedis);
    const decisions: AssessResult[] = [];
    for (let i = 0; i < 12; i += 1) decisions.push(await engine.assess(scannerRequest({ sessionKey: `a-${i}`, timestampMs: T0_MS + i })));
    for (const decision of decisions.slice(0, 11)) {
      const engaged = decision.decoy.id === decisions[0]?.decoy.id;
      await engine.recordOutcome(decision.decisionId, { interactions: engaged ? 20 : 0, dwellSeconds: engaged ? 300 : 0, honeytokenUsed: false, credentialsSubmitted: engaged });
    }
    const other = new CamouflageEngine({ redis: otherRedis, keyPrefix: prefix, random: createSeededRandom(99) });
    await other.start();
    const statsA = await engine.getBanditStats('attack');
    expect(await other.getBanditStats('attack')).to.deep.equal(statsA);
    expect(statsA.totalPulls).to.equal(12);

    // B records the outcome of a decision A made; A sees it.
    const last = decisions[11] as AssessResult;
    await other.recordOutcome(last.decisionId, { interactions: 1, dwellSeconds: 1, honeytokenUsed: false, credentialsSubmitted: false });
    await expectReason(engine.recordOutcome(last.decisionId, { interactions: 1, dwellSeconds: 1, honeytokenUsed: false, credentialsSubmitted: false }), 'OUTCOME_ALREADY_RECORDED');
    const shared = await engine.getBanditStats('attack');
    expect(shared.arms.reduce((sum, arm) => sum + arm.outcomes, 0)).to.equal(12);

    // B's next choice is the arg-max of the shared indices, with that index as its recorded score.
    const best = [...shared.arms].sort((x, y) => (y.ucb1Index ?? Infinity) - (x.ucb1Index ?? Infinity))[0];
    const choice = await other.assess(scannerRequest({ sessionKey: 'b-1', timestampMs: T0_MS + 100 }));
    expect(choice.tier).to.equal('attack');
    if (best?.ucb1Index === null) {
      expect(choice.selectionReason).to.equal('unplayed');
    } else {
      expect(choice.decoy.id).to.equal(best?.decoyId);
      expect(choice.selectionScore).to.be.closeTo(best?.ucb1Index as number, 1e-12);
    }
  });

  // Proves a burst of concurrent selections on a tier whose cached bandit state went stale shares one fetch of it
  // (single-flight), and that a failed fetch fails only the selections that shared it: the next burst fetches anew.
  it('refreshes a stale tier once for a burst of selections, and again after a failed refresh', async () => {
    let nowMs = T0_MS;
    const clocked = new CamouflageEngine({ redis, keyPrefix: prefix, random: createSeededRandom(5), now: () => nowMs });
    const log = await RedisCommandLog.open(redis, prefix);
    const tierKey = `${prefix}bandit:attack`;
    const fetches = (commands: string[][]) => commands.filter((command) => command[0] === 'HGETALL' && command[1] === tierKey).length;
    const burst = (label: string) =>
      Promise.allSettled(Array.from({ length: 8 }, (_, i) => clocked.assess(scannerRequest({ sessionKey: `${label}-${i}`, path: `/.env.${i}` }))));
    try {
      await clocked.start();
      expect((await clocked.assess(scannerRequest())).tier).to.equal('attack');
      nowMs += 5_000; // past statsMaxAgeMs (1 s): every selection must refresh the tier first

      let outcomes: PromiseSettledResult<AssessResult>[] = [];
      let commands = await log.during(async () => {
        outcomes = await burst('fresh');
      });
      expect(outcomes.map((outcome) => outcome.status)).to.deep.equal(Array(8).fill('fulfilled'));
      expect(fetches(commands)).to.equal(1);

      // A tier hash of the wrong type makes the refresh fail (WRONGTYPE): the burst sharing it fails, typed.
      nowMs += 5_000;
      const state = await redis.hgetall(tierKey);
      await redis.del(tierKey);
      await redis.set(tierKey, 'not a hash');
      commands = await log.during(async () => {
        outcomes = await burst('broken');
      });
      expect(fetches(commands)).to.equal(1);
      for (const outcome of outcomes) {
        expect(outcome.status).to.equal('rejected');
        expect(((outcome as PromiseRejectedResult).reason as ServiceError).reason).to.equal('REDIS_UNAVAILABLE');
      }

      // Repaired, the next burst is not answered from the failed refresh: it fetches once more and succeeds.
      await redis.del(tierKey);
      await redis.hset(tierKey, state);
      commands = await log.during(async () => {
        outcomes = await burst('repaired');
      });
      expect(outcomes.map((outcome) => outcome.status)).to.deep.equal(Array(8).fill('fulfilled'));
      expect(fetches(commands)).to.equal(1);
    } finally {
      await log.close();
    }
  });

  // Proves the reward formula, exactly-once recording under concurrency, and idempotent replay.
  it('records each outcome exactly once with the documented reward', async () => {
    expect(rewardForOutcome({ interactions: 0, dwellSeconds: 0, honeytokenUsed: false, credentialsSubmitted: false })).to.equal(0);
    expect(rewardForOutcome({ interactions: 0, dwellSeconds: 0, honeytokenUsed: true, credentialsSubmitted: false })).to.equal(1);
    expect(rewardForOutcome({ interactions: 20, dwellSeconds: 300, honeytokenUsed: false, credentialsSubmitted: true })).to.be.closeTo(1, 1e-12);
    // Reaching a real asset means the decoy failed: nothing, whatever the engagement.
    expect(rewardForOutcome({ interactions: 20, dwellSeconds: 300, honeytokenUsed: true, credentialsSubmitted: true, reachedRealAsset: true })).to.equal(0);
    const expected = 0.35 * (Math.log(6) / Math.log(21)) + 0.35 * (Math.log(61) / Math.log(301));
    expect(rewardForOutcome({ interactions: 5, dwellSeconds: 60, honeytokenUsed: false, credentialsSubmitted: false })).to.be.closeTo(expected, 1e-12);

    const decision = await engine.assess(scannerRequest());
    const outcome = { interactions: 5, dwellSeconds: 60, honeytokenUsed: false, credentialsSubmitted: false };
    const attempts = await Promise.allSettled(Array.from({ length: 6 }, () => engine.recordOutcome(decision.decisionId, outcome)));
    const fulfilled = attempts.filter((a) => a.status === 'fulfilled');
    expect(fulfilled).to.have.length(1);
    for (const attempt of attempts.filter((a) => a.status === 'rejected')) {
      expect(((attempt as PromiseRejectedResult).reason as ServiceError).reason).to.equal('OUTCOME_ALREADY_RECORDED');
    }
    const arm = (await engine.getBanditStats('attack')).arms.find((a) => a.decoyId === decision.decoy.id);
    expect(arm).to.deep.include({ pulls: 1, outcomes: 1 });
    expect(arm?.rewardSum).to.be.closeTo(Math.round(expected * 1e6) / 1e6, 1e-9);

    const keyed = await engine.assess(scannerRequest({ sessionKey: 'keyed' }));
    const first = await engine.recordOutcome(keyed.decisionId, outcome, { idempotencyKey: 'out-1' });
    const retry = await engine.recordOutcome(keyed.decisionId, outcome, { idempotencyKey: 'out-1' });
    expect(retry).to.deep.include({ replayed: true, reward: first.reward, appliedReward: first.appliedReward });
    await expectReason(engine.recordOutcome(keyed.decisionId, { ...outcome, interactions: 6 }, { idempotencyKey: 'out-1' }), 'IDEMPOTENCY_KEY_REUSED', 'idempotency_key');
    // The offline-evaluation row comes back from what Assess stored: action, context, policy, propensity.
    expect(first).to.deep.include({ decoyId: keyed.decoy.id, tier: 'attack', policy: 'ucb1', selectionProbability: keyed.selectionProbability, replayed: false });
    expect(first.arm).to.deep.equal((await engine.getBanditStats('attack', { policy: 'ucb1' })).arms.find((a) => a.decoyId === keyed.decoy.id));
    expect(retry.arm).to.deep.equal(first.arm);
    const ttl = await redis.pttl(`${prefix}dec:${keyed.decisionId}`);
    expect(ttl).to.be.within(1, 900_000);
  });

  // Proves Thompson sampling is selectable per call and its propensity and sample are recorded.
  it('decides with Thompson sampling when asked', async () => {
    const result = await engine.assess(scannerRequest(), { policy: 'thompson' });
    expect(result.policy).to.equal('thompson');
    expect(result.propensityMethod).to.equal('monte_carlo');
    expect(result.selectionProbability).to.be.within(0, 1);
    expect(result.selectionScore).to.be.within(0, 1);
    const recorded = await engine.recordOutcome(result.decisionId, { interactions: 1, dwellSeconds: 1, honeytokenUsed: false, credentialsSubmitted: false });
    expect(recorded).to.deep.include({ policy: 'thompson', selectionProbability: result.selectionProbability, decoyId: result.decoy.id });
    expect((await engine.getBanditStats('attack', { policy: 'thompson' })).policy).to.equal('thompson');
  });

  // Proves every operation refuses bad input with a typed error and leaves Redis exactly as it was.
  it('rejects bad input on every operation without changing state', async () => {
    const decision = await engine.assess(scannerRequest());
    await engine.recordOutcome(decision.decisionId, { interactions: 1, dwellSeconds: 2, honeytokenUsed: false, credentialsSubmitted: false });
    const open = await engine.assess(scannerRequest({ sessionKey: 'open' }));
    const before = await dumpPrefix(redis, prefix);
    const good = { interactions: 1, dwellSeconds: 1, honeytokenUsed: false, credentialsSubmitted: false };

    const badAssess: [unknown, string][] = [
      [{ ...scannerRequest(), clientIp: '999.1.1.1' }, 'client_ip'],
      [{ ...scannerRequest(), sessionKey: '' }, 'session_key'],
      [{ ...scannerRequest(), timestampMs: -1 }, 'timestamp'],
      [{ ...scannerRequest(), previousStatus: 1_000 }, 'previous_status'],
      [{ ...scannerRequest(), headers: [] }, 'headers'],
      [{ ...scannerRequest(), method: '' }, 'method'],
    ];
    for (const [input, field] of badAssess) await expectReason(engine.assess(input as AssessInput), 'INVALID_ARGUMENT', field);
    await expectReason(engine.assess(scannerRequest(), { policy: 'epsilon' as 'ucb1' }), 'INVALID_ARGUMENT', 'policy');

    await expectReason(engine.recordOutcome('', good), 'INVALID_ARGUMENT', 'decision_id');
    await expectReason(engine.recordOutcome('not-a-uuid', good), 'INVALID_ARGUMENT', 'decision_id');
    await expectReason(engine.recordOutcome('00000000-0000-4000-8000-000000000000', good), 'DECISION_NOT_FOUND');
    await expectReason(engine.recordOutcome(decision.decisionId, good), 'OUTCOME_ALREADY_RECORDED');
    await expectReason(engine.recordOutcome(open.decisionId, { ...good, interactions: -1 }), 'INVALID_ARGUMENT', 'engagement.interactions');
    await expectReason(engine.recordOutcome(open.decisionId, { ...good, interactions: 1.5 }), 'INVALID_ARGUMENT', 'engagement.interactions');
    await expectReason(engine.recordOutcome(open.decisionId, { ...good, dwellSeconds: 86_401 }), 'INVALID_ARGUMENT', 'engagement.dwell');
    await expectReason(engine.recordOutcome(open.decisionId, { ...good, dwellSeconds: Number.NaN }), 'INVALID_ARGUMENT', 'engagement.dwell');
    await expectReason(engine.recordOutcome(open.decisionId, { ...good, honeytokenUsed: 'yes' as unknown as boolean }), 'INVALID_ARGUMENT', 'engagement.honeytoken_used');
    await expectReason(engine.recordOutcome(open.decisionId, good, { idempotencyKey: 'x'.repeat(129) }), 'INVALID_ARGUMENT', 'idempotency_key');

    await expectReason(engine.getBanditStats('paranoid' as 'attack'), 'INVALID_ARGUMENT', 'tier');
    await expectReason(engine.getBanditStats('attack', { policy: 'greedy' as 'ucb1' }), 'INVALID_ARGUMENT', 'policy');
    await expectReason(engine.registerDecoy({ id: 'x', kind: 'tarpit', tiers: ['attack'], template: 'x' }), 'INVALID_ARGUMENT', 'decoy.id');
    await expectReason(engine.listDecoys({ pageSize: -5 }), 'INVALID_ARGUMENT', 'page_size');

    expect(await dumpPrefix(redis, prefix)).to.deep.equal(before);
    // ... and the open decision still takes its (first) outcome.
    expect((await engine.recordOutcome(open.decisionId, good)).replayed).to.equal(false);
  });

  // Proves engine options are validated up front with the option named.
  it('validates its configuration', () => {
    expect(() => new CamouflageEngine({ redis, keyPrefix: '' })).to.throw(ServiceError, /keyPrefix/);
    expect(() => new CamouflageEngine({ redis, decisionTtlSeconds: 0 })).to.throw(ServiceError, /decisionTtlSeconds/);
    expect(() => new CamouflageEngine({ redis, profile: { rateHalfLifeSeconds: -1 } })).to.throw(ServiceError, /rateHalfLifeSeconds/);
    expect(() => new CamouflageEngine({ redis, policy: 'random' as 'ucb1' })).to.throw(ServiceError, /policy/);
  });
});
