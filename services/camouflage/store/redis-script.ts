/**
 * RedisScript: one Lua script per ioredis client, sent as EVALSHA and pipelined per event-loop turn.
 */
import type { RedisClient } from './redis-keys';

/**
 * A Lua script registered once per ioredis client with `defineCommand`, so calls go out as
 * EVALSHA (ioredis falls back to EVAL on NOSCRIPT after a Redis restart or failover).
 * Wrapping it keeps the untyped dynamic method in one place.
 *
 * Calls made in the same event-loop turn go out as one pipeline (one socket write):
 * at thousands of Assess calls a second a write per call was the service's largest
 * single cost. ioredis' own auto-pipelining would do this, but it crashes the process
 * with defineCommand scripts (redis/ioredis#1931), so it stays off.
 *
 * Redis Cluster: a cluster pipeline must keep all its keys in one slot (ioredis refuses
 * anything else, "All keys in the pipeline should belong to the same slots allocation group"),
 * so with the Cluster client the calls of one turn are grouped by the hash tag of their first
 * key (the keys of one call share that tag by design, redis-keys.ts) and each group goes out as
 * its own pipeline: one per shard touched in that turn. ioredis follows MOVED/ASK per pipeline.
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
    if (!redis.isCluster) return this.send(redis, queue);
    const groups = new Map<string, PendingScriptCall[]>();
    for (const call of queue) {
      const tag = hashTag(String(call.argv[0] ?? ''));
      const group = groups.get(tag);
      if (group === undefined) groups.set(tag, [call]);
      else group.push(call);
    }
    for (const group of groups.values()) this.send(redis, group);
  }

  private send(redis: RedisClient, queue: readonly PendingScriptCall[]): void {
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

/** The part of `key` Redis Cluster hashes: the first non-empty `{...}`, else the whole key. */
export function hashTag(key: string): string {
  const open = key.indexOf('{');
  if (open === -1) return key;
  const close = key.indexOf('}', open + 1);
  return close === -1 || close === open + 1 ? key : key.slice(open + 1, close);
}

interface PendingScriptCall {
  readonly name: string;
  readonly argv: readonly (string | number)[];
  readonly resolve: (value: unknown) => void;
  readonly reject: (error: unknown) => void;
}
