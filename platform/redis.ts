/**
 * Redis client factory. With a URL it connects to a real Redis (ioredis; a
 * Cluster URL list is a later step). Without one — the `npm start` default —
 * it returns an in-process, ioredis-compatible store (ioredis-mock, which runs
 * Lua scripts too), so the dev loop needs no Redis server. Tests always use a
 * real Redis.
 */
import Redis, { type RedisOptions } from 'ioredis';
import type { Logger } from './logger';

export type RedisClient = Redis;

export function createRedis(url: string | undefined, logger?: Logger, options: RedisOptions = {}): RedisClient {
  if (url === undefined) {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const RedisMock = require('ioredis-mock') as typeof Redis;
    logger?.info('REDIS_URL not set: using the in-process cache');
    return new RedisMock() as RedisClient;
  }
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
