/**
 * CamouflageEngine: the camouflage service's API over its Redis state, one method per RPC. The
 * rpc handlers (rpc/handlers.ts) decode a request and call one method here; it runs the rules of
 * domain/ and the round trips of store/. What it throws is a ServiceError (reasons in errors.ts)
 * whose code, reason, message and field are what the client sees: a bad input is named by the
 * request's proto field path (`client_ip`, `engagement.dwell`, `decoy.content_template`) where it
 * is thrown, so nothing is renamed on the way out. Engine options (the constructor's, from config)
 * are named as the options are (`keyPrefix`, `profile.rateHalfLifeSeconds`).
 *
 * | method                                   | errors (reason)                                                   |
 * |------------------------------------------|-------------------------------------------------------------------|
 * | assess(input, {policy?})                 | INVALID_ARGUMENT (field), REDIS_UNAVAILABLE                       |
 * | recordOutcome(decisionId, outcome, {idempotencyKey?}) | INVALID_ARGUMENT (field), DECISION_NOT_FOUND, OUTCOME_ALREADY_RECORDED, IDEMPOTENCY_KEY_REUSED |
 * | registerDecoy(input, {idempotencyKey?})  | INVALID_ARGUMENT (field), DECOY_ALREADY_EXISTS, CATALOG_FULL, IDEMPOTENCY_KEY_REUSED |
 * | listDecoys({pageSize?, pageToken?, tier?}) | INVALID_ARGUMENT (page_size / page_token / tier)                |
 * | getBanditStats(tier, {policy?})          | INVALID_ARGUMENT (tier / policy)                                  |
 * Any method may also raise REDIS_UNAVAILABLE or INTERNAL (a broken invariant: a bug).
 * These are the service's RPCs, one method each: the engine has no API that only tests would call.
 *
 * Assess costs one Redis round trip: a single EVALSHA (store/assess-script.ts) updates the session
 * profile, looks up honeytokens found in the request, computes the level in Lua with the same
 * integer rules as JavaScript, and commits the decision the engine prepared for that tier
 * (decision record, bandit pull, honeytoken, level memory). Two rare cases add one: a request
 * carrying a known honeytoken (the credit script), and a tier whose bandit state was not
 * refreshed for `statsMaxAgeMs` (only at under ~2 requests/s per tier per replica). Concurrent
 * Assess calls already share socket writes (RedisScript pipelines the calls of one event-loop
 * turn); keep ioredis' `enableAutoPipelining` off, as platform/redis.ts does: it crashes the
 * process with defineCommand scripts (redis/ioredis#1931).
 *
 * RecordOutcome costs two round trips (decision-store.ts says why not one) and answers with the
 * arm's statistics from the counters its script returns. When the decision's decoy is missing from
 * this replica's catalog (registered by another replica since), it first brings the catalog up to
 * date: one HGET, plus a reload when the version moved.
 *
 * Not idempotent by design: Assess is an observation (each call is one more request of the
 * session) and always mints a new decision.
 */
import { createHash } from 'node:crypto';
import { optionalIdempotencyKey } from '../../../platform/idempotency-key';
import { ServiceError } from '../../../platform/service-error';
import { invariant } from '../../../platform/invariant';
import { decisionNotFound, outcomeAlreadyRecorded, serviceErrorFrom } from '../errors';
import { RandomSource } from '../domain/bandit-math';
import { ArmStats, BanditPolicy, BanditSelection, BanditStats, PropensityMethod, REWARD_MICRO_UNITS, SelectionReason, isBanditPolicy } from '../domain/bandit';
import { BanditStore } from './bandit-store';
import { AssessScript, AssessScriptReply, TierCandidate } from './assess-script';
import { DECISION_ID_PATTERN, DECISION_TTL_SECONDS_DEFAULT, DecisionDraft, DecisionStore, decisionJsonPrefix } from './decision-store';
import {
  Decoy,
  DecoyCatalog,
  DecoyKind,
  DecoyPage,
  DecoyStore,
  ListDecoysRequest,
  RegisterDecoyInput,
  RegisterResult,
  renderDecoy,
} from '../domain/decoy-catalog';
import {
  HONEYTOKEN_TTL_SECONDS_DEFAULT,
  HoneytokenAlert,
  HoneytokenRecord,
  FoundToken,
  MintedHoneytoken,
  findHoneytokens,
  honeytokenMaterial,
  mintHoneytoken,
  parseHoneytokenRecord,
  redactToken,
} from '../domain/honeytokens';
import { OutcomeInput, rewardForOutcome, toRewardMicro, validateOutcome } from '../domain/outcome-reward';
import { CamouflageKeys, RedisClient, isValidKeyPrefix } from './redis-keys';
import { ProfileConfig, SessionSnapshot, profileConfig } from '../domain/session-profile';
import { decodeSnapshot, profileArgs } from './session-profile';
import { RedisDecoyStore } from './decoy-store';
import { ThreatScorer, type ThreatScorerOptions } from '../domain/threat-scoring';
import type { AssessInput, ThreatSignal } from '../domain/threat-signals';
import { ResponseStrategy, TIERS, Tier, assertMayServe, isTier, sampleStrategy, tierForLevel } from '../domain/tiers';

export type { AssessInput, ThreatSignal } from '../domain/threat-signals';
export type { BanditPolicy, BanditStats, ArmStats } from '../domain/bandit';
export type { Decoy, DecoyPage, ListDecoysRequest, RegisterDecoyInput, RegisterResult } from '../domain/decoy-catalog';
export type { HoneytokenAlert } from '../domain/honeytokens';
export type { OutcomeInput } from '../domain/outcome-reward';
export type { ResponseStrategy, Tier } from '../domain/tiers';

export const KEY_PREFIX_DEFAULT = 'shieldx:camouflage:';
export { DECISION_TTL_SECONDS_DEFAULT } from './decision-store';
export { HONEYTOKEN_TTL_SECONDS_DEFAULT } from '../domain/honeytokens';
/** Longest decision lifetime the engine accepts (see decision-store.ts for the memory it costs). */
export const DECISION_TTL_SECONDS_MAX = 7 * 86_400;
export const HONEYTOKEN_TTL_SECONDS_MAX = 400 * 86_400;

export interface CamouflageEngineOptions {
  /** ioredis client (shared, not owned: the caller closes it). Leave `enableAutoPipelining` off (see the module doc). */
  readonly redis: RedisClient;
  /** Namespace of every key (default `shieldx:camouflage:`). */
  readonly keyPrefix?: string;
  /** Default bandit policy (default `ucb1`); Assess may override per call. */
  readonly policy?: BanditPolicy;
  /** How long decisions accept an outcome (default 900 s; see decision-store.ts for the memory sum). */
  readonly decisionTtlSeconds?: number;
  /** How long minted honeytokens are watched for (default 90 days). */
  readonly honeytokenTtlSeconds?: number;
  /** Session profile half-lives, window and TTL (see domain/session-profile.ts). */
  readonly profile?: Partial<ProfileConfig>;
  /** A WAF run over each prepared request (index.ts passes libddwaf unless CAMOUFLAGE_WAF=off); its matches are signals. */
  readonly waf?: ThreatScorerOptions['waf'];
  /** Known-bad TLS fingerprints (JA3/JA4 → label); replaces the small seed list. */
  readonly badTlsFingerprints?: ReadonlyMap<string, string> | Readonly<Record<string, string>>;
  readonly bandit?: {
    readonly statsMaxAgeMs?: number;
    readonly thompsonPropensityDraws?: number;
    readonly propensityRefreshMs?: number;
  };
  /** Called (synchronously, errors swallowed) for every sighting of a minted honeytoken. */
  readonly onHoneytokenAlert?: (alert: HoneytokenAlert) => void;
  /**
   * Called (synchronously, errors swallowed) when crediting a returning honeytoken's decoy failed.
   * Assess still succeeds: its decision is already committed, and failing it would make a client
   * retry count the request twice. The bandit misses that one credit.
   */
  readonly onHoneytokenCreditError?: (error: unknown, origin: { readonly decisionId: string; readonly decoyId: string }) => void;
  /** Randomness for jitter, tie-breaks and Thompson draws (tests seed it). Ids and tokens always use node:crypto. */
  readonly random?: RandomSource;
  /** Wall clock for outcome times and cache ages (tests may inject). */
  readonly now?: () => number;
  /** Where custom decoys live (default: Redis hash under the key prefix). */
  readonly decoyStore?: DecoyStore;
}

export interface AssessOptions {
  /** Overrides the engine's default policy for this decision (A/B comparisons). */
  readonly policy?: BanditPolicy;
}

/** The decoy to serve, already rendered. */
export interface ServedDecoy {
  readonly id: string;
  readonly kind: DecoyKind;
  readonly status: number;
  readonly contentType: string;
  readonly headers: Readonly<Record<string, string>>;
  /** Body with the honeytoken (if any) filled in. */
  readonly content: string;
  readonly carriesHoneytoken: boolean;
  readonly carriesCredentials: boolean;
}

export interface HoneytokenHit {
  readonly tokenPrefix: string;
  readonly originDecisionId: string;
  readonly originDecoyId: string;
  readonly location: string;
  readonly firstUse: boolean;
}

export interface AssessResult {
  readonly decisionId: string;
  /** Integer 0..10. */
  readonly threatLevel: number;
  readonly tier: Tier;
  /** Why: every contributing signal with its points. */
  readonly signals: readonly ThreatSignal[];
  /** Unclamped sum of points (how far past the threshold the evidence goes). */
  readonly rawPoints: number;
  readonly strategy: ResponseStrategy;
  readonly decoy: ServedDecoy;
  /** The catalog entry of the served decoy (template, description, tiers, creation time). */
  readonly decoyDefinition: Decoy;
  /**
   * The minted token when the decoy carries one. It is inside `decoy.content` already; it is
   * returned separately for the guardian's bookkeeping. Never log it (use `redactToken`).
   */
  readonly honeytoken?: { readonly token: string; readonly shape: 'shx' | 'aws'; readonly expiresAtMs: number };
  readonly policy: BanditPolicy;
  /** Probability the policy chose this decoy (UCB1: 1 or 1/ties; Thompson: Monte Carlo estimate). */
  readonly selectionProbability: number;
  readonly propensityMethod: PropensityMethod;
  /** UCB1 index (null when the arm was unplayed) or the winning Thompson sample. */
  readonly selectionScore: number | null;
  readonly selectionReason: SelectionReason;
  /** Decoys eligible for the chosen tier when its decoy was selected: the bandit's arm count. */
  readonly eligibleArms: number;
  /** Minted honeytokens this request carried (each also raised an alert). */
  readonly honeytokenHits: readonly HoneytokenHit[];
  /** The session profile after this request (explains the behavioural signals). */
  readonly session: SessionSnapshot;
  readonly assessedAtMs: number;
}

export interface RecordOutcomeOptions {
  /** Scoped to the decision: a retry with the same key and outcome replays the first result. */
  readonly idempotencyKey?: string;
}

export interface RecordOutcomeResult {
  readonly decisionId: string;
  readonly tier: Tier;
  readonly decoyId: string;
  readonly policy: BanditPolicy;
  /** With `reward` this is the offline-evaluation (IPS) row: context, action, propensity, reward. */
  readonly selectionProbability: number;
  /** Reward computed from the engagement (see domain/outcome-reward.ts). */
  readonly reward: number;
  /** Reward actually added to the arm: 0 when a honeytoken sighting had already credited the full 1.0. */
  readonly appliedReward: number;
  readonly creditedByHoneytoken: boolean;
  /** True when this was an idempotent retry answered from the first recording. */
  readonly replayed: boolean;
  readonly recordedAtMs: number;
  /**
   * The decoy's arm as the outcome left it (a replay: as it stands now), with UCB1 numbers over the
   * tier's eligible arms whatever the default policy: the counters do not depend on it, and Thompson
   * would run a Monte Carlo estimate over every arm to return this one. Undefined when the decoy no
   * longer serves the tier (the outcome is recorded all the same).
   */
  readonly arm: ArmStats | undefined;
}

interface PreparedCandidate {
  readonly decoy: Decoy;
  readonly selection: BanditSelection;
  readonly minted: MintedHoneytoken | undefined;
  readonly script: TierCandidate;
}

function positiveInteger(value: number | undefined, fallback: number, max: number, field: string): number {
  const v = value ?? fallback;
  if (!Number.isInteger(v) || v <= 0 || v > max) throw ServiceError.invalidArgument(field, `must be an integer from 1 to ${max}`);
  return v;
}

function checkDecisionId(decisionId: unknown): string {
  if (typeof decisionId !== 'string' || decisionId === '') throw ServiceError.invalidArgument('decision_id', 'is required');
  if (!DECISION_ID_PATTERN.test(decisionId)) {
    throw ServiceError.invalidArgument('decision_id', 'must be a decision id returned by Assess (a lower-case UUID)');
  }
  return decisionId;
}

function checkPolicy(policy: unknown, fallback: BanditPolicy): BanditPolicy {
  if (policy === undefined) return fallback;
  if (!isBanditPolicy(policy)) throw ServiceError.invalidArgument('policy', 'must be "ucb1" or "thompson"');
  return policy;
}

export class CamouflageEngine {
  readonly keyPrefix: string;
  readonly defaultPolicy: BanditPolicy;
  private readonly redis: RedisClient;
  private readonly keys: CamouflageKeys;
  private readonly scorer: ThreatScorer;
  private readonly profileConfig: ProfileConfig;
  private readonly assessScript: AssessScript;
  private readonly catalog: DecoyCatalog;
  private readonly bandit: BanditStore;
  private readonly decisions: DecisionStore;
  private readonly decisionTtlSeconds: number;
  private readonly honeytokenTtlSeconds: number;
  private readonly onHoneytokenAlert: ((alert: HoneytokenAlert) => void) | undefined;
  private readonly onHoneytokenCreditError: CamouflageEngineOptions['onHoneytokenCreditError'];
  private readonly random: RandomSource;
  private readonly now: () => number;

  /** Validates the options (INVALID_ARGUMENT naming the option) and wires the parts; no I/O. */
  constructor(options: CamouflageEngineOptions) {
    if (options.redis === undefined || options.redis === null) throw ServiceError.invalidArgument('redis', 'is required (an ioredis client)');
    this.redis = options.redis;
    this.keyPrefix = options.keyPrefix ?? KEY_PREFIX_DEFAULT;
    // Redis Cluster gets the sharded key layout (redis-keys.ts), where a hash tag in the prefix would pin every key to one slot.
    const sharded = this.redis.isCluster === true;
    if (!isValidKeyPrefix(this.keyPrefix)) throw ServiceError.invalidArgument('keyPrefix', 'must be 1-64 printable ASCII characters');
    if (!isValidKeyPrefix(this.keyPrefix, sharded)) {
      throw ServiceError.invalidArgument('keyPrefix', 'must not contain "{" with Redis Cluster (a hash tag would put all state on one shard)');
    }
    this.defaultPolicy = checkPolicy(options.policy, 'ucb1');
    this.decisionTtlSeconds = positiveInteger(options.decisionTtlSeconds, DECISION_TTL_SECONDS_DEFAULT, DECISION_TTL_SECONDS_MAX, 'decisionTtlSeconds');
    this.honeytokenTtlSeconds = positiveInteger(options.honeytokenTtlSeconds, HONEYTOKEN_TTL_SECONDS_DEFAULT, HONEYTOKEN_TTL_SECONDS_MAX, 'honeytokenTtlSeconds');
    this.random = options.random ?? Math.random;
    this.now = options.now ?? Date.now;
    this.onHoneytokenAlert = options.onHoneytokenAlert;
    this.onHoneytokenCreditError = options.onHoneytokenCreditError;
    this.keys = new CamouflageKeys(this.keyPrefix, sharded);
    this.profileConfig = profileConfig(options.profile);
    this.scorer = new ThreatScorer({ badTlsFingerprints: options.badTlsFingerprints, profile: this.profileConfig, ...(options.waf ? { waf: options.waf } : {}) });
    this.assessScript = new AssessScript({
      rules: this.scorer.rules,
      profile: this.profileConfig,
      decisionTtlSeconds: this.decisionTtlSeconds,
      honeytokenTtlSeconds: this.honeytokenTtlSeconds,
    });
    this.catalog = new DecoyCatalog(options.decoyStore ?? new RedisDecoyStore(this.redis, this.keys, this.now));
    this.bandit = new BanditStore(this.redis, this.keys, { ...options.bandit, random: this.random, now: this.now });
    this.decisions = new DecisionStore(this.redis, this.keys);
  }

  /** Loads the decoy catalog and the bandit state. Optional (Assess loads lazily) but lets startup fail fast. */
  async start(): Promise<void> {
    try {
      await this.catalog.refresh();
      await this.bandit.refresh(TIERS, this.keys.decoysMeta());
    } catch (thrown) {
      throw serviceErrorFrom(thrown);
    }
  }

  /**
   * Scores a request, picks the tier's decoy with the bandit, mints a honeytoken when the decoy
   * carries one, and stores the decision for RecordOutcome. See the module doc for its cost.
   */
  async assess(input: AssessInput, options: AssessOptions = {}): Promise<AssessResult> {
    try {
      const policy = checkPolicy(options.policy, this.defaultPolicy);
      const prepared = this.scorer.prepare(input);
      const request = prepared.request;
      const clean = request.input;
      const found = findHoneytokens(request);
      await this.catalog.ensureLoaded();

      // Every tier the request can still reach gets a prepared decision (behaviour, memory and
      // honeytokens only add to the static points).
      const reachable = TIERS.slice(TIERS.indexOf(tierForLevel(prepared.levelFloor)));
      const prefetch = reachable.filter((tier) => this.bandit.needsPrefetch(tier));
      if (prefetch.length > 0) this.catalog.noteVersion(await this.bandit.refresh(prefetch, this.keys.decoysMeta()));
      // The decision (and any token it mints) lives in its session's shard (redis-keys.ts; one shard when not sharded).
      const shard = this.keys.sessionShard(clean.sessionKey);
      const decisionId = this.keys.newDecisionId(shard);
      // Sharded layout: a token found in the request may live in any shard, so it is looked up
      // before the script (one more round trip, only for requests that carry tokens).
      const priorLookups = this.keys.sharded && found.length > 0
        ? await Promise.all(found.map((token) => this.redis.hgetall(this.keys.honeytoken(token.token))))
        : undefined;
      const candidates: (PreparedCandidate | undefined)[] = TIERS.map((tier) =>
        reachable.includes(tier) ? this.prepareCandidate(tier, policy, decisionId, clean.timestampMs, shard) : undefined,
      );

      let reply: AssessScriptReply;
      try {
        reply = await this.assessScript.run(this.redis, {
          profileKey: this.keys.profile(clean.sessionKey),
          pathsKey: this.keys.profilePaths(clean.sessionKey),
          catalogMetaKey: this.keys.assessCatalogMeta(clean.sessionKey),
          banditKeys: TIERS.map((tier) => this.keys.bandit(tier, shard)),
          decisionKey: this.keys.decision(decisionId),
          decisionId,
          profileArgs: profileArgs(clean),
          staticPoints: prepared.staticPoints,
          candidates: candidates.map((candidate) => candidate?.script),
          lookupKeys: priorLookups === undefined ? found.map((token) => this.keys.honeytoken(token.token)) : [],
          priorHits: priorLookups?.filter((record) => parseHoneytokenRecord(record) !== undefined).length ?? 0,
          returnStateFor: new Set(reachable.filter((tier) => this.bandit.wantsRefresh(tier))),
        });
      } catch (thrown) {
        candidates.forEach((candidate, i) => candidate && this.bandit.revertLocalPull(TIERS[i] as Tier, candidate.decoy.id));
        throw thrown;
      }
      const tier = reply.tier;
      const chosen = candidates[TIERS.indexOf(tier)];
      invariant(chosen !== undefined, `a candidate was prepared for tier ${tier}`);
      candidates.forEach((candidate, i) => candidate && candidate !== chosen && this.bandit.revertLocalPull(TIERS[i] as Tier, candidate.decoy.id));
      if (reply.banditState !== undefined) this.bandit.absorb(tier, reply.banditState);
      if (reply.catalogVersion !== undefined) this.catalog.noteVersion(reply.catalogVersion);

      // Recompute the level in JavaScript from the same snapshot: both implementations must agree.
      const snapshot = decodeSnapshot(reply.snapshot, this.profileConfig);
      const hits: { found: FoundToken; record: HoneytokenRecord }[] = [];
      found.forEach((token, i) => {
        const record = parseHoneytokenRecord((priorLookups ?? reply.lookups)[i] ?? null);
        if (record !== undefined) hits.push({ found: token, record });
      });
      const assessment = this.scorer.finish(
        prepared,
        snapshot,
        hits.map((hit) => ({ decisionId: hit.record.decisionId, decoyId: hit.record.decoyId, location: hit.found.location })),
      );
      invariant(assessment.threatLevel === reply.level, `JS level ${assessment.threatLevel} equals Lua level ${reply.level}`);
      invariant(assessment.tier === tier, `JS tier ${assessment.tier} equals Lua tier ${tier}`);

      const decoy = chosen.decoy;
      assertMayServe(tier, decoy); // second enforcement point of the tier rule, on what is served
      const content = renderDecoy(decoy, chosen.minted === undefined ? undefined : honeytokenMaterial(chosen.minted));
      const strategy = sampleStrategy(tier, this.random);

      // Returning honeytokens: credit the decoy that leaked them (rare; the only extra round trip).
      // The decision, pull and profile are committed already: a failed credit is reported, not
      // thrown, since failing Assess now would make a client retry count the request twice.
      const credits = await Promise.all(
        hits.map((hit) =>
          this.decisions.creditHoneytoken(hit.found.token, hit.record, snapshot.lastSeenMs).catch((error: unknown) => {
            this.emitCreditError(error, hit.record);
            return undefined;
          }),
        ),
      );
      const honeytokenHits: HoneytokenHit[] = hits.map((hit, i) => {
        const credit = credits[i];
        const firstUse = credit?.status === 'credited';
        this.emitAlert({
          tokenPrefix: redactToken(hit.found.token),
          shape: hit.record.shape,
          originDecisionId: hit.record.decisionId,
          originDecoyId: hit.record.decoyId,
          originTier: hit.record.tier,
          mintedAtMs: hit.record.mintedAtMs,
          decisionId,
          seenAtMs: clean.timestampMs,
          clientIp: clean.clientIp,
          sessionKey: clean.sessionKey,
          location: hit.found.location,
          firstUse,
          creditedReward: (credit?.creditedMicro ?? 0) / REWARD_MICRO_UNITS,
        });
        return {
          tokenPrefix: redactToken(hit.found.token),
          originDecisionId: hit.record.decisionId,
          originDecoyId: hit.record.decoyId,
          location: hit.found.location,
          firstUse,
        };
      });

      const selection = chosen.selection;
      return {
        decisionId,
        threatLevel: assessment.threatLevel,
        tier,
        signals: assessment.signals,
        rawPoints: assessment.rawPoints,
        strategy,
        decoy: {
          id: decoy.id,
          kind: decoy.kind,
          status: decoy.status,
          contentType: decoy.contentType,
          headers: decoy.headers,
          content,
          carriesHoneytoken: decoy.carriesHoneytoken,
          carriesCredentials: decoy.carriesCredentials,
        },
        decoyDefinition: decoy,
        honeytoken:
          chosen.minted === undefined
            ? undefined
            : { token: chosen.minted.token, shape: chosen.minted.shape, expiresAtMs: snapshot.lastSeenMs + reply.honeytokenTtlMs },
        policy,
        selectionProbability: selection.selectionProbability,
        propensityMethod: selection.propensityMethod,
        selectionScore: selection.score,
        selectionReason: selection.reason,
        eligibleArms: selection.armCount,
        honeytokenHits,
        session: snapshot,
        assessedAtMs: clean.timestampMs,
      };
    } catch (thrown) {
      throw serviceErrorFrom(thrown);
    }
  }

  /** Chooses the tier's decoy with the bandit and drafts its decision (and token, if it carries one). */
  private prepareCandidate(tier: Tier, policy: BanditPolicy, decisionId: string, assessedAtMs: number, shard: number): PreparedCandidate {
    const eligible = this.catalog.eligible(tier);
    const selection = this.bandit.select(tier, this.catalog.eligibleIds(tier), policy);
    const decoy = eligible.find((candidate) => candidate.id === selection.decoyId);
    invariant(decoy !== undefined, 'bandit chose an eligible decoy');
    assertMayServe(tier, decoy); // checked before a token can be minted for it
    let minted: MintedHoneytoken | undefined;
    if (decoy.carriesHoneytoken) {
      invariant(decoy.honeytokenShape !== undefined, `honeytoken decoy ${decoy.id} has a shape`);
      minted = mintHoneytoken(decoy.honeytokenShape, tier);
      // Sharded layout: mint until the token falls in the decision's shard (1 in 16 does; the
      // chance that 512 draws all miss is below 1e-14).
      for (let draw = 1; this.keys.tokenShard(minted.token) !== shard && draw < 512; draw++) minted = mintHoneytoken(decoy.honeytokenShape, tier);
      invariant(this.keys.tokenShard(minted.token) === shard, 'a honeytoken minted in its decision\'s shard');
    }
    const draft: DecisionDraft = {
      decisionId,
      tier,
      decoyId: decoy.id,
      policy,
      selectionProbability: selection.selectionProbability,
      propensityMethod: selection.propensityMethod,
      score: selection.score,
      reason: selection.reason,
      armCount: selection.armCount,
      assessedAtMs,
      honeytoken: minted?.token ?? '',
    };
    return {
      decoy,
      selection,
      minted,
      script: {
        decoyId: decoy.id,
        decisionJsonPrefix: decisionJsonPrefix(draft),
        honeytoken: minted === undefined ? undefined : { key: this.keys.honeytoken(minted.token), shape: minted.shape },
      },
    };
  }

  private emitAlert(alert: HoneytokenAlert): void {
    if (this.onHoneytokenAlert === undefined) return;
    try {
      this.onHoneytokenAlert(alert);
    } catch {
      // An alert sink failing must not fail the assessment that detected the attack.
    }
  }

  private emitCreditError(error: unknown, origin: HoneytokenRecord): void {
    if (this.onHoneytokenCreditError === undefined) return;
    try {
      this.onHoneytokenCreditError(error, { decisionId: origin.decisionId, decoyId: origin.decoyId });
    } catch {
      // A reporting sink failing must not fail the assessment either.
    }
  }

  /**
   * Turns engagement into a reward (domain/outcome-reward.ts) and adds it to the decision's arm, exactly
   * once. Validation happens before any Redis access; the write is one atomic script that refuses
   * (without writing) unknown and already-recorded decisions.
   */
  async recordOutcome(decisionId: string, outcome: OutcomeInput, options: RecordOutcomeOptions = {}): Promise<RecordOutcomeResult> {
    try {
      const id = checkDecisionId(decisionId);
      const clean = validateOutcome(outcome);
      const idempotencyKey = optionalIdempotencyKey(options.idempotencyKey ?? '') ?? '';
      const reward = rewardForOutcome(clean);
      const rewardMicro = toRewardMicro(reward);
      const fingerprint = createHash('sha256')
        // reachedRealAsset only when set, so outcomes recorded before it existed keep their fingerprint.
        .update(JSON.stringify([clean.interactions, clean.dwellSeconds, clean.honeytokenUsed, clean.credentialsSubmitted, ...(clean.reachedRealAsset ? [true] : [])]))
        .digest('hex')
        .slice(0, 32);

      await this.catalog.ensureLoaded();
      const d = await this.decisions.read(id);
      if (d === undefined) throw decisionNotFound(id, `decision ${id} does not exist or has expired`);
      // The reward goes to the arm the decision recorded when it was served (d.tier, d.decoyId),
      // never to one looked up again in a catalog: the outcome describes that decoy, and the
      // decision is the offline-evaluation row (context, action, propensity) it completes. Only the
      // arm statistics answered come from this replica's catalog, which can be older than the
      // decision when another replica registered the decoy: then it is brought up to date first
      // (before the write, so a failure leaves nothing recorded and the call can be retried).
      if (!this.catalog.eligibleIds(d.tier).includes(d.decoyId)) await this.catalog.sync();
      const recordedAtMs = this.now();
      const write = await this.decisions.writeOutcome(d, rewardMicro, recordedAtMs, idempotencyKey, fingerprint);
      if (write === 'not_found') throw decisionNotFound(id, `decision ${id} expired`);
      // A decoy that no longer serves the tier even so (gone from Redis) still has its outcome
      // recorded, exactly once, and counted on its arm; the bandit, which only chooses among the
      // catalog's decoys, ignores it, and no arm is answered. Not an error: the engagement did
      // happen, a retry could change nothing, and refusing it would drop the row from the log.
      const arm = this.bandit.statsOf(d.tier, write.tierState, this.catalog.eligibleIds(d.tier), 'ucb1').arms.find((a) => a.decoyId === d.decoyId);
      const base = { decisionId: id, tier: d.tier, decoyId: d.decoyId, policy: d.policy, selectionProbability: d.selectionProbability, arm };
      if (write.status === 'recorded') {
        return {
          ...base,
          reward: rewardMicro / REWARD_MICRO_UNITS,
          appliedReward: write.appliedRewardMicro / REWARD_MICRO_UNITS,
          creditedByHoneytoken: write.creditedByHoneytoken,
          replayed: false,
          recordedAtMs,
        };
      }
      if (idempotencyKey !== '' && write.idempotencyKey === idempotencyKey) {
        if (write.fingerprint !== fingerprint) {
          throw ServiceError.idempotencyKeyReused(idempotencyKey, { metadata: { decisionId: id } });
        }
        return {
          ...base,
          reward: write.rewardMicro / REWARD_MICRO_UNITS,
          appliedReward: write.appliedRewardMicro / REWARD_MICRO_UNITS,
          creditedByHoneytoken: write.creditedByHoneytoken,
          replayed: true,
          recordedAtMs: write.recordedAtMs,
        };
      }
      throw outcomeAlreadyRecorded(id);
    } catch (thrown) {
      throw serviceErrorFrom(thrown);
    }
  }

  /** Adds a custom decoy visible to every replica (validated; tier rule enforced). */
  async registerDecoy(input: RegisterDecoyInput, options: { idempotencyKey?: string } = {}): Promise<RegisterResult> {
    try {
      return await this.catalog.register(input, options.idempotencyKey);
    } catch (thrown) {
      throw serviceErrorFrom(thrown);
    }
  }

  /** One page of the catalog (built-in and custom, ordered by id; only those serving `tier` when given). */
  async listDecoys(request: ListDecoysRequest = {}): Promise<DecoyPage> {
    try {
      return await this.catalog.list(request);
    } catch (thrown) {
      throw serviceErrorFrom(thrown);
    }
  }

  /** Pulls, mean reward, UCB1 index, Thompson posterior and selection probability per eligible arm. */
  async getBanditStats(tier: Tier, options: { policy?: BanditPolicy } = {}): Promise<BanditStats> {
    try {
      if (!isTier(tier)) throw ServiceError.invalidArgument('tier', `must be one of ${TIERS.join(', ')}`);
      const policy = checkPolicy(options.policy, this.defaultPolicy);
      // Like ListDecoys: a replica with no Assess traffic since another registered a decoy must still report its arm.
      await this.catalog.sync();
      return await this.bandit.getStats(tier, this.catalog.eligible(tier).map((decoy) => decoy.id), policy);
    } catch (thrown) {
      throw serviceErrorFrom(thrown);
    }
  }
}
