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
 * Redis Cluster: the Assess script touches keys of one session together with shared keys (bandit,
 * decisions, honeytokens), so under ioredis' Cluster client the prefix must carry a hash tag
 * (for example `shieldx:{camo}:`), which keeps every key in one slot. That is correct but puts the
 * service on one shard; spreading sessions over shards would cost the single round trip.
 */
import type { Cluster, Redis } from 'ioredis';
import type { Tier } from '../domain/tiers';

/** The ioredis clients the engine accepts. */
export type RedisClient = Redis | Cluster;

export class CamouflageKeys {
  constructor(readonly prefix: string) {}

  profile(sessionKey: string): string {
    return `${this.prefix}sp:{${sessionKey}}`;
  }
  profilePaths(sessionKey: string): string {
    return `${this.prefix}sp:{${sessionKey}}:paths`;
  }
  bandit(tier: Tier): string {
    return `${this.prefix}bandit:${tier}`;
  }
  decision(decisionId: string): string {
    return `${this.prefix}dec:${decisionId}`;
  }
  decisionState(decisionId: string): string {
    return `${this.prefix}dec:${decisionId}:s`;
  }
  honeytoken(token: string): string {
    return `${this.prefix}ht:${token}`;
  }
  decoys(): string {
    return `${this.prefix}decoys`;
  }
  decoysMeta(): string {
    return `${this.prefix}decoys:meta`;
  }
  decoyIdempotency(idempotencyKey: string): string {
    return `${this.prefix}idem:decoy:${idempotencyKey}`;
  }
}

/** Key prefixes are namespaces, not data: keep them short, printable and bounded (1-64 characters). */
const KEY_PREFIX_PATTERN = /^[\x21-\x7e]{1,64}$/;

export function isValidKeyPrefix(prefix: string): boolean {
  return KEY_PREFIX_PATTERN.test(prefix);
}

/** HGETALL-style flat array `[k1, v1, k2, v2, ...]` (as Lua returns it) to an object. */
export function pairsToRecord(flat: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (!Array.isArray(flat)) return out;
  for (let i = 0; i + 1 < flat.length; i += 2) out[String(flat[i])] = String(flat[i + 1]);
  return out;
}
