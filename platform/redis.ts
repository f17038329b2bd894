/**
 * Redis client factory: one server (REDIS_URL), a Redis Cluster (REDIS_CLUSTER_NODES, ioredis'
 * Cluster client) or a master found through Redis Sentinel (REDIS_SENTINELS +
 * REDIS_SENTINEL_MASTER); exactly one of them, chosen by configuration ({@link redisTopology}).
 * There is no fallback here: `npm start` without any passes its own in-process stand-in
 * (dev/redis-stand-in.ts) to startService, and a production process without one refuses to
 * start. Tests always use a real Redis.
 *
 * The services' client has a socket timeout (ioredis `socketTimeout`, from
 * REDIS_SOCKET_TIMEOUT_MS, passed in `options` by platform/server.ts): a Redis that
 * stops answering without closing the connection (a partition; a failed-over
 * server whose old connections die silently) is otherwise never noticed, since
 * ioredis reconnects only on a closed socket, and every command would wait on it
 * for good. The timer runs only while a command awaits its reply and restarts on
 * any data, so an idle or a slow but answering connection is left alone.
 * Duplicates (`redis.duplicate()`) inherit it; in a cluster every node connection has it.
 *
 * Cluster: MOVED and ASK are followed by ioredis (up to 16 redirections), and the slot map is
 * refreshed every 2 s and on every redirection, so a resharding or a replica promoted after a
 * master failed is followed without a restart. A command for the slots of a master that died
 * is retried (every 200 ms, within its 16 redirections) while the cluster fails over, and then
 * fails: callers degrade as for a Redis outage. What a caller must know in cluster mode:
 * every multi-key command, script and pipeline must keep its keys in one slot (hash tags): the
 * cluster client refuses anything else ("All keys in the pipeline should belong to the same
 * slots allocation group", CROSSSLOT). {@link isCluster} tells which client a caller holds.
 *
 * Sentinel: ioredis asks the sentinels for the master at every (re)connect, so after a failover
 * it reaches the new one, and a connection that lands on a demoted master (READONLY) is
 * reconnected. ioredis' `failoverDetector` (subscribing to +switch-master) stays off, as is
 * ioredis' own default: its disconnect on +switch-master can land while the client is
 * reconnecting through the sentinels, and that connect then fails with "Connection is closed",
 * which ends the client for good (status `end`, no more reconnects): the cache stayed off until
 * a restart (services/credits/scenarios/redis-sentinel.test.ts after camouflage's Sentinel test).
 */
import Redis, { Cluster, type RedisOptions } from 'ioredis';
import { ConfigError, type PlatformConfig } from './config';
import type { Logger } from './logger';

export type RedisClient = Redis | Cluster;

export interface RedisAddress {
  readonly host: string;
  readonly port: number;
}

/** Which Redis a service talks to, from its configuration. */
export type RedisTopology =
  | { readonly kind: 'single'; readonly url: string }
  | { readonly kind: 'cluster'; readonly nodes: readonly RedisAddress[]; readonly password?: string }
  | { readonly kind: 'sentinel'; readonly sentinels: readonly RedisAddress[]; readonly masterName: string; readonly password?: string };

type RedisSettings = Pick<PlatformConfig, 'REDIS_URL' | 'REDIS_CLUSTER_NODES' | 'REDIS_SENTINELS' | 'REDIS_SENTINEL_MASTER' | 'REDIS_PASSWORD'>;

/**
 * The topology the settings name, or undefined when none is set. Throws ConfigError naming the
 * variable when two are set, or a Sentinel set-up lacks its master name (or the reverse).
 */
export function redisTopology(settings: RedisSettings): RedisTopology | undefined {
  const set = (['REDIS_URL', 'REDIS_CLUSTER_NODES', 'REDIS_SENTINELS'] as const).filter((name) => settings[name] !== undefined);
  if (set.length > 1) throw new ConfigError(set[1]!, `cannot be set together with ${set[0]} (choose one Redis: a URL, cluster seed nodes, or sentinels)`);
  if (settings.REDIS_SENTINELS !== undefined && settings.REDIS_SENTINEL_MASTER === undefined) {
    throw new ConfigError('REDIS_SENTINEL_MASTER', 'is required with REDIS_SENTINELS (the master name the sentinels monitor)');
  }
  if (settings.REDIS_SENTINEL_MASTER !== undefined && settings.REDIS_SENTINELS === undefined) {
    throw new ConfigError('REDIS_SENTINEL_MASTER', 'is set but REDIS_SENTINELS is not');
  }
  if (settings.REDIS_PASSWORD !== undefined && settings.REDIS_URL !== undefined) {
    throw new ConfigError('REDIS_PASSWORD', 'is for REDIS_CLUSTER_NODES or REDIS_SENTINELS; with REDIS_URL put the password in the URL');
  }
  const password = settings.REDIS_PASSWORD;
  if (settings.REDIS_URL !== undefined) return { kind: 'single', url: settings.REDIS_URL };
  if (settings.REDIS_CLUSTER_NODES !== undefined) return { kind: 'cluster', nodes: settings.REDIS_CLUSTER_NODES, password };
  if (settings.REDIS_SENTINELS !== undefined) {
    return { kind: 'sentinel', sentinels: settings.REDIS_SENTINELS, masterName: settings.REDIS_SENTINEL_MASTER!, password };
  }
  return undefined;
}

const BASE_OPTIONS: RedisOptions = {
  // Fail a command fast when Redis is away instead of queueing it forever:
  // callers (circuit breakers) decide what to do.
  maxRetriesPerRequest: 1,
  connectTimeout: 2_000,
  // enableAutoPipelining stays off: with Lua commands added by defineCommand
  // it throws outside any promise and kills the process under load
  // (redis/ioredis#1931, reproduced here with bench/camouflage.ts).
};

/** A client for one Redis URL. */
export function createRedis(url: string, logger?: Logger, options: RedisOptions = {}): Redis {
  const client = new Redis(url, { ...BASE_OPTIONS, ...options });
  client.on('error', (err: Error) => logger?.warn({ err: err.message }, 'redis error'));
  return client;
}

/** A client for the configured topology (see the module doc for how each follows failures). */
export function createRedisClient(topology: RedisTopology, logger?: Logger, options: RedisOptions = {}): RedisClient {
  if (topology.kind === 'single') return createRedis(topology.url, logger, options);
  if (topology.kind === 'sentinel') {
    const client = new Redis({
      ...BASE_OPTIONS,
      ...options,
      sentinels: topology.sentinels.map(({ host, port }) => ({ host, port })),
      name: topology.masterName,
      password: topology.password,
      role: 'master',
      sentinelRetryStrategy: (times: number) => Math.min(100 * times, 1_000),
      // A demoted master answers writes with READONLY: reconnect (to the master the sentinels name now) and resend.
      reconnectOnError: (err: Error) => (err.message.startsWith('READONLY') ? 2 : false),
    });
    client.on('error', (err: Error) => logger?.warn({ err: err.message }, 'redis error'));
    return client;
  }
  const cluster = new Cluster(
    topology.nodes.map(({ host, port }) => ({ host, port })),
    {
      redisOptions: { ...BASE_OPTIONS, ...options, password: topology.password },
      scaleReads: 'master',
      maxRedirections: 16,
      retryDelayOnFailover: 200,
      retryDelayOnClusterDown: 200,
      retryDelayOnTryAgain: 100,
      slotsRefreshTimeout: 2_000,
      slotsRefreshInterval: 2_000,
      clusterRetryStrategy: (times: number) => Math.min(100 * times, 2_000),
    },
  );
  cluster.on('error', (err: Error) => logger?.warn({ err: err.message }, 'redis error'));
  cluster.on('node error', (err: Error, node: string) => logger?.warn({ err: err.message, node }, 'redis cluster node error'));
  return cluster;
}

/** Whether `client` is ioredis' Cluster client (keys of one command, script or pipeline must then share a slot). */
export function isCluster(client: RedisClient): client is Cluster {
  return client.isCluster === true;
}
