/**
 * What the shadow service answers when it refuses: the platform's one error class, ServiceError
 * (platform/service-error.ts), built here with the code and the google.rpc.ErrorInfo reason
 * clients branch on. The reasons are a typed list, so a mistyped reason does not compile, and
 * errors.test.ts checks the list against the reasons the proto documents.
 *
 * Field paths are in *proto* field names (`rule.any.rules[1].ip_blocklist.cidrs[0]`), because
 * that is what the caller wrote. Messages are stable enough to show a human; clients branch on
 * `reason`, never on the text. A broken invariant (platform/invariant.ts) is a bug, not the
 * caller's fault: INTERNAL, its text in the log only.
 *
 * Pure: no grpc-js, no generated code (domain/ throws these).
 */
import { Code, ServiceError } from '../../platform/service-error';

/** The reasons only shadow answers, each built by one factory below. */
export const SHADOW_REASONS = [
  'INVALID_RULE',
  'EVALUATION_NOT_FOUND',
  'EVALUATION_NOT_APPROVED',
  'ROLLOUT_NOT_FOUND',
  'ROLLOUT_NOT_AWAITING_PROMOTION',
  'ROLLOUT_FINISHED',
  'ROLLOUT_ALREADY_ACTIVE',
  'ROLLOUT_CANARY_NOT_HEALTHY',
  'INGEST_LIMIT_EXCEEDED',
  'NO_SAMPLES',
] as const;
export type ShadowReason = (typeof SHADOW_REASONS)[number];

/**
 * The mesh-wide reasons shadow also answers (its proto lists them too). They are built by
 * ServiceError's own factories, one wording for every service, not here:
 * INVALID_ARGUMENT (ServiceError.invalidArgument, idempotencyKey(), decodePageToken()),
 * IDEMPOTENCY_KEY_REUSED (ServiceError.idempotencyKeyReused), OPERATION_IN_PROGRESS
 * (ServiceError.operationInProgress).
 */
export const PLATFORM_REASONS = ['INVALID_ARGUMENT', 'IDEMPOTENCY_KEY_REUSED', 'OPERATION_IN_PROGRESS'] as const;

function shadowError(code: Code, reason: ShadowReason, message: string, metadata?: Record<string, string>): ServiceError {
  return new ServiceError(code, reason, message, metadata === undefined ? {} : { metadata });
}

/**
 * A rule that cannot be compiled (bad regex, bad CIDR, threshold ≤ 0, too large, too deep):
 * INVALID_ARGUMENT like ServiceError.invalidArgument (same message, BadRequest and `field`
 * metadata), with its own reason INVALID_RULE.
 */
export function invalidRule(field: string, description: string): ServiceError {
  return new ServiceError(Code.INVALID_ARGUMENT, 'INVALID_RULE', `${field}: ${description}`, {
    fieldViolations: [{ field, description }],
    metadata: { field },
  });
}

export function evaluationNotFound(id: string): ServiceError {
  return shadowError(Code.NOT_FOUND, 'EVALUATION_NOT_FOUND', `evaluation ${id} not found`, { evaluation_id: id });
}

export function evaluationNotApproved(id: string): ServiceError {
  return shadowError(Code.FAILED_PRECONDITION, 'EVALUATION_NOT_APPROVED', `evaluation ${id} has not succeeded with an approving decision`, {
    evaluation_id: id,
  });
}

export function rolloutNotFound(id: string): ServiceError {
  return shadowError(Code.NOT_FOUND, 'ROLLOUT_NOT_FOUND', `rollout ${id} not found`, { rollout_id: id });
}

export function rolloutFinished(id: string, state: string): ServiceError {
  return shadowError(Code.FAILED_PRECONDITION, 'ROLLOUT_FINISHED', `rollout ${id} has finished (${state})`, { rollout_id: id, state });
}

export function rolloutNotAwaitingPromotion(id: string, state: string): ServiceError {
  return shadowError(Code.FAILED_PRECONDITION, 'ROLLOUT_NOT_AWAITING_PROMOTION', `rollout ${id} is ${state}, not awaiting promotion`, {
    rollout_id: id,
    state,
  });
}

/** PromoteRollout of a rollout whose latest analysis at the gate was not healthy. */
export function rolloutCanaryNotHealthy(id: string, verdict: string): ServiceError {
  return shadowError(Code.FAILED_PRECONDITION, 'ROLLOUT_CANARY_NOT_HEALTHY', `rollout ${id}: the canary's latest analysis is ${verdict}, not healthy`, {
    rollout_id: id,
    verdict,
  });
}

export function rolloutAlreadyActive(target: { readonly namespace: string; readonly virtualService: string; readonly routeName: string }): ServiceError {
  return shadowError(
    Code.FAILED_PRECONDITION,
    'ROLLOUT_ALREADY_ACTIVE',
    `route ${target.routeName} of VirtualService ${target.namespace}/${target.virtualService} already has an active rollout`,
    { namespace: target.namespace, virtual_service: target.virtualService, route_name: target.routeName },
  );
}

/**
 * The one RESOURCE_EXHAUSTED INGEST_LIMIT_EXCEEDED refusal, for every IngestSamples limit
 * (samples, duration, concurrent streams), so clients branching on `reason` always find the same
 * metadata: which `limit`, and its `max`.
 */
export function ingestLimitExceeded(limit: 'samples' | 'duration' | 'streams', message: string, max: number): ServiceError {
  return shadowError(Code.RESOURCE_EXHAUSTED, 'INGEST_LIMIT_EXCEEDED', message, { limit, max: String(max) });
}

/** The job's selection (time window, limit) holds no sample of a dataset that has some: the caller's choice, not a fault. */
export function noSamplesInSelection(dataset: string): ServiceError {
  return shadowError(Code.FAILED_PRECONDITION, 'NO_SAMPLES', `no samples in dataset "${dataset}" for the selection`, { dataset });
}

export function noSamples(dataset: string): ServiceError {
  return shadowError(Code.FAILED_PRECONDITION, 'NO_SAMPLES', `dataset "${dataset}" has no samples`, { dataset });
}
