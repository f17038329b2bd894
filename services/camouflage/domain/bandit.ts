/**
 * The bandit's rules without its state: the policies, the counters each arm keeps (see
 * store/bandit-store.ts for where they live), and the statistics GetBanditStats answers, all
 * computed from counters with the selection math of bandit-math.ts.
 */
import { invariant } from '../../../platform/invariant';
import { ARMS_MAX, RandomSource, thompsonParameters, thompsonSelectionProbabilities, ucb1Index } from './bandit-math';
import type { Tier } from './tiers';

export type BanditPolicy = 'ucb1' | 'thompson';

export function isBanditPolicy(value: unknown): value is BanditPolicy {
  return value === 'ucb1' || value === 'thompson';
}

/** Rewards are stored as integers: reward × REWARD_MICRO_UNITS. */
export const REWARD_MICRO_UNITS = 1_000_000;

export type ArmField = 'p' | 'r' | 'o';

export function armField(decoyId: string, field: ArmField): string {
  return `${decoyId}:${field}`;
}

/** One arm's counters as stored. */
export interface ArmCounters {
  pulls: number;
  rewardMicro: number;
  outcomes: number;
}

/** Parses a tier hash (HGETALL) into counters per decoy id. Unknown/garbled fields are ignored. */
export function parseTierState(record: Readonly<Record<string, string>>): Map<string, ArmCounters> {
  const arms = new Map<string, ArmCounters>();
  for (const [field, raw] of Object.entries(record)) {
    const separator = field.lastIndexOf(':');
    if (separator <= 0) continue;
    const decoyId = field.slice(0, separator);
    const kind = field.slice(separator + 1);
    const value = Number(raw);
    if (!Number.isFinite(value)) continue;
    let arm = arms.get(decoyId);
    if (arm === undefined) {
      arm = { pulls: 0, rewardMicro: 0, outcomes: 0 };
      arms.set(decoyId, arm);
    }
    if (kind === 'p') arm.pulls = value;
    else if (kind === 'r') arm.rewardMicro = value;
    else if (kind === 'o') arm.outcomes = value;
  }
  return arms;
}

export type SelectionReason = 'unplayed' | 'max_index' | 'max_sample';
export type PropensityMethod = 'deterministic' | 'uniform_tie_break' | 'monte_carlo';

export interface BanditSelection {
  readonly decoyId: string;
  readonly policy: BanditPolicy;
  /** Probability the policy chose this arm in this state (see module doc). */
  readonly selectionProbability: number;
  readonly propensityMethod: PropensityMethod;
  /** UCB1: the arm's index (null when unplayed, i.e. +∞). Thompson: the winning posterior sample. */
  readonly score: number | null;
  readonly reason: SelectionReason;
  /** Number of eligible arms considered. */
  readonly armCount: number;
}

export interface ArmStats {
  readonly decoyId: string;
  readonly pulls: number;
  readonly outcomes: number;
  /** Sum of rewards (in reward units, 0..pulls). */
  readonly rewardSum: number;
  /** rewardSum / pulls (0 when unplayed). */
  readonly meanReward: number;
  /** UCB1 index mean + sqrt(2 ln N / n); null for an unplayed arm (+∞). */
  readonly ucb1Index: number | null;
  readonly thompsonAlpha: number;
  readonly thompsonBeta: number;
  /** Probability the tier's current policy would choose this arm now. */
  readonly selectionProbability: number;
}

export interface BanditStats {
  readonly tier: Tier;
  readonly policy: BanditPolicy;
  /** N: total pulls over the eligible arms. */
  readonly totalPulls: number;
  readonly arms: readonly ArmStats[];
}

/** Monte Carlo draws used by GetBanditStats (admin call: accuracy over speed). */
const STATS_PROPENSITY_DRAWS = 4_000;

/**
 * GetBanditStats' numbers from a tier's counters: pulls, mean reward, UCB1 index and Thompson
 * posterior per eligible arm, and the probability that `policy` would choose each arm now.
 */
export function banditStats(
tier: Tier,
arms: ReadonlyMap<string, ArmCounters>,
decoyIds: readonly string[],
policy: BanditPolicy,
random: RandomSource,
): BanditStats {
  invariant(decoyIds.length > 0, 'stats need an arm');
  invariant(decoyIds.length <= ARMS_MAX, 'stats need at most ARMS_MAX arms');
  const pulls = new Float64Array(decoyIds.length);
  const rewardSums = new Float64Array(decoyIds.length);
  const outcomes = new Float64Array(decoyIds.length);
  let totalPulls = 0;
  for (let i = 0; i < decoyIds.length; i += 1) {
    const arm = arms.get(decoyIds[i] as string);
    if (arm === undefined) continue;
    pulls[i] = arm.pulls;
    rewardSums[i] = Math.min(arm.pulls, arm.rewardMicro / REWARD_MICRO_UNITS);
    outcomes[i] = arm.outcomes;
    totalPulls += arm.pulls;
  }
  let probabilities: Float64Array;
  if (policy === 'thompson') {
    probabilities = thompsonSelectionProbabilities(pulls, rewardSums, STATS_PROPENSITY_DRAWS, random);
  } else {
    probabilities = ucb1Probabilities(pulls, rewardSums, totalPulls);
  }
  const out: ArmStats[] = [];
  for (let i = 0; i < decoyIds.length; i += 1) {
    const n = pulls[i] as number;
    const sum = rewardSums[i] as number;
    const index = ucb1Index(sum, n, totalPulls);
    const { alpha, beta } = thompsonParameters(sum, n);
    out.push({
      decoyId: decoyIds[i] as string,
      pulls: n,
      outcomes: outcomes[i] as number,
      rewardSum: sum,
      meanReward: n > 0 ? sum / n : 0,
      ucb1Index: Number.isFinite(index) ? index : null,
      thompsonAlpha: alpha,
      thompsonBeta: beta,
      selectionProbability: probabilities[i] as number,
    });
  }
  return { tier, policy, totalPulls, arms: out };
}

/** UCB1's choice distribution: uniform over the unplayed arms if any, else over the argmax ties. */
function ucb1Probabilities(pulls: Float64Array, rewardSums: Float64Array, totalPulls: number): Float64Array {
  const k = pulls.length;
  const out = new Float64Array(k);
  const indices = new Float64Array(k);
  for (let i = 0; i < k; i += 1) indices[i] = ucb1Index(rewardSums[i] as number, pulls[i] as number, totalPulls);
  let best = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < k; i += 1) best = Math.max(best, indices[i] as number);
  let ties = 0;
  const tolerance = Number.isFinite(best) ? 1e-12 * Math.max(1, Math.abs(best)) : 0;
  for (let i = 0; i < k; i += 1) if ((indices[i] as number) === best || Math.abs((indices[i] as number) - best) <= tolerance) ties += 1;
  for (let i = 0; i < k; i += 1) {
    const tied = (indices[i] as number) === best || Math.abs((indices[i] as number) - best) <= tolerance;
    out[i] = tied ? 1 / ties : 0;
  }
  return out;
}
