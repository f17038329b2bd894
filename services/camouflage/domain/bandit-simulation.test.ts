import { expect } from 'chai';
import { auerUcb1RegretBound } from './bandit-math';
import { averageRegret, simulateBandit } from './bandit-simulation';

const SPREAD = [0.9, 0.8, 0.5, 0.3, 0.1];
const CHECKPOINTS = [1_000, 10_000, 100_000];
const SEEDS = [1, 2, 3];

describe('camouflage bandit regret (seeded simulation)', () => {
  // Proves the simulation is deterministic for a seed, so the assertions below are reproducible.
  it('is reproducible for a given seed', () => {
    const a = simulateBandit({ means: SPREAD, policy: 'ucb1', checkpoints: [2_000], seed: 42 });
    const b = simulateBandit({ means: SPREAD, policy: 'ucb1', checkpoints: [2_000], seed: 42 });
    expect(a).to.deep.equal(b);
  });

  // Proves UCB1's mean regret stays under the Auer–Cesa-Bianchi–Fischer Theorem 1 bound at every checkpoint.
  it('keeps UCB1 regret under the Auer et al. bound', () => {
    const regret = averageRegret(SPREAD, 'ucb1', CHECKPOINTS, SEEDS);
    CHECKPOINTS.forEach((n, i) => {
      expect(regret[i], `n=${n}`).to.be.at.most(auerUcb1RegretBound(SPREAD, n));
    });
    // At n = 1000 the bound (860) exceeds the worst regret possible (always the worst arm: 0.8 · 1000 = 800), so it
    // proves nothing there: the regret must also be a small part of that worst case.
    expect(regret[0], 'n=1000').to.be.below(0.25 * 0.8 * 1_000);
    // The bound, computed by hand at n = 1000 for these arms:
    // 8·ln(1000)·(1/0.1 + 1/0.4 + 1/0.6 + 1/0.8) + (1 + π²/3)·(0.1 + 0.4 + 0.6 + 0.8) ≈ 860.1
    expect(auerUcb1RegretBound(SPREAD, 1_000)).to.be.closeTo(860.1, 0.1);
  });

  // Proves regret grows logarithmically: ten times the pulls adds far less than ten times the regret.
  it('grows UCB1 regret logarithmically, not linearly', () => {
    const regret = averageRegret(SPREAD, 'ucb1', CHECKPOINTS, SEEDS);
    for (let i = 1; i < regret.length; i += 1) {
      const growth = (regret[i] as number) / (regret[i - 1] as number);
      expect(growth, `regret(${CHECKPOINTS[i]}) / regret(${CHECKPOINTS[i - 1]})`).to.be.below(4);
    }
    // ... and most pulls went to the best arm.
    const run = simulateBandit({ means: SPREAD, policy: 'ucb1', checkpoints: [100_000], seed: 1 });
    expect((run.pulls[0] as number) / 100_000).to.be.above(0.95);
  });

  // Proves the Thompson policy learns too (lower regret than UCB1 on these arms, also sub-linear).
  it('learns with Thompson sampling as well', () => {
    const regret = averageRegret(SPREAD, 'thompson', [1_000, 10_000], SEEDS);
    const ucb1 = averageRegret(SPREAD, 'ucb1', [1_000, 10_000], SEEDS);
    expect(regret[1]).to.be.below(ucb1[1] as number);
    expect((regret[1] as number) / (regret[0] as number)).to.be.below(4);
  });
});
