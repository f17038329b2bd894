/**
 * The in-process Redis `npm start` uses when REDIS_URL is unset: ioredis-mock, an
 * ioredis-compatible store that runs Lua scripts too, so the dev loop needs no Redis server.
 * Development only (a devDependency): each process gets its own store, so camouflage's learning
 * and credits' cache are per process. Production refuses to start without REDIS_URL
 * (platform/server.ts), and the tests always use a real Redis.
 */
import type { RedisClient } from '../platform/redis';

export function createRedisStandIn(): RedisClient {
  // Required here, not imported: the entry point must start telemetry before anything loads ioredis.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const RedisMock = require('ioredis-mock') as new () => RedisClient;
  return new RedisMock();
}
