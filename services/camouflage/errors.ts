/**
 * What the camouflage domain throws: the platform's one error class, ServiceError
 * (platform/service-error.ts), built here with the code and the ErrorInfo reason clients see.
 * No second error type and no mapping table: the reason thrown is the reason on the wire.
 *
 * Reasons beyond INVALID_ARGUMENT, each thrown where it arises:
 *   NOT_FOUND           DECISION_NOT_FOUND, DECOY_NOT_FOUND
 *   ALREADY_EXISTS      OUTCOME_ALREADY_RECORDED (exactly-once learning), DECOY_ALREADY_EXISTS
 *   FAILED_PRECONDITION IDEMPOTENCY_KEY_REUSED (ServiceError.idempotencyKeyReused, shared with credits and shadow)
 *   RESOURCE_EXHAUSTED  CATALOG_FULL
 *   UNAVAILABLE         REDIS_UNAVAILABLE (Redis failed or answered something unexpected)
 * A broken invariant is a bug, never the caller's fault: it is thrown as a plain Error, which
 * ServiceError.from turns into INTERNAL with a generic message (the text stays in the log).
 *
 * Field paths name the engine's inputs (`clientIp`, `outcome.dwellSeconds`): the domain does not
 * know which RPC called it, so the gRPC handlers (service.ts) rename them to the request's proto
 * field paths. This module does not import grpc-js.
 */
import { Code, ServiceError } from '../../platform/service-error';

/**
 * A named input is missing, malformed or out of range. The message is the whole description
 * (it names the field itself), unlike ServiceError.invalidArgument which prefixes the field.
 */
export function invalidArgument(field: string, message: string): ServiceError {
  return new ServiceError(Code.INVALID_ARGUMENT, 'INVALID_ARGUMENT', message, {
    metadata: { field },
    fieldViolations: [{ field, description: message }],
  });
}

/** Redis failed or answered something this code does not understand. */
export function redisUnavailable(message: string, cause?: unknown): ServiceError {
  return new ServiceError(Code.UNAVAILABLE, 'REDIS_UNAVAILABLE', message, cause === undefined ? {} : { cause });
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
    /ECONNREFUSED|ECONNRESET|Connection is closed|NOSCRIPT|ETIMEDOUT/.test(error.message)
  );
}

/**
 * Asserts an invariant (TIGER_STYLE: checked in code, not only in tests). A failure is a bug in
 * this service, so it throws a plain Error: INTERNAL to the caller, the message to the log.
 */
export function invariant(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(`invariant violated: ${message}`);
}
