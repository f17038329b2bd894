/**
 * Idempotency records: the canonical request fingerprint, claiming keys, and
 * turning a stored record back into a replay.
 *
 * Protocol (per mutating call, inside the transaction that does the work):
 *  1. INSERT the (tenant, key) row first, ON CONFLICT DO NOTHING. If another
 *     transaction holds an uncommitted row with that key, PostgreSQL makes this
 *     insert wait for it; once it commits we see a conflict and replay what it
 *     stored (if it rolled back, our insert goes through). A duplicate therefore
 *     never applies twice, even across service instances.
 *  2. Do the work; 3. store the response (or the business failure) on the row,
 *     in the same commit as the money movement.
 * Validation failures are rejected before step 1 and never stored.
 */
import { createHmac } from 'node:crypto';
import type pg from 'pg';
import { deleteInBatches, withLockTimeout, withRolledBackTransaction } from '../../../platform/db';
import { Code, ServiceError } from '../../../platform/service-error';
import { concurrentModification } from '../errors';

export type StoredState = 'IN_PROGRESS' | 'SUCCEEDED' | 'FAILED';

export interface StoredError {
  readonly code: number;
  readonly reason: string;
  readonly message: string;
  readonly metadata: Record<string, string>;
}

export interface IdempotencyRecord {
  readonly tenantId: string;
  readonly key: string;
  readonly method: string;
  readonly requestHash: Buffer;
  readonly state: StoredState;
  readonly response: Buffer | null;
  readonly error: StoredError | null;
  readonly createdAt: Date;
  readonly completedAt: Date | null;
}

export interface KeyClaim {
  readonly tenantId: string;
  readonly key: string;
  readonly method: string;
  readonly requestHash: Buffer;
}

/** Business outcomes that are stored and replayed; anything else is not. */
export function isStorableFailure(error: ServiceError): boolean {
  return error.code === Code.FAILED_PRECONDITION || error.code === Code.NOT_FOUND || error.code === Code.OUT_OF_RANGE;
}

type Canonical = null | string | boolean | number | Canonical[];

/**
 * Canonical form of request fields: bigint and Date become decimal strings,
 * maps become key-sorted [key, value] lists, undefined becomes null. JSON of a
 * fixed-shape array is then byte-stable regardless of the wire order of map entries.
 */
export function canonical(value: unknown): Canonical {
  if (value === undefined || value === null) return null;
  if (typeof value === 'bigint') return `${value}n`;
  if (typeof value === 'string' || typeof value === 'boolean') return value;
  if (typeof value === 'number') return Number.isFinite(value) ? value : String(value);
  if (value instanceof Date) return `t${value.getTime()}`;
  if (Array.isArray(value)) return value.map(canonical);
  if (typeof value === 'object') {
    return Object.keys(value as object)
      .sort()
      .map((k) => [k, canonical((value as Record<string, unknown>)[k])]);
  }
  return String(value);
}

/**
 * Fingerprint of a request: HMAC-SHA256 over method + canonical fields. Keyed
 * because top-up requests carry card numbers, whose bare hash could be brute-forced.
 */
export class RequestHasher {
  constructor(private readonly key: Buffer) {}

  hash(method: string, fields: unknown): Buffer {
    return createHmac('sha256', this.key)
      .update(JSON.stringify([method, canonical(fields)]))
      .digest();
  }
}

export function storedErrorOf(error: ServiceError): StoredError {
  return { code: error.code, reason: error.reason, message: error.message, metadata: { ...error.metadata } };
}

export function serviceErrorOf(stored: StoredError, replayed: boolean): ServiceError {
  return new ServiceError(stored.code as Code, stored.reason, stored.message, {
    metadata: replayed ? { ...stored.metadata, replayed: 'true' } : stored.metadata,
  });
}

interface RecordRow {
  tenant_id: string;
  key: string;
  method: string;
  request_hash: Buffer;
  state: StoredState;
  response: Buffer | null;
  error: StoredError | null;
  created_at: Date;
  completed_at: Date | null;
}

function recordOf(row: RecordRow): IdempotencyRecord {
  return {
    tenantId: row.tenant_id,
    key: row.key,
    method: row.method,
    requestHash: row.request_hash,
    state: row.state,
    response: row.response,
    error: row.error,
    createdAt: row.created_at,
    completedAt: row.completed_at,
  };
}

/**
 * Step 1 for many keys at once (sorted by tenant, key so that two batches
 * waiting on each other's keys always wait in the same order: no deadlock).
 * Returns, per claim, null when it is ours, or the existing committed record.
 */
export async function claimKeys(
  client: pg.PoolClient,
  claims: readonly KeyClaim[],
  ttlHours: number,
): Promise<(IdempotencyRecord | null)[]> {
  if (claims.length === 0) return [];
  const inserted = await client.query<{ tenant_id: string; key: string }>(
    `INSERT INTO credit_idempotency_keys (tenant_id, key, method, request_hash, expires_at)
     SELECT u.tenant_id, u.key, u.method, decode(u.hash, 'hex'), now() + make_interval(hours => $5::int)
       FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS u(tenant_id, key, method, hash)
      ORDER BY u.tenant_id, u.key
     ON CONFLICT (tenant_id, key) DO NOTHING
     RETURNING tenant_id, key`,
    [claims.map((c) => c.tenantId), claims.map((c) => c.key), claims.map((c) => c.method), claims.map((c) => c.requestHash.toString('hex')), ttlHours],
  );
  const ours = new Set(inserted.rows.map((r) => `${r.tenant_id}\u0000${r.key}`));
  const others = claims.filter((c) => !ours.has(`${c.tenantId}\u0000${c.key}`));
  const existing = new Map<string, IdempotencyRecord>();
  if (others.length > 0) {
    // A new statement: its snapshot sees the rows committed while our insert waited.
    const { rows } = await client.query<RecordRow>(
      `SELECT k.tenant_id, k.key, k.method, k.request_hash, k.state, k.response, k.error, k.created_at, k.completed_at
         FROM credit_idempotency_keys k
         JOIN unnest($1::text[], $2::text[]) AS u(tenant_id, key) ON k.tenant_id = u.tenant_id AND k.key = u.key`,
      [others.map((c) => c.tenantId), others.map((c) => c.key)],
    );
    for (const row of rows) existing.set(`${row.tenant_id}\u0000${row.key}`, recordOf(row));
  }
  return claims.map((c) => {
    const id = `${c.tenantId}\u0000${c.key}`;
    if (ours.has(id)) return null;
    const record = existing.get(id);
    if (!record) {
      // Pruned between our insert and our read: extremely rare; the client retries.
      throw concurrentModification();
    }
    return record;
  });
}

/** A record found by its key (GetOperation), or undefined. */
export async function findRecord(pool: pg.Pool, tenantId: string, key: string): Promise<IdempotencyRecord | undefined> {
  const { rows } = await pool.query<RecordRow>(
    `SELECT tenant_id, key, method, request_hash, state, response, error, created_at, completed_at
       FROM credit_idempotency_keys WHERE tenant_id = $1 AND key = $2`,
    [tenantId, key],
  );
  return rows[0] ? recordOf(rows[0]) : undefined;
}

/**
 * What holds a key that `findRecord` did not see: a call running right now (its row
 * is inserted but uncommitted, so our own insert waits on it: 'in_flight'), a call
 * that committed since that read ('committed': read the record again), or nothing
 * ('absent'). Probed with a short lock_timeout inside a transaction that is always
 * rolled back.
 */
export async function probeKey(pool: pg.Pool, tenantId: string, key: string): Promise<'in_flight' | 'committed' | 'absent'> {
  return withRolledBackTransaction(pool, async (client) => {
    const probe = await withLockTimeout(client, () =>
      client.query(
        `INSERT INTO credit_idempotency_keys (tenant_id, key, method, request_hash, expires_at)
         VALUES ($1, $2, '', '\\x00', now()) ON CONFLICT (tenant_id, key) DO NOTHING RETURNING 1`,
        [tenantId, key],
      ),
    );
    if (probe.lockHeld) return 'in_flight';
    return probe.value.rowCount === 1 ? 'absent' : 'committed';
  });
}

/** Deletes expired records, at most `batchRows` per statement and `batches` statements per call. */
export function pruneExpired(pool: pg.Pool, batchRows: number, batches: number): Promise<number> {
  return deleteInBatches(
    pool,
    `DELETE FROM credit_idempotency_keys WHERE ctid IN (
       SELECT ctid FROM credit_idempotency_keys WHERE expires_at < now() LIMIT $1 FOR UPDATE SKIP LOCKED)`,
    [],
    batchRows,
    batches,
  );
}
