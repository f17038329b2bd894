import { expect } from 'chai';
import { createSeededRandom } from '../domain/bandit-math';
import { BUILT_IN_DECOYS, DecoyCatalog, DecoyStore, validateDecoyInput } from '../domain/decoy-catalog';
import { mintHoneytoken } from '../domain/honeytokens';
import { FIRST_BYTE_DELAY_MS_MAX, TIERS, TIER_POLICIES, assertMayServe, mayServe, sampleStrategy, tierForLevel } from '../domain/tiers';

/** A store with no custom decoys: these tests are about the built-in rules only. */
const emptyStore: DecoyStore = {
  load: async () => ({ version: 0, custom: [] }),
  register: async () => {
    throw new Error('not used');
  },
  version: async () => 0,
};

describe('camouflage tiers', () => {
  // Proves the level → tier table of the issue: 0-2 benign, 3-5 suspicious, 6-8 likely bot, 9-10 attack.
  it('maps every level to its tier', () => {
    const expected = ['benign', 'benign', 'benign', 'suspicious', 'suspicious', 'suspicious', 'likely_bot', 'likely_bot', 'likely_bot', 'attack', 'attack'];
    for (let level = 0; level <= 10; level += 1) expect(tierForLevel(level), `level ${level}`).to.equal(expected[level]);
    expect(() => tierForLevel(11)).to.throw(Error, /invariant violated/);
    expect(() => tierForLevel(2.5)).to.throw(Error, /invariant violated/);
  });

  // Proves delays stay within each tier's band and never exceed the 2 s first-byte ceiling, with real jitter.
  it('samples delays within the tier band and under the first-byte ceiling', () => {
    const random = createSeededRandom(7);
    for (const tier of TIERS) {
      const seen = new Set<number>();
      for (let i = 0; i < 2_000; i += 1) {
        const strategy = sampleStrategy(tier, random);
        const policy = TIER_POLICIES[tier];
        expect(strategy.responseDelayMs).to.equal(strategy.baseDelayMs + strategy.jitterMs);
        expect(strategy.responseDelayMs).to.be.within(policy.baseDelayMs, policy.baseDelayMs + policy.jitterMaxMs);
        expect(strategy.responseDelayMs).to.be.at.most(FIRST_BYTE_DELAY_MS_MAX);
        seen.add(strategy.jitterMs);
      }
      if (TIER_POLICIES[tier].jitterMaxMs > 0) expect(seen.size, `${tier} jitter varies`).to.be.greaterThan(50);
    }
    expect(sampleStrategy('benign', Math.random).responseDelayMs).to.equal(0);
  });

  // Proves the tier rule in all three places: catalog eligibility, the serve-time assertion, and minting.
  it('never lets the benign tier see a honeytoken or credential decoy', async () => {
    const catalog = new DecoyCatalog(emptyStore);
    await catalog.refresh();
    const benign = catalog.eligible('benign');
    expect(benign.length).to.be.at.least(2);
    for (const decoy of benign) {
      expect(decoy.carriesHoneytoken, decoy.id).to.equal(false);
      expect(decoy.carriesCredentials, decoy.id).to.equal(false);
    }
    const secretDecoys = BUILT_IN_DECOYS.filter((decoy) => decoy.carriesHoneytoken || decoy.carriesCredentials);
    expect(secretDecoys.length).to.be.greaterThan(0);
    for (const decoy of secretDecoys) {
      expect(mayServe('benign', { ...decoy, tiers: TIERS })).to.equal(false);
      expect(() => assertMayServe('benign', { ...decoy, tiers: TIERS })).to.throw(/may not be served to tier benign/);
    }
    expect(() => mintHoneytoken('shx', 'benign')).to.throw(/no honeytoken may be minted/);
    expect(() => validateDecoyInput({ ...secretDecoys[0], id: 'sneaky-env', tiers: ['benign', 'attack'] })).to.throw(/may not serve the benign tier/);
  });

  // Proves every tier has decoys of its own weight class and the catalog lists only legal ones.
  it('offers each tier only decoys that may serve it', async () => {
    const catalog = new DecoyCatalog(emptyStore);
    await catalog.refresh();
    for (const tier of TIERS) {
      for (const decoy of catalog.eligible(tier)) {
        expect(decoy.tiers).to.include(tier);
        expect(mayServe(tier, decoy)).to.equal(true);
      }
    }
    expect(catalog.eligible('attack').some((decoy) => decoy.kind === 'honeypot')).to.equal(true);
    expect(catalog.eligible('likely_bot').some((decoy) => decoy.kind === 'tarpit')).to.equal(true);
  });
});
