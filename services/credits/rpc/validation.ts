/**
 * Request validation: everything that can be checked without the database.
 * A failure here is INVALID_ARGUMENT naming the proto field; nothing is
 * written and the idempotency key stays unused.
 */
import type { Duration } from '../../../gen/google/protobuf/duration';
import { TransactionType } from '../../../gen/shieldx/credits/v1/credits';
import { idempotencyKey as platformIdempotencyKey, IDEMPOTENCY_KEY_LENGTH_MAX } from '../../../platform/idempotency-key';
import { decodePageToken, encodePageToken } from '../../../platform/page-token';
import { ServiceError } from '../../../platform/service-error';
import { INT64_MAX, type TxType } from '../domain/account';
import { PROTO_TO_TX_TYPE } from './encode';

export const TENANT_ID_LENGTH_MAX = 128;
export { IDEMPOTENCY_KEY_LENGTH_MAX };
export const REFERENCE_LENGTH_MAX = 256;
export const METADATA_ENTRIES_MAX = 32;
export const METADATA_KEY_LENGTH_MAX = 64;
export const METADATA_VALUE_LENGTH_MAX = 512;
export const BATCH_ITEMS_MAX = 100;
export const RESERVATION_TTL_MS_DEFAULT = 5 * 60_000;
export const RESERVATION_TTL_MS_MAX = 24 * 3_600_000;

const TENANT_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._:@-]*$/;
const METADATA_KEY_PATTERN = /^[A-Za-z0-9_.-]+$/;
const UUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export function tenantId(field: string, value: string): string {
  if (value.length === 0) throw ServiceError.invalidArgument(field, 'is required');
  if (value.length > TENANT_ID_LENGTH_MAX) throw ServiceError.invalidArgument(field, `must be at most ${TENANT_ID_LENGTH_MAX} characters`);
  if (!TENANT_ID_PATTERN.test(value)) throw ServiceError.invalidArgument(field, 'must be letters, digits and . _ : @ - (starting with a letter or digit)');
  return value;
}

/** A positive int64 amount. Values sent above int64 max arrive wrapped to negative and fail here too. */
export function amount(field: string, value: bigint): bigint {
  if (value <= 0n) throw ServiceError.invalidArgument(field, 'must be positive');
  if (value > INT64_MAX) throw ServiceError.invalidArgument(field, 'must fit a signed 64-bit integer');
  return value;
}

/** The mesh's idempotency key rule (platform/idempotency-key.ts), naming `field`. */
export function idempotencyKey(field: string, value: string): string {
  return platformIdempotencyKey(value, field);
}

// NUL characters (which PostgreSQL text and jsonb cannot hold) are refused for every text field
// of every request before any handler runs, by the shared rule (platform/request-fields.ts).

export function reference(field: string, value: string): string {
  if (value.length > REFERENCE_LENGTH_MAX) throw ServiceError.invalidArgument(field, `must be at most ${REFERENCE_LENGTH_MAX} characters`);
  return value;
}

export function metadata(field: string, value: Record<string, string>): Record<string, string> {
  const entries = Object.entries(value);
  if (entries.length > METADATA_ENTRIES_MAX) throw ServiceError.invalidArgument(field, `must have at most ${METADATA_ENTRIES_MAX} entries`);
  for (const [k, v] of entries) {
    if (k.length === 0 || k.length > METADATA_KEY_LENGTH_MAX || !METADATA_KEY_PATTERN.test(k)) {
      throw ServiceError.invalidArgument(`${field}[${k.slice(0, 64)}]`, `key must be 1-${METADATA_KEY_LENGTH_MAX} characters of [A-Za-z0-9_.-]`);
    }
    if (v.length > METADATA_VALUE_LENGTH_MAX) {
      throw ServiceError.invalidArgument(`${field}[${k}]`, `value must be at most ${METADATA_VALUE_LENGTH_MAX} characters`);
    }
  }
  return value;
}

/** The fields every single-account movement request carries (Consume, TopUp, Reserve), checked in this order. */
export function movement(req: {
  tenantId: string;
  amount: bigint;
  idempotencyKey: string;
  reference: string;
  metadata: Record<string, string>;
}): { tenantId: string; amount: bigint; key: string; reference: string; metadata: Record<string, string> } {
  return {
    tenantId: tenantId('tenant_id', req.tenantId),
    amount: amount('amount', req.amount),
    key: idempotencyKey('idempotency_key', req.idempotencyKey),
    reference: reference('reference', req.reference),
    metadata: metadata('metadata', req.metadata),
  };
}

export function reservationId(field: string, value: string): string {
  if (value.length === 0) throw ServiceError.invalidArgument(field, 'is required');
  if (!UUID_PATTERN.test(value)) throw ServiceError.invalidArgument(field, 'must be a reservation id (lowercase UUID)');
  return value;
}

export function ttlMs(field: string, value: Duration | undefined): number {
  if (value === undefined) return RESERVATION_TTL_MS_DEFAULT;
  if (value.seconds < 0n || value.nanos < 0 || value.nanos > 999_999_999) throw ServiceError.invalidArgument(field, 'must be a positive duration');
  // Compared exactly, before truncating to milliseconds: 24 h + 1 ns is over the limit too.
  const secondsMax = BigInt(RESERVATION_TTL_MS_MAX / 1000);
  if (value.seconds > secondsMax || (value.seconds === secondsMax && value.nanos > 0)) throw ServiceError.invalidArgument(field, 'must be at most 24 hours');
  const ms = Number(value.seconds) * 1000 + Math.floor(value.nanos / 1_000_000);
  if (ms < 1) throw ServiceError.invalidArgument(field, 'must be at least 1 millisecond');
  if (ms > RESERVATION_TTL_MS_MAX) throw ServiceError.invalidArgument(field, 'must be at most 24 hours');
  return ms;
}


export function transactionTypes(field: string, values: readonly TransactionType[]): TxType[] {
  return values.map((v, i) => {
    const type = PROTO_TO_TX_TYPE.get(v);
    if (!type) throw ServiceError.invalidArgument(`${field}[${i}]`, 'must be a known transaction type');
    return type;
  });
}

/**
 * ListTransactions' page tokens: the platform codec (platform/page-token.ts), bound to the
 * query's filters, whose cursor is the last sequence number served (a decimal int64 >= 1).
 */
export interface TransactionFilter {
  readonly tenantId: string;
  readonly startTime: Date | undefined;
  readonly endTime: Date | undefined;
  readonly types: readonly TxType[];
}

const filterOf = (f: TransactionFilter) => [f.tenantId, f.startTime?.getTime() ?? null, f.endTime?.getTime() ?? null, [...f.types].sort()];

export function transactionsPageToken(lastSeq: bigint | undefined, filter: TransactionFilter): string {
  return encodePageToken(lastSeq === undefined ? undefined : [lastSeq.toString()], filterOf(filter));
}

export function transactionsAfterSeq(field: string, token: string, filter: TransactionFilter): bigint | undefined {
  return decodePageToken(
    token,
    filterOf(filter),
    (cursor) => {
      const [seq] = cursor;
      if (cursor.length !== 1 || seq === undefined || !/^[1-9][0-9]{0,18}$/.test(seq)) return undefined;
      const value = BigInt(seq);
      return value <= INT64_MAX ? value : undefined;
    },
    field,
  );
}
