/**
 * The one way to start a service: validated config, pool + migrations, Redis,
 * a gRPC server with the shared interceptors, health, reflection, /metrics,
 * and graceful shutdown. Each service supplies a `ServiceModule`; tests start
 * the same thing in-process on port 0.
 */
import type { Server as HttpServer } from 'node:http';
import {
  Server,
  ServerCredentials,
  type ServiceDefinition,
  type UntypedServiceImplementation,
} from '@grpc/grpc-js';
import { HealthImplementation } from 'grpc-health-check';
import type pg from 'pg';
import type { Registry } from 'prom-client';
import { z } from 'zod';
import { ApiKeyVerifier } from './auth';
import { ConfigError, loadConfig, platformConfigSchema, type PlatformConfig } from './config';
import { createPool, detectPoolMode, type PoolMode } from './db';
import { DatabaseWatch } from './db-watch';
import type { HandlerOptions } from './handlers';
import { callInterceptor, InFlightCalls, type ScopeResolver } from './interceptors';
import { createLogger, type Logger } from './logger';
import { boundPort, createRegistry, GrpcServerMetrics, registerPoolMetrics, startMetricsServer } from './metrics';
import { runMigrations } from './migrate';
import { setPageTokenSecret } from './page-token';
import { createRedisClient, redisTopology, type RedisClient } from './redis';
import { compiledDescriptors, ReflectionServer } from './reflection';
import { startHttpGateway, type HttpGateway } from './http-gateway';
import { limitMetadata, reapStalledSessions, transportConfigShape, transportServerOptions, type StalledSessionReaper, type TransportLimits } from './transport-limits';

const HEALTH_PREFIX = '/grpc.health.v1.Health/';
/** After the last running call ended at shutdown: time for its final frames to be flushed. */
const IDLE_SETTLE_MS = 200;
const REFLECTION_PREFIXES = ['/grpc.reflection.v1.ServerReflection/', '/grpc.reflection.v1alpha.ServerReflection/'];

/** What a service's `create` gets. */
export interface ServiceContext<C> {
  readonly config: PlatformConfig & C;
  readonly logger: Logger;
  readonly registry: Registry;
  readonly pool: pg.Pool;
  /**
   * The pool for reads that may lag (transaction history, evaluation sample loads, rollout listings):
   * the read replica (DATABASE_READ_URL) while it is measured within DB_READ_MAX_LAG_MS of the
   * primary, else `pool`. Never for a read that must see the caller's own writes.
   */
  readPool(): pg.Pool;
  readonly redis: RedisClient;
  readonly handlerOptions: HandlerOptions;
  /** Aborted when shutdown begins: background loops stop on it. */
  readonly shutdownSignal: AbortSignal;
}

/** What a service's `create` returns. */
export interface ServiceInstance {
  readonly definition: ServiceDefinition;
  readonly implementation: UntypedServiceImplementation;
  /**
   * Called once, when the server is bound and serving: starts work that must not delay serving
   * (e.g. loading demo data). It must not throw; failures of what it starts are its own to log.
   */
  serving?(): void;
  /** Stops background work (sweepers, controllers) after the server drained. */
  close?(): Promise<void>;
}

export interface ServiceModule<S extends z.ZodRawShape = z.ZodRawShape> {
  /** e.g. "credits": names its logger, metrics prefix, migrations/<name>/ and pool. */
  readonly name: string;
  /** Fully-qualified gRPC service name, e.g. "shieldx.credits.v1.CreditsService". */
  readonly grpcServiceName: string;
  /** ErrorInfo domain, e.g. "credits.shieldx.io". */
  readonly errorDomain: string;
  /** The service's own variables, on top of the platform's. */
  readonly configShape?: S;
  /**
   * Whether the service needs PostgreSQL to serve (default true): then health is NOT_SERVING while
   * DATABASE_URL does not answer. (Camouflage keeps its state in Redis only.)
   */
  readonly usesDatabase?: boolean;
  /** Scope per method name (e.g. `Consume: "credits:write"`); a method missing here is refused. */
  readonly scopes: Readonly<Record<string, string>>;
  create(ctx: ServiceContext<z.infer<z.ZodObject<S>>>): Promise<ServiceInstance>;
}

export interface RunningService {
  readonly name: string;
  readonly grpcPort: number;
  readonly metricsPort: number;
  /** The JSON/HTTP port, or 0 when HTTP_PORT=0 turned it off. */
  readonly httpPort: number;
  readonly logger: Logger;
  readonly registry: Registry;
  readonly health: HealthImplementation;
  readonly pool: pg.Pool;
  /** Readiness and read-replica staleness (platform/db-watch.ts). */
  readonly database: DatabaseWatch;
  readonly redis: RedisClient;
  /** NOT_SERVING, drain in-flight calls (bounded), stop background work, close pools. */
  shutdown(reason?: string): Promise<void>;
}

function scopeResolver(module: ServiceModule, reflection: PlatformConfig['GRPC_REFLECTION']): ScopeResolver {
  const prefix = `/${module.grpcServiceName}/`;
  return (path) => {
    if (path.startsWith(HEALTH_PREFIX)) return null;
    if (REFLECTION_PREFIXES.some((p) => path.startsWith(p))) return reflection === 'open' ? null : 'reflection';
    if (path.startsWith(prefix)) {
      const scope = module.scopes[path.slice(prefix.length)];
      if (scope !== undefined) return scope;
    }
    // Unknown to the scope table: only an admin key may call it.
    return '*';
  };
}

/** What the launcher that starts a service adds to its environment. */
export interface StartOptions {
  /**
   * GRPC_PORT and METRICS_PORT when the environment sets none. The launchers take them from their
   * list of services (scripts/services.ts, the one place they are written); without them both
   * variables are required.
   */
  readonly defaultPorts?: { readonly grpc: number; readonly metrics: number; readonly http?: number };
  /**
   * The Redis to use when REDIS_URL is unset. Only the development launcher passes one (an
   * in-process stand-in, dev/redis-stand-in.ts): a production process without REDIS_URL refuses
   * to start rather than quietly keep its cache and learning per replica.
   */
  readonly redisStandIn?: () => RedisClient;
}

/**
 * The configuration a service starts with: the platform's variables, GRPC_PORT and METRICS_PORT
 * defaulted from the launcher's list of services, then the module's own variables.
 */
export function serviceConfigSchema<S extends z.ZodRawShape>(module: ServiceModule<S>, defaultPorts?: StartOptions['defaultPorts']) {
  return platformConfigSchema
    .extend({
      GRPC_PORT: defaultPorts ? platformConfigSchema.shape.GRPC_PORT.default(defaultPorts.grpc) : platformConfigSchema.shape.GRPC_PORT,
      METRICS_PORT: defaultPorts
        ? platformConfigSchema.shape.METRICS_PORT.default(defaultPorts.metrics)
        : platformConfigSchema.shape.METRICS_PORT,
      HTTP_PORT: defaultPorts?.http !== undefined ? platformConfigSchema.shape.HTTP_PORT.removeDefault().default(defaultPorts.http) : platformConfigSchema.shape.HTTP_PORT,
    })
    .extend(transportConfigShape)
    .extend(module.configShape ?? ({} as S));
}

/**
 * The service's Redis: REDIS_URL, REDIS_CLUSTER_NODES or REDIS_SENTINELS (platform/redis.ts), or
 * the launcher's stand-in, or a refusal naming the variable.
 */
function serviceRedis(config: PlatformConfig, logger: Logger, options: StartOptions): RedisClient {
  const topology = redisTopology(config);
  if (topology !== undefined) {
    if (topology.kind !== 'single') logger.info({ redis: topology.kind }, `Redis ${topology.kind === 'cluster' ? 'Cluster' : 'Sentinel'} mode`);
    return createRedisClient(topology, logger, { socketTimeout: config.REDIS_SOCKET_TIMEOUT_MS });
  }
  if (options.redisStandIn === undefined) {
    throw new ConfigError(
      'REDIS_URL',
      'is required (redis:// or rediss:// URL), or REDIS_CLUSTER_NODES, or REDIS_SENTINELS; only npm start runs without one, on an in-process stand-in',
    );
  }
  logger.info('REDIS_URL not set: using the in-process stand-in (development only)');
  return options.redisStandIn();
}

export async function startService<S extends z.ZodRawShape>(
  module: ServiceModule<S>,
  env: NodeJS.ProcessEnv = process.env,
  options: StartOptions = {},
): Promise<RunningService> {
  const config = loadConfig(serviceConfigSchema(module, options.defaultPorts), env) as PlatformConfig & TransportLimits & z.infer<z.ZodObject<S>>;
  const logger = createLogger(module.name, config.LOG_LEVEL);
  setPageTokenSecret(config.PAGE_TOKEN_SECRET ?? `api-keys:${JSON.stringify(env.SHIELDX_API_KEYS ?? '')}`);
  // Checked before migrations or pools: a refusal leaves nothing behind.
  const redis = serviceRedis(config, logger, options);
  const registry = createRegistry(module.name);

  if (config.MIGRATE_ON_START) {
    await runMigrations(config.DATABASE_URL, module.name, logger).catch((error: unknown) => {
      redis.disconnect();
      throw error;
    });
  }
  const poolOptions = async (url: string, applicationName: string) => ({
    max: config.DB_POOL_MAX,
    statementTimeoutMs: config.DB_STATEMENT_TIMEOUT_MS,
    applicationName,
    poolMode: await poolModeOf(url, config.DB_POOL_MODE, logger),
    preparedStatements: config.DB_PREPARED_STATEMENTS === 'auto' ? undefined : config.DB_PREPARED_STATEMENTS === 'on',
  });
  const pool = createPool(config.DATABASE_URL, await poolOptions(config.DATABASE_URL, `shieldx-${module.name}`), logger);
  const replica =
    config.DATABASE_READ_URL === undefined
      ? undefined
      : createPool(config.DATABASE_READ_URL, await poolOptions(config.DATABASE_READ_URL, `shieldx-${module.name}-reads`), logger);
  let health: HealthImplementation | undefined;
  let shuttingDown = false;
  const usesDatabase = module.usesDatabase ?? true;
  const setHealth = (status: 'SERVING' | 'NOT_SERVING') => {
    health?.setStatus('', status);
    health?.setStatus(module.grpcServiceName, status);
  };
  const watch = new DatabaseWatch({
    primary: pool,
    replica,
    intervalMs: config.DB_HEALTH_CHECK_INTERVAL_MS,
    maxLagMs: config.DB_READ_MAX_LAG_MS,
    logger,
    registry,
    onPrimary: (reachable) => {
      if (usesDatabase && !shuttingDown) setHealth(reachable ? 'SERVING' : 'NOT_SERVING');
    },
  });
  registerPoolMetrics(registry, module.name, pool);

  const shutdownController = new AbortController();
  /**
   * Releases what the service holds, whatever has been started so far: on a failed start (the
   * service must not leave connections or loops behind: tests, supervisors retrying) and at the
   * end of shutdown. The gRPC server is stopped by the caller first (forced, or drained).
   */
  const release = async (instance?: ServiceInstance, metricsServer?: HttpServer) => {
    shutdownController.abort();
    await instance?.close?.().catch((err: unknown) => logger.error({ err }, 'error while closing the service'));
    if (metricsServer) await new Promise<void>((resolve) => metricsServer.close(() => resolve()));
    watch.stop();
    await pool.end().catch(() => undefined);
    await replica?.end().catch(() => undefined);
    redis.disconnect();
  };
  const handlerOptions: HandlerOptions = {
    domain: module.errorDomain,
    logger,
    defaultDeadlineMs: config.GRPC_DEFAULT_DEADLINE_MS,
    shutdownSignal: shutdownController.signal,
  };
  let instance: ServiceInstance;
  try {
    instance = await module.create({
      config,
      logger,
      registry,
      pool,
      readPool: () => watch.readPool(),
      redis,
      handlerOptions,
      shutdownSignal: shutdownController.signal,
    });
  } catch (error) {
    await release();
    throw error;
  }

  const inFlight = new InFlightCalls();
  const server = new Server({
    // 'grpc.enable_channelz': 0 would save its per-call bookkeeping, but in grpc-js 1.14 the server
    // then no longer tracks sessions for forceShutdown, and a call outliving SHUTDOWN_GRACE_MS hangs
    // shutdown (platform/server.test.ts "cuts off calls that outlive the grace period").
    'grpc.max_receive_message_length': config.GRPC_MAX_MESSAGE_BYTES,
    'grpc.max_send_message_length': config.GRPC_MAX_MESSAGE_BYTES,
    ...transportServerOptions(config),
    interceptors: [
      callInterceptor({
        metrics: new GrpcServerMetrics(registry),
        inFlight,
        logger,
        verifier: new ApiKeyVerifier(config.SHIELDX_API_KEYS),
        scopeFor: scopeResolver(module, config.GRPC_REFLECTION),
        domain: module.errorDomain,
      }),
    ],
  });
  // Metadata limits and the reaping of stalled connections: platform/transport-limits.ts.
  if (!limitMetadata(server, config)) {
    logger.warn('grpc-js internals changed: GRPC_MAX_METADATA_BYTES and GRPC_MAX_METADATA_ENTRIES are not applied');
  }
  server.addService(instance.definition, instance.implementation);
  // The first probe decides the status the server starts with; later ones follow the database.
  await watch.start();
  const initial = usesDatabase && watch.primaryReachable === false ? 'NOT_SERVING' : 'SERVING';
  health = new HealthImplementation({ '': initial, [module.grpcServiceName]: initial });
  health.addToServer(server);
  if (config.GRPC_REFLECTION !== 'off') {
    // The compiled descriptors as buf wrote them (platform/reflection.ts); only what this server
    // serves is listed: `grpcurl list` must not show another service's API.
    const reflection = new ReflectionServer(compiledDescriptors(), [module.grpcServiceName, 'grpc.health.v1.Health']);
    for (const { definition, implementation } of reflection.definitions()) server.addService(definition, implementation);
  }

  let grpcPort: number;
  let metricsServer: HttpServer;
  let gateway: HttpGateway | undefined;
  try {
    grpcPort = await new Promise<number>((resolve, reject) => {
      server.bindAsync(`${config.GRPC_HOST}:${config.GRPC_PORT}`, ServerCredentials.createInsecure(), (err, port) =>
        err ? reject(unboundPort('GRPC_PORT', config.GRPC_HOST, config.GRPC_PORT, err)) : resolve(port),
      );
    });
    metricsServer = await startMetricsServer(registry, config.GRPC_HOST, config.METRICS_PORT).catch((error: unknown) => {
      throw unboundPort('METRICS_PORT', config.GRPC_HOST, config.METRICS_PORT, error);
    });
    if (config.HTTP_PORT !== 0) {
      gateway = await startHttpGateway({
        grpcServiceName: module.grpcServiceName,
        grpcTarget: `${loopbackFor(config.GRPC_HOST)}:${grpcPort}`,
        host: config.GRPC_HOST,
        port: config.HTTP_PORT,
        maxMessageBytes: config.GRPC_MAX_MESSAGE_BYTES,
        defaultDeadlineMs: config.GRPC_DEFAULT_DEADLINE_MS,
      }).catch(async (error: unknown) => {
        await new Promise<void>((resolve) => metricsServer.close(() => resolve()));
        throw unboundPort('HTTP_PORT', config.GRPC_HOST, config.HTTP_PORT, error);
      });
    }
  } catch (error) {
    // A port in use: stop what the service started (its loops, pool, Redis), not only the server.
    server.forceShutdown();
    await release(instance);
    throw error;
  }
  const reaper: StalledSessionReaper | undefined = reapStalledSessions(server, logger);
  if (reaper === undefined) logger.warn('grpc-js internals changed: connections nghttp2 stopped reading are not closed before keepalive does');
  const metricsPort = boundPort(metricsServer);
  const httpPort = gateway?.port ?? 0;
  logger.info({ grpc_port: grpcPort, metrics_port: metricsPort, http_port: httpPort }, `${module.name} listening`);
  instance.serving?.();

  let stopping: Promise<void> | undefined;
  const shutdown = (reason = 'shutdown requested') =>
    (stopping ??= (async () => {
      logger.info({ reason }, 'shutting down: NOT_SERVING, draining calls');
      shuttingDown = true;
      setHealth('NOT_SERVING');
      if (config.SHUTDOWN_DELAY_MS > 0) await new Promise((resolve) => setTimeout(resolve, config.SHUTDOWN_DELAY_MS));
      shutdownController.abort();
      // tryShutdown refuses new calls and waits for in-flight ones; force after the grace period.
      // The JSON/HTTP endpoint stops accepting at the same time; its calls in flight are gRPC calls
      // on this server, so they are drained with the rest.
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          logger.warn({ grace_ms: config.SHUTDOWN_GRACE_MS }, 'grace period over: cancelling remaining calls');
          server.forceShutdown();
          gateway?.destroy();
          resolve();
        }, config.SHUTDOWN_GRACE_MS);
        timer.unref();
        const drained = () => {
          clearTimeout(timer);
          resolve();
        };
        const grpcDrained = new Promise<void>((done) => {
          server.tryShutdown(() => done());
          // tryShutdown waits for every HTTP/2 stream to close, including streams grpc-js already
          // answered itself whose client never closed its side: once no call is really running,
          // what is left holds nothing and is cut.
          void inFlight.idle().then(() => {
            // The last answers are written; give their frames a moment to leave, then cut.
            setTimeout(() => {
              server.forceShutdown();
              done();
            }, IDLE_SETTLE_MS).unref();
          });
        });
        // The JSON/HTTP calls in flight are gRPC calls on this server: once those are done, what
        // the endpoint still holds is idle keep-alive connections, cut after the same moment.
        void grpcDrained.then(() => setTimeout(() => gateway?.destroy(), IDLE_SETTLE_MS).unref());
        void Promise.all([grpcDrained, gateway?.close()]).then(drained);
      });
      reaper?.stop();
      await release(instance, metricsServer);
      logger.info('stopped');
    })());

  return { name: module.name, grpcPort, metricsPort, httpPort, logger, registry, health, pool, database: watch, redis, shutdown };
}

/**
 * A port that cannot be bound, as the one line an operator needs: which variable, which address,
 * and what to do (the usual cause is another process on it). grpc-js says only "No address added
 * out of total 1 resolved"; node says EADDRINUSE or EACCES.
 */
function unboundPort(variable: string, host: string, port: number, error: unknown): ConfigError {
  const code = (error as { code?: unknown }).code;
  const why =
    code === 'EACCES'
      ? 'is not allowed to this user (ports below 1024 need privileges)'
      : 'is taken (another process listens there) or cannot be bound';
  return new ConfigError(variable, `${port} on ${host} ${why}: set ${variable} to a free port`);
}

/** Where this process reaches its own gRPC server: loopback when it is bound to every address. */
function loopbackFor(host: string): string {
  if (host === '0.0.0.0' || host === '') return '127.0.0.1';
  if (host === '::' || host === '[::]') return '[::1]';
  return host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
}

/** DB_POOL_MODE, or for `auto` what `url` turns out to reach (a pooler: transaction; unreachable: transaction, the safe choice). */
async function poolModeOf(url: string, setting: PlatformConfig['DB_POOL_MODE'], logger: Logger): Promise<PoolMode> {
  if (setting !== 'auto') return setting;
  try {
    const mode = await detectPoolMode(url);
    if (mode === 'transaction') logger.info('PostgreSQL is reached through a connection pooler: pooling per transaction assumed (DB_POOL_MODE=auto)');
    return mode;
  } catch (error) {
    logger.warn(
      { err: error instanceof Error ? error.message : String(error) },
      'could not reach PostgreSQL to detect a pooler: pooling per transaction assumed (set DB_POOL_MODE to choose)',
    );
    return 'transaction';
  }
}
