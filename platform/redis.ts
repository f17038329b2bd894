/**
 * Redis client factory. With a URL it connects to a real Redis (ioredis; a
 * Cluster URL list is a later step). Without one — the `npm start` default —
 * it returns an in-process, ioredis-compatible store (ioredis-mock, which runs
 * Lua scripts too), so the dev loop needs no Redis server. Tests always use a
 * real Redis.
 *
 * A real client is watched (`watchConnection`): a Redis that stops answering
 * without closing the connection (a partition; a failed-over server whose old
 * connections die silently) is otherwise never noticed, since ioredis only
 * reconnects on a closed socket, and every command would wait on it for good.
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
  watchConnection(client, logger);
  return client;
}

export interface ConnectionWatch {
  /** How often the connection is PINGed while it is up. */
  readonly pingEveryMs: number;
  /** A PING unanswered this long reconnects the connection. */
  readonly silenceMaxMs: number;
}

export const CONNECTION_WATCH_DEFAULT: ConnectionWatch = { pingEveryMs: 1_000, silenceMaxMs: 3_000 };

/**
 * PINGs `client` while it is ready, and reconnects it (ioredis `disconnect(true)`)
 * when a PING stays unanswered for `silenceMaxMs`. Stops when the client ends
 * (quit, or disconnect without reconnect), or when the returned function is called.
 * Its timer never keeps the process alive.
 */
export function watchConnection(client: RedisClient, logger?: Logger, watch: ConnectionWatch = CONNECTION_WATCH_DEFAULT): () => void {
  let sentAtMs = 0;
  const timer = setInterval(() => {
    if (client.status !== 'ready') {
      sentAtMs = 0;
      return;
    }
    const now = Date.now();
    if (sentAtMs !== 0) {
      if (now - sentAtMs <= watch.silenceMaxMs) return;
      logger?.warn({ connection: client.options.connectionName, silent_ms: now - sentAtMs }, 'redis connection silent, reconnecting');
      sentAtMs = 0;
      client.disconnect(true);
      return;
    }
    sentAtMs = now;
    const answered = () => {
      if (sentAtMs === now) sentAtMs = 0;
    };
    // A failed PING means a closed connection: ioredis reconnects that by itself.
    client.ping().then(answered, answered);
  }, watch.pingEveryMs);
  timer.unref();
  const stop = () => clearInterval(timer);
  client.once('end', stop);
  return stop;
}
