/**
 * In-memory Bernoulli bandit simulation over the production selection code (bandit-math.ts).
 * Used by bench/camouflage-bandit-regret.ts (full figures) and bandit-regret.test.ts (a smaller
 * deterministic check).
 *
 * Regret is the pseudo-regret Σ_t (μ* − μ_{a_t}): the expected loss of the arms actually chosen,
 * which is the quantity Auer et al.'s Theorem 1 bounds (in expectation) and which does not carry
 * the extra noise of the sampled rewards.
 */
import { invariant } from '../../../platform/invariant';
import { RandomSource, createSeededRandom, selectThompson, selectUcb1 } from './bandit-math';

export type SimulatedPolicy = 'ucb1' | 'thompson';

export interface SimulationRequest {
  /** Bernoulli success probability of each arm. */
  readonly means: readonly number[];
  readonly policy: SimulatedPolicy;
  /** Pull counts at which cumulative regret is reported (ascending). */
  readonly checkpoints: readonly number[];
  readonly seed: number;
}

export interface SimulationResult {
  /** Cumulative pseudo-regret at each checkpoint, same order as `checkpoints`. */
  readonly regret: readonly number[];
  /** How often each arm was pulled by the last checkpoint. */
  readonly pulls: readonly number[];
}

/** Upper bound on simulated pulls per run (keeps a mistaken call from running for hours). */
export const SIMULATION_PULLS_MAX = 10_000_000;

export function simulateBandit(request: SimulationRequest): SimulationResult {
  const { means, policy, checkpoints, seed } = request;
  const k = means.length;
  invariant(k >= 2, 'at least two arms');
  invariant(means.every((m) => m >= 0), 'means >= 0');
  invariant(means.every((m) => m <= 1), 'means <= 1');
  invariant(checkpoints.length > 0, 'at least one checkpoint');
  invariant(checkpoints.every((c) => Number.isInteger(c)), 'integer checkpoints');
  invariant(checkpoints.every((c) => c > 0), 'positive checkpoints');
  invariant(checkpoints.every((c, i) => i === 0 || c > (checkpoints[i - 1] as number)), 'ascending checkpoints');
  const horizon = checkpoints[checkpoints.length - 1] as number;
  invariant(horizon <= SIMULATION_PULLS_MAX, 'horizon bounded');

  // Separate streams for the policy's own randomness and for the environment's rewards, so both
  // policies face the same reward stream sequence under a given seed.
  const policyRandom: RandomSource = createSeededRandom(seed * 2 + 1);
  const rewardRandom: RandomSource = createSeededRandom(seed * 2 + 2);
  const best = Math.max(...means);
  const pulls = new Float64Array(k);
  const rewardSums = new Float64Array(k);
  const regretAt: number[] = [];
  let regret = 0;
  let next = 0;
  for (let t = 1; t <= horizon; t += 1) {
    const arm = policy === 'ucb1' ? selectUcb1(pulls, rewardSums, policyRandom).arm : selectThompson(pulls, rewardSums, policyRandom).arm;
    const reward = rewardRandom() < (means[arm] as number) ? 1 : 0;
    pulls[arm] = (pulls[arm] as number) + 1;
    rewardSums[arm] = (rewardSums[arm] as number) + reward;
    regret += best - (means[arm] as number);
    if (t === checkpoints[next]) {
      regretAt.push(regret);
      next += 1;
    }
  }
  return { regret: regretAt, pulls: Array.from(pulls) };
}

/** Mean cumulative regret per checkpoint over `seeds` independent runs. */
export function averageRegret(means: readonly number[], policy: SimulatedPolicy, checkpoints: readonly number[], seeds: readonly number[]): number[] {
  invariant(seeds.length > 0, 'at least one seed');
  invariant(seeds.length <= 1_000, 'seeds bounded');
  const sums = new Array<number>(checkpoints.length).fill(0);
  for (const seed of seeds) {
    const { regret } = simulateBandit({ means, policy, checkpoints, seed });
    for (let i = 0; i < regret.length; i += 1) sums[i] = (sums[i] as number) + (regret[i] as number);
  }
  return sums.map((sum) => sum / seeds.length);
}
