/**
 * The evaluation RPCs (StartEvaluation, GetEvaluation, ListEvaluations): validate the request in
 * proto field names, persist the job (store/evaluation-jobs.ts) and wake the local runner, encode
 * the stored rows as Evaluation messages.
 */
import type pg from 'pg';
import {
  EvaluationResult as ProtoEvaluationResult,
  EvaluationState,
  Rule,
  SampleSelection as ProtoSampleSelection,
  ShadowServiceService,
  Thresholds,
  type Evaluation,
  type ShadowServiceServer,
  type StartEvaluationRequest,
} from '../../../gen/shieldx/shadow/v1/shadow';
import { unary, type HandlerOptions } from '../../../platform/handlers';
import { optionalIdempotencyKey } from '../../../platform/idempotency-key';
import { pageSize } from '../../../platform/page-size';
import { decodePageToken, encodePageToken } from '../../../platform/page-token';
import { ServiceError } from '../../../platform/service-error';
import { resolveThresholds } from '../domain/recommendation';
import { isUuid } from '../domain/rollout-spec';
import { noSamples } from '../errors';
import type { EvaluationJobs, EvaluationRow, EvaluationState as JobState } from '../store/evaluation-jobs';
import { DATASET_PATTERN, hasSamples } from '../store/sample-store';
import { thresholdsFromProto, thresholdsToProto } from './evaluation-mapping';
import { validatedRule } from './rule-mapping';

export type EvaluationMethods = 'startEvaluation' | 'getEvaluation' | 'listEvaluations';

export interface EvaluationHandlerDeps {
  readonly pool: pg.Pool;
  readonly jobs: EvaluationJobs;
  /** Tells the local runner a job is waiting. */
  readonly wake: () => void;
  readonly handlerOptions: HandlerOptions;
}

export const NAME_LENGTH_MAX = 200;

const STATE_NAMES: Record<JobState, EvaluationState> = {
  PENDING: EvaluationState.EVALUATION_STATE_PENDING,
  RUNNING: EvaluationState.EVALUATION_STATE_RUNNING,
  SUCCEEDED: EvaluationState.EVALUATION_STATE_SUCCEEDED,
  FAILED: EvaluationState.EVALUATION_STATE_FAILED,
};

/** The `created_at` of a cursor as the store writes it (microseconds, UTC). */
const CURSOR_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/;

/** A ListEvaluations cursor: [created_at, id] of the last evaluation served; undefined for anything else. */
export function parseEvaluationCursor(cursor: readonly string[]): { createdAt: string; id: string } | undefined {
  if (cursor.length !== 2) return undefined;
  const [createdAt, id] = cursor as [string, string];
  if (!CURSOR_TIME.test(createdAt) || Number.isNaN(Date.parse(createdAt)) || !isUuid(id)) return undefined;
  return { createdAt, id };
}

export function toEvaluation(row: EvaluationRow): Evaluation {
  return {
    id: row.id,
    name: row.name,
    state: STATE_NAMES[row.state],
    rule: Rule.fromJSON(row.rule),
    baselineRule: row.baseline_rule ? Rule.fromJSON(row.baseline_rule) : undefined,
    selection: ProtoSampleSelection.fromJSON(row.selection),
    // The values applied, defaults filled in (rows stored before they were resolved at creation hold only the overrides).
    thresholds: thresholdsToProto(resolveThresholds(thresholdsFromProto(Thresholds.fromJSON(row.thresholds)))),
    result: row.result ? ProtoEvaluationResult.fromJSON(row.result) : undefined,
    error: row.error,
    createdAt: row.created_at,
    startedAt: row.started_at ?? undefined,
    completedAt: row.completed_at ?? undefined,
  };
}

function stateFilter(state: EvaluationState): JobState | undefined {
  if (state === EvaluationState.EVALUATION_STATE_UNSPECIFIED) return undefined;
  // ts-proto keeps an unknown enum number as it is (not UNRECOGNIZED): accept only the known states.
  const name = (Object.keys(STATE_NAMES) as JobState[]).find((k) => STATE_NAMES[k] === state);
  if (name === undefined) throw ServiceError.invalidArgument('state', 'is not an evaluation state');
  return name;
}

export function evaluationHandlers(deps: EvaluationHandlerDeps): Pick<ShadowServiceServer, EvaluationMethods> {
  const { pool, jobs, wake, handlerOptions: options } = deps;
  return {
    startEvaluation: unary(ShadowServiceService.startEvaluation.path, options, async (request: StartEvaluationRequest) => {
      if (request.name.length > NAME_LENGTH_MAX) throw ServiceError.invalidArgument('name', `must be at most ${NAME_LENGTH_MAX} characters`);
      const idempotencyKey = optionalIdempotencyKey(request.idempotencyKey) ?? '';
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
      const thresholds = resolveThresholds(thresholdsFromProto(request.thresholds));
      if (!(await hasSamples(pool, selection.dataset))) throw noSamples(selection.dataset);
      const row = await jobs.create({
        name: request.name,
        rule: Rule.toJSON(request.rule!),
        baselineRule: request.baselineRule ? Rule.toJSON(request.baselineRule) : null,
        selection: ProtoSampleSelection.toJSON(selection),
        // Stored as applied, so a later change of a default does not change what this evaluation was judged by.
        thresholds: Thresholds.toJSON(thresholdsToProto(thresholds)),
        idempotencyKey,
      });
      wake();
      return { evaluation: toEvaluation(row) };
    }),

    getEvaluation: unary(ShadowServiceService.getEvaluation.path, options, async (request) => ({
      evaluation: toEvaluation(await jobs.get(request.id)),
    })),

    listEvaluations: unary(ShadowServiceService.listEvaluations.path, options, async (request) => {
      const size = pageSize(request.pageSize);
      const state = stateFilter(request.state);
      // The token is bound to the filter: a token of another state's listing is refused.
      const filter = { state: state ?? null };
      const cursor = decodePageToken(request.pageToken, filter, parseEvaluationCursor);
      const page = await jobs.list(size, cursor, state);
      return {
        evaluations: page.rows.map(toEvaluation),
        nextPageToken: encodePageToken(page.next === undefined ? undefined : [page.next.createdAt, page.next.id], filter),
      };
    }),
  };
}
