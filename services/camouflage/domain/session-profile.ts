/**
 * Per-session behavioural profile in Redis: what lets a session's level rise as its pattern
 * emerges (rate, path diversity, 404 ratio, auth failures, earlier levels) and fall back after
 * quiet time.
 *
 * The profile is updated by the Assess script (store/assess-script.ts) in the same atomic round trip
 * that scores and commits the decision; this module holds its rules (configuration, decay, the
 * snapshot the detectors read), store/session-profile.ts its Redis layout and Lua fragments.
 *
 * Layout: hash `<p>sp:{<session>}` with integer fields (counters in thousandths, "milli"):
 * `t` last seen ms, `rc` request-rate counter, `sn` reported statuses, `s4` 404s, `sa` 401/403s,
 * `s5` 5xx, `lv` highest level (milli) and `lt` when, `n` requests, `f` first seen ms, `e` expiry
 * as of the last TTL refresh, `hn` honeytokens minted for the session; zset
 * `<p>sp:{<session>}:paths` of path hashes scored by last seen.
 *
 * Decay. Counters decay exponentially with the request's own `timestampMs` (injectable, which is
 * what makes decay testable without sleeping). A counter c last updated at t reads, at time now,
 * c · 2^(-(now - t) / halfLife):
 * - request-rate counter: half-life 60 s. At a steady λ requests/s it converges to λ·60/ln 2, so
 *   `ratePerSecond = counter · ln 2 / 60` estimates the sustained rate over roughly the last
 *   minute; a one-off burst of page assets barely moves it.
 * - status counters: half-life 300 s, so the ratios reflect the last few minutes and drop under
 *   the sample minimum after ~15 quiet minutes.
 * - earlier level: half-life 600 s. A session that hit level 10 carries 0.8 × 10 = 8 right
 *   after, 4 after 10 quiet minutes, 2 after 20 and nothing after 40 (see `earlierLevelSignal`).
 * - distinct paths: an exact sliding window of 600 s (ZCOUNT over the path zset), the set trimmed
 *   to the window and capped at 256 members (oldest evicted) every 16th request.
 * Timestamps that go backwards (clock skew between guardians) are treated as "now = last seen":
 * decay never runs in reverse. Keys expire `ttlSeconds` (1 h) after a TTL refresh; refreshes
 * happen once a quarter of the TTL has passed (in request time), so a profile survives at least
 * 45 minutes of silence, by when every counter has decayed to nothing that scores.
 *
 * Why integers: measured on Redis 7.0, a Lua float `tostring` costs ~0.7 µs and each redis.call
 * 1-4 µs, and numbers handed to redis.call are truncated to integers anyway; fixed-point counters
 * keep the script at four calls (HMGET, ZADD, ZCOUNT, HSET) on a typical request, and they make
 * the behavioural thresholds exact integer comparisons that JavaScript and Lua evaluate
 * identically.
 */
import { ServiceError } from '../../../platform/service-error';

export interface ProfileConfig {
  readonly rateHalfLifeSeconds: number;
  readonly statusHalfLifeSeconds: number;
  readonly levelHalfLifeSeconds: number;
  readonly pathWindowSeconds: number;
  /** Bound on the distinct-path set per session (memory bound: ~256 × 8-char members). */
  readonly distinctPathsMax: number;
  readonly ttlSeconds: number;
}

export const PROFILE_DEFAULTS: ProfileConfig = Object.freeze({
  rateHalfLifeSeconds: 60,
  statusHalfLifeSeconds: 300,
  levelHalfLifeSeconds: 600,
  pathWindowSeconds: 600,
  distinctPathsMax: 256,
  ttlSeconds: 3_600,
});

const PROFILE_BOUNDS: Readonly<Record<keyof ProfileConfig, number>> = {
  rateHalfLifeSeconds: 86_400,
  statusHalfLifeSeconds: 86_400,
  levelHalfLifeSeconds: 7 * 86_400,
  pathWindowSeconds: 86_400,
  distinctPathsMax: 10_000,
  ttlSeconds: 30 * 86_400,
};

/** Merges and validates a profile configuration (INVALID_ARGUMENT naming the option). */
export function profileConfig(overrides: Partial<ProfileConfig> = {}): ProfileConfig {
  const config = { ...PROFILE_DEFAULTS, ...overrides };
  for (const name of Object.keys(PROFILE_DEFAULTS) as (keyof ProfileConfig)[]) {
    const value = config[name];
    if (!Number.isInteger(value) || value <= 0 || value > PROFILE_BOUNDS[name]) {
      throw ServiceError.invalidArgument(`profile.${name}`, `must be an integer from 1 to ${PROFILE_BOUNDS[name]}`);
    }
  }
  return Object.freeze(config);
}

/** Counters are stored in thousandths. */
export const PROFILE_FIXED_POINT = 1_000;
/** What the behavioural detectors see after the current request was applied. */
export interface SessionSnapshot {
  /** Requests in this profile's lifetime (not decayed), including this one. */
  readonly requestCount: number;
  readonly firstSeenMs: number;
  /** The request's time after clamping to be monotonic per session. */
  readonly lastSeenMs: number;
  /** Time since the session's previous request (0 for the first one). */
  readonly quietMs: number;
  /** Decayed request-rate counter, thousandths (the exact value thresholds compare). */
  readonly rateCounterMilli: number;
  /** Sustained request rate derived from the counter (for explanations). */
  readonly ratePerSecond: number;
  readonly distinctPaths: number;
  readonly pathWindowSeconds: number;
  /** Decayed counts of reported previous statuses, thousandths. */
  readonly statusReportsMilli: number;
  readonly notFoundMilli: number;
  readonly authFailuresMilli: number;
  readonly serverErrorsMilli: number;
  /** Highest level reached before this request, decayed to now, thousandths. */
  readonly earlierLevelMilli: number;
  readonly rateHalfLifeSeconds: number;
  readonly levelHalfLifeSeconds: number;
}
