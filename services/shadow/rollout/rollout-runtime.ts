/**
 * The rollout controller and its background work on this replica: picks the traffic router
 * (ROLLOUT_ROUTER), runs the controller when ROLLOUT_CONTROLLER=on (it leads while it holds the
 * lease), prunes old idempotency keys, and offers the operations the rollout RPCs call
 * (rollout-operations.ts), which wake the local controller after each change.
 *
 *   const rollouts = startRollouts({ pool, logger, registry, shutdownSignal, config });
 *   rpc: rolloutHandlers(rollouts.operations, handlerOptions, config.ROLLOUT_WATCH_POLL_MS)
 *   close: rollouts.close()
 */
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { isAbsolute } from 'node:path';
import type pg from 'pg';
import type { Registry } from 'prom-client';
import { ConfigError } from '../../../platform/config';
import type { Logger } from '../../../platform/logger';
import { projectPath } from '../../../platform/paths';
import { startJobs } from '../../../platform/periodic-jobs';
import type { RolloutConfig } from '../config';
import { PgLease } from '../store/rollout-lease';
import { pruneIdempotencyKeys } from '../store/rollout-store';
import { PrometheusClient } from './rollout-analysis';
import { CONTROLLER_LEASE_NAME, createControllerMetrics, RolloutController } from './rollout-controller';
import { RolloutOperations } from './rollout-operations';
import { FileTrafficRouter, type TrafficRouter } from './traffic-router';
import { defaultKubeConfig, KubernetesTrafficRouter } from './traffic-router-kubernetes';

export interface RolloutDeps {
  readonly pool: pg.Pool;
  readonly logger: Logger;
  readonly registry: Registry;
  readonly shutdownSignal: AbortSignal;
  readonly config: RolloutConfig;
  /** Overrides the router chosen by ROLLOUT_ROUTER (tests). */
  readonly router?: TrafficRouter;
}

export interface Rollouts {
  /** What the rollout RPCs do. */
  readonly operations: RolloutOperations;
  /** The controller, when this replica runs one. */
  readonly controller: RolloutController | undefined;
  /** Stops the controller (after the current tick) and the prune job, and releases the lease. */
  close(): Promise<void>;
}

/** Bounds of one prune run: at most PRUNE_BATCH_ROWS × PRUNE_BATCHES_MAX keys. */
const PRUNE_BATCH_ROWS = 1_000;
const PRUNE_BATCHES_MAX = 10;

function routerFor(config: RolloutConfig): TrafficRouter {
  if (config.ROLLOUT_ROUTER === 'kubernetes') {
    return new KubernetesTrafficRouter(defaultKubeConfig(), { apiVersion: config.ROLLOUT_ISTIO_API_VERSION });
  }
  const dir = config.ROLLOUT_FILE_ROUTER_DIR;
  return new FileTrafficRouter(isAbsolute(dir) ? dir : projectPath(dir));
}

export function startRollouts(deps: RolloutDeps): Rollouts {
  const { pool, logger, registry, shutdownSignal, config } = deps;
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
  return { operations, controller, close };
}
