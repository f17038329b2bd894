/**
 * The shadow service module (what the launchers load, scripts/services.ts): wiring only. It reads
 * the settings (config.ts), builds the stores, the evaluation runner and the rollout runtime, and
 * hands the rpc handlers to the platform server.
 */
import { Counter } from 'prom-client';
import { ShadowServiceService, type ShadowServiceServer } from '../../gen/shieldx/shadow/v1/shadow';
import type { ServiceModule } from '../../platform/server';
import { Code, ServiceError } from '../../platform/service-error';

const SERVER_FAULTS = new Set<number>([Code.UNKNOWN, Code.INTERNAL, Code.UNAVAILABLE, Code.DATA_LOSS, Code.DEADLINE_EXCEEDED]);
import { shadowConfigShape } from './config';
import { createEvaluationMetrics } from './evaluation/evaluation-metrics';
import { EvaluationRunner } from './evaluation/evaluation-runner';
import { closeEvaluationWorkerPools } from './evaluation/evaluation-workers';
import { evaluationJob } from './evaluation/run-evaluation';
import { startRollouts } from './rollout/rollout-runtime';
import { evaluationHandlers } from './rpc/evaluation-handlers';
import { ingestHandler } from './rpc/ingest-handler';
import { rolloutHandlers } from './rpc/rollout-handlers';
import { loadDemoDataInBackground } from './store/demo-data';
import { EvaluationJobs, JobNotifications } from './store/evaluation-jobs';
import { SampleColumnsCache } from './store/sample-store';

export const shadowService: ServiceModule<typeof shadowConfigShape> = {
  name: 'shadow',
  grpcServiceName: 'shieldx.shadow.v1.ShadowService',
  errorDomain: 'shadow.shieldx.io',
  configShape: shadowConfigShape,
  scopes: {
    IngestSamples: 'shadow:write',
    StartEvaluation: 'shadow:write',
    GetEvaluation: 'shadow:read',
    ListEvaluations: 'shadow:read',
    CreateRollout: 'shadow:rollout',
    GetRollout: 'shadow:read',
    ListRollouts: 'shadow:read',
    PromoteRollout: 'shadow:rollout',
    AbortRollout: 'shadow:rollout',
    WatchRollout: 'shadow:read',
  },
  async create(ctx) {
    const { pool, logger, registry, config, handlerOptions, shutdownSignal } = ctx;

    const jobs = new EvaluationJobs(pool);
    const runner = new EvaluationRunner(
      jobs,
      evaluationJob({
        pool,
        // Sample loads may read the replica, once it has replayed past the job's WAL position.
        reads: config.DATABASE_READ_URL === undefined ? undefined : ctx.readPool,
        replicaWaitMs: config.SHADOW_EVALUATION_REPLICA_WAIT_MS,
        samples: new SampleColumnsCache(config.SHADOW_SAMPLE_CACHE_MAX),
        metrics: createEvaluationMetrics(registry),
        logger,
        workers: config.SHADOW_EVALUATION_WORKERS,
      }),
      // A job failed by its own input (an empty selection, a stored rule refused) is the caller's
      // mistake, recorded on the job: info. Anything else is a fault: error.
      (error) =>
        error instanceof ServiceError && !SERVER_FAULTS.has(error.code)
          ? logger.info({ err: error, reason: error.reason }, 'evaluation job failed on its input')
          : logger.error({ err: error }, 'evaluation job error'),
      shutdownSignal,
      { pollIntervalMs: config.SHADOW_EVALUATION_POLL_MS, leaseSweepIntervalMs: config.SHADOW_EVALUATION_LEASE_SWEEP_SECONDS * 1000 },
    );
    const listenUrl = config.SHADOW_LISTEN_DATABASE_URL ?? config.DATABASE_URL;
    const notifications =
      listenUrl === 'off'
        ? undefined
        : new JobNotifications(
            listenUrl,
            () => runner.wake(),
            (error) => logger.warn({ err: error instanceof Error ? error.message : String(error) }, 'evaluation LISTEN connection failed; polling until it is back'),
          );
    // First: a LISTEN URL that goes through a pooler fails the start here, before anything runs.
    await notifications?.start();
    const rollouts = startRollouts({ pool, logger, registry, shutdownSignal, config });

    const implementation: ShadowServiceServer = {
      ...rolloutHandlers(rollouts.operations, handlerOptions, config.ROLLOUT_WATCH_POLL_MS),
      ...evaluationHandlers({ pool, jobs, wake: () => runner.wake(), handlerOptions }),
      ...ingestHandler({
        pool,
        handlerOptions,
        ingested: new Counter({
          name: 'shadow_samples_ingested_total',
          help: 'Samples received by IngestSamples, by outcome.',
          labelNames: ['result'],
          registers: [registry],
        }),
        streamsMax: config.SHADOW_INGEST_STREAMS_MAX,
        samplesMax: config.SHADOW_INGEST_SAMPLES_MAX,
        secondsMax: config.SHADOW_INGEST_SECONDS_MAX,
      }),
    };

    runner.start();
    let demoLoad: Promise<void> | undefined;

    return {
      definition: ShadowServiceService,
      implementation,
      serving() {
        // In the background: serving (and readiness) never waits for demo data.
        if (config.SHADOW_DEMO_DATA) demoLoad = loadDemoDataInBackground(pool, config.SHADOW_DEMO_SAMPLES, shutdownSignal, logger);
      },
      async close() {
        // Shutdown fired the signal: the load stops at its next sample and rolls back (never rejects).
        await demoLoad;
        await rollouts.close();
        await notifications?.close();
        await runner.stopped();
        await closeEvaluationWorkerPools();
      },
    };
  },
};
