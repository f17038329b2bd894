/**
 * From reported engagement to a bandit reward in [0, 1].
 *
 * The goal of a decoy is to keep an attacker busy with it (and so away from real assets), and
 * the strongest evidence of that is the attacker *using* what we fed them. Hence:
 *
 *   reward = 0                                                    if reachedRealAsset
 *   reward = 1                                                    if honeytokenUsed
 *   reward = 0.35 · f(interactions, 20) + 0.35 · f(dwellSeconds, 300) + 0.30 · [credentialsSubmitted]
 *   where f(x, saturation) = min(1, ln(1 + x) / ln(1 + saturation))
 *
 * - Logarithmic with saturation: the 2nd interaction says much more than the 200th, and a bot
 *   stuck in a loop must not dominate the mean. 20 follow-up requests or 5 minutes of dwell earn
 *   the full share of their term (5 interactions ≈ 0.59 of it, 60 s ≈ 0.72).
 * - Submitting credentials into a fake login is strong intent, worth 0.30 on its own.
 * - Reaching a real asset means the decoy failed at its one job (keeping the attacker away from
 *   real assets), so the pull earns nothing, whatever engagement came first. It is checked before
 *   honeytokenUsed: the outcome is the report of this engagement as a whole. (A honeytoken that is
 *   later seen in a request is still credited separately, by the credit script of store/decision-store.ts.)
 * - The weights sum to 1, so the reward is in [0, 1] without clamping; it is stored as an integer
 *   number of micro-units (reward × 10^6, rounded) so sums in Redis are exact.
 */
import { invariant } from '../../../platform/invariant';
import { ServiceError } from '../../../platform/service-error';
import { REWARD_MICRO_UNITS } from './bandit';

export interface OutcomeInput {
  /** Follow-up requests the attacker made to the decoy (0..1 000 000). */
  interactions: number;
  /** Seconds between serving the decoy and the attacker's last interaction with it (0..86 400). */
  dwellSeconds: number;
  /** The attacker used a honeytoken from this decoy (reported by the guardian). */
  honeytokenUsed: boolean;
  /** The attacker submitted credentials into this decoy (a fake login form). */
  credentialsSubmitted: boolean;
  /** The attacker moved on to a real asset: the decoy failed (reward 0). Omitted = false. */
  reachedRealAsset?: boolean;
}

export const INTERACTIONS_MAX = 1_000_000;
export const DWELL_SECONDS_MAX = 86_400;
export const REWARD_WEIGHTS = Object.freeze({ interactions: 0.35, dwell: 0.35, credentials: 0.3 });
export const INTERACTIONS_SATURATION = 20;
export const DWELL_SECONDS_SATURATION = 300;

invariant(
  Math.abs(REWARD_WEIGHTS.interactions + REWARD_WEIGHTS.dwell + REWARD_WEIGHTS.credentials - 1) < 1e-12,
  'reward weights sum to 1',
);

function flag(value: unknown, field: string): boolean {
  if (value === undefined) return false;
  if (typeof value !== 'boolean') throw ServiceError.invalidArgument(field, 'must be a boolean');
  return value;
}

/**
 * Validates an outcome; omitted numbers are 0 and omitted flags false (proto3 defaults). A bad field is
 * INVALID_ARGUMENT named as RecordOutcome's request names it (`engagement.dwell`, `engagement.honeytoken_used`).
 */
export function validateOutcome(raw: unknown): OutcomeInput {
  if (typeof raw !== 'object' || raw === null) throw ServiceError.invalidArgument('engagement', 'must be an object');
  const input = raw as Record<string, unknown>;
  const interactions = input.interactions ?? 0;
  if (typeof interactions !== 'number' || !Number.isInteger(interactions) || interactions < 0 || interactions > INTERACTIONS_MAX) {
    throw ServiceError.invalidArgument('engagement.interactions', `must be an integer from 0 to ${INTERACTIONS_MAX}`);
  }
  const dwellSeconds = input.dwellSeconds ?? 0;
  if (typeof dwellSeconds !== 'number' || !Number.isFinite(dwellSeconds) || dwellSeconds < 0 || dwellSeconds > DWELL_SECONDS_MAX) {
    throw ServiceError.invalidArgument('engagement.dwell', `must be from 0 to ${DWELL_SECONDS_MAX} seconds`);
  }
  return {
    interactions,
    dwellSeconds,
    honeytokenUsed: flag(input.honeytokenUsed, 'engagement.honeytoken_used'),
    credentialsSubmitted: flag(input.credentialsSubmitted, 'engagement.credentials_submitted'),
    reachedRealAsset: flag(input.reachedRealAsset, 'engagement.reached_real_asset'),
  };
}

function saturating(value: number, saturation: number): number {
  return Math.min(1, Math.log1p(value) / Math.log1p(saturation));
}

/** The reward formula of the module doc; always in [0, 1]. */
export function rewardForOutcome(outcome: OutcomeInput): number {
  if (outcome.reachedRealAsset === true) return 0;
  if (outcome.honeytokenUsed) return 1;
  const reward =
    REWARD_WEIGHTS.interactions * saturating(outcome.interactions, INTERACTIONS_SATURATION) +
    REWARD_WEIGHTS.dwell * saturating(outcome.dwellSeconds, DWELL_SECONDS_SATURATION) +
    REWARD_WEIGHTS.credentials * (outcome.credentialsSubmitted ? 1 : 0);
  invariant(reward >= 0, 'reward >= 0');
  invariant(reward <= 1 + 1e-12, 'reward <= 1');
  return Math.min(1, reward);
}

export function toRewardMicro(reward: number): number {
  invariant(reward >= 0, 'reward >= 0');
  invariant(reward <= 1, 'reward <= 1');
  return Math.round(reward * REWARD_MICRO_UNITS);
}
