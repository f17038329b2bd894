/**
 * The idempotency key rule of the mesh: every mutating RPC of every service takes the same key,
 * so a caller that retries one service's calls retries them all with one kind of key.
 * 1-128 printable ASCII characters, no spaces (a UUID, a ULID, "order-42:attempt-1"): keys end up
 * in logs, metrics exemplars and Redis keys, where spaces and non-ASCII only cause trouble.
 */
import { ServiceError } from './service-error';

export const IDEMPOTENCY_KEY_LENGTH_MAX = 128;
const KEY_PATTERN = /^[\x21-\x7e]+$/;

/** A required key: INVALID_ARGUMENT naming `field` when empty or malformed. */
export function idempotencyKey(value: string, field = 'idempotency_key'): string {
  if (value.length === 0) throw ServiceError.invalidArgument(field, 'is required');
  return checked(value, field);
}

/** A key the RPC may go without: '' (proto3's unset) is undefined, anything else must follow the rule. */
export function optionalIdempotencyKey(value: string, field = 'idempotency_key'): string | undefined {
  return value.length === 0 ? undefined : checked(value, field);
}

function checked(value: string, field: string): string {
  if (value.length > IDEMPOTENCY_KEY_LENGTH_MAX) {
    throw ServiceError.invalidArgument(field, `must be at most ${IDEMPOTENCY_KEY_LENGTH_MAX} characters`);
  }
  if (!KEY_PATTERN.test(value)) throw ServiceError.invalidArgument(field, 'must be printable ASCII without spaces');
  return value;
}
