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

/**
 * A Lua script registered once per ioredis client with `defineCommand`, so calls go out as
 * EVALSHA (ioredis falls back to EVAL on NOSCRIPT after a Redis restart or failover).
 * Wrapping it keeps the untyped dynamic method in one place.
 *
 * Calls made in the same event-loop turn go out as one pipeline (one socket write):
 * at thousands of Assess calls a second a write per call was the service's largest
 * single cost. ioredis' own auto-pipelining would do this, but it crashes the process
 * with defineCommand scripts (redis/ioredis#1931), so it stays off.
 */
export class RedisScript {
  private readonly pending = new Map<RedisClient, PendingScriptCall[]>();

  constructor(
    /** Method name installed on the client; namespaced to avoid clashing with other services. */
    readonly name: string,
    readonly lua: string,
  ) {}

  run(redis: RedisClient, keys: readonly string[], args: readonly (string | number)[]): Promise<unknown> {
    // One command per key count, with numberOfKeys fixed: the in-process store
    // `npm start` uses (ioredis-mock) does not support a per-call key count.
    const name = `${this.name}_${keys.length}`;
    if (typeof (redis as unknown as Record<string, unknown>)[name] !== 'function') redis.defineCommand(name, { lua: this.lua, numberOfKeys: keys.length });
    return new Promise((resolve, reject) => {
      let queue = this.pending.get(redis);
      if (queue === undefined) {
        queue = [];
        this.pending.set(redis, queue);
        setImmediate(() => this.flush(redis));
      }
      queue.push({ name, argv: [...keys, ...args], resolve, reject });
    });
  }

  private flush(redis: RedisClient): void {
    const queue = this.pending.get(redis) ?? [];
    this.pending.delete(redis);
    type Method = (...argv: (string | number)[]) => Promise<unknown>;
    if (queue.length === 1) {
      const call = queue[0]!;
      ((redis as unknown as Record<string, Method>)[call.name] as Method).call(redis, ...call.argv).then(call.resolve, call.reject);
      return;
    }
    const pipeline = redis.pipeline();
    for (const call of queue) ((pipeline as unknown as Record<string, Method>)[call.name] as Method).call(pipeline, ...call.argv);
    pipeline.exec().then(
      (results) => {
        queue.forEach((call, i) => {
          const [error, value] = results?.[i] ?? [new Error('Redis pipeline returned no reply'), undefined];
          if (error) call.reject(error);
          else call.resolve(value);
        });
      },
      (error: unknown) => {
        for (const call of queue) call.reject(error);
      },
    );
  }
}

interface PendingScriptCall {
  readonly name: string;
  readonly argv: readonly (string | number)[];
  readonly resolve: (value: unknown) => void;
  readonly reject: (error: unknown) => void;
}

/** HGETALL-style flat array `[k1, v1, k2, v2, ...]` (as Lua returns it) to an object. */
export function pairsToRecord(flat: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (!Array.isArray(flat)) return out;
  for (let i = 0; i + 1 < flat.length; i += 2) out[String(flat[i])] = String(flat[i + 1]);
  return out;
}
