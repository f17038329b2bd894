/**
 * Decisions in Redis and the scripts that keep learning exactly-once:
 *
 * - commit: part of the Assess script (assess-script.ts): the decision is an immutable JSON
 *   string written with `SET NX PX` together with the bandit pull and any minted honeytoken.
 * - outcome (RecordOutcome): checks the decision exists and has no outcome, then stores the
 *   outcome (in the decision's state hash, which lives exactly as long as the decision) and adds
 *   the reward to the arm, in one script: a concurrent duplicate can never apply twice, and no
 *   refusal writes anything (checks come before writes; Redis does not roll scripts back). The
 *   script returns the tier's counters as they stand after it, so RecordOutcome answers with the
 *   arm's statistics without reading them again. RecordOutcome is two round trips: a GET of the
 *   decision first, because its tier, decoy and honeytoken name the keys the script touches
 *   (a script must be given every key it touches, or Redis Cluster cannot route it), then the script.
 * - credit (a minted honeytoken came back): tops the origin pull's reward up to 1.0, once.
 *
 * Per-pull reward never exceeds 1: the outcome script adds r and mirrors it into the token
 * record; the credit script adds 1 − r (or 1 when no outcome yet) and marks the decision, after
 * which an outcome adds nothing. Either order ends at exactly 1.0 for that pull.
 */
import { redisUnavailable } from '../errors';
import { type BanditSelection, BanditPolicy, isBanditPolicy, PropensityMethod, REWARD_MICRO_UNITS, SelectionReason } from '../domain/bandit';
import { CamouflageKeys, RedisClient, pairsToRecord } from './redis-keys';
import { RedisScript } from './redis-script';
import { readTierState } from './bandit-store';
import { Tier, isTier } from '../domain/tiers';

/**
 * Default decision lifetime: outcomes must be reported within 15 minutes, which covers the dwell
 * the reward saturates at (5 min) with room to spare. Memory is the bound that matters: every
 * Assess stores one decision of ~350 B (key, JSON, expiry entry), so the resident set is about
 * rate × TTL × 350 B: 2 000 req/s × 900 s ≈ 630 MB; 10 000 req/s sustained ≈ 3.2 GB. Raise
 * it only with the sum redone.
 */
export const DECISION_TTL_SECONDS_DEFAULT = 900;

/** Decision ids are random UUIDs (v4); anything else is rejected before touching Redis. */
export const DECISION_ID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

/** What Redis keeps about one decision (the offline-evaluation log row, minus the reward): the bandit's selection, and where it was made. */
export interface DecisionRecord extends BanditSelection {
  readonly decisionId: string;
  readonly tier: Tier;
  readonly threatLevel: number;
  readonly assessedAtMs: number;
  /** The minted token ('' when none) — kept so outcomes and credits can find each other. */
  readonly honeytoken: string;
}

/** A decision before the Assess script knows its level. */
export type DecisionDraft = Omit<DecisionRecord, 'threatLevel'>;

/**
 * The stored JSON of a draft without its closing brace: the Assess script appends `,"l":<level>}`
 * once it has computed the level (short keys: one of these is written per request).
 */
export function decisionJsonPrefix(d: DecisionDraft): string {
  const json = JSON.stringify({
    t: d.tier, o: d.decoyId, pol: d.policy, p: d.selectionProbability, pm: d.propensityMethod, s: d.score,
    why: d.reason, k: d.armCount, at: d.assessedAtMs, ht: d.honeytoken,
  });
  return json.slice(0, -1);
}

function parseDecision(decisionId: string, json: string): DecisionRecord {
  let r: Record<string, unknown>;
  try {
    r = JSON.parse(json) as Record<string, unknown>;
  } catch (cause) {
    throw redisUnavailable(`decision ${decisionId} record is unreadable`, cause);
  }
  if (!isTier(r.t) || !isBanditPolicy(r.pol) || typeof r.o !== 'string') {
    throw redisUnavailable(`decision ${decisionId} record is unreadable`);
  }
  return {
    decisionId,
    tier: r.t,
    decoyId: r.o,
    policy: r.pol,
    selectionProbability: Number(r.p),
    propensityMethod: r.pm as PropensityMethod,
    score: typeof r.s === 'number' ? r.s : null,
    reason: r.why as SelectionReason,
    armCount: Number(r.k) || 0,
    threatLevel: Number(r.l) || 0,
    assessedAtMs: Number(r.at) || 0,
    honeytoken: String(r.ht ?? ''),
  };
}

// KEYS: 1 decision, 2 decision state hash, 3 bandit tier hash, 4 honeytoken (optional)
// ARGV: 1 decoy id, 2 reward micro, 3 recorded ms, 4 idempotency key, 5 fingerprint
// Reply: {'NOT_FOUND'} | {'DUPLICATE', reward, key, fingerprint, credited, recorded ms, applied, tier state}
//      | {'OK', applied, credited, tier state} — tier state: HGETALL of the tier hash after the write.
const OUTCOME_LUA = `
local ttl = redis.call('PTTL', KEYS[1])
if ttl == -2 then return {'NOT_FOUND'} end
local s = redis.call('HMGET', KEYS[2], 'or', 'oik', 'ofp', 'hc', 'oat', 'oad')
-- type() checks, not truthiness: a missing field is false in Redis and null in the in-process store.
if type(s[1]) == 'string' then
  return {'DUPLICATE', s[1], s[2] or '', s[3] or '', s[4] or '0', s[5] or '0', s[6] or '0', redis.call('HGETALL', KEYS[3])}
end
local delta = tonumber(ARGV[2])
local credited = '0'
if s[4] == '1' then
  delta = 0
  credited = '1'
elseif #KEYS >= 4 and redis.call('EXISTS', KEYS[4]) == 1 then
  redis.call('HSET', KEYS[4], 'r', ARGV[2])
end
redis.call('HSET', KEYS[2], 'or', ARGV[2], 'oat', ARGV[3], 'oik', ARGV[4], 'ofp', ARGV[5], 'oad', delta)
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
redis.call('HINCRBY', KEYS[3], ARGV[1] .. ':o', 1)
if delta > 0 then redis.call('HINCRBY', KEYS[3], ARGV[1] .. ':r', delta) end
return {'OK', delta, credited, redis.call('HGETALL', KEYS[3])}
`;

// KEYS: 1 honeytoken, 2 bandit tier hash of the origin, 3 origin decision, 4 its state hash
// ARGV: 1 origin decoy id, 2 seen ms, 3 full reward micro
const CREDIT_LUA = `
local h = redis.call('HMGET', KEYS[1], 'o', 'c', 'r')
if type(h[1]) ~= 'string' then return {'GONE', 0} end
if h[1] ~= ARGV[1] then return {'CHANGED', 0} end
redis.call('HINCRBY', KEYS[1], 'uses', 1)
redis.call('HSET', KEYS[1], 'seen', ARGV[2])
if h[2] == '1' then return {'ALREADY', 0} end
local delta = tonumber(ARGV[3]) - (tonumber(h[3]) or 0)
if delta < 0 then delta = 0 end
redis.call('HSET', KEYS[1], 'c', '1')
if delta > 0 then redis.call('HINCRBY', KEYS[2], ARGV[1] .. ':r', delta) end
local ttl = redis.call('PTTL', KEYS[3])
if ttl > 0 then
  redis.call('HSET', KEYS[4], 'hc', '1')
  redis.call('PEXPIRE', KEYS[4], ttl)
end
return {'CREDITED', delta}
`;

const OUTCOME_SCRIPT = new RedisScript('shxCamoOutcome', OUTCOME_LUA);
const CREDIT_SCRIPT = new RedisScript('shxCamoCredit', CREDIT_LUA);

export type OutcomeWrite = (
  | { readonly status: 'recorded'; readonly appliedRewardMicro: number; readonly creditedByHoneytoken: boolean }
  | {
      readonly status: 'duplicate';
      readonly rewardMicro: number;
      readonly idempotencyKey: string;
      readonly fingerprint: string;
      readonly creditedByHoneytoken: boolean;
      readonly recordedAtMs: number;
      readonly appliedRewardMicro: number;
    }
) & {
  /** The decision's tier hash (bandit counters) as the script left it. */
  readonly tierState: Record<string, string>;
};

export type CreditResult = { readonly status: 'credited' | 'already' | 'gone'; readonly creditedMicro: number };

export class DecisionStore {
  constructor(
    private readonly redis: RedisClient,
    private readonly keys: CamouflageKeys,
  ) {}

  /** The stored decision, or undefined when unknown or expired (one GET). */
  async read(decisionId: string): Promise<DecisionRecord | undefined> {
    const json = await this.redis.get(this.keys.decision(decisionId));
    return json === null ? undefined : parseDecision(decisionId, json);
  }

  /** Atomically records an outcome for `decision` (see OUTCOME_LUA); never writes on refusal. */
  async writeOutcome(
    decision: DecisionRecord,
    rewardMicro: number,
    recordedAtMs: number,
    idempotencyKey: string,
    fingerprint: string,
  ): Promise<OutcomeWrite | 'not_found'> {
    const shard = this.keys.decisionShard(decision.decisionId);
    const keys = [this.keys.decision(decision.decisionId), this.keys.decisionState(decision.decisionId), this.keys.bandit(decision.tier, shard)];
    if (decision.honeytoken !== '') keys.push(this.keys.honeytoken(decision.honeytoken));
    const reply = (await OUTCOME_SCRIPT.run(this.redis, keys, [decision.decoyId, rewardMicro, recordedAtMs, idempotencyKey, fingerprint])) as unknown[];
    const status = reply[0];
    // Sharded layout: the script saw only its shard's part of the tier; the answer needs the whole.
    const tierState = async (part: unknown) => (this.keys.sharded ? readTierState(this.redis, this.keys, decision.tier) : pairsToRecord(part));
    if (status === 'NOT_FOUND') return 'not_found';
    if (status === 'OK') {
      return { status: 'recorded', appliedRewardMicro: Number(reply[1]), creditedByHoneytoken: reply[2] === '1', tierState: await tierState(reply[3]) };
    }
    if (status === 'DUPLICATE') {
      return {
        status: 'duplicate',
        rewardMicro: Number(reply[1]),
        idempotencyKey: String(reply[2] ?? ''),
        fingerprint: String(reply[3] ?? ''),
        creditedByHoneytoken: reply[4] === '1',
        recordedAtMs: Number(reply[5]) || 0,
        appliedRewardMicro: Number(reply[6]) || 0,
        tierState: await tierState(reply[7]),
      };
    }
    throw new Error(`outcome script returned ${String(status)}`);
  }

  /** Credits the decoy that leaked `token` (first sighting only). */
  async creditHoneytoken(token: string, origin: { decisionId: string; decoyId: string; tier: Tier }, seenAtMs: number): Promise<CreditResult> {
    const reply = (await CREDIT_SCRIPT.run(
      this.redis,
      // The token was minted in its decision's shard (engine.ts), so these four share one slot.
      [
        this.keys.honeytoken(token),
        this.keys.bandit(origin.tier, this.keys.decisionShard(origin.decisionId)),
        this.keys.decision(origin.decisionId),
        this.keys.decisionState(origin.decisionId),
      ],
      [origin.decoyId, seenAtMs, REWARD_MICRO_UNITS],
    )) as unknown[];
    const status = reply[0];
    const creditedMicro = Number(reply[1]) || 0;
    if (status === 'CREDITED') return { status: 'credited', creditedMicro };
    if (status === 'ALREADY') return { status: 'already', creditedMicro: 0 };
    if (status === 'GONE') return { status: 'gone', creditedMicro: 0 };
    throw new Error(`honeytoken record changed under credit (${String(status)})`);
  }
}
