/** credit_reservations: the rows of the two-phase holds (their rules: domain/reservations.ts). */
import type pg from 'pg';
import { invariant } from '../../../platform/invariant';
import type { ReservationRow, ReservationState } from '../domain/reservations';

const COLUMNS = 'id, tenant_id, amount, captured_amount, state::text AS state, reference, expires_at, created_at, updated_at';

export async function insertReservation(
  client: pg.PoolClient,
  r: { id: string; tenantId: string; amount: bigint; reference: string; metadata: Record<string, string>; expiresAt: Date; now: Date },
): Promise<void> {
  await client.query(
    `INSERT INTO credit_reservations (id, tenant_id, amount, state, reference, metadata, expires_at, created_at, updated_at)
     VALUES ($1, $2, $3, 'HELD', $4, $5::jsonb, $6, $7, $7)`,
    [r.id, r.tenantId, r.amount, r.reference, JSON.stringify(r.metadata), r.expiresAt, r.now],
  );
}

/** Locks one reservation of a tenant (after its account: the order every writer uses). */
export async function lockReservation(client: pg.PoolClient, id: string, tenantId: string): Promise<ReservationRow | undefined> {
  const { rows } = await client.query<ReservationRow>(`SELECT ${COLUMNS} FROM credit_reservations WHERE id = $1 AND tenant_id = $2 FOR UPDATE`, [id, tenantId]);
  return rows[0];
}

export async function finalizeReservation(client: pg.PoolClient, id: string, state: Exclude<ReservationState, 'HELD'>, captured: bigint, now: Date): Promise<void> {
  const result = await client.query(
    `UPDATE credit_reservations SET state = $2::credit_reservation_state, captured_amount = $3, updated_at = $4
      WHERE id = $1 AND state = 'HELD'`,
    [id, state, captured, now],
  );
  invariant(result.rowCount === 1, 'a held reservation is finalised exactly once');
}

/** Held reservations past their TTL, oldest first. */
export async function dueReservations(
  query: (sql: string, params: unknown[]) => Promise<pg.QueryResult<{ id: string; tenant_id: string }>>,
  now: Date,
  limit: number,
): Promise<{ id: string; tenant_id: string }[]> {
  const { rows } = await query(`SELECT id, tenant_id FROM credit_reservations WHERE state = 'HELD' AND expires_at <= $1 ORDER BY expires_at LIMIT $2`, [now, limit]);
  return rows;
}

/** Locks those of `ids` that are still held and past their TTL at `now`. */
export async function lockDueReservations(client: pg.PoolClient, ids: readonly string[], tenantId: string, now: Date): Promise<ReservationRow[]> {
  const { rows } = await client.query<ReservationRow>(
    `SELECT ${COLUMNS}
       FROM credit_reservations
      WHERE id = ANY($1::uuid[]) AND tenant_id = $2 AND state = 'HELD' AND expires_at <= $3
      ORDER BY id FOR UPDATE`,
    [ids, tenantId, now],
  );
  return rows;
}
