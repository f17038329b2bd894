/**
 * The one error class of the camouflage domain.
 *
 * Callers branch on `reason` (UPPER_SNAKE, stable), never on `message` (for humans, may change).
 * The gRPC layer maps `reason` to a canonical status code with {@link grpcCodeNameFor} and puts
 * `reason` + `field` into `google.rpc.ErrorInfo` / `BadRequest`; this module deliberately does not
 * import grpc-js so the domain can be used and tested without it.
 */

/** Every reason the camouflage domain can raise. */
export type CamouflageErrorReason =
  /** A request field is missing, malformed or out of range; `field` names it. */
  | 'INVALID_ARGUMENT'
  /** RecordOutcome for a decision id that was never issued or whose record has expired. */
  | 'DECISION_NOT_FOUND'
  /** RecordOutcome for a decision that already has an outcome (exactly-once learning). */
  | 'OUTCOME_ALREADY_RECORDED'
  /** The same idempotency key was sent with a different request. */
  | 'IDEMPOTENCY_KEY_REUSED'
  /** A decoy id that is neither built in nor registered. */
  | 'DECOY_NOT_FOUND'
  /** RegisterDecoy with an id that already exists (built in or registered). */
  | 'DUPLICATE_DECOY'
  /** RegisterDecoy when the custom catalog is at its size bound. */
  | 'CATALOG_FULL'
  /** Redis failed or answered something the code does not understand. */
  | 'BACKEND_UNAVAILABLE'
  /** A broken invariant: a bug, never the caller's fault. */
  | 'INTERNAL';

/** Canonical gRPC code names (strings, so no grpc-js import) suggested for each reason. */
export type GrpcCodeName =
  | 'INVALID_ARGUMENT'
  | 'NOT_FOUND'
  | 'ALREADY_EXISTS'
  | 'RESOURCE_EXHAUSTED'
  | 'UNAVAILABLE'
  | 'INTERNAL';

const GRPC_CODE_BY_REASON: Readonly<Record<CamouflageErrorReason, GrpcCodeName>> = {
  INVALID_ARGUMENT: 'INVALID_ARGUMENT',
  DECISION_NOT_FOUND: 'NOT_FOUND',
  OUTCOME_ALREADY_RECORDED: 'ALREADY_EXISTS',
  IDEMPOTENCY_KEY_REUSED: 'INVALID_ARGUMENT',
  DECOY_NOT_FOUND: 'NOT_FOUND',
  DUPLICATE_DECOY: 'ALREADY_EXISTS',
  CATALOG_FULL: 'RESOURCE_EXHAUSTED',
  BACKEND_UNAVAILABLE: 'UNAVAILABLE',
  INTERNAL: 'INTERNAL',
};

/** The canonical gRPC code the handler layer should use for a reason. */
export function grpcCodeNameFor(reason: CamouflageErrorReason): GrpcCodeName {
  return GRPC_CODE_BY_REASON[reason];
}

export class CamouflageError extends Error {
  override readonly name = 'CamouflageError';
  readonly reason: CamouflageErrorReason;
  /** For INVALID_ARGUMENT: the offending field, camelCase path such as `headers` or `outcome.dwellSeconds`. */
  readonly field: string | undefined;
  /** Small, log-safe context (ids, limits); never a token or secret. */
  readonly metadata: Readonly<Record<string, string>>;

  constructor(
    reason: CamouflageErrorReason,
    message: string,
    options: { field?: string; metadata?: Record<string, string>; cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.reason = reason;
    this.field = options.field;
    this.metadata = Object.freeze({ ...(options.metadata ?? {}) });
  }

  /** Shorthand for the most common error: a named field is wrong. */
  static invalidArgument(field: string, message: string): CamouflageError {
    return new CamouflageError('INVALID_ARGUMENT', message, { field });
  }

  /**
   * Normalises anything thrown into a CamouflageError: domain errors pass through, Redis/ioredis
   * failures become BACKEND_UNAVAILABLE, everything else INTERNAL.
   *
   * Redis errors are not kept as `cause`: ioredis attaches the whole command to its errors,
   * arguments included, and those contain minted honeytokens and session keys that must not
   * reach a log. Only the error's name and first line of message survive.
   */
  static from(thrown: unknown): CamouflageError {
    if (thrown instanceof CamouflageError) return thrown;
    if (thrown instanceof Error) {
      const redisLike =
        thrown.name === 'ReplyError' ||
        thrown.name === 'MaxRetriesPerRequestError' ||
        'command' in thrown ||
        /ECONNREFUSED|ECONNRESET|Connection is closed|NOSCRIPT|ETIMEDOUT/.test(thrown.message);
      const message = (thrown.message.split('\n')[0] ?? '').slice(0, 300);
      if (redisLike) return new CamouflageError('BACKEND_UNAVAILABLE', `redis: ${thrown.name}: ${message}`);
      return new CamouflageError('INTERNAL', message, { cause: thrown });
    }
    return new CamouflageError('INTERNAL', String(thrown).slice(0, 300));
  }
}

/**
 * Asserts an invariant. A failure is a bug in this service (never bad input), so it raises
 * INTERNAL; TIGER_STYLE: invariants are checked in code, not only in tests.
 */
export function invariant(condition: unknown, message: string): asserts condition {
  if (!condition) throw new CamouflageError('INTERNAL', `invariant violated: ${message}`);
}
