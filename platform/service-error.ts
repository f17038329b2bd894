/**
 * One error type for every service. Domain code throws a `ServiceError` with a
 * canonical status code and an UPPER_SNAKE `reason`; the gRPC layer encodes it as
 * a `google.rpc.Status` carrying a `google.rpc.ErrorInfo` (and, for bad input, a
 * `google.rpc.BadRequest`) in the `grpc-status-details-bin` trailer, so clients
 * branch on `reason`, never on message text.
 *
 * Domain code must not import grpc-js, so the codes are mirrored here as numbers
 * (they are fixed by the gRPC spec).
 */
import { Any } from '../gen/google/protobuf/any';
import { BadRequest, ErrorInfo } from '../gen/google/rpc/error_details';
import { Status } from '../gen/google/rpc/status';

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

export const STATUS_DETAILS_KEY = 'grpc-status-details-bin';
const ERROR_INFO_TYPE_URL = 'type.googleapis.com/google.rpc.ErrorInfo';
const BAD_REQUEST_TYPE_URL = 'type.googleapis.com/google.rpc.BadRequest';

const IDEMPOTENCY_KEY_REUSED_DESCRIPTION =
  'was already used for a different request; send each new request with a new key, and reuse a key only to retry the identical request';
const IDEMPOTENCY_KEY_REUSED_MESSAGE = `idempotency_key ${IDEMPOTENCY_KEY_REUSED_DESCRIPTION}`;
const OPERATION_IN_PROGRESS_MESSAGE = 'an earlier call with this idempotency_key has not finished; retry';

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

  /** A bad request field: INVALID_ARGUMENT with reason INVALID_ARGUMENT and the field named. */
  static invalidArgument(field: string, description: string): ServiceError {
    return new ServiceError(Code.INVALID_ARGUMENT, 'INVALID_ARGUMENT', `${field}: ${description}`, {
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
   * `field` is the key's field path as the thrower names it: the proto field `idempotency_key`
   * unless a domain names its inputs otherwise and its handlers rename them (camouflage).
   * `metadata` adds context (e.g. `method`); it cannot replace `field` or `idempotency_key`.
   */
  static idempotencyKeyReused(
    key: string,
    options: { readonly field?: string; readonly metadata?: Record<string, string> } = {},
  ): ServiceError {
    const field = options.field ?? 'idempotency_key';
    return new ServiceError(Code.FAILED_PRECONDITION, 'IDEMPOTENCY_KEY_REUSED', IDEMPOTENCY_KEY_REUSED_MESSAGE, {
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
    return new ServiceError(Code.ABORTED, 'OPERATION_IN_PROGRESS', OPERATION_IN_PROGRESS_MESSAGE);
  }

  /**
   * Normalises anything thrown into a ServiceError. Unknown errors become
   * INTERNAL with a generic message: their text may hold data not meant for
   * callers (SQL, keys), so it stays in the server log only.
   */
  static from(error: unknown): ServiceError {
    if (error instanceof ServiceError) return error;
    if (isGrpcLike(error) && error.code === Code.DEADLINE_EXCEEDED) {
      return new ServiceError(Code.DEADLINE_EXCEEDED, 'DEADLINE_EXCEEDED', 'deadline exceeded', { cause: error });
    }
    return new ServiceError(Code.INTERNAL, 'INTERNAL', 'internal error', { cause: error });
  }

  /** The google.rpc.Status bytes for the `grpc-status-details-bin` trailer. */
  toStatusDetails(domain: string): Buffer {
    return Buffer.from(Status.encode(this.toStatus(domain)).finish());
  }

  /** As a google.rpc.Status message: code, message, ErrorInfo and (if any) BadRequest. */
  toStatus(domain: string): Status {
    const details: Any[] = [
      {
        typeUrl: ERROR_INFO_TYPE_URL,
        value: Buffer.from(
          ErrorInfo.encode({ reason: this.reason, domain: this.domain || domain, metadata: { ...this.metadata } }).finish(),
        ),
      },
    ];
    if (this.fieldViolations.length > 0) {
      details.push({
        typeUrl: BAD_REQUEST_TYPE_URL,
        value: Buffer.from(BadRequest.encode({ fieldViolations: this.fieldViolations.map((v) => ({ ...v })) }).finish()),
      });
    }
    return { code: this.code, message: this.message, details };
  }
}

function isGrpcLike(error: unknown): error is { code: number } {
  return typeof error === 'object' && error !== null && typeof (error as { code?: unknown }).code === 'number';
}

/** What a client reads back from a failed call's trailer. */
export interface ErrorDetails {
  readonly code: number;
  readonly message: string;
  readonly reason: string;
  readonly domain: string;
  readonly metadata: Record<string, string>;
  readonly fieldViolations: FieldViolation[];
}

/**
 * Decodes the `grpc-status-details-bin` bytes of a failed call. Returns
 * undefined when the trailer is absent or not a google.rpc.Status.
 */
export function decodeStatusDetails(bytes: Buffer | Uint8Array | undefined): ErrorDetails | undefined {
  if (bytes === undefined || bytes.length === 0) return undefined;
  let status: Status;
  try {
    status = Status.decode(bytes);
  } catch {
    return undefined;
  }
  return statusDetails(status);
}

/** The ErrorInfo and BadRequest of a google.rpc.Status (an error carried in a message, as in a stream's per-item result). */
export function statusDetails(status: Status): ErrorDetails {
  let info: ErrorInfo | undefined;
  let badRequest: BadRequest | undefined;
  for (const detail of status.details) {
    if (detail.typeUrl === ERROR_INFO_TYPE_URL) info = ErrorInfo.decode(detail.value);
    if (detail.typeUrl === BAD_REQUEST_TYPE_URL) badRequest = BadRequest.decode(detail.value);
  }
  return {
    code: status.code,
    message: status.message,
    reason: info?.reason ?? '',
    domain: info?.domain ?? '',
    metadata: info?.metadata ?? {},
    fieldViolations: badRequest?.fieldViolations ?? [],
  };
}
