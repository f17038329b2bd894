import { expect } from 'chai';
import type Redis from 'ioredis';
import { armField } from '../domain/bandit';
import { BanditStore } from '../store/bandit-store';
import {
  createSeededRandom,
  sampleBeta,
  selectThompson,
  selectUcb1,
  thompsonSelectionProbabilities,
  ucb1Index,
} from '../domain/bandit-math';
import { connectTestRedis, deletePrefix, uniquePrefix } from '../../../testing/camouflage-kit';
import { CamouflageKeys } from '../store/redis-keys';

/**
 * Hand-computed state: N = 10 + 20 + 5 = 35, ln 35 = 3.5553480614894135.
 *   a: 7.5/10 = 0.75 + sqrt(2·3.5553480614894135/10) = 0.75 + 0.8432494365831991 = 1.593249436583199
 *   b: 10/20  = 0.50 + sqrt(2·3.5553480614894135/20) = 0.50 + 0.5962673948397156 = 1.0962673948397157
 *   c: 1/5    = 0.20 + sqrt(2·3.5553480614894135/5)  = 0.20 + 1.1925347896794312 = 1.3925347896794311
 */
const HAND = {
  arms: ['arm-a', 'arm-b', 'arm-c'],
  pulls: [10, 20, 5],
  rewards: [7.5, 10, 1],
  indices: [1.593249436583199, 1.0962673948397157, 1.3925347896794311],
};

describe('camouflage bandit math', () => {
  // Proves the UCB1 index is exactly mean + sqrt(2 ln N / n) on a state computed by hand.
  it('computes the UCB1 index exactly on a hand-computed state', () => {
    HAND.arms.forEach((_, i) => {
      expect(ucb1Index(HAND.rewards[i] as number, HAND.pulls[i] as number, 35)).to.be.closeTo(HAND.indices[i] as number, 1e-12);
    });
    const choice = selectUcb1(HAND.pulls, HAND.rewards, createSeededRandom(1));
    expect(choice).to.deep.include({ arm: 0, probability: 1, reason: 'max_index' });
    expect(choice.score).to.be.closeTo(HAND.indices[0] as number, 1e-12);
  });

  // Proves UCB1 plays every unplayed arm before any played one, uniformly, recording 1/unplayed.
  it('plays unplayed arms first, uniformly among them', () => {
    const random = createSeededRandom(3);
    const counts = [0, 0, 0, 0];
    for (let i = 0; i < 4_000; i += 1) {
      const choice = selectUcb1([5, 0, 9, 0], [5, 0, 9, 0], random);
      expect([1, 3]).to.include(choice.arm);
      expect(choice.reason).to.equal('unplayed');
      expect(choice.probability).to.equal(0.5);
      counts[choice.arm] = (counts[choice.arm] as number) + 1;
    }
    expect(counts[1]).to.be.within(1_800, 2_200);
    // Playing in sequence with pulls counted: each arm once before any arm twice.
    const pulls = [0, 0, 0, 0, 0];
    for (let round = 0; round < 5; round += 1) pulls[selectUcb1(pulls, [0, 0, 0, 0, 0], random).arm] += 1;
    expect(pulls).to.deep.equal([1, 1, 1, 1, 1]);
  });

  // Proves ties are broken uniformly and the recorded probability is 1/ties.
  it('breaks exact ties uniformly and records 1/ties', () => {
    const random = createSeededRandom(11);
    const counts = [0, 0, 0];
    for (let i = 0; i < 3_000; i += 1) {
      const choice = selectUcb1([4, 4, 4], [2, 2, 2], random);
      expect(choice.probability).to.be.closeTo(1 / 3, 1e-15);
      counts[choice.arm] = (counts[choice.arm] as number) + 1;
    }
    for (const count of counts) expect(count).to.be.within(850, 1_150);
  });

  // Proves Beta sampling has the right mean and Thompson probabilities favour the better arm and sum to 1.
  it('samples Beta posteriors and estimates Thompson propensities', () => {
    const random = createSeededRandom(5);
    let sum = 0;
    for (let i = 0; i < 20_000; i += 1) sum += sampleBeta(3, 7, random);
    expect(sum / 20_000).to.be.closeTo(0.3, 0.01);
    const probabilities = thompsonSelectionProbabilities([50, 50, 50], [40, 25, 10], 2_000, random);
    expect(probabilities.reduce((a, b) => a + b, 0)).to.be.closeTo(1, 1e-12);
    expect(probabilities[0]).to.be.greaterThan(0.95);
    for (const p of probabilities) expect(p).to.be.greaterThan(0);
    const choice = selectThompson([50, 50, 50], [40, 25, 10], random);
    expect(choice.sample).to.be.within(0, 1);
  });
});

describe('camouflage bandit store (Redis)', () => {
  let redis: Redis;
  let prefix: string;
  let keys: CamouflageKeys;

  beforeEach(() => {
    redis = connectTestRedis();
    prefix = uniquePrefix('bandit');
    keys = new CamouflageKeys(prefix);
  });

  afterEach(async () => {
    await deletePrefix(redis, prefix);
    await redis.quit();
  });

  async function seedHandState(): Promise<void> {
    const fields: Record<string, string> = {};
    HAND.arms.forEach((arm, i) => {
      fields[armField(arm, 'p')] = String(HAND.pulls[i]);
      fields[armField(arm, 'r')] = String((HAND.rewards[i] as number) * 1_000_000);
      fields[armField(arm, 'o')] = String(HAND.pulls[i]);
    });
    await redis.hset(keys.bandit('attack'), fields);
  }

  // Proves GetBanditStats reads Redis state (micro-unit rewards) and reports pulls, mean and the exact index.
  it('reports pulls, mean reward and the hand-computed UCB1 index from Redis', async () => {
    await seedHandState();
    const store = new BanditStore(redis, keys, { random: createSeededRandom(1) });
    const stats = await store.getStats('attack', [...HAND.arms, 'arm-new'], 'ucb1');
    expect(stats.totalPulls).to.equal(35);
    const [a, b, c, fresh] = stats.arms;
    expect(a).to.deep.include({ decoyId: 'arm-a', pulls: 10, outcomes: 10, rewardSum: 7.5, meanReward: 0.75 });
    expect(a?.ucb1Index).to.be.closeTo(HAND.indices[0] as number, 1e-12);
    expect(b?.ucb1Index).to.be.closeTo(HAND.indices[1] as number, 1e-12);
    expect(c?.ucb1Index).to.be.closeTo(HAND.indices[2] as number, 1e-12);
    expect(fresh).to.deep.include({ pulls: 0, ucb1Index: null, selectionProbability: 1 });
    expect(a).to.deep.include({ thompsonAlpha: 8.5, thompsonBeta: 3.5 });
  });

  // Proves selection from the Redis-loaded state picks the argmax (after the unplayed arm) and counts pulls locally.
  it('selects from the loaded state: unplayed first, then the highest index', async () => {
    await seedHandState();
    const store = new BanditStore(redis, keys, { random: createSeededRandom(2) });
    await store.refresh(['attack'], keys.decoysMeta());
    const first = store.select('attack', [...HAND.arms, 'arm-new'], 'ucb1');
    expect(first).to.deep.include({ decoyId: 'arm-new', reason: 'unplayed', score: null, selectionProbability: 1, propensityMethod: 'deterministic' });
    const second = store.select('attack', [...HAND.arms, 'arm-new'], 'ucb1');
    expect(second.reason).to.equal('max_index');
    expect(second.propensityMethod).to.equal('deterministic');
    // N is now 36 (the local pull of arm-new counts): arm-new 0 + sqrt(2 ln 36 / 1) beats arm-a.
    expect(second.decoyId).to.equal('arm-new');
    expect(second.score).to.be.closeTo(Math.sqrt(2 * Math.log(36)), 1e-12);
    store.revertLocalPull('attack', 'arm-new');
    store.revertLocalPull('attack', 'arm-new');
    const stats = await store.getStats('attack', HAND.arms, 'ucb1');
    expect(stats.totalPulls).to.equal(35); // selection alone never writes to Redis
  });

  // Proves Thompson sampling is selectable and records a Monte Carlo propensity and its posterior sample.
  it('selects with Thompson sampling and records a Monte Carlo propensity', async () => {
    await seedHandState();
    const store = new BanditStore(redis, keys, { random: createSeededRandom(9), thompsonPropensityDraws: 1_000 });
    await store.refresh(['attack'], keys.decoysMeta());
    const counts: Record<string, number> = {};
    for (let i = 0; i < 200; i += 1) {
      const choice = store.select('attack', HAND.arms, 'thompson');
      expect(choice.policy).to.equal('thompson');
      expect(choice.propensityMethod).to.equal('monte_carlo');
      expect(choice.selectionProbability).to.be.within(0, 1);
      expect(choice.score).to.be.within(0, 1);
      counts[choice.decoyId] = (counts[choice.decoyId] ?? 0) + 1;
      store.revertLocalPull('attack', choice.decoyId);
    }
    expect(counts['arm-a']).to.be.greaterThan(100);
    const stats = await store.getStats('attack', HAND.arms, 'thompson');
    expect(stats.arms.reduce((sum, arm) => sum + arm.selectionProbability, 0)).to.be.closeTo(1, 1e-9);
    expect(stats.arms[0]?.selectionProbability).to.be.greaterThan(0.5);
  });
});
