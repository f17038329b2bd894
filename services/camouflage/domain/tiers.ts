/**
 * Threat tiers: how a threat level (0-10) turns into a response strategy.
 *
 * | levels | tier        | decoy weight | first-byte delay (base + uniform jitter) | honeytokens/credentials |
 * |--------|-------------|--------------|------------------------------------------|-------------------------|
 * | 0-2    | benign      | lightweight  | 0 ms                                     | never                   |
 * | 3-5    | suspicious  | balanced     | 60 ms + [0, 120] ms  (60-180 ms)         | allowed                 |
 * | 6-8    | likely_bot  | complex      | 900 ms + [0, 1100] ms (0.9-2.0 s)        | allowed                 |
 * | 9-10   | attack      | honeypot     | 150 ms + [0, 350] ms (0.15-0.5 s)        | allowed                 |
 *
 * Why these delays:
 * - suspicious: the latency of an ordinary dynamic page, so the decoy is indistinguishable from one.
 * - likely_bot: slows automated enumeration ~10x versus a normal page, but the first byte is never
 *   later than {@link FIRST_BYTE_DELAY_MS_MAX} = 2 000 ms. Scanners give up or flag a tarpit only
 *   well above that: their default per-request timeouts are 10 s or more (nikto, gobuster, ffuf,
 *   nuclei: 10 s; sqlmap: 30 s), and sqlmap's time-based blind tests look for 5 s delays
 *   (`--time-sec`), so staying under 2 s neither trips timeouts nor fakes a time-based SQLi
 *   positive. The jitter keeps the delay from being a constant that fingerprints a tarpit.
 * - attack: a honeypot wants maximum engagement, so it answers like a real, slightly slow admin
 *   application rather than stalling the attacker (stalling lowers interactions, i.e. reward).
 *
 * The rule "tiers 0-2 never receive credentials or honeytokens" is enforced twice: the decoy
 * catalog never lists such a decoy as eligible for `benign` (and refuses to register one), and the
 * engine calls {@link assertMayServe} on the chosen decoy before it renders or mints anything.
 */
import { invariant } from '../../../platform/invariant';

export type Tier = 'benign' | 'suspicious' | 'likely_bot' | 'attack';

/** Tiers in ascending severity; the index is stable and used for ordering. */
export const TIERS: readonly Tier[] = Object.freeze(['benign', 'suspicious', 'likely_bot', 'attack']);

export const THREAT_LEVEL_MIN = 0;
export const THREAT_LEVEL_MAX = 10;

/** Hard ceiling for any response delay the engine hands out (see module doc for the reasoning). */
export const FIRST_BYTE_DELAY_MS_MAX = 2_000;

export type DecoyWeight = 'lightweight' | 'balanced' | 'complex' | 'honeypot';

export interface TierPolicy {
  readonly tier: Tier;
  readonly levelMin: number;
  readonly levelMax: number;
  readonly decoyWeight: DecoyWeight;
  readonly baseDelayMs: number;
  /** Upper bound of the uniform jitter added to `baseDelayMs`. */
  readonly jitterMaxMs: number;
  /** False for benign: no honeytoken and no credential-bearing decoy, ever. */
  readonly mayServeSecrets: boolean;
}

export const TIER_POLICIES: Readonly<Record<Tier, TierPolicy>> = Object.freeze({
  benign: { tier: 'benign', levelMin: 0, levelMax: 2, decoyWeight: 'lightweight', baseDelayMs: 0, jitterMaxMs: 0, mayServeSecrets: false },
  suspicious: { tier: 'suspicious', levelMin: 3, levelMax: 5, decoyWeight: 'balanced', baseDelayMs: 60, jitterMaxMs: 120, mayServeSecrets: true },
  likely_bot: { tier: 'likely_bot', levelMin: 6, levelMax: 8, decoyWeight: 'complex', baseDelayMs: 900, jitterMaxMs: 1_100, mayServeSecrets: true },
  attack: { tier: 'attack', levelMin: 9, levelMax: 10, decoyWeight: 'honeypot', baseDelayMs: 150, jitterMaxMs: 350, mayServeSecrets: true },
} satisfies Record<Tier, TierPolicy>);

// Module-load assertions: the table covers 0..10 without gaps and no delay can exceed the ceiling.
{
  let expectedLevel = THREAT_LEVEL_MIN;
  for (const tier of TIERS) {
    const policy = TIER_POLICIES[tier];
    invariant(policy.levelMin === expectedLevel, `tier ${tier} starts at ${expectedLevel}`);
    invariant(policy.baseDelayMs + policy.jitterMaxMs <= FIRST_BYTE_DELAY_MS_MAX, `tier ${tier} delay bound`);
    expectedLevel = policy.levelMax + 1;
  }
  invariant(expectedLevel === THREAT_LEVEL_MAX + 1, 'tiers cover 0..10');
  invariant(!TIER_POLICIES.benign.mayServeSecrets, 'benign never serves secrets');
}

export function isTier(value: unknown): value is Tier {
  return typeof value === 'string' && (TIERS as readonly string[]).includes(value);
}

/** Maps a threat level to its tier. The level must already be an integer in 0..10. */
export function tierForLevel(level: number): Tier {
  invariant(Number.isInteger(level), `level ${level} is an integer`);
  invariant(level >= THREAT_LEVEL_MIN, `level ${level} >= ${THREAT_LEVEL_MIN}`);
  invariant(level <= THREAT_LEVEL_MAX, `level ${level} <= ${THREAT_LEVEL_MAX}`);
  if (level <= TIER_POLICIES.benign.levelMax) return 'benign';
  if (level <= TIER_POLICIES.suspicious.levelMax) return 'suspicious';
  if (level <= TIER_POLICIES.likely_bot.levelMax) return 'likely_bot';
  return 'attack';
}

/** The parts of a decoy the tier rule looks at (kept structural to avoid an import cycle). */
export interface TierCheckedDecoy {
  readonly id: string;
  readonly tiers: readonly Tier[];
  readonly carriesHoneytoken: boolean;
  readonly carriesCredentials: boolean;
}

/** Whether `decoy` may be served to a request in `tier`. */
export function mayServe(tier: Tier, decoy: TierCheckedDecoy): boolean {
  if (!decoy.tiers.includes(tier)) return false;
  if (!TIER_POLICIES[tier].mayServeSecrets && (decoy.carriesHoneytoken || decoy.carriesCredentials)) return false;
  return true;
}

/** Second enforcement point of the tier rule: throws INTERNAL (a bug) if the choice is illegal. */
export function assertMayServe(tier: Tier, decoy: TierCheckedDecoy): void {
  invariant(mayServe(tier, decoy), `decoy ${decoy.id} may not be served to tier ${tier}`);
}

export interface ResponseStrategy {
  readonly tier: Tier;
  readonly decoyWeight: DecoyWeight;
  /** The delay the guardian should wait before the first byte: base + the sampled jitter. */
  readonly responseDelayMs: number;
  readonly baseDelayMs: number;
  /** The jitter sampled for this decision (0..jitterMaxMs), already included in responseDelayMs. */
  readonly jitterMs: number;
  readonly jitterMaxMs: number;
}

/** Samples the response strategy of one decision; `random` returns floats in [0, 1). */
export function sampleStrategy(tier: Tier, random: () => number): ResponseStrategy {
  const policy = TIER_POLICIES[tier];
  const jitterMs = Math.min(policy.jitterMaxMs, Math.floor(random() * (policy.jitterMaxMs + 1)));
  const responseDelayMs = policy.baseDelayMs + jitterMs;
  invariant(responseDelayMs >= 0, 'delay is not negative');
  invariant(responseDelayMs <= FIRST_BYTE_DELAY_MS_MAX, 'delay within ceiling');
  return {
    tier,
    decoyWeight: policy.decoyWeight,
    responseDelayMs,
    baseDelayMs: policy.baseDelayMs,
    jitterMs,
    jitterMaxMs: policy.jitterMaxMs,
  };
}
