/**
 * The single round trip of Assess: one Lua script that, atomically,
 *   1. updates the session profile (store/session-profile.ts fragments),
 *   2. looks up candidate honeytokens found in the request,
 *   3. computes the level with the same integer rules as JavaScript (domain/threat-signals.ts) and so
 *      the tier,
 *   4. commits the decision the engine prepared for that tier: decision record (`SET NX PX`),
 *      bandit pull, minted honeytoken, level memory,
 *   5. returns the snapshot, the level and tier, the minted token's TTL, the honeytoken records
 *      found, and — when the replica
 *      asked because its copy is getting old — the tier's bandit state and the catalog version.
 *
 * Why one script rather than "observe, then decide, then commit": the tier depends on the
 * profile, so a decide-in-JavaScript design needs two sequential round trips. Instead the engine
 * prepares a candidate decision for every tier the request can still reach (its static points
 * give a floor; behaviour, memory and honeytokens only add) and the script picks one. Preparing
 * up to four candidates costs a few microseconds of CPU (bandit index over ≤ 10 arms, a token
 * mint for honeytoken decoys); a round trip costs a syscall pair, a reply parse and a Redis
 * script call, and halves latency. The engine then recomputes the level in JavaScript from the
 * returned snapshot and asserts it equals the script's (the scoring invariant, checked twice).
 *
 * KEYS: 1 profile hash, 2 path zset, 3 catalog meta, 4-7 bandit hash per tier (TIERS order),
 *       8 decision, 9.. honeytoken keys of candidates that mint one, then the lookup keys.
 * ARGV: 1-3 profile (now, path member, status), 4 static points, 5 number of lookup keys,
 *       6 per-tier "return state" flags ("0110"), 7 decision id, 8-11 one packed candidate per
 *       tier: `<decoy id>|<honeytoken key index, 0 = none>|<shape>|<decision JSON without its
 *       closing brace>`, or '' where the request cannot land.
 * Per-engine constants (half-lives, window, TTLs, thresholds) are compiled into the script text
 * rather than sent with every call.
 *
 * Honeytoken memory bound: a session's first {@link SESSION_LONG_LIVED_HONEYTOKENS_MAX} tokens
 * get the long honeytoken TTL; later ones (a scanner hammering honeytoken decoys) live only as
 * long as a decision. They stay unique and detected while they live, but a single session cannot
 * fill Redis with 90-day records. Sum: ~200 B per token record; 64 per session.
 */
import { createHash } from 'node:crypto';
import { invariant } from '../../../platform/invariant';
import { redisUnavailable } from '../errors';
import type { HoneytokenShape } from '../domain/decoy-catalog';
import { pairsToRecord, RedisClient } from './redis-keys';
import { RedisScript } from './redis-script';
import type { ProfileConfig } from '../domain/session-profile';
import { PROFILE_WRITE_LUA, SNAPSHOT_REPLY_LENGTH, profileReadLua } from './session-profile';
import { BehaviourRules, SIGNAL_POINTS, behaviourRulesLua } from '../domain/threat-signals';
import { THREAT_LEVEL_MAX, TIER_POLICIES, TIERS, Tier } from '../domain/tiers';

/** One tier's prepared decision, committed only if the script lands on that tier. */
export interface TierCandidate {
  readonly decoyId: string;
  /** The decision's JSON without the closing brace; the script appends `,"l":<level>}`. */
  readonly decisionJsonPrefix: string;
  readonly honeytoken?: { readonly key: string; readonly shape: HoneytokenShape };
}

/** Tokens per session profile that get the long honeytoken TTL (see module doc). */
export const SESSION_LONG_LIVED_HONEYTOKENS_MAX = 64;

export interface AssessScriptConfig {
  readonly rules: BehaviourRules;
  readonly profile: ProfileConfig;
  readonly decisionTtlSeconds: number;
  readonly honeytokenTtlSeconds: number;
}

export interface AssessScriptRequest {
  readonly profileKey: string;
  readonly pathsKey: string;
  readonly catalogMetaKey: string;
  readonly banditKeys: readonly string[];
  readonly decisionKey: string;
  readonly decisionId: string;
  /** ARGV 1-3 for the profile fragment (`profileArgs`). */
  readonly profileArgs: readonly (string | number)[];
  readonly staticPoints: number;
  /** Indexed like TIERS; undefined where the request cannot land. */
  readonly candidates: readonly (TierCandidate | undefined)[];
  /** Honeytoken keys to look up (tokens found in the request). */
  readonly lookupKeys: readonly string[];
  /** Honeytokens found valid before the script (sharded layout, where lookupKeys is empty); default 0. */
  readonly priorHits?: number;
  /** Tiers whose bandit state (and the catalog version) should come back. */
  readonly returnStateFor: ReadonlySet<Tier>;
}

export interface AssessScriptReply {
  /** Raw profile integers, for `decodeSnapshot`. */
  readonly snapshot: readonly unknown[];
  readonly level: number;
  readonly tier: Tier;
  /** TTL given to the minted honeytoken (0 when none): shorter past the per-session cap. */
  readonly honeytokenTtlMs: number;
  /** One record per lookup key (null when absent). */
  readonly lookups: readonly (Record<string, string> | null)[];
  readonly banditState: Record<string, string> | undefined;
  readonly catalogVersion: number | undefined;
}

function buildLua(config: AssessScriptConfig): string {
  const isTierName = TIERS.map((tier) => `t == '${tier}'`).join(' or ');
  const tierOfLevel = TIERS.map((tier, i) =>
    i === TIERS.length - 1 ? `else tier = ${i + 1}; tier_name = '${tier}'` : `${i === 0 ? 'if' : 'elseif'} level <= ${TIER_POLICIES[tier].levelMax} then tier = ${i + 1}; tier_name = '${tier}'`,
  ).join(' ');
  return `
${profileReadLua(config.profile)}
${behaviourRulesLua(config.rules)}
local lookups_n = tonumber(ARGV[5])
local lookups = {}
local hits = tonumber(ARGV[12])
for i = #KEYS - lookups_n + 1, #KEYS do
  local rec = redis.call('HGETALL', KEYS[i])
  lookups[#lookups + 1] = rec
  local fields = {}
  for j = 1, #rec - 1, 2 do fields[rec[j]] = rec[j + 1] end
  local t = fields['t']
  if fields['d'] and fields['o'] and (${isTierName}) and (fields['s'] == 'shx' or fields['s'] == 'aws') then
    hits = hits + 1
  end
end
local points = tonumber(ARGV[4]) + behaviour + hits * ${SIGNAL_POINTS.honeytokenReplayed}
if carry > points then points = carry end
local level = points
if level > ${THREAT_LEVEL_MAX} then level = ${THREAT_LEVEL_MAX} end
if hits > 0 then level = ${THREAT_LEVEL_MAX} end
local tier, tier_name
${tierOfLevel} end
local group = ARGV[7 + tier]
if group == '' then
  -- A broken invariant; still leave nothing without a TTL (the ZADD above may have created the set).
  if refresh then redis.call('PEXPIRE', KEYS[2], ttl) end
  return redis.error_reply('ERR no candidate decoy for tier ' .. tier_name)
end
local s1 = string.find(group, '|', 1, true)
local s2 = string.find(group, '|', s1 + 1, true)
local s3 = string.find(group, '|', s2 + 1, true)
local decoy = string.sub(group, 1, s1 - 1)
local token_key = tonumber(string.sub(group, s1 + 1, s2 - 1))
local shape = string.sub(group, s2 + 1, s3 - 1)
local token_ttl = ${config.honeytokenTtlSeconds * 1_000}
if token_key > 0 then
  hn = hn + 1
  if hn > ${SESSION_LONG_LIVED_HONEYTOKENS_MAX} then token_ttl = ${config.decisionTtlSeconds * 1_000} end
end
${PROFILE_WRITE_LUA}
if not redis.call('SET', KEYS[8], string.sub(group, s3 + 1) .. ',"l":' .. level .. '}', 'PX', ${config.decisionTtlSeconds * 1_000}, 'NX') then
  return redis.error_reply('ERR decision id collision')
end
redis.call('HINCRBY', KEYS[3 + tier], decoy .. ':p', 1)
if token_key > 0 then
  redis.call('HSET', KEYS[token_key], 'd', ARGV[7], 'o', decoy, 't', tier_name, 's', shape, 'm', now)
  redis.call('PEXPIRE', KEYS[token_key], token_ttl)
end
if token_key == 0 then token_ttl = 0 end
local out = {rc, sn, s4, sa, s5, lvd, n, f, now, dt, distinct, level, tier, token_ttl, lookups}
if string.sub(ARGV[6], tier, tier) == '1' then
  out[16] = redis.call('HGETALL', KEYS[3 + tier])
  out[17] = redis.call('HGET', KEYS[3], 'version') or '0'
end
return out
`;
}

export class AssessScript {
  private readonly script: RedisScript;

  constructor(config: AssessScriptConfig) {
    const lua = buildLua(config);
    // The rules are compiled into the text, so the command name carries the text's hash: two
    // engines with different profile settings on one client never share a definition.
    const digest = createHash('sha1').update(lua).digest('hex').slice(0, 12);
    this.script = new RedisScript(`shxCamoAssess_${digest}`, lua);
  }

  async run(redis: RedisClient, request: AssessScriptRequest): Promise<AssessScriptReply> {
    invariant(request.banditKeys.length === TIERS.length, 'one bandit key per tier');
    invariant(request.candidates.length === TIERS.length, 'one candidate slot per tier');
    invariant(request.profileArgs.length === 3, 'three profile arguments');
    const keys: string[] = [request.profileKey, request.pathsKey, request.catalogMetaKey, ...request.banditKeys, request.decisionKey];
    const groups: string[] = [];
    for (const candidate of request.candidates) {
      if (candidate === undefined) {
        groups.push('');
        continue;
      }
      let tokenKeyIndex = 0;
      if (candidate.honeytoken !== undefined) {
        keys.push(candidate.honeytoken.key);
        tokenKeyIndex = keys.length; // Lua is 1-based
      }
      invariant(!candidate.decoyId.includes('|'), 'decoy ids contain no "|"');
      groups.push(`${candidate.decoyId}|${tokenKeyIndex}|${candidate.honeytoken?.shape ?? ''}|${candidate.decisionJsonPrefix}`);
    }
    keys.push(...request.lookupKeys);
    const flags = TIERS.map((tier) => (request.returnStateFor.has(tier) ? '1' : '0')).join('');
    let reply: unknown;
    try {
      reply = await this.script.run(redis, keys, [
        ...request.profileArgs,
        request.staticPoints,
        request.lookupKeys.length,
        flags,
        request.decisionId,
        ...groups,
        request.priorHits ?? 0,
      ]);
    } catch (thrown) {
      // Script-raised errors are broken invariants (no candidate for the tier, an id collision).
      if (thrown instanceof Error && /no candidate decoy|decision id collision/.test(thrown.message)) {
        throw new Error(`invariant violated in assess script: ${(thrown.message.split('\n')[0] ?? '').slice(0, 200)}`);
      }
      throw thrown;
    }
    if (!Array.isArray(reply) || reply.length < SNAPSHOT_REPLY_LENGTH + 4) {
      throw redisUnavailable('assess script returned an unexpected reply');
    }
    const level = Number(reply[SNAPSHOT_REPLY_LENGTH]);
    const tier = TIERS[Number(reply[SNAPSHOT_REPLY_LENGTH + 1]) - 1];
    const honeytokenTtlMs = Number(reply[SNAPSHOT_REPLY_LENGTH + 2]);
    const rawLookups = reply[SNAPSHOT_REPLY_LENGTH + 3];
    if (tier === undefined || !Number.isInteger(level) || !Array.isArray(rawLookups) || rawLookups.length !== request.lookupKeys.length) {
      throw redisUnavailable('assess script returned an unexpected reply');
    }
    const lookups = rawLookups.map((flat) => (Array.isArray(flat) && flat.length > 0 ? pairsToRecord(flat) : null));
    const hasState = reply.length >= SNAPSHOT_REPLY_LENGTH + 6;
    return {
      snapshot: reply.slice(0, SNAPSHOT_REPLY_LENGTH),
      level,
      tier,
      honeytokenTtlMs: Number.isFinite(honeytokenTtlMs) ? honeytokenTtlMs : 0,
      lookups,
      banditState: hasState ? pairsToRecord(reply[SNAPSHOT_REPLY_LENGTH + 4]) : undefined,
      catalogVersion: hasState ? Number(reply[SNAPSHOT_REPLY_LENGTH + 5]) || 0 : undefined,
    };
  }
}
