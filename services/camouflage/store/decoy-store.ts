/**
 * Custom decoys in Redis (the DecoyStore of domain/decoy-catalog.ts): a hash of decoys, a version
 * counter every replica reads to notice another replica's registration, and the RegisterDecoy
 * idempotency keys, all written by one script.
 */
import { createHash } from 'node:crypto';
import { invariant } from '../../../platform/invariant';
import { ServiceError } from '../../../platform/service-error';
import { catalogFull, decoyAlreadyExists, redisUnavailable } from '../errors';
import {
  CUSTOM_DECOYS_MAX,
  DECOY_IDEMPOTENCY_TTL_SECONDS,
  type Decoy,
  type DecoyStore,
  type RegisterResult,
  validateDecoyInput,
} from '../domain/decoy-catalog';
import { CamouflageKeys, RedisClient } from './redis-keys';
import { RedisScript } from './redis-script';

/**
 * KEYS[1] decoys hash, KEYS[2] meta hash, KEYS[3] idempotency key (optional).
 * ARGV: id, stored json, max decoys, request fingerprint, idempotency ttl ms.
 */
const REGISTER_LUA = `
if #KEYS >= 3 then
  local prior = redis.call('GET', KEYS[3])
  if prior then return {'IDEMPOTENT', prior} end
end
local existing = redis.call('HGET', KEYS[1], ARGV[1])
if existing then return {'EXISTS', existing} end
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then return {'FULL', ''} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local version = redis.call('HINCRBY', KEYS[2], 'version', 1)
if #KEYS >= 3 then redis.call('SET', KEYS[3], ARGV[4] .. '|' .. ARGV[1], 'PX', ARGV[5]) end
return {'OK', tostring(version)}
`;
const REGISTER_SCRIPT = new RedisScript('shxCamoRegisterDecoy', REGISTER_LUA);

function fingerprintOf(decoy: Omit<Decoy, 'createdAtMs'>): string {
  const canonical = JSON.stringify([
    decoy.id, decoy.kind, decoy.description, decoy.tiers, decoy.carriesHoneytoken, decoy.carriesCredentials,
    decoy.honeytokenShape ?? null, decoy.status, decoy.contentType, Object.entries(decoy.headers).sort(), decoy.template,
  ]);
  return createHash('sha256').update(canonical).digest('hex');
}

interface StoredDecoy {
  readonly decoy: Decoy;
  readonly fingerprint: string;
}

function parseStored(json: string): StoredDecoy {
  const parsed = JSON.parse(json) as { decoy: Decoy; fingerprint: string };
  const checked = validateDecoyInput(parsed.decoy);
  return { decoy: Object.freeze({ ...checked, createdAtMs: Number(parsed.decoy.createdAtMs) || 0 }), fingerprint: parsed.fingerprint };
}

export class RedisDecoyStore implements DecoyStore {
  constructor(
    private readonly redis: RedisClient,
    private readonly keys: CamouflageKeys,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * The version is read before the decoys (one pipeline, in order): a registration landing between
   * the two leaves the decoys newer than the version, which only costs a later reload; never the
   * reverse (a version claiming a decoy the list lacks).
   */
  async load(): Promise<{ version: number; custom: Decoy[] }> {
    const results = await this.redis.pipeline().hget(this.keys.decoysMeta(), 'version').hgetall(this.keys.decoys()).exec();
    if (results === null) throw redisUnavailable('decoy catalog read was aborted');
    const [[versionError, version], [decoysError, all]] = results as [[Error | null, string | null], [Error | null, Record<string, string>]];
    if (versionError !== null) throw versionError;
    if (decoysError !== null) throw decoysError;
    const custom: Decoy[] = [];
    for (const json of Object.values(all).slice(0, CUSTOM_DECOYS_MAX)) custom.push(parseStored(json).decoy);
    return { version: Number(version) || 0, custom };
  }

  async version(): Promise<number> {
    return Number(await this.redis.hget(this.keys.decoysMeta(), 'version')) || 0;
  }

  async register(decoy: Decoy, idempotencyKey: string | undefined): Promise<RegisterResult> {
    const fingerprint = fingerprintOf(decoy);
    const stored = JSON.stringify({ decoy: { ...decoy, createdAtMs: this.now() }, fingerprint });
    const keys = [this.keys.decoys(), this.keys.decoysMeta()];
    if (idempotencyKey !== undefined) keys.push(this.keys.decoyIdempotency(idempotencyKey));
    const reply = (await REGISTER_SCRIPT.run(this.redis, keys, [
      decoy.id, stored, CUSTOM_DECOYS_MAX, fingerprint, DECOY_IDEMPOTENCY_TTL_SECONDS * 1_000,
    ])) as [string, string];
    const [status, payload] = reply;
    if (status === 'OK') {
      return { decoy: parseStored(stored).decoy, replayed: false, catalogVersion: Number(payload) };
    }
    if (status === 'IDEMPOTENT') {
      invariant(idempotencyKey !== undefined, 'the register script answered IDEMPOTENT to a call without an idempotency key');
      const separator = payload.indexOf('|');
      const priorFingerprint = payload.slice(0, separator);
      const priorId = payload.slice(separator + 1);
      if (priorFingerprint !== fingerprint || priorId !== decoy.id) {
        throw ServiceError.idempotencyKeyReused(idempotencyKey);
      }
      const json = await this.redis.hget(this.keys.decoys(), priorId);
      if (json === null) throw new Error(`idempotent registration of ${priorId} has no stored decoy`);
      return { decoy: parseStored(json).decoy, replayed: true, catalogVersion: await this.version() };
    }
    if (status === 'EXISTS') {
      throw decoyAlreadyExists(decoy.id, `decoy ${decoy.id} already exists`);
    }
    if (status === 'FULL') {
      throw catalogFull(CUSTOM_DECOYS_MAX);
    }
    throw redisUnavailable(`register script returned ${String(status)}`);
  }
}
