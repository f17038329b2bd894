/**
 * The body of one evaluation job, as the runner (evaluation-runner.ts) calls it: read the stored
 * request (proto JSON), load the selected samples (through the columns cache; from the read replica
 * when it has replayed past the job's WAL position, else from the primary), replay the
 * candidate (and baseline) rule, and return the result as stored (proto JSON) with its decision.
 * A job that fails is FAILED with the error's message (the runner records it).
 */
import type pg from 'pg';
import { EvaluationResult as ProtoEvaluationResult, Rule, SampleSelection as ProtoSampleSelection, Thresholds } from '../../../gen/shieldx/shadow/v1/shadow';
import type { Logger } from '../../../platform/logger';
import { ruleHeaderNames } from '../domain/rules';
import { noSamplesInSelection } from '../errors';
import { decisionName, resultToProto, thresholdsFromProto } from '../rpc/evaluation-mapping';
import { ruleFromProto } from '../rpc/rule-mapping';
import type { CompletedEvaluation, EvaluationRow } from '../store/evaluation-jobs';
import type { SampleColumnsCache } from '../store/sample-store';
import { evaluateRule } from './evaluate';
import type { EvaluationMetrics } from './evaluation-metrics';

export interface EvaluationJobDeps {
  readonly pool: pg.Pool;
  /** Where reads that may lag go now (ServiceContext.readPool); absent: no DATABASE_READ_URL. */
  readonly reads?: () => pg.Pool;
  /** How long a load waits for the replica to replay the job's position (SHADOW_EVALUATION_REPLICA_WAIT_MS). */
  readonly replicaWaitMs?: number;
  readonly samples: SampleColumnsCache;
  readonly metrics: EvaluationMetrics;
  readonly logger: Logger;
  /** Worker threads per evaluation (SHADOW_EVALUATION_WORKERS). */
  readonly workers: number | 'auto';
}

/** The function the runner executes for each claimed job. */
export function evaluationJob(deps: EvaluationJobDeps): (job: EvaluationRow) => Promise<CompletedEvaluation> {
  return (job) => runEvaluation(deps, job);
}

export async function runEvaluation(deps: EvaluationJobDeps, job: EvaluationRow): Promise<CompletedEvaluation> {
  const { pool, samples, metrics, logger } = deps;
  const started = process.hrtime.bigint();
  metrics.active.inc();
  try {
    const rule = ruleFromProto(Rule.fromJSON(job.rule), 'rule');
    const baseline = job.baseline_rule ? ruleFromProto(Rule.fromJSON(job.baseline_rule), 'baseline_rule') : undefined;
    const selection = ProtoSampleSelection.fromJSON(job.selection);
    const headers = new Set([...ruleHeaderNames(rule), ...(baseline ? ruleHeaderNames(baseline) : [])]);
    const loaded = await samples.load(
      { primary: pool, reads: deps.reads, minLsn: job.created_wal_lsn, waitMs: deps.replicaWaitMs ?? 0 },
      { dataset: selection.dataset, startTime: selection.startTime, endTime: selection.endTime, limit: Number(selection.limit) },
      headers,
    );
    const { columns, cached } = loaded;
    metrics.sampleLoads.inc({ source: loaded.source, reason: loaded.reason });
    if (loaded.replicaError !== undefined) {
      logger.warn(
        { evaluation_id: job.id, err: loaded.replicaError instanceof Error ? loaded.replicaError.message : String(loaded.replicaError) },
        'evaluation sample load on the read replica failed; loaded from the primary',
      );
    }
    if (columns.length === 0) throw noSamplesInSelection(selection.dataset);
    const result = await evaluateRule({
      samples: columns,
      rule,
      baseline,
      thresholds: thresholdsFromProto(Thresholds.fromJSON(job.thresholds)),
      workers: deps.workers,
    });
    const proto = resultToProto(result);
    metrics.completed.inc({ is_significant: String(result.candidate.significance.significant) });
    logger.info(
      {
        evaluation_id: job.id,
        samples: columns.length,
        samples_cached: cached,
        samples_source: loaded.source,
        samples_source_reason: loaded.reason,
        job_wal_lsn: job.created_wal_lsn,
        replica_replay_lsn: loaded.replayLsn,
        decision: result.recommendation.decision,
      },
      'evaluation done',
    );
    return { result: ProtoEvaluationResult.toJSON(proto), decision: decisionName(result) };
  } finally {
    metrics.active.dec();
    metrics.duration.observe(Number(process.hrtime.bigint() - started) / 1e9);
  }
}
