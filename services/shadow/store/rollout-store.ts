/**
 * Persistence of canary rollouts: rows, the event history, idempotency keys.
 *
 * Every state change goes through `transition`, one transaction that updates
 * the row only if it is still at the version the caller read (compare-and-set)
 * and appends the event whose sequence is the new version. A controller that
 * read stale state, a second replica, or a handler racing the controller thus
 * loses cleanly instead of applying a step twice, and the primary key
 * (rollout_id, sequence) would reject a second event for the same transition.
 */
import type pg from 'pg';
import {
  AnalysisSnapshot,
  AnalysisVerdict,
  RolloutState,
  type Rollout,
  type RolloutEvent,
} from '../../../gen/shieldx/shadow/v1/shadow';
import { deleteInBatches, withTransaction } from '../../../platform/db';
import { ACTIVE_STATES, ROLLOUT_STATES, WEBHOOK_TYPES, type MetricSpec, type RolloutSpec, type RolloutStateName, type WebhookSpec } from '../domain/rollout-spec';

export function stateToProto(state: RolloutStateName | null): RolloutState {
  return state === null ? RolloutState.ROLLOUT_STATE_UNSPECIFIED : RolloutState[`ROLLOUT_STATE_${state}`];
}

export function stateFromProto(state: RolloutState): RolloutStateName | undefined {
  const name = RolloutState[state]?.replace(/^ROLLOUT_STATE_/, '');
  return (ROLLOUT_STATES as readonly string[]).includes(name ?? '') ? (name as RolloutStateName) : undefined;
}

export interface RolloutRow extends RolloutSpec {
  readonly id: string;
  readonly seq: bigint;
  readonly state: RolloutStateName;
  readonly currentStep: number;
  readonly canaryWeight: number;
  readonly appliedWeight: number | null;
  readonly stepStartedAt: Date | null;
  readonly inconclusiveCount: number;
  readonly version: bigint;
  readonly createdAt: Date;
  readonly updatedAt: Date;
  readonly unhealthyCount: number;
  readonly progressedAt: Date;
  /** AnalysisVerdict name of the latest analysis (null before the first). */
  readonly lastVerdict: string | null;
  /** When the latest analysis of the current step (or the gate) was made. */
  readonly analysedAt: Date | null;
  /** Whether a gate refused (or an analysis was made) an interval ago or more, or never; only from `listActionable`. */
  readonly gateDue?: boolean;
  /** Whether an analysis is due: an interval since the step started or since its latest analysis; only from `listActionable`. */
  readonly analysisDue?: boolean;
  /** Whether the current step has run its duration (by the database clock); only from `listActionable`. */
  readonly stepDue?: boolean;
  /** Milliseconds since the current step's split took effect (database clock); only from `listActionable`. */
  readonly stepElapsedMs?: number;
  /** A live rollout past its progress deadline (database clock); only from `listActionable`. */
  readonly progressOverdue?: boolean;
}

export interface Transition {
  readonly to: RolloutStateName;
  readonly step: number;
  readonly canaryWeight: number;
  readonly reason: string;
  readonly analysis?: AnalysisSnapshot;
  readonly inconclusiveCount: number;
  /** Restart the step clock (a hold waits a whole step again before the next analysis). */
  readonly restartStepClock: boolean;
  /** Unhealthy analyses in a row after this transition; default 0 (reset). */
  readonly unhealthyCount?: number;
  /** The rollout advanced (started or took a step): restarts the progress deadline. */
  readonly progressed?: boolean;
}

type Queryable = Pick<pg.Pool | pg.PoolClient, 'query'>;

const COLUMNS = `id, seq, evaluation_id, namespace, virtual_service, host, stable_subset, canary_subset, route_name,
  steps, step_duration_ms, max_error_rate, max_p99_latency_ms, min_requests, max_inconclusive, analysis_window_ms,
  auto_rollback, manual_promotion, state, current_step, canary_weight, applied_weight, step_started_at,
  inconclusive_count, version, created_at, updated_at, failure_threshold, unhealthy_count, progress_deadline_ms,
  progressed_at, last_verdict, analysis_interval_ms, analysed_at, webhooks, metric_templates`;

interface DbRow {
  id: string;
  seq: bigint;
  evaluation_id: string;
  namespace: string;
  virtual_service: string;
  host: string;
  stable_subset: string;
  canary_subset: string;
  route_name: string;
  steps: number[];
  step_duration_ms: number;
  max_error_rate: number;
  max_p99_latency_ms: number;
  min_requests: bigint;
  max_inconclusive: number;
  analysis_window_ms: number;
  auto_rollback: boolean;
  manual_promotion: boolean;
  state: RolloutStateName;
  current_step: number;
  canary_weight: number;
  applied_weight: number | null;
  step_started_at: Date | null;
  inconclusive_count: number;
  version: bigint;
  created_at: Date;
  updated_at: Date;
  failure_threshold: number;
  unhealthy_count: number;
  progress_deadline_ms: string | number;
  progressed_at: Date;
  last_verdict: string | null;
  analysis_interval_ms: number | null;
  analysed_at: Date | null;
  webhooks: WebhookSpec[];
  metric_templates: MetricSpec[];
  analysis_due?: boolean;
  gate_due?: boolean;
  step_due?: boolean;
  step_elapsed_ms?: number | string | null;
  progress_overdue?: boolean;
}

function fromDb(row: DbRow): RolloutRow {
  return {
    id: row.id,
    seq: BigInt(row.seq),
    evaluationId: row.evaluation_id,
    target: {
      namespace: row.namespace,
      virtualService: row.virtual_service,
      host: row.host,
      stableSubset: row.stable_subset,
      canarySubset: row.canary_subset,
      routeName: row.route_name,
    },
    steps: row.steps.map(Number),
    stepDurationMs: row.step_duration_ms,
    maxErrorRate: row.max_error_rate,
    maxP99LatencyMs: row.max_p99_latency_ms,
    minRequests: BigInt(row.min_requests),
    maxInconclusive: row.max_inconclusive,
    analysisWindowMs: row.analysis_window_ms,
    autoRollback: row.auto_rollback,
    manualPromotion: row.manual_promotion,
    state: row.state,
    currentStep: row.current_step,
    canaryWeight: row.canary_weight,
    appliedWeight: row.applied_weight,
    stepStartedAt: row.step_started_at,
    inconclusiveCount: row.inconclusive_count,
    version: BigInt(row.version),
    createdAt: row.created_at,
    updatedAt: row.updated_at,
    failureThreshold: row.failure_threshold,
    unhealthyCount: row.unhealthy_count,
    progressDeadlineMs: Number(row.progress_deadline_ms),
    progressedAt: row.progressed_at,
    lastVerdict: row.last_verdict,
    analysisIntervalMs: row.analysis_interval_ms ?? row.step_duration_ms,
    analysedAt: row.analysed_at,
    webhooks: row.webhooks,
    metrics: row.metric_templates,
    ...(row.gate_due === undefined ? {} : { gateDue: row.gate_due }),
    ...(row.analysis_due === undefined ? {} : { analysisDue: row.analysis_due }),
    ...(row.step_due === undefined ? {} : { stepDue: row.step_due }),
    ...(row.step_elapsed_ms === undefined || row.step_elapsed_ms === null ? {} : { stepElapsedMs: Number(row.step_elapsed_ms) }),
    ...(row.progress_overdue === undefined ? {} : { progressOverdue: row.progress_overdue }),
  };
}

export type EvaluationGate = 'approved' | 'not_approved' | 'not_found';

/** Whether evaluation `id` may ship: SUCCEEDED with an approving decision. */
export async function evaluationGate(db: Queryable, id: string): Promise<EvaluationGate> {
  const { rows } = await db.query<{ approved: boolean }>(
    `SELECT state = 'SUCCEEDED' AND decision IN ('DECISION_APPROVE_FULL_DEPLOYMENT', 'DECISION_APPROVE_CANARY') AS approved
       FROM shadow_evaluations WHERE id = $1`,
    [id],
  );
  if (rows.length === 0) return 'not_found';
  return rows[0]!.approved ? 'approved' : 'not_approved';
}

/** Thrown by insertRollout when the route already has a live rollout. */
export class RouteBusyError extends Error {
  override readonly name = 'RouteBusyError';
}

/** Inserts a PENDING rollout and its creation event (sequence 1). */
export async function insertRollout(client: pg.PoolClient, id: string, spec: RolloutSpec): Promise<RolloutRow> {
  let rows: DbRow[];
  try {
    ({ rows } = await client.query<DbRow>(
      `INSERT INTO shadow_rollouts (id, evaluation_id, namespace, virtual_service, host, stable_subset, canary_subset,
         route_name, steps, step_duration_ms, max_error_rate, max_p99_latency_ms, min_requests, max_inconclusive,
         analysis_window_ms, auto_rollback, manual_promotion, failure_threshold, progress_deadline_ms, analysis_interval_ms, webhooks, metric_templates)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)
       RETURNING ${COLUMNS}`,
      [
        id,
        spec.evaluationId,
        spec.target.namespace,
        spec.target.virtualService,
        spec.target.host,
        spec.target.stableSubset,
        spec.target.canarySubset,
        spec.target.routeName,
        spec.steps,
        spec.stepDurationMs,
        spec.maxErrorRate,
        spec.maxP99LatencyMs,
        spec.minRequests.toString(),
        spec.maxInconclusive,
        spec.analysisWindowMs,
        spec.autoRollback,
        spec.manualPromotion,
        spec.failureThreshold,
        spec.progressDeadlineMs,
        spec.analysisIntervalMs,
        JSON.stringify(spec.webhooks),
        JSON.stringify(spec.metrics),
      ],
    ));
  } catch (error) {
    if ((error as { constraint?: string }).constraint === 'shadow_rollouts_one_active_per_route') {
      throw new RouteBusyError('the route already has an active rollout', { cause: error });
    }
    throw error;
  }
  await client.query(
    `INSERT INTO shadow_rollout_events (rollout_id, sequence, from_state, to_state, step, canary_weight, reason)
     VALUES ($1, 1, NULL, 'PENDING', 0, 0, 'CREATED')`,
    [id],
  );
  return fromDb(rows[0]!);
}

export async function getRollout(db: Queryable, id: string, options: { forUpdate?: boolean } = {}): Promise<RolloutRow | undefined> {
  const { rows } = await db.query<DbRow>(`SELECT ${COLUMNS} FROM shadow_rollouts WHERE id = $1${options.forUpdate ? ' FOR UPDATE' : ''}`, [id]);
  return rows[0] ? fromDb(rows[0]) : undefined;
}

/** Newest first, keyset-paginated on `seq`. */
export async function listRollouts(
  db: Queryable,
  options: { state?: RolloutStateName; beforeSeq?: bigint; limit: number },
): Promise<RolloutRow[]> {
  const { rows } = await db.query<DbRow>(
    `SELECT ${COLUMNS} FROM shadow_rollouts
      WHERE ($1::shadow_rollout_state IS NULL OR state = $1) AND ($2::bigint IS NULL OR seq < $2)
      ORDER BY seq DESC LIMIT $3`,
    [options.state ?? null, options.beforeSeq?.toString() ?? null, options.limit],
  );
  return rows.map(fromDb);
}

/**
 * The controller's work: live rollouts and finished ones whose weights the
 * router has not confirmed, oldest first (an old rollout's rollback is
 * applied before a newer rollout of the same route starts).
 */
export async function listActionable(db: Queryable, limit: number): Promise<RolloutRow[]> {
  const { rows } = await db.query<DbRow>(
    `SELECT ${COLUMNS},
            step_started_at IS NOT NULL AND step_started_at + step_duration_ms * interval '1 millisecond' <= now() AS step_due,
            step_started_at IS NOT NULL
              AND greatest(step_started_at, analysed_at) + coalesce(analysis_interval_ms, step_duration_ms) * interval '1 millisecond' <= now() AS analysis_due,
            analysed_at IS NULL OR analysed_at + coalesce(analysis_interval_ms, step_duration_ms) * interval '1 millisecond' <= now() AS gate_due,
            floor(extract(epoch FROM now() - step_started_at) * 1000) AS step_elapsed_ms,
            state IN ('PENDING', 'PROGRESSING', 'AWAITING_PROMOTION')
              AND progressed_at + progress_deadline_ms * interval '1 millisecond' <= now() AS progress_overdue
       FROM shadow_rollouts
      WHERE state IN ('PENDING', 'PROGRESSING', 'AWAITING_PROMOTION') OR applied_weight IS DISTINCT FROM canary_weight
      ORDER BY seq LIMIT $1`,
    [limit],
  );
  return rows.map(fromDb);
}

/**
 * Applies `t` if the rollout is still at `expected.version`: one transaction
 * for the row and its event. Returns the new row, or undefined when someone
 * else changed the rollout first (the caller re-reads; nothing was written).
 */
export async function transition(pool: pg.Pool, expected: Pick<RolloutRow, 'id' | 'version' | 'state'>, t: Transition): Promise<RolloutRow | undefined> {
  return withTransaction(pool, (client) => transitionIn(client, expected, t));
}

/** `transition` inside the caller's transaction (e.g. after SELECT ... FOR UPDATE). */
export async function transitionIn(client: pg.PoolClient, expected: Pick<RolloutRow, 'id' | 'version' | 'state'>, t: Transition): Promise<RolloutRow | undefined> {
  {
    const { rows } = await client.query<DbRow>(
      `UPDATE shadow_rollouts
          SET state = $3, current_step = $4, canary_weight = $5, inconclusive_count = $6,
              step_started_at = CASE WHEN $7 THEN now() ELSE step_started_at END,
              unhealthy_count = $8,
              progressed_at = CASE WHEN $9 THEN now() ELSE progressed_at END,
              last_verdict = coalesce($10, last_verdict),
              analysed_at = CASE WHEN $10::text IS NOT NULL THEN now() ELSE analysed_at END,
              version = version + 1, updated_at = now()
        WHERE id = $1 AND version = $2
        RETURNING ${COLUMNS}`,
      [
        expected.id,
        expected.version.toString(),
        t.to,
        t.step,
        t.canaryWeight,
        t.inconclusiveCount,
        t.restartStepClock,
        t.unhealthyCount ?? 0,
        t.progressed === true,
        t.analysis ? AnalysisVerdict[t.analysis.verdict] : null,
      ],
    );
    if (rows.length === 0) return undefined;
    const row = fromDb(rows[0]!);
    await client.query(
      `INSERT INTO shadow_rollout_events (rollout_id, sequence, from_state, to_state, step, canary_weight, reason, analysis)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
      [
        row.id,
        row.version.toString(),
        expected.state,
        t.to,
        t.step,
        t.canaryWeight,
        t.reason,
        t.analysis ? JSON.stringify(AnalysisSnapshot.toJSON(t.analysis)) : null,
      ],
    );
    return row;
  }
}

/**
 * Records that the router now shows `weight`. Starts the step clock when a
 * progressing step's split took effect (so a slow or retried router write never
 * shortens a step). Not a transition: no version bump, but guarded by the
 * version so a write for superseded state is not recorded as current.
 */
export async function markApplied(db: Queryable, row: Pick<RolloutRow, 'id' | 'version'>, weight: number): Promise<boolean> {
  const result = await db.query(
    `UPDATE shadow_rollouts
        SET applied_weight = $3,
            step_started_at = CASE WHEN state = 'PROGRESSING' THEN now() ELSE step_started_at END
      WHERE id = $1 AND version = $2 AND canary_weight = $3`,
    [row.id, row.version.toString(), weight],
  );
  return result.rowCount === 1;
}

/**
 * Records a healthy analysis that changes nothing else (within a step, or at the manual gate): its
 * verdict and time (the next analysis is an interval later), and the unhealthy / inconclusive
 * counts reset (they count analyses in a row). No event, no version bump (a rollout waiting days
 * at the gate would otherwise grow its history by one event per interval); guarded by the version
 * like markApplied.
 */
export async function recordAnalysis(db: Queryable, row: Pick<RolloutRow, 'id' | 'version'>, verdict: AnalysisVerdict): Promise<boolean> {
  const result = await db.query(
    `UPDATE shadow_rollouts SET last_verdict = $3, analysed_at = now(), unhealthy_count = 0, inconclusive_count = 0 WHERE id = $1 AND version = $2`,
    [row.id, row.version.toString(), AnalysisVerdict[verdict]],
  );
  return result.rowCount === 1;
}

/**
 * Records that a gate webhook refused (pre-rollout in PENDING, confirm-* at the end of a step): the
 * gate is asked again an interval later. With the analysis that preceded it (healthy), its verdict
 * too. No event (a gate may refuse for hours); guarded by the version.
 */
export async function recordGateRefusal(db: Queryable, row: Pick<RolloutRow, 'id' | 'version'>, verdict?: AnalysisVerdict): Promise<boolean> {
  const result = await db.query(
    `UPDATE shadow_rollouts SET analysed_at = now(), last_verdict = coalesce($3, last_verdict),
            unhealthy_count = CASE WHEN $3::text IS NULL THEN unhealthy_count ELSE 0 END,
            inconclusive_count = CASE WHEN $3::text IS NULL THEN inconclusive_count ELSE 0 END
      WHERE id = $1 AND version = $2`,
    [row.id, row.version.toString(), verdict === undefined ? null : AnalysisVerdict[verdict]],
  );
  return result.rowCount === 1;
}

/**
 * Claims the finished rollout's notifications (rollback / post-rollout webhooks): true once per
 * rollout, for the caller that then sends them (at most once, even across controllers).
 */
export async function claimFinishNotifications(db: Queryable, id: string): Promise<boolean> {
  const result = await db.query(
    `UPDATE shadow_rollouts SET webhooks_notified = true
      WHERE id = $1 AND NOT webhooks_notified AND state NOT IN ('PENDING', 'PROGRESSING', 'AWAITING_PROMOTION')`,
    [id],
  );
  return result.rowCount === 1;
}

/** The snapshot of the rollout's latest analysed event, if any (what a notification reports). */
export async function latestAnalysis(db: Queryable, id: string): Promise<AnalysisSnapshot | undefined> {
  const { rows } = await db.query<{ analysis: unknown }>(
    `SELECT analysis FROM shadow_rollout_events WHERE rollout_id = $1 AND analysis IS NOT NULL ORDER BY sequence DESC LIMIT 1`,
    [id],
  );
  return rows[0] ? AnalysisSnapshot.fromJSON(rows[0].analysis) : undefined;
}

/** Restarts the current step's clock (its split was re-applied after drift): guarded by the version. */
export async function restartStepClock(db: Queryable, row: Pick<RolloutRow, 'id' | 'version'>): Promise<boolean> {
  const result = await db.query(`UPDATE shadow_rollouts SET step_started_at = now() WHERE id = $1 AND version = $2`, [row.id, row.version.toString()]);
  return result.rowCount === 1;
}

interface EventRow {
  sequence: bigint;
  occurred_at: Date;
  from_state: RolloutStateName | null;
  to_state: RolloutStateName;
  step: number;
  canary_weight: number;
  reason: string;
  analysis: unknown;
}

/** Events after `afterSequence`, oldest first (at most `limit`). */
export async function listEvents(db: Queryable, rolloutId: string, afterSequence = 0n, limit = 1000): Promise<RolloutEvent[]> {
  const { rows } = await db.query<EventRow>(
    `SELECT sequence, occurred_at, from_state, to_state, step, canary_weight, reason, analysis
       FROM shadow_rollout_events WHERE rollout_id = $1 AND sequence > $2 ORDER BY sequence LIMIT $3`,
    [rolloutId, afterSequence.toString(), limit],
  );
  return rows.map((row) => ({
    sequence: BigInt(row.sequence),
    time: row.occurred_at,
    fromState: stateToProto(row.from_state),
    toState: stateToProto(row.to_state),
    step: row.step,
    canaryWeight: row.canary_weight,
    reason: row.reason,
    analysis: row.analysis === null ? undefined : AnalysisSnapshot.fromJSON(row.analysis),
  }));
}

function durationOf(ms: number) {
  return { seconds: BigInt(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1_000_000 };
}

export function toProto(row: RolloutRow, events: RolloutEvent[] = []): Rollout {
  return {
    id: row.id,
    evaluationId: row.evaluationId,
    target: { ...row.target },
    steps: [...row.steps],
    stepDuration: durationOf(row.stepDurationMs),
    analysis: {
      maxErrorRate: row.maxErrorRate,
      maxP99Latency: durationOf(Math.round(row.maxP99LatencyMs)),
      minRequests: row.minRequests,
      maxInconclusive: row.maxInconclusive,
      window: durationOf(row.analysisWindowMs),
      failureThreshold: row.failureThreshold,
      interval: durationOf(row.analysisIntervalMs),
      metrics: row.metrics.map((metric) => ({ ...metric })),
    },
    autoRollback: row.autoRollback,
    manualPromotion: row.manualPromotion,
    state: stateToProto(row.state),
    currentStep: row.currentStep,
    canaryWeight: row.canaryWeight,
    events,
    createdAt: row.createdAt,
    updatedAt: row.updatedAt,
    progressDeadline: durationOf(row.progressDeadlineMs),
    webhooks: row.webhooks.map((hook) => ({
      name: hook.name,
      type: WEBHOOK_TYPES.indexOf(hook.type) + 1,
      url: hook.url,
      timeout: durationOf(hook.timeoutMs),
      steps: [...hook.steps],
    })),
  };
}

export type IdempotencyClaim =
  | { readonly claimed: true }
  | { readonly claimed: false; readonly sameRequest: boolean; readonly method: string; readonly requestHash: string; readonly response: Buffer | null };

/**
 * Claims `key` for this request inside the caller's transaction. A concurrent
 * duplicate blocks on the key's index entry until the first commits (then
 * replays its response) or rolls back (then proceeds as the first).
 */
export async function claimIdempotencyKey(client: pg.PoolClient, key: string, method: string, requestHash: string): Promise<IdempotencyClaim> {
  const inserted = await client.query(
    `INSERT INTO shadow_rollout_requests (idempotency_key, method, request_hash) VALUES ($1, $2, $3)
     ON CONFLICT (idempotency_key) DO NOTHING`,
    [key, method, requestHash],
  );
  if (inserted.rowCount === 1) return { claimed: true };
  const { rows } = await client.query<{ method: string; request_hash: string; response: Buffer | null }>(
    'SELECT method, request_hash, response FROM shadow_rollout_requests WHERE idempotency_key = $1',
    [key],
  );
  const existing = rows[0]!;
  return {
    claimed: false,
    sameRequest: existing.method === method && existing.request_hash === requestHash,
    method: existing.method,
    requestHash: existing.request_hash,
    response: existing.response,
  };
}

/**
 * Stores the response replayed for `key`, and the rollout it is about (pruning keeps keys of live
 * rollouts). `requestHash` replaces the one claimed: a client stream (IngestSamples) knows its
 * request only once it has read all of it.
 */
export async function saveIdempotentResponse(
  client: pg.PoolClient,
  key: string,
  response: Uint8Array,
  rolloutId: string | undefined,
  requestHash?: string,
): Promise<void> {
  await client.query(
    'UPDATE shadow_rollout_requests SET response = $2, rollout_id = $3, request_hash = coalesce($4, request_hash) WHERE idempotency_key = $1',
    [key, Buffer.from(response), rolloutId ?? null, requestHash ?? null],
  );
}

/**
 * Deletes idempotency keys older than `retentionHours`, at most `batchRows` ×
 * `batchesMax` per call (bounded work per run). Never the key of a
 * rollout the controller still needs: a live one, or a finished one whose
 * weight the router has not confirmed (the same set `listActionable` reads);
 * a retry of such a call must replay, not run again. Returns the rows deleted.
 */
export function pruneIdempotencyKeys(pool: pg.Pool, retentionHours: number, batchRows: number, batchesMax: number): Promise<number> {
  return deleteInBatches(
    pool,
    `DELETE FROM shadow_rollout_requests WHERE ctid IN (
       SELECT q.ctid FROM shadow_rollout_requests q
        WHERE q.created_at < now() - make_interval(hours => $2)
          AND NOT EXISTS (
            SELECT 1 FROM shadow_rollouts r
             WHERE r.id = q.rollout_id
               AND (r.state IN ('PENDING', 'PROGRESSING', 'AWAITING_PROMOTION') OR r.applied_weight IS DISTINCT FROM r.canary_weight))
        ORDER BY q.created_at
        LIMIT $1
        FOR UPDATE OF q SKIP LOCKED)`,
    [retentionHours],
    batchRows,
    batchesMax,
  );
}
