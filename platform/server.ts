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
import { createPool } from './db';
import type { HandlerOptions } from './handlers';
import { callInterceptor, InFlightCalls, type ScopeResolver } from './interceptors';
import { createLogger, type Logger } from './logger';
import { boundPort, createRegistry, GrpcServerMetrics, registerPoolMetrics, startMetricsServer } from './metrics';
import { runMigrations } from './migrate';
import { setPageTokenSecret } from './page-token';
import { createRedis, type RedisClient } from './redis';
import { compiledDescriptors, ReflectionServer } from './reflection';

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
  /** Scope per method name (e.g. `Consume: "credits:write"`); a method missing here is refused. */
  readonly scopes: Readonly<Record<string, string>>;
  create(ctx: ServiceContext<z.infer<z.ZodObject<S>>>): Promise<ServiceInstance>;
}

export interface RunningService {
  readonly name: string;
  readonly grpcPort: number;
  readonly metricsPort: number;
  readonly logger: Logger;
  readonly registry: Registry;
  readonly health: HealthImplementation;
  readonly pool: pg.Pool;
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
  readonly defaultPorts?: { readonly grpc: number; readonly metrics: number };
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
    })
    .extend(module.configShape ?? ({} as S));
}

/** The service's Redis: REDIS_URL, or the launcher's stand-in, or a refusal naming the variable. */
function serviceRedis(config: PlatformConfig, logger: Logger, options: StartOptions): RedisClient {
  if (config.REDIS_URL !== undefined) return createRedis(config.REDIS_URL, logger, { socketTimeout: config.REDIS_SOCKET_TIMEOUT_MS });
  if (options.redisStandIn === undefined) {
    throw new ConfigError('REDIS_URL', 'is required (redis:// or rediss:// URL); only npm start runs without one, on an in-process stand-in');
  }
  logger.info('REDIS_URL not set: using the in-process stand-in (development only)');
  return options.redisStandIn();
}

export async function startService<S extends z.ZodRawShape>(
  module: ServiceModule<S>,
  env: NodeJS.ProcessEnv = process.env,
  options: StartOptions = {},
): Promise<RunningService> {
  const config = loadConfig(serviceConfigSchema(module, options.defaultPorts), env) as PlatformConfig & z.infer<z.ZodObject<S>>;
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
  const pool = createPool(
    config.DATABASE_URL,
    { max: config.DB_POOL_MAX, statementTimeoutMs: config.DB_STATEMENT_TIMEOUT_MS, applicationName: `shieldx-${module.name}` },
    logger,
  );
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
    await pool.end().catch(() => undefined);
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
  server.addService(instance.definition, instance.implementation);
  const health = new HealthImplementation({ '': 'SERVING', [module.grpcServiceName]: 'SERVING' });
  health.addToServer(server);
  if (config.GRPC_REFLECTION !== 'off') {
    // The compiled descriptors as buf wrote them (platform/reflection.ts); only what this server
    // serves is listed: `grpcurl list` must not show another service's API.
    const reflection = new ReflectionServer(compiledDescriptors(), [module.grpcServiceName, 'grpc.health.v1.Health']);
    for (const { definition, implementation } of reflection.definitions()) server.addService(definition, implementation);
  }

  let grpcPort: number;
  let metricsServer: HttpServer;
  try {
    grpcPort = await new Promise<number>((resolve, reject) => {
      server.bindAsync(`${config.GRPC_HOST}:${config.GRPC_PORT}`, ServerCredentials.createInsecure(), (err, port) =>
        err ? reject(err) : resolve(port),
      );
    });
    metricsServer = await startMetricsServer(registry, config.GRPC_HOST, config.METRICS_PORT);
  } catch (error) {
    // A port in use: stop what the service started (its loops, pool, Redis), not only the server.
    server.forceShutdown();
    await release(instance);
    throw error;
  }
  const metricsPort = boundPort(metricsServer);
  logger.info({ grpc_port: grpcPort, metrics_port: metricsPort }, `${module.name} listening`);
  instance.serving?.();

  let stopping: Promise<void> | undefined;
  const shutdown = (reason = 'shutdown requested') =>
    (stopping ??= (async () => {
      logger.info({ reason }, 'shutting down: NOT_SERVING, draining calls');
      health.setStatus('', 'NOT_SERVING');
      health.setStatus(module.grpcServiceName, 'NOT_SERVING');
      if (config.SHUTDOWN_DELAY_MS > 0) await new Promise((resolve) => setTimeout(resolve, config.SHUTDOWN_DELAY_MS));
      shutdownController.abort();
      // tryShutdown refuses new calls and waits for in-flight ones; force after the grace period.
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          logger.warn({ grace_ms: config.SHUTDOWN_GRACE_MS }, 'grace period over: cancelling remaining calls');
          server.forceShutdown();
          resolve();
        }, config.SHUTDOWN_GRACE_MS);
        timer.unref();
        const drained = () => {
          clearTimeout(timer);
          resolve();
        };
        server.tryShutdown(drained);
        // tryShutdown waits for every HTTP/2 stream to close, including streams grpc-js already
        // answered itself whose client never closed its side: once no call is really running,
        // what is left holds nothing and is cut.
        void inFlight.idle().then(() => {
          // The last answers are written; give their frames a moment to leave, then cut.
          setTimeout(() => {
            server.forceShutdown();
            drained();
          }, IDLE_SETTLE_MS).unref();
        });
      });
      await release(instance, metricsServer);
      logger.info('stopped');
    })());

  return { name: module.name, grpcPort, metricsPort, logger, registry, health, pool, redis, shutdown };
}
