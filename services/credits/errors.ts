/**
 * Every reason the credits service raises itself, and the one factory for each: a reason that is
 * not in CREDITS_REASONS does not compile, and each message is written once.
 *
 * The reasons every service shares (INVALID_ARGUMENT, IDEMPOTENCY_KEY_REUSED, OPERATION_IN_PROGRESS)
 * are built by ServiceError's own factories in platform/service-error.ts, so they are listed apart
 * (PLATFORM_REASONS). errors.test.ts checks that the two lists together are exactly the reasons the
 * proto documents (proto/shieldx/credits/v1/credits.proto).
 *
 * Pure: domain code throws these.
 */
import { Code, ServiceError, type ServiceErrorOptions } from '../../platform/service-error';

export const CREDITS_REASONS = [
  'TENANT_NOT_FOUND',
  'INSUFFICIENT_CREDITS',
  'RESERVATION_NOT_FOUND',
  'RESERVATION_EXPIRED',
  'RESERVATION_ALREADY_FINALIZED',
  'OPERATION_NOT_FOUND',
  'BALANCE_LIMIT_EXCEEDED',
  'CONCURRENT_MODIFICATION',
  'OVERLOADED',
  'DATABASE_UNAVAILABLE',
  'SERVER_SHUTTING_DOWN',
  /** Only ever a BatchConsume item's error_reason, never a call's. */
  'BATCH_ABORTED',
] as const;
export type CreditsReason = (typeof CREDITS_REASONS)[number];

/** Reasons credits answers with whose errors platform/service-error.ts builds. */
export const PLATFORM_REASONS = ['INVALID_ARGUMENT', 'IDEMPOTENCY_KEY_REUSED', 'OPERATION_IN_PROGRESS'] as const;
export type PlatformReason = (typeof PLATFORM_REASONS)[number];

function creditsError(code: Code, reason: CreditsReason, message: string, options?: ServiceErrorOptions): ServiceError {
  return new ServiceError(code, reason, message, options);
}

/** True when `error` carries this credits reason. */
export function hasReason(error: ServiceError, reason: CreditsReason | PlatformReason): boolean {
  return error.reason === reason;
}

// --- Business errors (stored and replayed under an idempotency key) --------------------------

export function tenantNotFound(tenantId: string): ServiceError {
  return creditsError(Code.NOT_FOUND, 'TENANT_NOT_FOUND', 'no credit account for this tenant', { metadata: { tenant_id: tenantId } });
}

export function insufficientCredits(available: bigint, requested: bigint): ServiceError {
  return creditsError(Code.FAILED_PRECONDITION, 'INSUFFICIENT_CREDITS', 'not enough available credits', {
    metadata: { available: available.toString(), requested: requested.toString() },
  });
}

export function reservationNotFound(id: string): ServiceError {
  return creditsError(Code.NOT_FOUND, 'RESERVATION_NOT_FOUND', 'no such reservation for this tenant', { metadata: { reservation_id: id } });
}

export function reservationExpired(id: string): ServiceError {
  return creditsError(Code.FAILED_PRECONDITION, 'RESERVATION_EXPIRED', 'the reservation expired and its hold was released', {
    metadata: { reservation_id: id },
  });
}

export function reservationFinalized(id: string, state: string): ServiceError {
  return creditsError(Code.FAILED_PRECONDITION, 'RESERVATION_ALREADY_FINALIZED', `the reservation is already ${state.toLowerCase()}`, {
    metadata: { reservation_id: id, state },
  });
}

export function balanceLimitExceeded(balance: bigint): ServiceError {
  return creditsError(Code.FAILED_PRECONDITION, 'BALANCE_LIMIT_EXCEEDED', 'the balance would exceed the int64 maximum', {
    metadata: { balance: balance.toString() },
  });
}

/**
 * A capture above the held amount: the caller's mistake (INVALID_ARGUMENT naming `amount`), but it
 * depends on stored state, so it is found by the ledger, not by request validation.
 */
export function captureAboveHold(held: bigint): ServiceError {
  const description = `must be at most the held amount (${held})`;
  return new ServiceError(Code.INVALID_ARGUMENT, 'INVALID_ARGUMENT' satisfies PlatformReason, `amount: ${description}`, {
    fieldViolations: [{ field: 'amount', description }],
    metadata: { field: 'amount', held: held.toString() },
  });
}

/** A BatchConsume item not applied because another item of its atomic batch failed. */
export function batchAborted(): ServiceError {
  return creditsError(Code.ABORTED, 'BATCH_ABORTED', 'another item failed in an atomic batch');
}

// --- Lookups ---------------------------------------------------------------------------------

export function operationNotFound(key: string): ServiceError {
  return creditsError(Code.NOT_FOUND, 'OPERATION_NOT_FOUND', 'no operation with this idempotency key (never made, or pruned)', {
    metadata: { idempotency_key: key },
  });
}

// --- Retry later -----------------------------------------------------------------------------

export function concurrentModification(): ServiceError {
  return creditsError(Code.ABORTED, 'CONCURRENT_MODIFICATION', 'idempotency record changed concurrently; retry');
}

/** Too many writers wait in this replica's tenant gate. */
export function writersOverloaded(): ServiceError {
  return creditsError(Code.RESOURCE_EXHAUSTED, 'OVERLOADED', 'too many writes waiting on their accounts; retry with backoff');
}

/** The consume batcher's queue is full. */
export function consumeQueueFull(): ServiceError {
  return creditsError(Code.RESOURCE_EXHAUSTED, 'OVERLOADED', 'too many consume calls queued; retry with backoff');
}

export function databaseUnavailable(cause?: unknown): ServiceError {
  return creditsError(Code.UNAVAILABLE, 'DATABASE_UNAVAILABLE', 'the credits database is unavailable; retry with the same idempotency key', {
    cause,
  });
}

export function serverShuttingDown(): ServiceError {
  return creditsError(Code.UNAVAILABLE, 'SERVER_SHUTTING_DOWN', 'server is shutting down');
}
