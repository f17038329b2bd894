import { expect } from 'chai';
import type Redis from 'ioredis';
import { AssessScript } from '../store/assess-script';
import { createSeededRandom } from '../domain/bandit-math';
import { serviceErrorFrom } from '../errors';
import { T0_MS, browserRequest, connectTestRedis, deletePrefix, keysUnder, uniquePrefix } from '../../../testing/camouflage-kit';
import { CamouflageEngine } from '../store/engine';
import { CamouflageKeys } from '../store/redis-keys';
import { PROFILE_DEFAULTS } from '../domain/session-profile';
import { profileArgs } from '../store/session-profile';
import { compileBehaviourRules } from '../domain/threat-signals';
import { TIERS, tierForLevel } from '../domain/tiers';

describe('camouflage assess script', () => {
  let redis: Redis;
  let prefix: string;
  let keys: CamouflageKeys;

  beforeEach(() => {
    redis = connectTestRedis();
    prefix = uniquePrefix('script');
    keys = new CamouflageKeys(prefix);
  });

  afterEach(async () => {
    await deletePrefix(redis, prefix);
    await redis.quit();
  });

  // Proves Lua and JavaScript agree on the level exactly at every integer threshold (the engine asserts it per request).
  it('computes the same level as JavaScript on threshold boundaries', async () => {
    const engine = new CamouflageEngine({ redis, keyPrefix: prefix, random: createSeededRandom(4) });
    const rules = compileBehaviourRules(PROFILE_DEFAULTS);
    const boundaries: Record<string, number>[] = [];
    for (const step of rules.rateCounterMilli) for (const delta of [-1, 0]) boundaries.push({ rc: step.atLeast - 1_000 + delta });
    for (const step of rules.authFailuresMilli) for (const delta of [-1, 0]) boundaries.push({ sa: step.atLeast + delta });
    for (const step of rules.notFoundPercent) {
      for (const delta of [-1, 0]) boundaries.push({ sn: 100_000, s4: step.atLeast * 1_000 + delta });
    }
    boundaries.push({ sn: rules.statusSamplesMinMilli - 1, s4: rules.statusSamplesMinMilli - 1 }, { sn: rules.statusSamplesMinMilli, s4: rules.statusSamplesMinMilli });
    for (const lv of [6_249, 6_250, 10_000, 1_249, 1_250]) boundaries.push({ lv });
    const seen = new Set<number>();
    const levels: number[] = [];
    for (const [i, fields] of boundaries.entries()) {
      const sessionKey = `boundary-${i}`;
      await redis.hset(keys.profile(sessionKey), { t: T0_MS, lt: T0_MS, n: 1, f: T0_MS, e: T0_MS + 3_600_000, ...fields });
      await redis.pexpire(keys.profile(sessionKey), 60_000);
      // Same timestamp: dt = 0, so stored values are read back undecayed, exactly on the boundary.
      const result = await engine.assess(browserRequest({ sessionKey, timestampMs: T0_MS }));
      expect(result.tier).to.equal(tierForLevel(result.threatLevel));
      seen.add(result.threatLevel);
      levels.push(result.threatLevel);
    }
    expect(seen.size).to.be.greaterThan(3);
    // One below each rate threshold scores less than exactly on it: the boundary is where both sides put it.
    for (let i = 0; i < rules.rateCounterMilli.length * 2; i += 2) expect(levels[i], `rate pair ${i}`).to.be.below(levels[i + 1] as number);
    expect(levels.slice(-5)).to.deep.equal([4, 5, 8, 0, 1]); // carry = floor(lv × 4 / 5000)
  });

  // Proves a request landing on a tier without a prepared candidate is refused as INTERNAL, writing no decision and no TTL-less key.
  it('refuses a tier without a candidate and leaves no key without a TTL', async () => {
    const script = new AssessScript({ rules: compileBehaviourRules(PROFILE_DEFAULTS), profile: PROFILE_DEFAULTS, decisionTtlSeconds: 900, honeytokenTtlSeconds: 3_600 });
    let error: unknown;
    try {
      await script.run(redis, {
        profileKey: keys.profile('s'),
        pathsKey: keys.profilePaths('s'),
        catalogMetaKey: keys.decoysMeta(),
        banditKeys: TIERS.map((tier) => keys.bandit(tier)),
        decisionKey: keys.decision('d'),
        decisionId: 'd',
        profileArgs: profileArgs({ timestampMs: T0_MS, path: '/' }),
        staticPoints: 10, // lands on attack ...
        candidates: [{ decoyId: 'nginx-404', decisionJsonPrefix: '{"t":"benign"' }, undefined, undefined, undefined], // ... but only benign is prepared
        lookupKeys: [],
        returnStateFor: new Set(),
      });
    } catch (thrown) {
      error = thrown;
    }
    // A bug, not a Redis failure: the engine reports it INTERNAL (not REDIS_UNAVAILABLE).
    expect(serviceErrorFrom(error).reason).to.equal('INTERNAL');
    expect(await redis.exists(keys.decision('d'))).to.equal(0);
    for (const key of await keysUnder(redis, prefix)) expect(await redis.pttl(key), key).to.be.above(0);
  });
});
