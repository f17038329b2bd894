/**
 * Pure multi-armed bandit math, shared by the Redis-backed bandit (store/bandit-store.ts) and the regret
 * simulation (bandit-simulation.ts, bench/camouflage-bandit-regret.ts), so the benchmark measures
 * exactly the selection code that serves traffic.
 *
 * Arms are described by two parallel arrays: `pulls[i]` (times arm i was played) and
 * `rewardSums[i]` (sum of its rewards, each in [0, 1]). Nothing here touches I/O or global
 * randomness: every stochastic function takes a `random` source returning floats in [0, 1).
 */
import { invariant } from '../../../platform/invariant';

export type RandomSource = () => number;

/** Upper bound on arms per decision; the catalog is bounded well below this. */
export const ARMS_MAX = 1_024;

/**
 * A small, fast, seedable PRNG (sfc32; passes PractRand to 2^40+), so simulations and tests are
 * reproducible. Not for secrets: tokens and ids use node:crypto.
 */
export function createSeededRandom(seed: number): RandomSource {
  let a = 0x9e3779b9;
  let b = 0x243f6a88;
  let c = 0xb7e15162;
  let d = seed >>> 0;
  const next = (): number => {
    const t = (((a + b) | 0) + d) | 0;
    d = (d + 1) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    c = (c + t) | 0;
    return (t >>> 0) / 4_294_967_296;
  };
  for (let i = 0; i < 16; i += 1) next();
  return next;
}

// ---------------------------------------------------------------------------------------------
// UCB1 (Auer, Cesa-Bianchi, Fischer 2002)
// ---------------------------------------------------------------------------------------------

/**
 * UCB1 index: mean reward + sqrt(2 ln N / n), N = total pulls over the eligible arms, n = this
 * arm's pulls. An unplayed arm has an infinite index (it is tried first).
 */
export function ucb1Index(rewardSum: number, pulls: number, totalPulls: number): number {
  if (pulls <= 0) return Number.POSITIVE_INFINITY;
  return rewardSum / pulls + Math.sqrt((2 * Math.log(totalPulls)) / pulls);
}

export interface Ucb1Choice {
  readonly arm: number;
  /** The chosen arm's index; +Infinity when it was unplayed. */
  readonly score: number;
  /**
   * Probability this arm was chosen given the state: UCB1 is deterministic except for ties,
   * which are broken uniformly at random, so this is 1 / (number of tied arms).
   */
  readonly probability: number;
  readonly reason: 'unplayed' | 'max_index';
}

/** Relative tolerance under which two indices count as tied (float noise, not preference). */
const TIE_EPSILON = 1e-12;

export function selectUcb1(pulls: ArrayLike<number>, rewardSums: ArrayLike<number>, random: RandomSource): Ucb1Choice {
  const k = pulls.length;
  invariant(k > 0, 'ucb1: at least one arm');
  invariant(k <= ARMS_MAX, 'ucb1: at most ARMS_MAX arms');
  invariant(rewardSums.length === k, 'ucb1: a reward sum per arm');
  let total = 0;
  let unplayed = 0;
  for (let i = 0; i < k; i += 1) {
    const n = pulls[i] as number;
    total += n;
    if (n <= 0) unplayed += 1;
  }
  if (unplayed > 0) {
    // Unplayed arms first, chosen uniformly among themselves (cold replicas spread out).
    let pick = Math.min(unplayed - 1, Math.floor(random() * unplayed));
    for (let i = 0; i < k; i += 1) {
      if ((pulls[i] as number) > 0) continue;
      if (pick === 0) return { arm: i, score: Number.POSITIVE_INFINITY, probability: 1 / unplayed, reason: 'unplayed' };
      pick -= 1;
    }
  }
  const logTotal = Math.log(total);
  let best = Number.NEGATIVE_INFINITY;
  let ties = 0;
  let chosen = -1;
  for (let i = 0; i < k; i += 1) {
    const n = pulls[i] as number;
    const index = (rewardSums[i] as number) / n + Math.sqrt((2 * logTotal) / n);
    const tolerance = TIE_EPSILON * Math.max(1, Math.abs(index));
    if (chosen === -1 || index > best + tolerance) {
      best = index;
      ties = 1;
      chosen = i;
    } else if (Math.abs(index - best) <= tolerance) {
      ties += 1;
      // Reservoir sampling: each tied arm ends up chosen with probability 1/ties.
      if (random() * ties < 1) chosen = i;
    }
  }
  invariant(chosen >= 0, 'ucb1 chose an arm');
  return { arm: chosen, score: best, probability: 1 / ties, reason: 'max_index' };
}

// ---------------------------------------------------------------------------------------------
// Thompson sampling with a Beta posterior
// ---------------------------------------------------------------------------------------------

/**
 * Beta(1 + S, 1 + n - S) for an arm with n pulls and reward sum S (rewards in [0, 1]): the
 * uniform prior updated as if each fractional reward r were r successes and 1 - r failures.
 * This is the conjugate update for Bernoulli rewards and a standard extension to [0, 1] ones.
 */
export function thompsonParameters(rewardSum: number, pulls: number): { alpha: number; beta: number } {
  return { alpha: 1 + Math.max(0, rewardSum), beta: 1 + Math.max(0, pulls - rewardSum) };
}

function sampleStandardNormal(random: RandomSource): number {
  // Box-Muller; 1 - u keeps the logarithm finite.
  const u = 1 - random();
  const v = random();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
}

/** Gamma(shape, 1) by Marsaglia-Tsang (2000); acceptance > 95 %, loop bounded anyway. */
export function sampleGamma(shape: number, random: RandomSource): number {
  invariant(shape > 0, 'gamma shape > 0');
  invariant(Number.isFinite(shape), 'gamma shape is finite');
  if (shape < 1) {
    const u = random();
    return sampleGamma(shape + 1, random) * Math.pow(u, 1 / shape);
  }
  const d = shape - 1 / 3;
  const c = 1 / Math.sqrt(9 * d);
  for (let attempt = 0; attempt < 64; attempt += 1) {
    const x = sampleStandardNormal(random);
    let v = 1 + c * x;
    if (v <= 0) continue;
    v = v * v * v;
    const u = random();
    const x2 = x * x;
    if (u < 1 - 0.0331 * x2 * x2) return d * v;
    if (Math.log(u) < 0.5 * x2 + d * (1 - v + Math.log(v))) return d * v;
  }
  return shape; // the mean; reaching this has probability < 0.05^64
}

export function sampleBeta(alpha: number, beta: number, random: RandomSource): number {
  const x = sampleGamma(alpha, random);
  const y = sampleGamma(beta, random);
  return x / (x + y);
}

export interface ThompsonChoice {
  readonly arm: number;
  /** The posterior sample that won (what the decision records as its score). */
  readonly sample: number;
}

export function selectThompson(pulls: ArrayLike<number>, rewardSums: ArrayLike<number>, random: RandomSource): ThompsonChoice {
  const k = pulls.length;
  invariant(k > 0, 'thompson: at least one arm');
  invariant(k <= ARMS_MAX, 'thompson: at most ARMS_MAX arms');
  invariant(rewardSums.length === k, 'thompson: a reward sum per arm');
  let best = -1;
  let chosen = 0;
  for (let i = 0; i < k; i += 1) {
    const { alpha, beta } = thompsonParameters(rewardSums[i] as number, pulls[i] as number);
    const sample = sampleBeta(alpha, beta, random);
    if (sample > best) {
      best = sample;
      chosen = i;
    }
  }
  return { arm: chosen, sample: best };
}

/** Bound on Monte Carlo draws for a propensity estimate. */
export const PROPENSITY_DRAWS_MAX = 10_000;

/**
 * Probability that Thompson sampling picks each arm in the given state, estimated with `draws`
 * independent rounds. Add-one smoothed, (wins + 1) / (draws + k), so every arm gets a positive
 * propensity (inverse propensity weights stay finite) and the vector sums to 1. Standard error of
 * each entry is about sqrt(p (1 - p) / draws): ±0.03 at 256 draws for p = 0.5.
 */
export function thompsonSelectionProbabilities(
  pulls: ArrayLike<number>,
  rewardSums: ArrayLike<number>,
  draws: number,
  random: RandomSource,
): Float64Array {
  invariant(Number.isInteger(draws), 'propensity draws are an integer');
  invariant(draws > 0, 'propensity draws > 0');
  invariant(draws <= PROPENSITY_DRAWS_MAX, 'propensity draws <= PROPENSITY_DRAWS_MAX');
  const k = pulls.length;
  const wins = new Float64Array(k);
  for (let round = 0; round < draws; round += 1) wins[selectThompson(pulls, rewardSums, random).arm] += 1;
  const out = new Float64Array(k);
  for (let i = 0; i < k; i += 1) out[i] = ((wins[i] as number) + 1) / (draws + k);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Regret bound
// ---------------------------------------------------------------------------------------------

/**
 * Auer, Cesa-Bianchi & Fischer (2002), Theorem 1: the expected regret of UCB1 after n plays is at
 * most  8 Σ_{i: μi < μ*} (ln n) / Δi  +  (1 + π²/3) Σ_i Δi,  with Δi = μ* − μi.
 */
export function auerUcb1RegretBound(means: readonly number[], n: number): number {
  invariant(means.length > 0, 'bound needs arms');
  invariant(n >= 1, 'bound needs n >= 1');
  const best = Math.max(...means);
  let logTerm = 0;
  let constantTerm = 0;
  for (const mean of means) {
    const gap = best - mean;
    if (gap <= 0) continue;
    logTerm += Math.log(n) / gap;
    constantTerm += gap;
  }
  return 8 * logTerm + (1 + (Math.PI * Math.PI) / 3) * constantTerm;
}
