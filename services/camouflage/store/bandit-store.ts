/**
 * The per-tier decoy bandit, with its state in Redis so every replica learns from every outcome
 * (its rules: domain/bandit.ts and domain/bandit-math.ts).
 *
 * State: one hash per tier, `<prefix>bandit:<tier>`, three integer fields per arm (decoy):
 * - `<decoyId>:p` pulls: incremented when Assess serves the decoy (atomically with the decision
 *   record, in the Assess script of assess-script.ts);
 * - `<decoyId>:r` reward sum in micro-units (reward × 1 000 000, an integer: HINCRBY never drifts
 *   the way repeated HINCRBYFLOAT additions do);
 * - `<decoyId>:o` outcomes: how many pulls have had their outcome reported.
 *
 * Pulls count at selection time, rewards arrive later with RecordOutcome. A pull whose outcome is
 * never reported therefore counts as reward 0, which is the honest reading of "no engagement was
 * reported"; and, importantly for an online service with delayed feedback, it keeps UCB1 from
 * sending every concurrent request to the same arm while outcomes are pending (herding).
 *
 * Policies: `ucb1` (default, the seed's algorithm) and `thompson` (Beta posterior). Both read the
 * same sufficient statistics, so switching policy keeps everything learned.
 *
 * Selection reads an in-memory copy of the tier's state, so choosing an arm costs no round trip.
 * The copy is never older than `statsMaxAgeMs` (1 s by default): past half that age the Assess
 * script returns the tier's state with its reply (free), and a tier not served for a whole
 * `statsMaxAgeMs` is fetched before selecting (one extra round trip, which only happens when the
 * tier sees less than ~2 requests a second on this replica, i.e. when it costs nothing; a burst
 * arriving on such a tier shares that one fetch).
 * Local selections bump the copy's pulls immediately so concurrent requests on one replica
 * spread as they would against Redis. A replica therefore sees the other replicas' pulls and
 * rewards within a second — negligible next to how slowly engagement statistics move — without
 * returning and parsing the tier hash on every request.
 *
 * Propensity (for offline policy comparison with inverse propensity scoring): UCB1 is
 * deterministic given the state, so the chosen arm's probability is 1, or 1/k when k arms tied
 * (unplayed arms are tied at +∞ and broken uniformly). For Thompson the probability is estimated
 * by Monte Carlo over the same posterior ({@link thompsonSelectionProbabilities}, 256 draws by
 * default, add-one smoothed) and cached per tier for `propensityRefreshMs`, since 256 × k Beta
 * draws per request would cost more than the rest of Assess; the winning posterior sample is
 * recorded as the decision's score.
 */
import { invariant } from '../../../platform/invariant';
import { ServiceError } from '../../../platform/service-error';
import { redisUnavailable } from '../errors';
import { ARMS_MAX, PROPENSITY_DRAWS_MAX, RandomSource, selectThompson, selectUcb1, thompsonSelectionProbabilities } from '../domain/bandit-math';
import {
  type ArmCounters,
  type BanditPolicy,
  type BanditSelection,
  type BanditStats,
  REWARD_MICRO_UNITS,
  banditStats,
  parseTierState,
} from '../domain/bandit';
import { CamouflageKeys, RedisClient, sumCounters } from './redis-keys';
import type { Tier } from '../domain/tiers';

export interface BanditOptions {
  /** Selection state is never older than this: past half of it the Assess reply refreshes it, past all of it it is fetched first. */
  readonly statsMaxAgeMs?: number;
  /** Monte Carlo draws for Thompson propensities on the hot path (default 256, max 10 000). */
  readonly thompsonPropensityDraws?: number;
  /** How long a tier's Thompson propensity estimate is reused (default 250 ms). */
  readonly propensityRefreshMs?: number;
  readonly random?: RandomSource;
  readonly now?: () => number;
}

interface TierCache {
  arms: Map<string, ArmCounters>;
  loadedAtMs: number;
  loadedFromRedis: boolean;
}

interface PropensityCache {
  armKey: string;
  computedAtMs: number;
  probabilities: Float64Array;
}

export class BanditStore {
  private readonly cache = new Map<Tier, TierCache>();
  private readonly propensity = new Map<Tier, PropensityCache>();
  /** The fetch under way per tier ({@link refresh}); at most one entry per tier. */
  private readonly inflight = new Map<Tier, Promise<number>>();
  private readonly statsMaxAgeMs: number;
  private readonly thompsonDraws: number;
  private readonly propensityRefreshMs: number;
  private readonly random: RandomSource;
  private readonly now: () => number;

  constructor(
    private readonly redis: RedisClient,
    private readonly keys: CamouflageKeys,
    options: BanditOptions = {},
  ) {
    this.statsMaxAgeMs = options.statsMaxAgeMs ?? 1_000;
    this.thompsonDraws = options.thompsonPropensityDraws ?? 256;
    this.propensityRefreshMs = options.propensityRefreshMs ?? 250;
    this.random = options.random ?? Math.random;
    this.now = options.now ?? Date.now;
    if (!Number.isInteger(this.statsMaxAgeMs) || this.statsMaxAgeMs < 0) {
      throw ServiceError.invalidArgument('bandit.statsMaxAgeMs', 'must be a non-negative integer');
    }
    if (!Number.isInteger(this.thompsonDraws) || this.thompsonDraws < 1 || this.thompsonDraws > PROPENSITY_DRAWS_MAX) {
      throw ServiceError.invalidArgument('bandit.thompsonPropensityDraws', `must be an integer from 1 to ${PROPENSITY_DRAWS_MAX}`);
    }
    if (!Number.isInteger(this.propensityRefreshMs) || this.propensityRefreshMs < 0) {
      throw ServiceError.invalidArgument('bandit.propensityRefreshMs', 'must be a non-negative integer');
    }
  }

  private ageMs(tier: Tier): number {
    const entry = this.cache.get(tier);
    if (entry === undefined || !entry.loadedFromRedis) return Number.POSITIVE_INFINITY;
    return this.now() - entry.loadedAtMs;
  }

  /** True when the tier's copy is too old to select from: fetch it first ({@link refresh}). */
  needsPrefetch(tier: Tier): boolean {
    return this.ageMs(tier) >= this.statsMaxAgeMs;
  }

  /** True when the copy is past half its allowed age: ask the Assess script to return it. */
  wantsRefresh(tier: Tier): boolean {
    // Sharded layout: the script can only return its shard's part, not the tier's state.
    if (this.keys.sharded) return false;
    return this.ageMs(tier) >= this.statsMaxAgeMs / 2;
  }

  /**
   * Fetches the given tiers' state and returns the catalog version, in one round trip. Single-flight
   * per tier: a burst of selections that all find a tier stale waits for the one fetch already under
   * way instead of sending its own (each would fetch the same hash). A fetch is forgotten once it
   * settles, so a failed one fails only the callers that shared it, and the next caller fetches anew.
   */
  async refresh(tiers: readonly Tier[], catalogMetaKey: string): Promise<number> {
    const waits: Promise<number>[] = [];
    const missing: Tier[] = [];
    for (const tier of tiers) {
      const pending = this.inflight.get(tier);
      if (pending === undefined) missing.push(tier);
      else if (!waits.includes(pending)) waits.push(pending);
    }
    if (missing.length > 0) {
      const fetch = this.fetch(missing, catalogMetaKey);
      for (const tier of missing) this.inflight.set(tier, fetch);
      // Registered before any waiter's handler, so no caller resumes while a settled fetch is still listed.
      const forget = () => {
        for (const tier of missing) if (this.inflight.get(tier) === fetch) this.inflight.delete(tier);
      };
      fetch.then(forget, forget);
      waits.push(fetch);
    }
    const versions = await Promise.all(waits);
    return Math.max(0, ...versions);
  }

  private async fetch(tiers: readonly Tier[], catalogMetaKey: string): Promise<number> {
    if (this.keys.sharded) {
      // Sharded layout (redis-keys.ts): each tier is the sum of its parts, one slot each; the
      // commands go out together (no cross-slot pipeline in a cluster).
      const [states, version] = await Promise.all([
        Promise.all(tiers.map((tier) => readTierState(this.redis, this.keys, tier))),
        this.redis.hget(catalogMetaKey, 'version'),
      ]);
      tiers.forEach((tier, i) => this.absorb(tier, states[i]!));
      return Number(version) || 0;
    }
    const pipeline = this.redis.pipeline();
    for (const tier of tiers) pipeline.hgetall(this.keys.bandit(tier));
    pipeline.hget(catalogMetaKey, 'version');
    const results = await pipeline.exec();
    if (results === null) throw redisUnavailable('bandit refresh was aborted');
    tiers.forEach((tier, i) => {
      const [error, record] = results[i] as [Error | null, Record<string, string>];
      if (error !== null) throw error;
      this.absorb(tier, record);
    });
    const [versionError, version] = results[tiers.length] as [Error | null, string | null];
    if (versionError !== null) throw versionError;
    return Number(version) || 0;
  }

  /** Replaces a tier's in-memory state with a fresh HGETALL of its hash (null = empty hash). */
  absorb(tier: Tier, record: Readonly<Record<string, string>> | null): void {
    this.cache.set(tier, { arms: parseTierState(record ?? {}), loadedAtMs: this.now(), loadedFromRedis: true });
  }

  private counters(tier: Tier, decoyIds: readonly string[]): { pulls: Float64Array; rewardSums: Float64Array } {
    const arms = this.cache.get(tier)?.arms;
    const pulls = new Float64Array(decoyIds.length);
    const rewardSums = new Float64Array(decoyIds.length);
    for (let i = 0; i < decoyIds.length; i += 1) {
      const arm = arms?.get(decoyIds[i] as string);
      if (arm === undefined) continue;
      pulls[i] = arm.pulls;
      // A reward sum can never exceed the pulls (rewards are ≤ 1); clamp against torn reads.
      rewardSums[i] = Math.min(arm.pulls, arm.rewardMicro / REWARD_MICRO_UNITS);
    }
    return { pulls, rewardSums };
  }

  /**
   * Chooses a decoy among `decoyIds` (the tier's eligible arms, stable order) from the in-memory
   * state, and counts the pull locally until the next refresh replaces it with Redis' numbers.
   * The caller persists the pull (the Assess script) or reverts it ({@link revertLocalPull}).
   */
  select(tier: Tier, decoyIds: readonly string[], policy: BanditPolicy): BanditSelection {
    invariant(decoyIds.length > 0, 'select needs an arm');
    invariant(decoyIds.length <= ARMS_MAX, 'select needs at most ARMS_MAX arms');
    const { pulls, rewardSums } = this.counters(tier, decoyIds);
    let selection: BanditSelection;
    if (policy === 'ucb1') {
      const choice = selectUcb1(pulls, rewardSums, this.random);
      selection = {
        decoyId: decoyIds[choice.arm] as string,
        policy,
        selectionProbability: choice.probability,
        propensityMethod: choice.probability === 1 ? 'deterministic' : 'uniform_tie_break',
        score: Number.isFinite(choice.score) ? choice.score : null,
        reason: choice.reason,
        armCount: decoyIds.length,
      };
    } else {
      const choice = selectThompson(pulls, rewardSums, this.random);
      const probabilities = this.thompsonPropensities(tier, decoyIds, pulls, rewardSums);
      selection = {
        decoyId: decoyIds[choice.arm] as string,
        policy,
        selectionProbability: probabilities[choice.arm] as number,
        propensityMethod: 'monte_carlo',
        score: choice.sample,
        reason: 'max_sample',
        armCount: decoyIds.length,
      };
    }
    this.countLocalPull(tier, selection.decoyId);
    return selection;
  }

  /**
   * Undoes the local pull of a selection that was not served (the engine prepares one candidate
   * per reachable tier; only one is committed).
   */
  revertLocalPull(tier: Tier, decoyId: string): void {
    const arm = this.cache.get(tier)?.arms.get(decoyId);
    if (arm !== undefined && arm.pulls > 0) arm.pulls -= 1;
  }

  private countLocalPull(tier: Tier, decoyId: string): void {
    let entry = this.cache.get(tier);
    if (entry === undefined) {
      entry = { arms: new Map(), loadedAtMs: Number.NEGATIVE_INFINITY, loadedFromRedis: false };
      this.cache.set(tier, entry);
    }
    const arm = entry.arms.get(decoyId);
    if (arm === undefined) entry.arms.set(decoyId, { pulls: 1, rewardMicro: 0, outcomes: 0 });
    else arm.pulls += 1;
  }

  private thompsonPropensities(tier: Tier, decoyIds: readonly string[], pulls: Float64Array, rewardSums: Float64Array): Float64Array {
    const armKey = decoyIds.join(',');
    const nowMs = this.now();
    const cached = this.propensity.get(tier);
    if (cached !== undefined && cached.armKey === armKey && nowMs - cached.computedAtMs <= this.propensityRefreshMs) {
      return cached.probabilities;
    }
    const probabilities = thompsonSelectionProbabilities(pulls, rewardSums, this.thompsonDraws, this.random);
    this.propensity.set(tier, { armKey, computedAtMs: nowMs, probabilities });
    return probabilities;
  }

  /**
   * GetBanditStats: pulls, mean reward, UCB1 index and Thompson posterior per eligible arm, read
   * fresh from Redis, plus the probability that `policy` would choose each arm right now.
   */
  async getStats(tier: Tier, decoyIds: readonly string[], policy: BanditPolicy): Promise<BanditStats> {
    invariant(decoyIds.length > 0, 'stats need an arm');
    invariant(decoyIds.length <= ARMS_MAX, 'stats need at most ARMS_MAX arms');
    return this.statsOf(tier, await readTierState(this.redis, this.keys, tier), decoyIds, policy);
  }

  /**
   * The statistics of {@link getStats} computed from a tier hash already read (HGETALL), e.g. the
   * one the outcome script returns: no round trip.
   */
  statsOf(tier: Tier, record: Readonly<Record<string, string>>, decoyIds: readonly string[], policy: BanditPolicy): BanditStats {
    return banditStats(tier, parseTierState(record), decoyIds, policy, this.random);
  }
}

/** A tier's bandit hash as it stands: the one hash, or in the sharded layout the sum of its parts. */
export async function readTierState(redis: RedisClient, keys: CamouflageKeys, tier: Tier): Promise<Record<string, string>> {
  const parts = keys.banditParts(tier);
  if (parts.length === 1) return redis.hgetall(parts[0]!);
  return sumCounters(await Promise.all(parts.map((key) => redis.hgetall(key))));
}
