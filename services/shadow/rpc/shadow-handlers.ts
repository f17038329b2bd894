/**
 * The shadow service: thin gRPC handlers over the evaluation domain
 * (evaluate.ts), the sample store, the persisted job runner, and the canary
 * rollout controller (rollout-handlers.ts).
 */
import { Counter, Gauge, Histogram } from 'prom-client';
import { z } from 'zod';
import {
  EvaluationResult as ProtoEvaluationResult,
  EvaluationState,
  Rule,
  SampleSelection as ProtoSampleSelection,
  ShadowServiceService,
  Thresholds,
  type Evaluation,
  type IngestSamplesRequest,
  type IngestSamplesResponse,
  type ShadowServiceServer,
  type StartEvaluationRequest,
} from '../../../gen/shieldx/shadow/v1/shadow';
import { clientStream, unary } from '../../../platform/handlers';
import type { ServiceModule } from '../../../platform/server';
import { Code, ServiceError } from '../../../platform/service-error';
import { closeEvaluationWorkerPools } from '../evaluation/evaluation-workers';
import { decisionName, resultToProto, thresholdsFromProto } from './evaluation-mapping';
import { EvaluationJobs, EvaluationRunner, JobNotifications, type EvaluationRow, type EvaluationState as JobState } from '../store/evaluation-jobs';
import { evaluateRule } from '../evaluation/evaluate';
import { resolveThresholds } from '../domain/recommendation';
import { createRolloutHandlers, rolloutConfigShape } from './rollout-handlers';
import { ruleFromProto, validatedRule } from './rule-mapping';
import { pageSize } from '../../../platform/page-size';
import { optionalIdempotencyKey } from '../../../platform/idempotency-key';
import { isUuid } from '../domain/rollout-spec';
import { ruleHeaderNames } from '../domain/rules';
import { DATASET_PATTERN, hasSamples, SampleColumnsCache } from '../store/sample-store';
import { ingestSampleStream } from '../ingest/sample-ingest';
import { ingestLimitExceeded, noSamples } from '../errors';
import { loadDemoDataInBackground } from '../store/demo-data';


const shadowConfigShape = {
  ...rolloutConfigShape,
  /** Load a generated, labelled demo dataset ("demo") in the background after start when it is empty (npm start sets it). */
  SHADOW_DEMO_DATA: z.enum(['true', 'false']).default('false').transform((v) => v === 'true'),
  SHADOW_DEMO_SAMPLES: z.coerce.number().int('must be an integer').min(1, 'must be at least 1').max(5_000_000, 'must be at most 5000000').default(20_000),
  /** Samples kept loaded (columnar, ~30 bytes each) for re-evaluating the same selection; 0 disables. */
  SHADOW_SAMPLE_CACHE_MAX: z.coerce.number().int('must be an integer').min(0, 'must be at least 0').max(50_000_000, 'must be at most 50000000').default(5_000_000),
  /** Samples one IngestSamples call may carry: the whole call is one transaction. */
  SHADOW_INGEST_SAMPLES_MAX: z.coerce.number().int('must be an integer').min(1, 'must be at least 1').max(50_000_000, 'must be at most 50000000').default(5_000_000),
  /** Longest an IngestSamples call (and so its transaction) may stay open. */
  SHADOW_INGEST_SECONDS_MAX: z.coerce.number().int('must be an integer').min(1, 'must be at least 1').max(3600, 'must be at most 3600').default(120),
  /** IngestSamples calls one replica runs at once: each holds a pooled connection for its whole stream. */
  SHADOW_INGEST_STREAMS_MAX: z.coerce.number().int('must be an integer').min(1, 'must be at least 1').max(1000, 'must be at most 1000').default(4),
  /**
   * Where the evaluation runner LISTENs for new jobs (a direct or session-pooled connection: LISTEN does not
   * work through PgBouncer transaction pooling); unset: DATABASE_URL; `off`: poll only.
   */
  SHADOW_LISTEN_DATABASE_URL: z
    .string()
    .regex(/^(postgres(ql)?:\/\/|off$)/, 'must be a postgres:// URL or "off"')
    .optional(),
  /** An idle runner's fallback poll for pending jobs (notifications wake it at once). */
  SHADOW_EVALUATION_POLL_MS: z.coerce.number().int('must be an integer').min(100, 'must be at least 100').max(600_000, 'must be at most 600000').default(5_000),
  /** How often a replica re-queues evaluations whose replica died (their lease ran out). */
  SHADOW_EVALUATION_LEASE_SWEEP_SECONDS: z.coerce.number().int('must be an integer').min(1, 'must be at least 1').max(3600, 'must be at most 3600').default(30),
  /** Worker threads per evaluation: a number, or auto (by sample count and cores). */
  SHADOW_EVALUATION_WORKERS: z.union([z.literal('auto'), z.coerce.number().int().min(0).max(16)]).default('auto'),
};

const STATE_NAMES: Record<JobState, EvaluationState> = {
  PENDING: EvaluationState.EVALUATION_STATE_PENDING,
  RUNNING: EvaluationState.EVALUATION_STATE_RUNNING,
  SUCCEEDED: EvaluationState.EVALUATION_STATE_SUCCEEDED,
  FAILED: EvaluationState.EVALUATION_STATE_FAILED,
};

function decodePageToken(token: string): { createdAt: string; id: string } | undefined {
  if (token === '') return undefined;
  try {
    const parsed = JSON.parse(Buffer.from(token, 'base64url').toString('utf8')) as { c?: unknown; i?: unknown };
    if (typeof parsed.c === 'string' && typeof parsed.i === 'string' && !Number.isNaN(Date.parse(parsed.c)) && isUuid(parsed.i)) {
      return { createdAt: parsed.c, id: parsed.i };
    }
  } catch {
    // falls through to the error
  }
  throw ServiceError.invalidArgument('page_token', 'is not a token this service issued');
}

function encodePageToken(cursor: { createdAt: string; id: string } | undefined): string {
  return cursor ? Buffer.from(JSON.stringify({ c: cursor.createdAt, i: cursor.id })).toString('base64url') : '';
}

function toEvaluation(row: EvaluationRow): Evaluation {
  return {
    id: row.id,
    name: row.name,
    state: STATE_NAMES[row.state],
    rule: Rule.fromJSON(row.rule),
    baselineRule: row.baseline_rule ? Rule.fromJSON(row.baseline_rule) : undefined,
    selection: ProtoSampleSelection.fromJSON(row.selection),
    thresholds: Thresholds.fromJSON(row.thresholds),
    result: row.result ? ProtoEvaluationResult.fromJSON(row.result) : undefined,
    error: row.error,
    createdAt: row.created_at,
    startedAt: row.started_at ?? undefined,
    completedAt: row.completed_at ?? undefined,
  };
}

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
    const { pool, logger, registry, config, handlerOptions: options } = ctx;
    const active = new Gauge({ name: 'shadow_evaluations_active', help: 'Evaluations running on this replica.', registers: [registry] });
    const duration = new Histogram({
      name: 'shadow_evaluation_duration_seconds',
      help: 'Wall time of an evaluation (load + replay + statistics).',
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120],
      registers: [registry],
    });
    const completed = new Counter({
      name: 'shadow_evaluations_total',
      help: 'Evaluations completed, by whether the rule/label association was significant.',
      labelNames: ['is_significant'],
      registers: [registry],
    });
    const ingested = new Counter({
      name: 'shadow_samples_ingested_total',
      help: 'Samples received by IngestSamples, by outcome.',
      labelNames: ['result'],
      registers: [registry],
    });

    const jobs = new EvaluationJobs(pool);
    const samples = new SampleColumnsCache(config.SHADOW_SAMPLE_CACHE_MAX);
    const runner = new EvaluationRunner(
      jobs,
      async (job) => {
        const started = process.hrtime.bigint();
        active.inc();
        try {
          const rule = ruleFromProto(Rule.fromJSON(job.rule), 'rule');
          const baseline = job.baseline_rule ? ruleFromProto(Rule.fromJSON(job.baseline_rule), 'baseline_rule') : undefined;
          const selection = ProtoSampleSelection.fromJSON(job.selection);
          const headers = new Set([...ruleHeaderNames(rule), ...(baseline ? ruleHeaderNames(baseline) : [])]);
          const { columns, cached } = await samples.load(
            pool,
            { dataset: selection.dataset, startTime: selection.startTime, endTime: selection.endTime, limit: Number(selection.limit) },
            headers,
          );
          if (columns.length === 0) throw new Error(`no samples in dataset "${selection.dataset}" for the selection`);
          const result = await evaluateRule({
            samples: columns,
            rule,
            baseline,
            thresholds: thresholdsFromProto(Thresholds.fromJSON(job.thresholds)),
            workers: config.SHADOW_EVALUATION_WORKERS,
          });
          const proto = resultToProto(result);
          completed.inc({ is_significant: String(result.candidate.significance.significant) });
          logger.info({ evaluation_id: job.id, samples: columns.length, samples_cached: cached, decision: result.recommendation.decision }, 'evaluation done');
          return { result: ProtoEvaluationResult.toJSON(proto), decision: decisionName(result) };
        } finally {
          active.dec();
          duration.observe(Number(process.hrtime.bigint() - started) / 1e9);
        }
      },
      (error) => logger.error({ err: error }, 'evaluation job error'),
      ctx.shutdownSignal,
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

    let ingestStreams = 0;
    const rollouts = createRolloutHandlers({ pool, logger, registry, handlerOptions: options, shutdownSignal: ctx.shutdownSignal, config });

    const implementation: ShadowServiceServer = {
      ...rollouts.implementation,

      ingestSamples: clientStream<IngestSamplesRequest, IngestSamplesResponse>(
        ShadowServiceService.ingestSamples.path,
        options,
        async (messages, callContext) => {
          if (ingestStreams >= config.SHADOW_INGEST_STREAMS_MAX) {
            throw ingestLimitExceeded('streams', `this replica already runs ${config.SHADOW_INGEST_STREAMS_MAX} IngestSamples calls; retry later`, config.SHADOW_INGEST_STREAMS_MAX);
          }
          ingestStreams++;
          try {
            const { response, replayed } = await ingestSampleStream(
              pool,
              messages,
              { samplesMax: config.SHADOW_INGEST_SAMPLES_MAX, durationMsMax: config.SHADOW_INGEST_SECONDS_MAX * 1000 },
              callContext.signal,
            );
            if (!replayed) {
              ingested.inc({ result: 'accepted' }, Number(response.accepted));
              ingested.inc({ result: 'rejected' }, Number(response.rejected));
            }
            return response;
          } catch (error) {
            // The stream ended early because the client left: say so, not the stream's internal error.
            if (callContext.signal.aborted) throw callContext.signal.reason;
            throw error;
          } finally {
            ingestStreams--;
          }
        },
        // SHADOW_INGEST_SECONDS_MAX bounds the call (ingestSampleStream), not GRPC_DEFAULT_DEADLINE_MS.
        { handlerBoundsDuration: true },
      ),

      startEvaluation: unary(ShadowServiceService.startEvaluation.path, options, async (request: StartEvaluationRequest) => {
        if (request.name.length > 200) throw ServiceError.invalidArgument('name', 'must be at most 200 characters');
        optionalIdempotencyKey(request.idempotencyKey);
        validatedRule(request.rule, 'rule');
        if (request.baselineRule) validatedRule(request.baselineRule, 'baseline_rule');
        const selection = request.selection;
        if (!selection || !DATASET_PATTERN.test(selection.dataset)) {
          throw ServiceError.invalidArgument('selection.dataset', 'must name a dataset (a-z, 0-9, "-", "_")');
        }
        if (selection.limit < 0n) throw ServiceError.invalidArgument('selection.limit', 'must not be negative');
        if (selection.startTime && selection.endTime && selection.startTime >= selection.endTime) {
          throw ServiceError.invalidArgument('selection.end_time', 'must be after start_time');
        }
        resolveThresholds(thresholdsFromProto(request.thresholds));
        if (!(await hasSamples(pool, selection.dataset))) {
          throw noSamples(selection.dataset);
        }
        const row = await jobs.create({
          name: request.name,
          rule: Rule.toJSON(request.rule!),
          baselineRule: request.baselineRule ? Rule.toJSON(request.baselineRule) : null,
          selection: ProtoSampleSelection.toJSON(selection),
          thresholds: Thresholds.toJSON(request.thresholds ?? Thresholds.fromPartial({})),
          idempotencyKey: request.idempotencyKey,
        });
        runner.wake();
        return { evaluation: toEvaluation(row) };
      }),

      getEvaluation: unary(ShadowServiceService.getEvaluation.path, options, async (request) => ({
        evaluation: toEvaluation(await jobs.get(request.id)),
      })),

      listEvaluations: unary(ShadowServiceService.listEvaluations.path, options, async (request) => {
        const size = pageSize(request.pageSize);
        const cursor = decodePageToken(request.pageToken);
        // ts-proto keeps an unknown enum number as it is (not UNRECOGNIZED): accept only the known states.
        let state: JobState | undefined;
        if (request.state !== EvaluationState.EVALUATION_STATE_UNSPECIFIED) {
          state = (Object.keys(STATE_NAMES) as JobState[]).find((k) => STATE_NAMES[k] === request.state);
          if (state === undefined) throw ServiceError.invalidArgument('state', 'is not an evaluation state');
        }
        const page = await jobs.list(size, cursor, state);
        return { evaluations: page.rows.map(toEvaluation), nextPageToken: encodePageToken(page.next) };
      }),
    };

    await notifications?.start();
    runner.start();
    let demoLoad: Promise<void> | undefined;

    return {
      definition: ShadowServiceService,
      implementation,
      serving() {
        // In the background: serving (and readiness) never waits for demo data.
        if (config.SHADOW_DEMO_DATA) demoLoad = loadDemoDataInBackground(pool, config.SHADOW_DEMO_SAMPLES, ctx.shutdownSignal, logger);
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
