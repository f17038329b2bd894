/**
 * The reasons camouflage throws, as a typed list, and the factories that build them: every error
 * is the platform's one error class, ServiceError (platform/service-error.ts), and a reason is
 * only ever written through one of these factories, so a mistyped reason does not compile.
 *
 * | code                | reason                      | thrown by                                   |
 * |---------------------|-----------------------------|---------------------------------------------|
 * | NOT_FOUND           | DECISION_NOT_FOUND          | RecordOutcome: unknown or expired decision  |
 * | ALREADY_EXISTS      | OUTCOME_ALREADY_RECORDED    | RecordOutcome: exactly-once learning        |
 * | ALREADY_EXISTS      | DECOY_ALREADY_EXISTS        | RegisterDecoy: id built in or taken         |
 * | RESOURCE_EXHAUSTED  | CATALOG_FULL                | RegisterDecoy: CUSTOM_DECOYS_MAX reached    |
 * | UNAVAILABLE         | REDIS_UNAVAILABLE           | Redis failed or answered something unexpected |
 *
 * The platform-wide reasons are built by ServiceError itself, with one wording for the mesh:
 * INVALID_ARGUMENT (`ServiceError.invalidArgument(field, description)`, `field` the proto field
 * path of the request), IDEMPOTENCY_KEY_REUSED (`ServiceError.idempotencyKeyReused`), and
 * INTERNAL (`ServiceError.from`: a broken invariant, platform/invariant.ts, is a bug).
 *
 * The proto lists the reasons clients may branch on (proto/shieldx/camouflage/v1/camouflage.proto,
 * "Error reasons"); errors.test.ts checks that list against this one.
 */
import { Code, ServiceError, type ServiceErrorOptions } from '../../platform/service-error';

/** Camouflage's own reasons (ErrorInfo domain camouflage.shieldx.io). */
export const CAMOUFLAGE_REASONS = [
  'DECISION_NOT_FOUND',
  'OUTCOME_ALREADY_RECORDED',
  'DECOY_ALREADY_EXISTS',
  'CATALOG_FULL',
  'REDIS_UNAVAILABLE',
] as const;
export type CamouflageReason = (typeof CAMOUFLAGE_REASONS)[number];

/** The platform-wide reasons camouflage answers with, built by ServiceError's own factories. */
export const PLATFORM_REASONS = ['INVALID_ARGUMENT', 'IDEMPOTENCY_KEY_REUSED'] as const;

function camouflageError(code: Code, reason: CamouflageReason, message: string, options: ServiceErrorOptions = {}): ServiceError {
  return new ServiceError(code, reason, message, options);
}

/** RecordOutcome for a decision that is unknown or has expired. */
export function decisionNotFound(decisionId: string, message: string): ServiceError {
  return camouflageError(Code.NOT_FOUND, 'DECISION_NOT_FOUND', message, { metadata: { decisionId } });
}

/** RecordOutcome for a decision that already has an outcome (another idempotency key, or none). */
export function outcomeAlreadyRecorded(decisionId: string): ServiceError {
  return camouflageError(Code.ALREADY_EXISTS, 'OUTCOME_ALREADY_RECORDED', `decision ${decisionId} already has an outcome`, {
    metadata: { decisionId },
  });
}

/** RegisterDecoy with an id that is built in or registered already; names the request's `decoy.id`. */
export function decoyAlreadyExists(decoyId: string, message: string): ServiceError {
  return camouflageError(Code.ALREADY_EXISTS, 'DECOY_ALREADY_EXISTS', message, {
    metadata: { decoyId, field: 'decoy.id' },
    fieldViolations: [{ field: 'decoy.id', description: message }],
  });
}

/** RegisterDecoy when the catalog already holds `max` custom decoys. */
export function catalogFull(max: number): ServiceError {
  return camouflageError(Code.RESOURCE_EXHAUSTED, 'CATALOG_FULL', `the catalog holds at most ${max} custom decoys`);
}

/** Redis failed or answered something this code does not understand. */
export function redisUnavailable(message: string, cause?: unknown): ServiceError {
  return camouflageError(Code.UNAVAILABLE, 'REDIS_UNAVAILABLE', message, cause === undefined ? {} : { cause });
}

/**
 * ServiceError.from plus the camouflage rule for Redis: an ioredis failure is UNAVAILABLE /
 * REDIS_UNAVAILABLE (a retry elsewhere may work), not INTERNAL.
 *
 * A Redis error is not kept as `cause`: ioredis attaches the whole command to its errors,
 * arguments included, and those contain minted honeytokens and session keys that must not
 * reach a log. Only the error's name and the first line of its message survive.
 */
export function serviceErrorFrom(thrown: unknown): ServiceError {
  if (thrown instanceof ServiceError) return thrown;
  if (thrown instanceof Error && isRedisFailure(thrown)) {
    return redisUnavailable(`redis: ${thrown.name}: ${(thrown.message.split('\n')[0] ?? '').slice(0, 300)}`);
  }
  return ServiceError.from(thrown);
}

function isRedisFailure(error: Error): boolean {
  return (
    error.name === 'ReplyError' ||
    error.name === 'MaxRetriesPerRequestError' ||
    'command' in error ||
    /ECONNREFUSED|ECONNRESET|Connection is closed|NOSCRIPT|ETIMEDOUT/.test(error.message) ||
    // Redis Cluster and Sentinel mid-failover: ioredis gives up with a plain Error naming the last reply.
    /Too many Cluster redirections|CLUSTERDOWN|TRYAGAIN|LOADING|READONLY|MASTERDOWN|Failed to refresh slots cache|None of (the )?startup nodes|All sentinels are unreachable/.test(error.message)
  );
}
