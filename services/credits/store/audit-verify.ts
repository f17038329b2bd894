/**
 * Verifying the audit chains stored in PostgreSQL (the VerifyAuditChain RPC and the periodic
 * checks): the chain's rules are in domain/audit-chain.ts.
 */
import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import type pg from 'pg';
import { type AuditChain, type ChainPoint } from '../domain/audit-chain';

export interface ChainBreak {
  readonly tenantId: string;
  readonly sequence: bigint;
  readonly reason: string;
}

export interface VerifyResult {
  valid: boolean;
  rowsChecked: bigint;
  tenantsChecked: bigint;
  breaks: ChainBreak[];
}

const VERIFY_CHUNK_ROWS = 2_000;
/** Rows verified between yields to the event loop (a few ms of HMACs). */
const VERIFY_YIELD_ROWS = 200;
const BREAKS_MAX = 100;

/**
 * Recomputes the chain of one tenant (or every tenant with an account or audit
 * rows) from genesis, in keyset-paginated chunks so memory stays bounded.
 * Detects: an edited row (hash mismatch), a deleted row (sequence gap / link
 * mismatch, or a chain shorter than the account's recorded head), an inserted
 * row (its hash cannot be recomputed without the key). A chain longer than the
 * head is accepted, because writers may append while this runs, so a row
 * appended at the end is caught by its hash alone.
 */
export async function verifyAuditChains(pool: pg.Pool, chain: AuditChain, tenantId?: string): Promise<VerifyResult> {
  const tenants: string[] = [];
  if (tenantId !== undefined) {
    tenants.push(tenantId);
  } else {
    const { rows } = await pool.query<{ tenant_id: string }>(
      'SELECT tenant_id FROM credit_accounts UNION SELECT DISTINCT tenant_id FROM credit_audit_logs ORDER BY 1',
    );
    for (const row of rows) tenants.push(row.tenant_id);
  }
  const result: VerifyResult = { valid: true, rowsChecked: 0n, tenantsChecked: 0n, breaks: [] };
  for (const tenant of tenants) record(result, (await verifyTenant(pool, chain, tenant, result)).broken);
  return result;
}

/**
 * Verifies only what was appended since the last run: for each account whose chain head
 * moved past its checkpoint (credit_audit_checkpoints, sealed with `checkpointMac`), checks
 * that the checkpointed row still has its hash, verifies the rows after it, and moves the
 * checkpoint to the last verified row. A broken tenant keeps its checkpoint, so it stays
 * reported on every run. Edits below a checkpoint, and audit rows of tenants without an
 * account, are left to the full `verifyAuditChains`.
 */
export async function verifyAuditChainsSinceCheckpoints(pool: pg.Pool, chain: AuditChain): Promise<VerifyResult> {
  const { rows } = await pool.query<{
    tenant_id: string;
    audit_seq: bigint;
    audit_head: Buffer | null;
    seq: bigint | null;
    hash: Buffer | null;
    mac: Buffer | null;
  }>(
    // Besides the chains whose head moved: chains with a row past their account's head. A writer appends
    // its row in the same transaction that moves the head, so in one snapshot (this statement) no honest
    // row lies past it: one that does was written around the service (one index probe per account).
    `SELECT a.tenant_id, a.audit_seq, a.audit_head, c.seq, c.hash, c.mac
       FROM credit_accounts a LEFT JOIN credit_audit_checkpoints c USING (tenant_id)
      WHERE (c.tenant_id IS NULL AND a.audit_seq > 0) OR a.audit_seq <> c.seq
         OR EXISTS (SELECT 1 FROM credit_audit_logs l WHERE l.tenant_id = a.tenant_id AND l.seq > a.audit_seq)
      ORDER BY 1`,
  );
  const result: VerifyResult = { valid: true, rowsChecked: 0n, tenantsChecked: 0n, breaks: [] };
  for (const row of rows) {
    const from = row.seq === null ? undefined : { seq: row.seq, hash: row.hash! };
    if (from && !chain.checkpointMac(row.tenant_id, from).equals(row.mac!)) {
      record(result, { tenantId: row.tenant_id, sequence: from.seq, reason: 'verification checkpoint fails its MAC (altered)' });
      continue;
    }
    const { broken, last } = await verifyTenant(pool, chain, row.tenant_id, result, row, from);
    record(result, broken);
    if (broken || !last || (from && last.seq <= from.seq)) continue;
    await pool.query(
      `INSERT INTO credit_audit_checkpoints (tenant_id, seq, hash, mac) VALUES ($1, $2, $3, $4)
       ON CONFLICT (tenant_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, mac = excluded.mac, verified_at = now()
        WHERE credit_audit_checkpoints.seq < excluded.seq`,
      [row.tenant_id, last.seq, last.hash, chain.checkpointMac(row.tenant_id, last)],
    );
  }
  return result;
}

function record(result: VerifyResult, broken: ChainBreak | undefined): void {
  result.tenantsChecked += 1n;
  if (!broken) return;
  result.valid = false;
  if (result.breaks.length < BREAKS_MAX) result.breaks.push(broken);
}

/**
 * Verifies one tenant's chain from genesis, or from a verified point; returns the first
 * break or the last row verified. `head` is the account's chain head, read before the rows
 * (read here when not given; null when the tenant has no account).
 */
async function verifyTenant(
  pool: pg.Pool,
  chain: AuditChain,
  tenantId: string,
  result: VerifyResult,
  head?: { audit_seq: bigint; audit_head: Buffer | null } | null,
  from?: ChainPoint,
): Promise<{ broken?: ChainBreak; last?: ChainPoint }> {
  const account =
    head !== undefined
      ? head
      : ((
          await pool.query<{ audit_seq: bigint; audit_head: Buffer | null }>('SELECT audit_seq, audit_head FROM credit_accounts WHERE tenant_id = $1', [tenantId])
        ).rows[0] ?? null);
  const broken = (sequence: bigint, reason: string) => ({ broken: { tenantId, sequence, reason } });
  let prev = chain.genesis(tenantId);
  let expectedSeq = 1n;
  // From a checkpoint, the first chunk starts at the checkpointed row itself: it must still be
  // there with the hash verified earlier (one read for both).
  let checkpointRow = from !== undefined;
  if (from) {
    prev = from.hash;
    expectedSeq = from.seq;
  }
  // Bounded: each chunk advances the cursor by at least one row, and the table is finite.
  for (;;) {
    const { rows } = await pool.query<{
      seq: bigint;
      occurred_at: Date;
      action: string;
      amount: bigint;
      balance_after: bigint;
      reserved_after: bigint;
      transaction_id: string;
      reservation_id: string | null;
      idempotency_key: string;
      actor: string;
      prev_hash: Buffer;
      hash: Buffer;
    }>(
      `SELECT seq, occurred_at, action, amount, balance_after, reserved_after, transaction_id, reservation_id,
              idempotency_key, actor, prev_hash, hash
         FROM credit_audit_logs WHERE tenant_id = $1 AND seq >= $2 ORDER BY seq LIMIT $3`,
      [tenantId, expectedSeq, VERIFY_CHUNK_ROWS],
    );
    for (const [i, row] of rows.entries()) {
      if (checkpointRow) {
        checkpointRow = false;
        if (row.seq !== expectedSeq) return broken(expectedSeq, `row ${expectedSeq} is missing`);
        if (!row.hash.equals(prev)) return broken(row.seq, 'hash differs from the one verified earlier');
        expectedSeq += 1n;
        continue;
      }
      // Recomputing an HMAC per row is CPU on the event loop: yield now and then so a long
      // verification (the periodic job, a large tenant) never stalls the calls being served.
      if (i > 0 && i % VERIFY_YIELD_ROWS === 0) await yieldToEventLoop();
      result.rowsChecked += 1n;
      if (row.seq !== expectedSeq) return broken(expectedSeq, `row ${expectedSeq} is missing`);
      if (!row.prev_hash.equals(prev)) return broken(row.seq, 'prev_hash does not link to the previous row');
      const hash = chain.hash(
        {
          tenantId,
          seq: row.seq,
          occurredAt: row.occurred_at,
          action: row.action,
          amount: row.amount,
          balanceAfter: row.balance_after,
          reservedAfter: row.reserved_after,
          transactionId: row.transaction_id,
          reservationId: row.reservation_id,
          idempotencyKey: row.idempotency_key,
          actor: row.actor,
        },
        prev,
      );
      if (!hash.equals(row.hash)) return broken(row.seq, 'hash does not match the row');
      prev = hash;
      expectedSeq += 1n;
    }
    if (rows.length < VERIFY_CHUNK_ROWS) break;
  }
  if (checkpointRow) return broken(expectedSeq, `row ${expectedSeq} is missing`);
  const lastSeq = expectedSeq - 1n;
  // The head was read before the rows: concurrent appends may make the chain longer, never shorter.
  if (account && lastSeq < account.audit_seq) {
    return broken(lastSeq + 1n, `chain ends at ${lastSeq} but the account records ${account.audit_seq}`);
  }
  if (account && account.audit_seq === lastSeq && account.audit_head !== null && !account.audit_head.equals(prev)) {
    return broken(lastSeq, 'last hash differs from the account head');
  }
  if (!account && lastSeq > 0n) return broken(1n, 'audit rows for a tenant without an account');
  return lastSeq > 0n ? { last: { seq: lastSeq, hash: prev } } : {};
}
