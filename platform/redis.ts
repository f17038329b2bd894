/**
 * Redis client factory: a real Redis (ioredis; a Cluster URL list is a later
 * step). There is no fallback here: `npm start` without REDIS_URL passes its own
 * in-process stand-in (dev/redis-stand-in.ts) to startService, and a production
 * process without REDIS_URL refuses to start. Tests always use a real Redis.
 *
 * The services' client has a socket timeout (ioredis `socketTimeout`, from
 * REDIS_SOCKET_TIMEOUT_MS, passed in `options` by platform/server.ts): a Redis that
 * stops answering without closing the connection (a partition; a failed-over
 * server whose old connections die silently) is otherwise never noticed, since
 * ioredis reconnects only on a closed socket, and every command would wait on it
 * for good. The timer runs only while a command awaits its reply and restarts on
 * any data, so an idle or a slow but answering connection is left alone.
 * Duplicates (`redis.duplicate()`) inherit it.
 */
import Redis, { type RedisOptions } from 'ioredis';
import type { Logger } from './logger';

export type RedisClient = Redis;

export function createRedis(url: string, logger?: Logger, options: RedisOptions = {}): RedisClient {
  const client = new Redis(url, {
    // Fail a command fast when Redis is away instead of queueing it forever:
    // callers (circuit breakers) decide what to do.
    maxRetriesPerRequest: 1,
    connectTimeout: 2_000,
    // enableAutoPipelining stays off: with Lua commands added by defineCommand
    // it throws outside any promise and kills the process under load
    // (redis/ioredis#1931, reproduced here with bench/camouflage.ts).
    ...options,
  });
  client.on('error', (err: Error) => logger?.warn({ err: err.message }, 'redis error'));
  return client;
}
