/**
 * The ledger's writes: the only code that turns a sealed plan (domain/batch-plan.ts) into rows.
 *
 * Two paths write the same rows, from ONE encoder (`columns`), so they cannot drift:
 * - the transactional path (`UnitOfWork.flush`): inside a transaction whose accounts were locked
 *   (SELECT ... FOR UPDATE, in tenant order so two writers never deadlock), one CTE writes the
 *   account heads (an UPDATE conditional on the expected version and non-negative results),
 *   the transactions, the audit rows and the idempotency completions, and every row count is
 *   asserted;
 * - the consume fast path (`writeConsumeBatch`): one round trip, no explicit transaction, to the
 *   credits_consume_batch function (migrations/credits/0002), which writes the rows only if every
 *   account is still exactly in the state the plan was made from (checked under the row lock) and
 *   no key is used yet; otherwise it raises (CR001/CR002) and nothing is written.
 * Whether the transactional path could call the batch function too is a benchmark question
 * (bench/credits.ts), left open: both stay.
 *
 * The row lock serialises writers per tenant, which is what the audit chain needs (its head is on
 * the same row), works unchanged through PgBouncer transaction pooling (no session state), and,
 * unlike pg_try_advisory_xact_lock, never turns contention into failed calls.
 */
import type pg from 'pg';
import { invariant } from '../../../platform/invariant';
import type { ServiceError } from '../../../platform/service-error';
import type { AccountState } from '../domain/account';
import type { AuditChain } from '../domain/audit-chain';
import { type AccountHead, BatchPlan, type LinkedMovement, type SealedPlan } from '../domain/batch-plan';
import { storedErrorOf, type StoredError } from './idempotency';

/** An idempotency record completed with the unit's outcome. */
export interface Completion {
  readonly tenantId: string;
  readonly key: string;
  /** The request's fingerprint, when the record is inserted with its outcome (the fast path). */
  readonly requestHash: Buffer | undefined;
  readonly response: Uint8Array | null;
  readonly error: StoredError | null;
}

export function completion(
  claim: { tenantId: string; key: string; requestHash?: Buffer },
  outcome: { response: Uint8Array } | { error: ServiceError },
): Completion {
  return {
    tenantId: claim.tenantId,
    key: claim.key,
    requestHash: claim.requestHash,
    response: 'response' in outcome ? outcome.response : null,
    error: 'error' in outcome ? storedErrorOf(outcome.error) : null,
  };
}

const hex = (b: Buffer | null): string | null => (b === null ? null : b.toString('hex'));

/**
 * THE encoder: every column array either path sends, each value encoded once (hashes as hex,
 * metadata as JSON, ...). A path picks the columns its statement takes, in its order.
 */
export function columns(plan: SealedPlan, completions: readonly Completion[]) {
  const a = plan.accounts;
  const m: readonly LinkedMovement[] = plan.movements;
  const c = completions;
  return {
    account: {
      tenantId: a.map((x) => x.before.tenantId),
      expectedBalance: a.map((x) => x.before.balance),
      expectedReserved: a.map((x) => x.before.reserved),
      expectedVersion: a.map((x) => x.before.version),
      expectedAuditSeq: a.map((x) => x.before.auditSeq),
      expectedHead: a.map((x) => hex(x.before.auditHead)),
      balanceDelta: a.map((x) => x.after.balance - x.before.balance),
      reservedDelta: a.map((x) => x.after.reserved - x.before.reserved),
      versionDelta: a.map((x) => x.after.version - x.before.version),
      head: a.map((x) => hex(x.after.auditHead)),
      updatedAt: a.map((x) => x.after.updatedAt),
    },
    movement: {
      id: m.map((x) => x.id),
      tenantId: m.map((x) => x.tenantId),
      type: m.map((x) => x.type),
      amount: m.map((x) => x.amount),
      balanceAfter: m.map((x) => x.balanceAfter),
      reservedAfter: m.map((x) => x.reservedAfter),
      reference: m.map((x) => x.reference),
      metadata: m.map((x) => JSON.stringify(x.metadata)),
      idempotencyKey: m.map((x) => x.idempotencyKey),
      reservationId: m.map((x) => x.reservationId),
      createdAt: m.map((x) => x.createdAt),
      auditSeq: m.map((x) => x.auditSeq),
      prevHash: m.map((x) => x.prevHash.toString('hex')),
      hash: m.map((x) => x.hash.toString('hex')),
      actor: m.map((x) => x.actor),
    },
    completion: {
      tenantId: c.map((x) => x.tenantId),
      key: c.map((x) => x.key),
      requestHash: c.map((x) => hex(x.requestHash ?? null)),
      response: c.map((x) => (x.response ? Buffer.from(x.response).toString('hex') : null)),
      error: c.map((x) => (x.error ? JSON.stringify(x.error) : null)),
    },
  };
}

interface AccountRow {
  tenant_id: string;
  balance: bigint;
  reserved: bigint;
  version: bigint;
  audit_seq: bigint;
  audit_head: Buffer | null;
  updated_at: Date;
}

const stateOf = (r: AccountRow): AccountState => ({
  tenantId: r.tenant_id,
  balance: r.balance,
  reserved: r.reserved,
  version: r.version,
  auditSeq: r.audit_seq,
  auditHead: r.audit_head,
  updatedAt: r.updated_at,
});

/**
 * One transaction's work: the plan made on its locked accounts, the idempotency records to
 * complete, and extra statements to run after the movements are written. Nothing is written
 * before `flush`.
 */
export class UnitOfWork {
  readonly plan: BatchPlan;
  private readonly completions: Completion[] = [];
  private after: ((client: pg.PoolClient) => Promise<void>)[] = [];

  constructor(
    readonly client: pg.PoolClient,
    chain: AuditChain,
    readonly now: Date,
    actor: string,
  ) {
    this.plan = new BatchPlan(chain, now, actor);
  }

  /** Locks the accounts that exist (in tenant order) and takes them into the plan. */
  async lock(tenantIds: Iterable<string>): Promise<void> {
    const wanted = [...new Set(tenantIds)].filter((t) => !this.plan.has(t)).sort();
    if (wanted.length === 0) return;
    const { rows } = await this.client.query<AccountRow>(
      `SELECT tenant_id, balance, reserved, version, audit_seq, audit_head, updated_at
         FROM credit_accounts WHERE tenant_id = ANY($1::text[]) ORDER BY tenant_id FOR UPDATE`,
      [wanted],
    );
    this.plan.take(rows.map(stateOf));
  }

  complete(claim: { tenantId: string; key: string; requestHash?: Buffer }, outcome: { response: Uint8Array } | { error: ServiceError }): void {
    this.completions.push(completion(claim, outcome));
  }

  /** Runs after the movements are written, in the same transaction. */
  then(statement: (client: pg.PoolClient) => Promise<void>): void {
    this.after.push(statement);
  }

  /** Forgets every decided movement and extra statement (a business failure); completions stay. */
  discard(): void {
    this.plan.discard();
    this.after = [];
  }

  /** Writes everything in one statement, then the extra statements. Asserts every row count. */
  async flush(): Promise<void> {
    if (this.plan.decided.length === 0 && this.completions.length === 0) return;
    const sealed = this.plan.seal();
    const moved: SealedPlan = { accounts: sealed.accounts.filter((a: AccountHead) => a.moves > 0), movements: sealed.movements };
    const { account: a, movement: m, completion: c } = columns(moved, this.completions);
    const { rows } = await this.client.query<{ accounts: number; transactions: number; audits: number; keys: number }>(
      `WITH acc AS (
         UPDATE credit_accounts a
            SET balance = a.balance + u.d_balance, reserved = a.reserved + u.d_reserved,
                version = a.version + u.d_version, audit_seq = a.audit_seq + u.d_version,
                audit_head = decode(u.head, 'hex'), updated_at = u.updated_at
           FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::text[], $6::bigint[], $7::timestamptz[])
                AS u(tenant_id, d_balance, d_reserved, d_version, head, expected_version, updated_at)
          WHERE a.tenant_id = u.tenant_id AND a.version = u.expected_version
            AND a.balance + u.d_balance >= 0 AND a.reserved + u.d_reserved >= 0
            AND (a.balance + u.d_balance) - (a.reserved + u.d_reserved) >= 0
         RETURNING 1
       ), mv AS (
         SELECT * FROM unnest($8::uuid[], $9::text[], $10::text[], $11::bigint[], $12::bigint[], $13::bigint[], $14::text[],
                              $15::text[], $16::text[], $17::uuid[], $18::timestamptz[], $19::bigint[], $20::text[], $21::text[],
                              $22::text[])
                       WITH ORDINALITY
                       AS u(id, tenant_id, type, amount, balance_after, reserved_after, reference, metadata, idempotency_key,
                            reservation_id, created_at, audit_seq, prev_hash, hash, actor, ord)
       ), tx AS (
         INSERT INTO credit_transactions (id, tenant_id, type, amount, balance_after, reserved_after, reference, metadata,
                                          idempotency_key, reservation_id, created_at)
         SELECT id, tenant_id, type::credit_transaction_type, amount, balance_after, reserved_after, reference, metadata::jsonb,
                idempotency_key, reservation_id, created_at
           FROM mv ORDER BY ord
         RETURNING 1
       ), au AS (
         INSERT INTO credit_audit_logs (tenant_id, seq, occurred_at, action, amount, balance_after, reserved_after,
                                        transaction_id, reservation_id, idempotency_key, actor, prev_hash, hash)
         SELECT tenant_id, audit_seq, created_at, type, amount, balance_after, reserved_after, id, reservation_id,
                idempotency_key, actor, decode(prev_hash, 'hex'), decode(hash, 'hex')
           FROM mv
         RETURNING 1
       ), ik AS (
         UPDATE credit_idempotency_keys k
            SET state = CASE WHEN u.response IS NULL THEN 'FAILED' ELSE 'SUCCEEDED' END,
                response = decode(u.response, 'hex'), error = u.error::jsonb, completed_at = now()
           FROM unnest($23::text[], $24::text[], $25::text[], $26::text[]) AS u(tenant_id, key, response, error)
          WHERE k.tenant_id = u.tenant_id AND k.key = u.key AND k.state = 'IN_PROGRESS'
         RETURNING 1
       )
       SELECT (SELECT count(*) FROM acc)::int AS accounts, (SELECT count(*) FROM tx)::int AS transactions,
              (SELECT count(*) FROM au)::int AS audits, (SELECT count(*) FROM ik)::int AS keys`,
      [
        a.tenantId,
        a.balanceDelta,
        a.reservedDelta,
        a.versionDelta,
        a.head,
        a.expectedVersion,
        a.updatedAt,
        m.id,
        m.tenantId,
        m.type,
        m.amount,
        m.balanceAfter,
        m.reservedAfter,
        m.reference,
        m.metadata,
        m.idempotencyKey,
        m.reservationId,
        m.createdAt,
        m.auditSeq,
        m.prevHash,
        m.hash,
        m.actor,
        c.tenantId,
        c.key,
        c.response,
        c.error,
      ],
    );
    const counts = rows[0]!;
    invariant(counts.accounts === moved.accounts.length, `expected ${moved.accounts.length} account updates, got ${counts.accounts}`);
    invariant(counts.transactions === m.id.length, 'one transaction row per movement');
    invariant(counts.audits === m.id.length, 'one audit row per movement');
    invariant(counts.keys === this.completions.length, `expected ${this.completions.length} idempotency completions, got ${counts.keys}`);
    for (const statement of this.after) await statement(this.client);
  }
}

/**
 * The consume fast path's write: every account of the plan (moved or not) with the state it was
 * planned from, its movements and its completions, to credits_consume_batch in one round trip.
 * Raises CR001 (a key is used) or CR002 (an account changed) and writes nothing when the plan's
 * premise does not hold.
 */
export async function writeConsumeBatch(
  query: (config: pg.QueryConfig) => Promise<unknown>,
  plan: SealedPlan,
  completions: readonly Completion[],
  options: { readonly now: Date; readonly method: string; readonly idempotencyTtlHours: number },
): Promise<void> {
  // What the function's signature cannot carry: it writes CONSUME rows, without reservations or reserved changes.
  for (const m of plan.movements) {
    invariant(m.type === 'CONSUME', 'the batch function writes consumes only');
    invariant(m.reservationId === null, 'a consume has no reservation');
  }
  for (const a of plan.accounts) invariant(a.after.reserved === a.before.reserved, 'a consume does not change reserved credits');
  // Its records are inserted with their outcome, so each needs the request's fingerprint.
  for (const c of completions) invariant(c.requestHash !== undefined, 'a fast-path completion carries its request hash');
  const { account: a, movement: m, completion: c } = columns(plan, completions);
  await query({
    // Prepared once per connection: each batch then sends only Bind/Execute, and PostgreSQL
    // skips parsing and planning the call (~150 µs of its CPU a batch, ~8 % more consumes/s at c=16).
    // Through PgBouncer in transaction mode this needs max_prepared_statements > 0 (PgBouncer ≥ 1.21).
    name: 'credits_consume_batch',
    text: `SELECT credits_consume_batch($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::text[],
            $7::bigint[], $8::bigint[], $9::text[], $10::timestamptz,
            $11::uuid[], $12::text[], $13::bigint[], $14::bigint[], $15::bigint[], $16::text[], $17::text[], $18::text[],
            $19::timestamptz[], $20::bigint[], $21::text[], $22::text[], $23::text[],
            $24::text[], $25::text[], $26::text, $27::text[], $28::text[], $29::text[], $30::int)`,
    values: [
      a.tenantId,
      a.expectedBalance,
      a.expectedReserved,
      a.expectedVersion,
      a.expectedAuditSeq,
      a.expectedHead,
      a.balanceDelta,
      a.versionDelta,
      a.head,
      options.now,
      m.id,
      m.tenantId,
      m.amount,
      m.balanceAfter,
      m.reservedAfter,
      m.reference,
      m.metadata,
      m.idempotencyKey,
      m.createdAt,
      m.auditSeq,
      m.prevHash,
      m.hash,
      m.actor,
      c.tenantId,
      c.key,
      options.method,
      c.requestHash,
      c.response,
      c.error,
      options.idempotencyTtlHours,
    ],
  });
}
