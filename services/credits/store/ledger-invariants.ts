/**
 * The ledger's invariants, checked from PostgreSQL: no balance, reserved or available
 * amount below zero, each balance equal to the sum of its account's movements, and each
 * reserved amount equal to its account's open holds.
 *
 * Two ways to check: `countInvariantViolations` re-scans every row (the periodic full
 * run), `checkInvariantsSinceCheckpoints` reads only what moved since the last run.
 */
import type pg from 'pg';

/** A transaction row's effect on its account's balance (reservations move `reserved`, not the balance). */
const MOVEMENT_DELTA = "CASE type WHEN 'TOP_UP' THEN amount WHEN 'CONSUME' THEN -amount WHEN 'CAPTURE' THEN -amount ELSE 0 END";

/** Accounts violating an invariant, against all their transaction rows and holds. */
export async function countInvariantViolations(pool: pg.Pool): Promise<number> {
  const { rows } = await pool.query<{ violations: number }>(
    `WITH ledger AS (
       SELECT tenant_id, sum(${MOVEMENT_DELTA}) AS balance FROM credit_transactions GROUP BY tenant_id
     ), holds AS (
       SELECT tenant_id, sum(amount) AS reserved FROM credit_reservations WHERE state = 'HELD' GROUP BY tenant_id
     )
     SELECT count(*)::int AS violations
       FROM credit_accounts a
       LEFT JOIN ledger l USING (tenant_id)
       LEFT JOIN holds h USING (tenant_id)
      WHERE a.balance < 0 OR a.reserved < 0 OR a.balance - a.reserved < 0
         OR a.balance <> coalesce(l.balance, 0) OR a.reserved <> coalesce(h.reserved, 0)`,
  );
  return rows[0]!.violations;
}

/**
 * The same invariants for the accounts whose version moved since their checkpoint
 * (credit_ledger_checkpoints, migrations/credits/0003): each is checked against its
 * checkpointed sum plus the transaction rows after it, and its holds; a sound account's
 * checkpoint moves to what was just checked. One statement, so one snapshot. A violating
 * account keeps its checkpoint and is counted again on every run. Edits below a
 * checkpoint that leave `version` alone are the full run's to find.
 */
export async function checkInvariantsSinceCheckpoints(pool: pg.Pool): Promise<{ violations: number; checked: number }> {
  const { rows } = await pool.query<{ violations: number; checked: number }>(
    `WITH checked AS (
       SELECT a.tenant_id, a.version, a.balance, a.reserved,
              coalesce(c.ledger_balance, 0) + m.delta AS ledger_balance,
              coalesce(m.last_seq, c.ledger_seq, 0) AS ledger_seq,
              coalesce(h.held, 0) AS held
         FROM credit_accounts a
         LEFT JOIN credit_ledger_checkpoints c USING (tenant_id)
         CROSS JOIN LATERAL (
           SELECT coalesce(sum(${MOVEMENT_DELTA}), 0) AS delta, max(t.seq) AS last_seq
             FROM credit_transactions t
            WHERE t.tenant_id = a.tenant_id AND t.seq > coalesce(c.ledger_seq, 0)) m
         CROSS JOIN LATERAL (
           SELECT sum(r.amount) AS held FROM credit_reservations r WHERE r.tenant_id = a.tenant_id AND r.state = 'HELD') h
        WHERE c.tenant_id IS NULL OR a.version <> c.version
     ), flagged AS (
       SELECT *, (balance < 0 OR reserved < 0 OR balance - reserved < 0 OR balance <> ledger_balance OR reserved <> held) AS violated
         FROM checked
     ), saved AS (
       INSERT INTO credit_ledger_checkpoints (tenant_id, version, ledger_seq, ledger_balance)
       SELECT tenant_id, version, ledger_seq, ledger_balance FROM flagged WHERE NOT violated
       ON CONFLICT (tenant_id) DO UPDATE
          SET version = excluded.version, ledger_seq = excluded.ledger_seq, ledger_balance = excluded.ledger_balance, checked_at = now()
        WHERE credit_ledger_checkpoints.ledger_seq <= excluded.ledger_seq
     )
     SELECT (count(*) FILTER (WHERE violated))::int AS violations, count(*)::int AS checked FROM flagged`,
  );
  return rows[0]!;
}
