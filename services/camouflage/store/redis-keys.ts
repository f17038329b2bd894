/**
 * Redis key layout of the camouflage engine, in one place so an operator can read what lives
 * where (and so tests can sweep a prefix). Every key starts with the engine's configurable
 * `keyPrefix`, so several engines (or test cases) can share one Redis without colliding.
 *
 * | key                                   | type | TTL                    | written by                   |
 * |---------------------------------------|------|------------------------|------------------------------|
 * | `<p>sp:{<sessionKey>}`                | hash | profile ttlSeconds     | assess script                |
 * | `<p>sp:{<sessionKey>}:paths`          | zset | profile ttlSeconds     | assess script                |
 * | `<p>bandit:<tier>`                    | hash | none (learned state)   | assess / outcome / credit    |
 * | `<p>dec:<decisionId>`                 | str  | decisionTtlSeconds     | assess script (immutable)    |
 * | `<p>dec:<decisionId>:s`               | hash | same as the decision   | outcome / credit scripts     |
 * | `<p>ht:<token>`                       | hash | honeytokenTtlSeconds   | assess / outcome / credit    |
 * | `<p>decoys`                           | hash | none                   | register script              |
 * | `<p>decoys:meta`                      | hash | none                   | register script              |
 * | `<p>idem:decoy:<idempotencyKey>`      | str  | 24 h                   | register script              |
 *
 * Redis Cluster (the engine is given ioredis' Cluster client): the table above is the single-node
 * layout. A Lua script must name every key it touches and they must share one slot, while the
 * service's state must not all sit on one shard. The sharded layout therefore cuts the state into
 * {@link SHARDS} shards, hash tag `{camo:<s>}` (s = 0..f), and puts in one shard everything one
 * script touches together:
 *
 * | key (sharded layout)                        | shard s                                       |
 * |---------------------------------------------|-----------------------------------------------|
 * | `<p>sp:{camo:s}<sessionKey>` (+ `:paths`)   | FNV-1a of the session key, mod 16             |
 * | `<p>dec:{camo:s}<decisionId>` (+ `:s`)      | the decision id's first hex digit: the engine draws the id in its session's shard |
 * | `<p>ht:{camo:s}<token>`                     | FNV-1a of the token: the engine mints tokens until one falls in its session's shard |
 * | `<p>bandit:{camo:s}<tier>`                  | one part of the tier's counters per shard: the tier's state is the sum of its 16 parts |
 * | `<p>decoys:{camo:catalog}` (+ `:meta`), `<p>idem:decoy:{camo:catalog}<key>` | one slot: the small catalog and its register script |
 *
 * So the Assess script (profile, decision, pull, minted token), the outcome script (decision,
 * its state, the pull's bandit part, its token) and the credit script (token, its decision, the
 * bandit part) each stay in one shard, and sessions, decisions, tokens and bandit counters
 * spread over 16 slots, i.e. over up to 16 masters. What the sharded layout costs: a
 * request carrying honeytokens looks them up before the script (they may live in any shard: one
 * more round trip, only for those requests); bandit state is read as 16 hashes (fetched at most
 * once per `statsMaxAgeMs` per tier instead of riding on the Assess reply), and RecordOutcome
 * reads them to answer the arm's statistics. The key prefix may not carry a hash tag in this
 * layout (it would put every key back into one slot).
 */
import { randomUUID } from 'node:crypto';
import type { Cluster, Redis } from 'ioredis';
import type { Tier } from '../domain/tiers';

/** The ioredis clients the engine accepts. */
export type RedisClient = Redis | Cluster;

/** Shards of the sharded (Redis Cluster) layout; the decision id's first hex digit names one, so at most 16. */
export const SHARDS = 16;

/** FNV-1a (32 bit) of a string's UTF-16 code units, mod {@link SHARDS}: cheap, stable, spread. */
function shardOf(value: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < value.length; i++) {
    hash ^= value.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return (hash >>> 0) % SHARDS;
}

export class CamouflageKeys {
  constructor(
    readonly prefix: string,
    /** The sharded (Redis Cluster) layout of the module doc; false: the single-node layout. */
    readonly sharded = false,
  ) {}

  private tag(shard: number): string {
    return `{camo:${shard.toString(16)}}`;
  }

  /** The shard of a session's keys (0 in the single-node layout). */
  sessionShard(sessionKey: string): number {
    return this.sharded ? shardOf(sessionKey) : 0;
  }
  /** The shard of a honeytoken's record. */
  tokenShard(token: string): number {
    return this.sharded ? shardOf(token) : 0;
  }
  /** The shard of a decision: its id's first hex digit (see {@link newDecisionId}). */
  decisionShard(decisionId: string): number {
    return this.sharded ? Number.parseInt(decisionId.charAt(0), 16) || 0 : 0;
  }
  /**
   * A fresh decision id (UUID v4) in `shard`: in the sharded layout its first hex digit is the
   * shard (118 random bits left), so RecordOutcome finds the shard from the id alone.
   */
  newDecisionId(shard: number): string {
    const id = randomUUID();
    return this.sharded ? `${shard.toString(16)}${id.slice(1)}` : id;
  }

  profile(sessionKey: string): string {
    return this.sharded ? `${this.prefix}sp:${this.tag(shardOf(sessionKey))}${sessionKey}` : `${this.prefix}sp:{${sessionKey}}`;
  }
  profilePaths(sessionKey: string): string {
    return `${this.profile(sessionKey)}:paths`;
  }
  /** The tier's bandit hash; in the sharded layout its part in `shard`. */
  bandit(tier: Tier, shard = 0): string {
    return this.sharded ? `${this.prefix}bandit:${this.tag(shard)}${tier}` : `${this.prefix}bandit:${tier}`;
  }
  /** Every hash whose sum is the tier's bandit state (one in the single-node layout). */
  banditParts(tier: Tier): string[] {
    if (!this.sharded) return [this.bandit(tier)];
    return Array.from({ length: SHARDS }, (_, shard) => this.bandit(tier, shard));
  }
  decision(decisionId: string): string {
    return this.sharded ? `${this.prefix}dec:${this.tag(this.decisionShard(decisionId))}${decisionId}` : `${this.prefix}dec:${decisionId}`;
  }
  decisionState(decisionId: string): string {
    return `${this.decision(decisionId)}:s`;
  }
  honeytoken(token: string): string {
    return this.sharded ? `${this.prefix}ht:${this.tag(shardOf(token))}${token}` : `${this.prefix}ht:${token}`;
  }
  decoys(): string {
    return this.sharded ? `${this.prefix}decoys:{camo:catalog}` : `${this.prefix}decoys`;
  }
  decoysMeta(): string {
    return `${this.decoys()}:meta`;
  }
  decoyIdempotency(idempotencyKey: string): string {
    return this.sharded ? `${this.prefix}idem:decoy:{camo:catalog}${idempotencyKey}` : `${this.prefix}idem:decoy:${idempotencyKey}`;
  }
  /**
   * KEYS[3] of the Assess script: the catalog meta hash (the script returns its version with a
   * tier's state). In the sharded layout the script returns no state (a shard's part is not the
   * tier's state) and the catalog lives in another slot, so a key of the session's shard stands in,
   * never read.
   */
  assessCatalogMeta(sessionKey: string): string {
    return this.sharded ? `${this.profile(sessionKey)}:unused` : this.decoysMeta();
  }
}

/** Field-wise sum of bandit hashes (integer counters): the tier's state from its parts. */
export function sumCounters(records: readonly Readonly<Record<string, string>>[]): Record<string, string> {
  if (records.length === 1) return { ...records[0] };
  const sums = new Map<string, bigint>();
  for (const record of records) {
    for (const [field, value] of Object.entries(record)) {
      if (!/^-?[0-9]{1,30}$/.test(value)) continue;
      sums.set(field, (sums.get(field) ?? 0n) + BigInt(value));
    }
  }
  return Object.fromEntries([...sums].map(([field, sum]) => [field, sum.toString()]));
}

/** Key prefixes are namespaces, not data: keep them short, printable and bounded (1-64 characters). */
const KEY_PREFIX_PATTERN = /^[\x21-\x7e]{1,64}$/;

export function isValidKeyPrefix(prefix: string, sharded = false): boolean {
  return KEY_PREFIX_PATTERN.test(prefix) && !(sharded && prefix.includes('{'));
}

/** HGETALL-style flat array `[k1, v1, k2, v2, ...]` (as Lua returns it) to an object. */
export function pairsToRecord(flat: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (!Array.isArray(flat)) return out;
  for (let i = 0; i + 1 < flat.length; i += 2) out[String(flat[i])] = String(flat[i + 1]);
  return out;
}
