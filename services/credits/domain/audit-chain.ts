/**
 * The tamper-evident audit hash chain.
 *
 * Each tenant has its own chain: row n's hash = HMAC-SHA256(key, canonical(row n) || hash(row n-1)),
 * and row 1 links to `genesis(tenant)` = HMAC-SHA256(key, "shieldx.credits.audit.v1.genesis" || tenant).
 * An HMAC (not a bare hash) because someone who can write the table — a superuser
 * who disabled the trigger — must not be able to recompute a valid chain.
 *
 * Canonical encoding (version 1), the bytes fed to the HMAC before prev_hash:
 *   "shieldx.credits.audit.v1" then, for each field in this order, `<utf8 byte length>:<value>|`
 *   tenant_id, seq (decimal), occurred_at (integer milliseconds since the Unix epoch, decimal),
 *   action, amount, balance_after, reserved_after (decimal), transaction_id (lowercase uuid),
 *   reservation_id (lowercase uuid or ""), idempotency_key, actor.
 * Length prefixes make the encoding injective: no two different rows encode alike.
 *
 * Ordering: the chain head (audit_seq, audit_head) lives on the account row, and
 * every writer appends while holding that row's lock, so appends per tenant are
 * serialised by the same lock that serialises the balance update.
 */
import { createHmac } from 'node:crypto';
import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import type pg from 'pg';

const ENCODING_TAG = 'shieldx.credits.audit.v1';
const GENESIS_TAG = 'shieldx.credits.audit.v1.genesis';
/** Keys derived for other uses live under their own tag: never a value that is stored anywhere. */
const DERIVED_KEY_TAG = 'shieldx.credits.derived-key.v1:';

export interface AuditEntry {
  readonly tenantId: string;
  readonly seq: bigint;
  readonly occurredAt: Date;
  readonly action: string;
  readonly amount: bigint;
  readonly balanceAfter: bigint;
  readonly reservedAfter: bigint;
  readonly transactionId: string;
  readonly reservationId: string | null;
  readonly idempotencyKey: string;
  readonly actor: string;
}

export interface AuditRow extends AuditEntry {
  readonly prevHash: Buffer;
  readonly hash: Buffer;
}

export function canonicalAuditEncoding(entry: AuditEntry): Buffer {
  const fields = [
    entry.tenantId,
    entry.seq.toString(),
    String(entry.occurredAt.getTime()),
    entry.action,
    entry.amount.toString(),
    entry.balanceAfter.toString(),
    entry.reservedAfter.toString(),
    entry.transactionId.toLowerCase(),
    (entry.reservationId ?? '').toLowerCase(),
    entry.idempotencyKey,
    entry.actor,
  ];
  let out = ENCODING_TAG;
  for (const field of fields) out += `${Buffer.byteLength(field, 'utf8')}:${field}|`;
  return Buffer.from(out, 'utf8');
}

/** A verified position in a tenant's chain: row `seq` has hash `hash`. */
export interface ChainPoint {
  readonly seq: bigint;
  readonly hash: Buffer;
}

export class AuditChain {
  private checkpointKey: Buffer | undefined;

  constructor(private readonly key: Buffer) {
    if (key.length < 32) throw new Error('audit HMAC key must be at least 32 bytes');
  }

  genesis(tenantId: string): Buffer {
    return createHmac('sha256', this.key).update(GENESIS_TAG).update(Buffer.from(tenantId, 'utf8')).digest();
  }

  /**
   * A key for another purpose derived from the audit key. Not `genesis(...)`: a genesis
   * value is stored in the first audit row of its tenant, and tenant ids are caller-chosen.
   */
  deriveKey(purpose: string): Buffer {
    return createHmac('sha256', this.key).update(DERIVED_KEY_TAG).update(Buffer.from(purpose, 'utf8')).digest();
  }

  hash(entry: AuditEntry, prevHash: Buffer): Buffer {
    return createHmac('sha256', this.key).update(canonicalAuditEncoding(entry)).update(prevHash).digest();
  }

  /** Seals a verification checkpoint: without the key, no one can move it past unverified rows. */
  checkpointMac(tenantId: string, point: ChainPoint): Buffer {
    this.checkpointKey ??= this.deriveKey('audit-checkpoint.v1');
    // Injective: length-prefixed tenant, decimal seq, then the fixed-size hash.
    return createHmac('sha256', this.checkpointKey)
      .update(`${Buffer.byteLength(tenantId, 'utf8')}:${tenantId}|${point.seq}|`, 'utf8')
      .update(point.hash)
      .digest();
  }

  /** Appends entries (already numbered from head.seq + 1) and returns the rows with their hashes. */
  link(head: { seq: bigint; hash: Buffer | null }, tenantId: string, entries: readonly AuditEntry[]): AuditRow[] {
    let prev = head.hash ?? this.genesis(tenantId);
    let seq = head.seq;
    const rows: AuditRow[] = [];
    for (const entry of entries) {
      seq += 1n;
      if (entry.seq !== seq || entry.tenantId !== tenantId) throw new Error('audit entries must be numbered consecutively per tenant');
      const hash = this.hash(entry, prev);
      rows.push({ ...entry, prevHash: prev, hash });
      prev = hash;
    }
    return rows;
  }
}

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
