/**
 * The rollout RPCs of the shadow service and the controller behind them,
 * packaged for the shadow ServiceModule:
 *
 *   const rollouts = createRolloutHandlers({ pool, logger, registry, handlerOptions, shutdownSignal, config });
 *   implementation = { ...evaluationHandlers, ...rollouts.implementation };
 *   close = () => rollouts.close();
 *
 * with `rolloutConfigShape` merged into the module's `configShape`.
 */
import { hostname } from 'node:os';
import { isAbsolute } from 'node:path';
import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import type { Registry } from 'prom-client';
import { z } from 'zod';
import {
  ShadowServiceService,
  type AbortRolloutRequest,
  type AbortRolloutResponse,
  type CreateRolloutRequest,
  type CreateRolloutResponse,
  type GetRolloutRequest,
  type GetRolloutResponse,
  type ListRolloutsRequest,
  type ListRolloutsResponse,
  type PromoteRolloutRequest,
  type PromoteRolloutResponse,
  type ShadowServiceServer,
  type WatchRolloutRequest,
  type WatchRolloutResponse,
} from '../../../gen/shieldx/shadow/v1/shadow';
import { ConfigError } from '../../../platform/config';
import { serverStream, unary, type HandlerOptions } from '../../../platform/handlers';
import type { Logger } from '../../../platform/logger';
import { projectPath } from '../../../platform/paths';
import { PrometheusClient } from '../rollout/rollout-analysis';
import { CONTROLLER_LEASE_NAME, createControllerMetrics, RolloutController } from '../rollout/rollout-controller';
import { startJobs } from '../../../platform/periodic-jobs';
import { PgLease } from '../store/rollout-lease';
import { RolloutOperations } from '../rollout/rollout-operations';
import { pruneIdempotencyKeys } from '../store/rollout-store';
import { FileTrafficRouter, type TrafficRouter } from '../rollout/traffic-router';
import { defaultKubeConfig, KubernetesTrafficRouter } from '../rollout/traffic-router-kubernetes';

const int = (min: number, max: number) =>
  z.coerce
    .number({ invalid_type_error: 'must be a number' })
    .int('must be an integer')
    .min(min, `must be at least ${min}`)
    .max(max, `must be at most ${max}`);

/** The rollout controller's environment variables (merged into the shadow service's configShape). */
export const rolloutConfigShape = {
  /** `file` (local default: VirtualService manifests in ROLLOUT_FILE_ROUTER_DIR) or `kubernetes` (the API server). */
  ROLLOUT_ROUTER: z.enum(['file', 'kubernetes'], { errorMap: () => ({ message: 'must be "file" or "kubernetes"' }) }).default('file'),
  /** Directory of `<namespace>.<name>.yaml` manifests; relative paths are under the project root. */
  ROLLOUT_FILE_ROUTER_DIR: z.string().min(1, 'must not be empty').default('.data/virtualservices'),
  /** networking.istio.io API version the Kubernetes router uses: v1 (Istio ≥ 1.22) or v1beta1. */
  ROLLOUT_ISTIO_API_VERSION: z.enum(['v1', 'v1beta1'], { errorMap: () => ({ message: 'must be "v1" or "v1beta1"' }) }).default('v1'),
  PROMETHEUS_URL: z.string().url('must be an http(s) URL').regex(/^https?:\/\//, 'must be an http(s) URL').default('http://127.0.0.1:9090'),
  PROMETHEUS_TIMEOUT_MS: int(100, 60_000).default(5_000),
  /** How often the leader reconciles rollouts. */
  ROLLOUT_TICK_MS: int(50, 60_000).default(2_000),
  /** Leader lease TTL; must exceed 2 × ROLLOUT_TICK_MS. */
  ROLLOUT_LEADER_LEASE_SECONDS: int(1, 600).default(15),
  /** WatchRollout's poll interval of the event table. */
  ROLLOUT_WATCH_POLL_MS: int(50, 10_000).default(500),
  /**
   * How long idempotency keys of CreateRollout / PromoteRollout / AbortRollout are kept (a retry
   * within it replays the first response). The leader prunes older keys, except those of rollouts
   * it still drives.
   */
  ROLLOUT_IDEMPOTENCY_RETENTION_HOURS: int(24, 24 * 365).default(168),
  /** How often the leader prunes expired rollout idempotency keys. */
  ROLLOUT_IDEMPOTENCY_PRUNE_INTERVAL_SECONDS: int(1, 86_400).default(600),
  /** `off`: this replica serves the rollout RPCs but never runs the controller. */
  ROLLOUT_CONTROLLER: z.enum(['on', 'off'], { errorMap: () => ({ message: 'must be "on" or "off"' }) }).default('on'),
};
export type RolloutConfig = z.infer<z.ZodObject<typeof rolloutConfigShape>>;

export type RolloutMethods = 'createRollout' | 'getRollout' | 'listRollouts' | 'promoteRollout' | 'abortRollout' | 'watchRollout';

export interface RolloutHandlerDeps {
  readonly pool: pg.Pool;
  readonly logger: Logger;
  readonly registry: Registry;
  readonly handlerOptions: HandlerOptions;
  readonly shutdownSignal: AbortSignal;
  readonly config: RolloutConfig;
  /** Overrides the router chosen by ROLLOUT_ROUTER (tests). */
  readonly router?: TrafficRouter;
}

export interface RolloutHandlers {
  readonly implementation: Pick<ShadowServiceServer, RolloutMethods>;
  /** Stops the controller (after the current tick) and releases its lease. */
  close(): Promise<void>;
  /** The controller, when this replica runs one. */
  readonly controller: RolloutController | undefined;
}

function routerFor(config: RolloutConfig): TrafficRouter {
  if (config.ROLLOUT_ROUTER === 'kubernetes') {
    return new KubernetesTrafficRouter(defaultKubeConfig(), { apiVersion: config.ROLLOUT_ISTIO_API_VERSION });
  }
  const dir = config.ROLLOUT_FILE_ROUTER_DIR;
  return new FileTrafficRouter(isAbsolute(dir) ? dir : projectPath(dir));
}

/** Bounds of one prune run: at most PRUNE_BATCH_ROWS × PRUNE_BATCHES_MAX keys. */
const PRUNE_BATCH_ROWS = 1_000;
const PRUNE_BATCHES_MAX = 10;

export function createRolloutHandlers(deps: RolloutHandlerDeps): RolloutHandlers {
  const { pool, logger, registry, handlerOptions, shutdownSignal, config } = deps;
  if (config.ROLLOUT_LEADER_LEASE_SECONDS * 1000 <= 2 * config.ROLLOUT_TICK_MS) {
    throw new ConfigError('ROLLOUT_LEADER_LEASE_SECONDS', 'must be longer than 2 × ROLLOUT_TICK_MS');
  }

  let controller: RolloutController | undefined;
  if (config.ROLLOUT_CONTROLLER === 'on') {
    const router = deps.router ?? routerFor(config);
    const holder = `${hostname()}/${process.pid}/${randomUUID().slice(0, 8)}`;
    controller = new RolloutController({
      pool,
      router,
      prometheus: new PrometheusClient({ baseUrl: config.PROMETHEUS_URL, timeoutMs: config.PROMETHEUS_TIMEOUT_MS }),
      lease: new PgLease(pool, CONTROLLER_LEASE_NAME, holder, config.ROLLOUT_LEADER_LEASE_SECONDS),
      logger: logger.child({ component: 'rollout-controller', holder }),
      metrics: createControllerMetrics(registry),
      tickMs: config.ROLLOUT_TICK_MS,
    });
    logger.info({ router: router.kind, holder }, 'rollout controller starting');
    controller.start();
  }
  // Every replica prunes old idempotency keys (rollout RPCs and IngestSamples share the table),
  // controller or not: batches taken with SKIP LOCKED, so replicas never wait on each other.
  const stopJobs = startJobs(
    [
      {
        name: 'idempotency-prune',
        intervalMs: config.ROLLOUT_IDEMPOTENCY_PRUNE_INTERVAL_SECONDS * 1000,
        run: async () => {
          const pruned = await pruneIdempotencyKeys(pool, config.ROLLOUT_IDEMPOTENCY_RETENTION_HOURS, PRUNE_BATCH_ROWS, PRUNE_BATCHES_MAX);
          if (pruned > 0) logger.info({ pruned, retention_hours: config.ROLLOUT_IDEMPOTENCY_RETENTION_HOURS }, 'old idempotency keys pruned');
        },
      },
    ],
    shutdownSignal,
    logger,
  );
  let closing: Promise<void> | undefined;
  const close = () => (closing ??= Promise.all([controller?.close(), stopJobs()]).then(() => undefined));
  // Background work stops as soon as shutdown begins; close() waits for it.
  shutdownSignal.addEventListener('abort', () => void close(), { once: true });

  const operations = new RolloutOperations(pool, () => controller?.wake());
  const methods = ShadowServiceService;
  const implementation: Pick<ShadowServiceServer, RolloutMethods> = {
    createRollout: unary<CreateRolloutRequest, CreateRolloutResponse>(methods.createRollout.path, handlerOptions, (request) =>
      operations.create(request),
    ),
    getRollout: unary<GetRolloutRequest, GetRolloutResponse>(methods.getRollout.path, handlerOptions, async (request) => ({
      rollout: await operations.get(request.id),
    })),
    listRollouts: unary<ListRolloutsRequest, ListRolloutsResponse>(methods.listRollouts.path, handlerOptions, (request) =>
      operations.list(request.pageSize, request.pageToken, request.state),
    ),
    promoteRollout: unary<PromoteRolloutRequest, PromoteRolloutResponse>(methods.promoteRollout.path, handlerOptions, (request) =>
      operations.promote(request),
    ),
    abortRollout: unary<AbortRolloutRequest, AbortRolloutResponse>(methods.abortRollout.path, handlerOptions, (request) =>
      operations.abort(request),
    ),
    watchRollout: serverStream<WatchRolloutRequest, WatchRolloutResponse>(methods.watchRollout.path, handlerOptions, (request, send, ctx) =>
      operations.watch(request.id, (update) => send({ rollout: update.rollout, event: update.event }), ctx.signal, config.ROLLOUT_WATCH_POLL_MS),
    ),
  };
  return { implementation, close, controller };
}
