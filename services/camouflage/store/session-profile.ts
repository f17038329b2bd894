/**
 * The session profile in Redis (rules and layout: domain/session-profile.ts): the Lua fragments
 * the Assess script runs to read, decay and write it, and the decoding of the snapshot it returns.
 */
import { redisUnavailable } from '../errors';
import { PROFILE_FIXED_POINT, type ProfileConfig, type SessionSnapshot } from '../domain/session-profile';

/** The distinct-path set is trimmed every this many requests (so it holds at most cap + this). */
export const PATH_TRIM_EVERY = 16;

/** Number of reply slots the profile part of the Assess script returns. */
export const SNAPSHOT_REPLY_LENGTH = 11;

/** Decodes the script's `{rc, sn, s4, sa, s5, lvd, n, f, now, dt, distinct}` integers. */
export function decodeSnapshot(reply: readonly unknown[], config: ProfileConfig): SessionSnapshot {
  const values: number[] = [];
  for (let i = 0; i < SNAPSHOT_REPLY_LENGTH; i += 1) {
    const n = Number(reply[i]);
    if (!Number.isFinite(n)) throw redisUnavailable('assess script returned a malformed profile');
    values.push(n);
  }
  const [rc, sn, s4, sa, s5, lvd, n, f, now, dt, distinct] = values as [number, number, number, number, number, number, number, number, number, number, number];
  return {
    rateCounterMilli: rc,
    ratePerSecond: ((rc / PROFILE_FIXED_POINT) * Math.LN2) / config.rateHalfLifeSeconds,
    statusReportsMilli: sn,
    notFoundMilli: s4,
    authFailuresMilli: sa,
    serverErrorsMilli: s5,
    earlierLevelMilli: lvd,
    requestCount: n,
    firstSeenMs: f,
    lastSeenMs: now,
    quietMs: dt,
    distinctPaths: distinct,
    pathWindowSeconds: config.pathWindowSeconds,
    rateHalfLifeSeconds: config.rateHalfLifeSeconds,
    levelHalfLifeSeconds: config.levelHalfLifeSeconds,
  };
}

/**
 * Lua fragment: reads and decays the profile, records the path. Expects `KEYS[1]` (profile hash),
 * `KEYS[2]` (path zset) and ARGV 1-3 = now_ms, path_member, status (-1 = none); the half-lives,
 * window, cap and TTL are compiled into the text (they are per-engine constants, and every
 * argument costs encoding on the client and parsing on the server). Leaves in locals: now, dt,
 * rc, sn, s4, sa, s5, n, f, lvd, e, hn (honeytokens minted), refresh, ttl, distinct. Writes only
 * the zset; {@link PROFILE_WRITE_LUA} writes the hash once the level is known.
 */
export function profileReadLua(config: ProfileConfig): string {
  return `
local now = tonumber(ARGV[1])
local status = tonumber(ARGV[3])
local pv = redis.call('HMGET', KEYS[1], 't', 'rc', 'sn', 's4', 'sa', 's5', 'lv', 'lt', 'n', 'f', 'e', 'hn')
local last = tonumber(pv[1]) or now
if now < last then now = last end
local dt = now - last
local function decayed(x, hl)
  local v = tonumber(x)
  if v == nil or v <= 0 then return 0 end
  return math.floor(v * 2 ^ (-dt / hl) + 0.5)
end
local rc = decayed(pv[2], ${config.rateHalfLifeSeconds * 1_000}) + 1000
local sn = decayed(pv[3], ${config.statusHalfLifeSeconds * 1_000})
local s4 = decayed(pv[4], ${config.statusHalfLifeSeconds * 1_000})
local sa = decayed(pv[5], ${config.statusHalfLifeSeconds * 1_000})
local s5 = decayed(pv[6], ${config.statusHalfLifeSeconds * 1_000})
if status >= 0 then
  sn = sn + 1000
  if status == 404 then s4 = s4 + 1000
  elseif status == 401 or status == 403 then sa = sa + 1000
  elseif status >= 500 then s5 = s5 + 1000 end
end
local n = (tonumber(pv[9]) or 0) + 1
local f = tonumber(pv[10]) or now
local hn = tonumber(pv[12]) or 0
local lvd = 0
local lv_stored = tonumber(pv[7]) or 0
if lv_stored > 0 then
  local age = now - (tonumber(pv[8]) or now)
  if age < 0 then age = 0 end
  lvd = math.floor(lv_stored * 2 ^ (-age / ${config.levelHalfLifeSeconds * 1_000}) + 0.5)
end
local ttl = ${config.ttlSeconds * 1_000}
local e = tonumber(pv[11]) or 0
local refresh = (e - now) < ttl * 0.75
if refresh then e = now + ttl end
-- Newest time per path (ZADD GT, spelled out: Redis < 6.2 and the in-process store lack GT).
local seen = tonumber(redis.call('ZSCORE', KEYS[2], ARGV[2]))
if seen == nil or seen < now then redis.call('ZADD', KEYS[2], now, ARGV[2]) end
local window_start = now - ${config.pathWindowSeconds * 1_000}
if refresh or n % ${PATH_TRIM_EVERY} == 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', window_start - 1)
  local card = redis.call('ZCARD', KEYS[2])
  if card > ${config.distinctPathsMax} then redis.call('ZREMRANGEBYRANK', KEYS[2], 0, card - ${config.distinctPathsMax + 1}) end
end
local distinct = redis.call('ZCOUNT', KEYS[2], window_start, '+inf')
if distinct > ${config.distinctPathsMax} then distinct = ${config.distinctPathsMax} end
`;
}

/**
 * Lua fragment: writes the profile hash, remembering `level` when it is at least the decayed
 * earlier maximum (so two concurrent requests can never let a lower level replace a higher one:
 * the compare and the write are in the same script). Needs the locals of the read fragment, a
 * local `level`, and `hn` already incremented if this request mints a honeytoken.
 */
export const PROFILE_WRITE_LUA = `
if level > 0 and level * 1000 >= lvd then
  redis.call('HSET', KEYS[1], 't', now, 'rc', rc, 'sn', sn, 's4', s4, 'sa', sa, 's5', s5, 'n', n, 'f', f, 'e', e, 'hn', hn, 'lv', level * 1000, 'lt', now)
else
  redis.call('HSET', KEYS[1], 't', now, 'rc', rc, 'sn', sn, 's4', s4, 'sa', sa, 's5', s5, 'n', n, 'f', f, 'e', e, 'hn', hn)
end
if refresh then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
`;

/** The ARGV 1-3 values the read fragment expects, in order. */
export function profileArgs(observation: { timestampMs: number; path: string; previousStatus?: number }): (string | number)[] {
  return [observation.timestampMs, pathMember(observation.path), observation.previousStatus ?? -1];
}

/** 32-bit FNV-1a of the path, hex: bounded member size and no raw attacker input stored. */
export function pathMember(path: string): string {
  const bounded = path.length > 1_024 ? path.slice(0, 1_024) : path;
  let hash = 0x811c9dc5;
  for (let i = 0; i < bounded.length; i += 1) {
    hash ^= bounded.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return (hash >>> 0).toString(16).padStart(8, '0');
}
