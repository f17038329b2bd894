/**
 * One error type for every service. Domain code throws a `ServiceError` with a
 * canonical status code and an UPPER_SNAKE `reason`; the gRPC layer encodes it as
 * a `google.rpc.Status` carrying a `google.rpc.ErrorInfo` (and, for bad input, a
 * `google.rpc.BadRequest`) in the `grpc-status-details-bin` trailer
 * (status-details.ts), so clients branch on `reason`, never on message text.
 *
 * Pure: domain code throws these and must not import grpc-js or gen/, so the
 * codes are mirrored here as numbers (they are fixed by the gRPC spec), and the
 * encoding lives in status-details.ts.
 */

/** Canonical gRPC status codes (https://grpc.github.io/grpc/core/md_doc_statuscodes.html). */
export const Code = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;
export type Code = (typeof Code)[keyof typeof Code];


const IDEMPOTENCY_KEY_REUSED_DESCRIPTION =
  'was already used for a different request; send each new request with a new key, and reuse a key only to retry the identical request';
const IDEMPOTENCY_KEY_REUSED_MESSAGE = `idempotency_key ${IDEMPOTENCY_KEY_REUSED_DESCRIPTION}`;
const OPERATION_IN_PROGRESS_MESSAGE = 'an earlier call with this idempotency_key has not finished; retry';

/**
 * The reasons platform itself answers with, whatever the service (validation, idempotency,
 * deadlines, shutdown, authentication). Each service's errors.ts lists its own beside these, and
 * its proto documents both; a reason is never written as a free string.
 */
export const PLATFORM_REASONS = [
  'INVALID_ARGUMENT',
  'IDEMPOTENCY_KEY_REUSED',
  'OPERATION_IN_PROGRESS',
  'CANCELLED',
  'DEADLINE_EXCEEDED',
  'SERVER_SHUTTING_DOWN',
  'NOT_IMPLEMENTED',
  'MISSING_CREDENTIALS',
  'INVALID_CREDENTIALS',
  'MISSING_SCOPE',
  'INTERNAL',
] as const;
export type PlatformReason = (typeof PLATFORM_REASONS)[number];

export interface FieldViolation {
  readonly field: string;
  readonly description: string;
}

export interface ServiceErrorOptions {
  /** Extra machine-readable context, e.g. `{ available: "12" }`. Never secrets. */
  readonly metadata?: Record<string, string>;
  readonly fieldViolations?: readonly FieldViolation[];
  readonly cause?: unknown;
}

export class ServiceError extends Error {
  override readonly name = 'ServiceError';
  readonly metadata: Readonly<Record<string, string>>;
  readonly fieldViolations: readonly FieldViolation[];

  constructor(
    readonly code: Code,
    readonly reason: string,
    message: string,
    options: ServiceErrorOptions = {},
    /** e.g. "credits.shieldx.io"; filled in by the server from its service name when empty. */
    readonly domain = '',
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.metadata = options.metadata ?? {};
    this.fieldViolations = options.fieldViolations ?? [];
  }

  /** An error with one of platform's own reasons (a typed reason: a misspelt one does not compile). */
  static platform(code: Code, reason: PlatformReason, message: string, options: ServiceErrorOptions = {}): ServiceError {
    return new ServiceError(code, reason, message, options);
  }

  /** A bad request field: INVALID_ARGUMENT with reason INVALID_ARGUMENT and the field named. */
  static invalidArgument(field: string, description: string): ServiceError {
    return ServiceError.platform(Code.INVALID_ARGUMENT, 'INVALID_ARGUMENT', `${field}: ${description}`, {
      fieldViolations: [{ field, description }],
      metadata: { field },
    });
  }

  /**
   * An idempotency key came back with a different request than the one it was first used for
   * (same key + different request): FAILED_PRECONDITION with reason IDEMPOTENCY_KEY_REUSED. The
   * key itself is fine, its earlier use conflicts, so this is not INVALID_ARGUMENT; retrying the
   * same call cannot succeed. One wording for every service, saying what to do instead. The
   * ErrorInfo metadata always carries `idempotency_key` (the key as sent) and `field` (the field
   * that holds it), and the BadRequest names that field, so a client can find the key without
   * parsing text.
   *
   * `metadata` adds context (e.g. `method`); it cannot replace `field` or `idempotency_key`.
   */
  static idempotencyKeyReused(key: string, options: { readonly metadata?: Record<string, string> } = {}): ServiceError {
    const field = 'idempotency_key';
    return ServiceError.platform(Code.FAILED_PRECONDITION, 'IDEMPOTENCY_KEY_REUSED', IDEMPOTENCY_KEY_REUSED_MESSAGE, {
      metadata: { ...options.metadata, field, idempotency_key: key },
      fieldViolations: [{ field, description: IDEMPOTENCY_KEY_REUSED_DESCRIPTION }],
    });
  }

  /**
   * A call came with an idempotency key whose first call is still running (its claim is not yet
   * committed): ABORTED with reason OPERATION_IN_PROGRESS. Unlike IDEMPOTENCY_KEY_REUSED, retrying
   * the same call later is right: it then replays the first call's result. One wording for every
   * service.
   */
  static operationInProgress(): ServiceError {
    return ServiceError.platform(Code.ABORTED, 'OPERATION_IN_PROGRESS', OPERATION_IN_PROGRESS_MESSAGE);
  }

  /**
   * Normalises anything thrown into a ServiceError. Unknown errors become
   * INTERNAL with a generic message: their text may hold data not meant for
   * callers (SQL, keys), so it stays in the server log only.
   */
  static from(error: unknown): ServiceError {
    if (error instanceof ServiceError) return error;
    if (isGrpcLike(error) && error.code === Code.DEADLINE_EXCEEDED) {
      return ServiceError.platform(Code.DEADLINE_EXCEEDED, 'DEADLINE_EXCEEDED', 'deadline exceeded', { cause: error });
    }
    return ServiceError.platform(Code.INTERNAL, 'INTERNAL', 'internal error', { cause: error });
  }
}

function isGrpcLike(error: unknown): error is { code: number } {
  return typeof error === 'object' && error !== null && typeof (error as { code?: unknown }).code === 'number';
}
