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
