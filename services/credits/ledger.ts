/**
 * The ledger: every rule about moving credits lives here.
 *
 * Invariants (asserted here before writing, and again by CHECK constraints in
 * migrations/credits/0001_ledger.sql): balance >= 0, reserved >= 0,
 * balance - reserved >= 0, balance <= int64 max; every change is one
 * credit_transactions row and one audit row, written in the same commit as the
 * account update and the idempotency record.
 *
 * Concurrency: a writer locks the account rows it touches (SELECT ... FOR
 * UPDATE, in tenant order so two writers never deadlock), decides in memory,
 * then applies everything in ONE statement whose account UPDATE is itself
 * conditional (expected version, non-negative results) and whose affected row
 * count is asserted. The row lock serialises writers per tenant, which is what
 * the audit chain needs (its head is on the same row), works unchanged through
 * PgBouncer transaction pooling (no session state), and, unlike
 * pg_try_advisory_xact_lock, never turns contention into failed calls.
 */
import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import {
  type Account,
  BatchConsumeResponse,
  type BatchConsumeResult,
  CommitReservationResponse,
  ConsumeResponse,
  type Reservation,
  ReservationState,
  ReleaseReservationResponse,
  ReserveResponse,
  type Transaction,
  TopUpResponse,
  TransactionType,
} from '../../gen/shieldx/credits/v1/credits';
import { withTransaction } from '../../platform/db';
import type { Logger } from '../../platform/logger';
import { Code, ServiceError } from '../../platform/service-error';
import { checkInvariantsSinceCheckpoints, countInvariantViolations } from './store/ledger-invariants';
import { AuditChain, type AuditEntry, verifyAuditChains, verifyAuditChainsSinceCheckpoints, type VerifyResult } from './domain/audit-chain';
import type { BalanceCache, CachedAccount } from './store/balance-cache';
import { GateFullError, type Release, TenantGate } from './tenant-gate';
import {
  balanceLimitExceeded,
  batchAborted,
  captureAboveHold,
  databaseUnavailable,
  insufficientCredits,
  reservationExpired,
  reservationFinalized,
  reservationNotFound,
  tenantNotFound,
  writersOverloaded,
} from './errors';
import { type DependencyBreaker, isBreakerRejection, isDatabaseUnavailable } from './store/breakers';
import type { CreditsMetrics } from './credits-metrics';
import {
  claimKeys,
  type IdempotencyRecord,
  isStorableFailure,
  type KeyClaim,
  serviceErrorOf,
  storedErrorOf,
  type StoredError,
} from './store/idempotency';
import type { MaskedCard, PaymentInput, PaymentKeyring } from './domain/payment-crypto';

export const INT64_MAX = 9_223_372_036_854_775_807n;

export type TxType = 'CONSUME' | 'TOP_UP' | 'RESERVE' | 'CAPTURE' | 'RELEASE' | 'EXPIRE';

const TX_TYPE_TO_PROTO: Record<TxType, TransactionType> = {
  CONSUME: TransactionType.TRANSACTION_TYPE_CONSUME,
  TOP_UP: TransactionType.TRANSACTION_TYPE_TOP_UP,
  RESERVE: TransactionType.TRANSACTION_TYPE_RESERVE,
  CAPTURE: TransactionType.TRANSACTION_TYPE_CAPTURE,
  RELEASE: TransactionType.TRANSACTION_TYPE_RELEASE,
  EXPIRE: TransactionType.TRANSACTION_TYPE_EXPIRE,
};
export const PROTO_TO_TX_TYPE = new Map<TransactionType, TxType>(
  Object.entries(TX_TYPE_TO_PROTO).map(([k, v]) => [v, k as TxType]),
);

const RESERVATION_STATE_TO_PROTO: Record<string, ReservationState> = {
  HELD: ReservationState.RESERVATION_STATE_HELD,
  COMMITTED: ReservationState.RESERVATION_STATE_COMMITTED,
  RELEASED: ReservationState.RESERVATION_STATE_RELEASED,
  EXPIRED: ReservationState.RESERVATION_STATE_EXPIRED,
};

export const METHOD = {
  consume: '/shieldx.credits.v1.CreditsService/Consume',
  topUp: '/shieldx.credits.v1.CreditsService/TopUp',
  reserve: '/shieldx.credits.v1.CreditsService/Reserve',
  commitReservation: '/shieldx.credits.v1.CreditsService/CommitReservation',
  releaseReservation: '/shieldx.credits.v1.CreditsService/ReleaseReservation',
  batchConsume: '/shieldx.credits.v1.CreditsService/BatchConsume',
} as const;

export interface AccountSnapshot {
  readonly tenantId: string;
  readonly balance: bigint;
  readonly reserved: bigint;
  readonly version: bigint;
  readonly updatedAt: Date;
}

interface LockedAccount {
  readonly tenantId: string;
  balance: bigint;
  reserved: bigint;
  version: bigint;
  auditSeq: bigint;
  updatedAt: Date;
  readonly lockedBalance: bigint;
  readonly lockedReserved: bigint;
  readonly lockedVersion: bigint;
  readonly lockedAuditSeq: bigint;
  readonly lockedAuditHead: Buffer | null;
  /** Chain head after this unit's movements (set when the unit is planned). */
  auditHead: Buffer | null;
}

/**
 * An account's full state as of a commit: what the consume fast path decides
 * from without reading PostgreSQL (the database re-checks it under the row lock).
 */
export interface KnownAccount {
  readonly tenantId: string;
  readonly balance: bigint;
  readonly reserved: bigint;
  readonly version: bigint;
  readonly auditSeq: bigint;
  readonly auditHead: Buffer | null;
  readonly updatedAt: Date;
}

interface Plan {
  readonly heads: { tenantId: string; balanceDelta: bigint; reservedDelta: bigint; versionDelta: bigint; head: string; expected: bigint; updatedAt: Date }[];
  readonly movements: readonly Movement[];
  readonly auditPrev: ReadonlyMap<string, string>;
  readonly auditHash: ReadonlyMap<string, string>;
  readonly completions: readonly Completion[];
}

/** The connection of a unit that is not run inside a transaction (the consume fast path). */
const NO_CONNECTION = {
  query: () => {
    throw new Error('this unit of work has no connection');
  },
} as unknown as pg.PoolClient;

export interface Movement {
  readonly id: string;
  readonly tenantId: string;
  readonly type: TxType;
  readonly amount: bigint;
  readonly balanceAfter: bigint;
  readonly reservedAfter: bigint;
  readonly reference: string;
  readonly metadata: Record<string, string>;
  readonly idempotencyKey: string;
  readonly reservationId: string | null;
  readonly createdAt: Date;
  readonly auditSeq: bigint;
  readonly actor: string;
  readonly account: AccountSnapshot;
}

export interface MoveSpec {
  readonly amount: bigint;
  readonly balanceDelta: bigint;
  readonly reservedDelta: bigint;
  readonly reference?: string;
  readonly metadata?: Record<string, string>;
  readonly idempotencyKey?: string;
  readonly reservationId?: string | null;
  /** Who caused it (API key id, or a system job); defaults to the unit's actor. */
  readonly actor?: string;
}

export function accountProto(a: AccountSnapshot): Account {
  return { tenantId: a.tenantId, balance: a.balance, reserved: a.reserved, available: a.balance - a.reserved, version: a.version, updatedAt: a.updatedAt };
}

export function transactionProto(m: Omit<Movement, 'auditSeq' | 'actor' | 'account'>): Transaction {
  return {
    id: m.id,
    tenantId: m.tenantId,
    type: TX_TYPE_TO_PROTO[m.type],
    amount: m.amount,
    balanceAfter: m.balanceAfter,
    reservedAfter: m.reservedAfter,
    reference: m.reference,
    metadata: { ...m.metadata },
    idempotencyKey: m.idempotencyKey,
    reservationId: m.reservationId ?? '',
    createdAt: m.createdAt,
  };
}

function invariant(condition: boolean, message: string): asserts condition {
  if (!condition) throw new Error(`ledger invariant violated: ${message}`);
}

interface Completion {
  readonly tenantId: string;
  readonly key: string;
  /** The request's fingerprint, when the record is inserted with its outcome (the fast path). */
  readonly requestHash: Buffer | undefined;
  readonly response: Uint8Array | null;
  readonly error: StoredError | null;
}

/**
 * One transaction's work: locked accounts, the movements decided on them, the
 * idempotency records to complete, and extra statements to run after the
 * movements are written. Nothing is written before `flush`.
 */
export class UnitOfWork {
  private readonly accounts = new Map<string, LockedAccount>();
  private movements: Movement[] = [];
  private readonly completions: Completion[] = [];
  private after: ((client: pg.PoolClient) => Promise<void>)[] = [];

  constructor(
    readonly client: pg.PoolClient,
    private readonly chain: AuditChain,
    readonly now: Date,
    readonly actor: string,
  ) {}

  /** Locks the accounts (tenant order) and returns how many exist. */
  async lock(tenantIds: Iterable<string>): Promise<void> {
    const wanted = [...new Set(tenantIds)].filter((t) => !this.accounts.has(t)).sort();
    if (wanted.length === 0) return;
    const { rows } = await this.client.query<{
      tenant_id: string;
      balance: bigint;
      reserved: bigint;
      version: bigint;
      audit_seq: bigint;
      audit_head: Buffer | null;
      updated_at: Date;
    }>(
      `SELECT tenant_id, balance, reserved, version, audit_seq, audit_head, updated_at
         FROM credit_accounts WHERE tenant_id = ANY($1::text[]) ORDER BY tenant_id FOR UPDATE`,
      [wanted],
    );
    for (const r of rows) {
      this.accounts.set(r.tenant_id, {
        tenantId: r.tenant_id,
        balance: r.balance,
        reserved: r.reserved,
        version: r.version,
        auditSeq: r.audit_seq,
        updatedAt: r.updated_at,
        lockedBalance: r.balance,
        lockedReserved: r.reserved,
        lockedVersion: r.version,
        lockedAuditSeq: r.audit_seq,
        lockedAuditHead: r.audit_head,
        auditHead: r.audit_head,
      });
    }
  }

  /**
   * Takes accounts as known from an earlier commit instead of locking them (the
   * fast path): whatever is decided on them holds only if PostgreSQL still has
   * exactly these states, which the fast path's function checks under the lock.
   */
  adopt(known: Iterable<KnownAccount>): void {
    for (const k of known) {
      this.accounts.set(k.tenantId, {
        tenantId: k.tenantId,
        balance: k.balance,
        reserved: k.reserved,
        version: k.version,
        auditSeq: k.auditSeq,
        updatedAt: k.updatedAt,
        lockedBalance: k.balance,
        lockedReserved: k.reserved,
        lockedVersion: k.version,
        lockedAuditSeq: k.auditSeq,
        lockedAuditHead: k.auditHead,
        auditHead: k.auditHead,
      });
    }
  }

  /** Every account of this unit as it is after the unit's movements (valid once planned/flushed). */
  finalStates(): KnownAccount[] {
    return [...this.accounts.values()].map((a) => ({
      tenantId: a.tenantId,
      balance: a.balance,
      reserved: a.reserved,
      version: a.version,
      auditSeq: a.auditSeq,
      auditHead: a.auditHead,
      updatedAt: a.updatedAt,
    }));
  }

  /** The locked account as changed so far in this unit, or undefined if it does not exist. */
  account(tenantId: string): AccountSnapshot | undefined {
    const a = this.accounts.get(tenantId);
    return a && { tenantId, balance: a.balance, reserved: a.reserved, version: a.version, updatedAt: a.updatedAt };
  }

  /** Records one movement on a locked account; asserts every invariant. */
  move(tenantId: string, type: TxType, spec: MoveSpec): Movement {
    const a = this.accounts.get(tenantId);
    invariant(a !== undefined, `account ${tenantId} must be locked before it moves`);
    invariant(spec.amount > 0n && spec.amount <= INT64_MAX, 'amount must be positive and fit int64');
    const balance = a.balance + spec.balanceDelta;
    const reserved = a.reserved + spec.reservedDelta;
    invariant(balance >= 0n && balance <= INT64_MAX, 'balance must stay within 0..int64 max');
    invariant(reserved >= 0n, 'reserved must stay non-negative');
    invariant(balance - reserved >= 0n, 'available must stay non-negative');
    a.balance = balance;
    a.reserved = reserved;
    a.version += 1n;
    a.auditSeq += 1n;
    a.updatedAt = this.now;
    const movement: Movement = {
      id: randomUUID(),
      tenantId,
      type,
      amount: spec.amount,
      balanceAfter: balance,
      reservedAfter: reserved,
      reference: spec.reference ?? '',
      metadata: spec.metadata ?? {},
      idempotencyKey: spec.idempotencyKey ?? '',
      reservationId: spec.reservationId ?? null,
      createdAt: this.now,
      auditSeq: a.auditSeq,
      actor: spec.actor ?? this.actor,
      account: { tenantId, balance, reserved, version: a.version, updatedAt: this.now },
    };
    this.movements.push(movement);
    return movement;
  }

  complete(claim: { tenantId: string; key: string; requestHash?: Buffer }, outcome: { response: Uint8Array } | { error: ServiceError }): void {
    this.completions.push({
      tenantId: claim.tenantId,
      key: claim.key,
      requestHash: claim.requestHash,
      response: 'response' in outcome ? outcome.response : null,
      error: 'error' in outcome ? storedErrorOf(outcome.error) : null,
    });
  }

  /** Runs after the movements are written, in the same transaction. */
  then(statement: (client: pg.PoolClient) => Promise<void>): void {
    this.after.push(statement);
  }

  /** Forgets every decided movement (a business failure): accounts return to their locked state. */
  discard(): void {
    for (const a of this.accounts.values()) {
      a.balance = a.lockedBalance;
      a.reserved = a.lockedReserved;
      a.version = a.lockedVersion;
      a.auditSeq = a.lockedAuditSeq;
      a.auditHead = a.lockedAuditHead;
    }
    this.movements = [];
    this.after = [];
  }

  get committedMovements(): readonly Movement[] {
    return this.movements;
  }

  /** Final state of every account that moved (for the cache). */
  changedAccounts(): CachedAccount[] {
    const out: CachedAccount[] = [];
    for (const a of this.accounts.values()) {
      if (a.version !== a.lockedVersion) out.push({ tenantId: a.tenantId, balance: a.balance, reserved: a.reserved, version: a.version, updatedAt: a.updatedAt });
    }
    return out;
  }

  /**
   * Links the audit rows of every movement (HMAC chain from each account's locked
   * head) and computes the per-account deltas: everything a write needs.
   */
  plan(): Plan {
    const byTenant = new Map<string, Movement[]>();
    for (const m of this.movements) {
      const list = byTenant.get(m.tenantId) ?? [];
      list.push(m);
      byTenant.set(m.tenantId, list);
    }
    const auditPrev = new Map<string, string>();
    const auditHash = new Map<string, string>();
    const heads: Plan['heads'] = [];
    for (const [tenantId, list] of byTenant) {
      const a = this.accounts.get(tenantId)!;
      const entries: AuditEntry[] = list.map((m) => ({
        tenantId,
        seq: m.auditSeq,
        occurredAt: m.createdAt,
        action: m.type,
        amount: m.amount,
        balanceAfter: m.balanceAfter,
        reservedAfter: m.reservedAfter,
        transactionId: m.id,
        reservationId: m.reservationId,
        idempotencyKey: m.idempotencyKey,
        actor: m.actor,
      }));
      const rows = this.chain.link({ seq: a.lockedAuditSeq, hash: a.lockedAuditHead }, tenantId, entries);
      rows.forEach((row, i) => {
        auditPrev.set(list[i]!.id, row.prevHash.toString('hex'));
        auditHash.set(list[i]!.id, row.hash.toString('hex'));
      });
      const last = list[list.length - 1]!;
      invariant(last.account.version - a.lockedVersion === BigInt(list.length), 'one version per movement');
      a.auditHead = rows[rows.length - 1]!.hash;
      heads.push({
        tenantId,
        balanceDelta: a.balance - a.lockedBalance,
        reservedDelta: a.reserved - a.lockedReserved,
        versionDelta: BigInt(list.length),
        head: rows[rows.length - 1]!.hash.toString('hex'),
        expected: a.lockedVersion,
        updatedAt: this.now,
      });
    }
    return { heads, movements: this.movements, auditPrev, auditHash, completions: this.completions };
  }

  /** Writes everything in one statement, then the extra statements. Asserts every row count. */
  async flush(): Promise<void> {
    if (this.movements.length === 0 && this.completions.length === 0) return;
    const { heads, movements: m, auditPrev, auditHash, completions: c } = this.plan();
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
        heads.map((h) => h.tenantId),
        heads.map((h) => h.balanceDelta),
        heads.map((h) => h.reservedDelta),
        heads.map((h) => h.versionDelta),
        heads.map((h) => h.head),
        heads.map((h) => h.expected),
        heads.map((h) => h.updatedAt),
        m.map((x) => x.id),
        m.map((x) => x.tenantId),
        m.map((x) => x.type),
        m.map((x) => x.amount),
        m.map((x) => x.balanceAfter),
        m.map((x) => x.reservedAfter),
        m.map((x) => x.reference),
        m.map((x) => JSON.stringify(x.metadata)),
        m.map((x) => x.idempotencyKey),
        m.map((x) => x.reservationId),
        m.map((x) => x.createdAt),
        m.map((x) => x.auditSeq),
        m.map((x) => auditPrev.get(x.id)!),
        m.map((x) => auditHash.get(x.id)!),
        m.map((x) => x.actor),
        c.map((x) => x.tenantId),
        c.map((x) => x.key),
        c.map((x) => (x.response ? Buffer.from(x.response).toString('hex') : null)),
        c.map((x) => (x.error ? JSON.stringify(x.error) : null)),
      ],
    );
    const counts = rows[0]!;
    invariant(counts.accounts === heads.length, `expected ${heads.length} account updates, got ${counts.accounts}`);
    invariant(counts.transactions === m.length && counts.audits === m.length, 'one transaction and one audit row per movement');
    invariant(counts.keys === c.length, `expected ${c.length} idempotency completions, got ${counts.keys}`);
    for (const statement of this.after) await statement(this.client);
  }
}


// ---------------------------------------------------------------------------
// Pure planning of debits (shared by the consume batcher and BatchConsume).

export interface DebitItem {
  readonly tenantId: string;
  readonly amount: bigint;
}

export type DebitPlan = { readonly ok: true } | { readonly ok: false; readonly error: ServiceError };

/**
 * Decides, in order, which debits fit: each item sees the available credits
 * left by the items before it on the same tenant; a failing item does not stop
 * later (smaller) ones.
 */
export function planDebits(accountOf: (tenantId: string) => AccountSnapshot | undefined, items: readonly DebitItem[]): DebitPlan[] {
  const available = new Map<string, bigint>();
  return items.map((item) => {
    let left = available.get(item.tenantId);
    if (left === undefined) {
      const account = accountOf(item.tenantId);
      if (!account) return { ok: false, error: tenantNotFound(item.tenantId) };
      left = account.balance - account.reserved;
    }
    if (left < item.amount) {
      available.set(item.tenantId, left);
      return { ok: false, error: insufficientCredits(left, item.amount) };
    }
    available.set(item.tenantId, left - item.amount);
    return { ok: true };
  });
}

// ---------------------------------------------------------------------------

export interface LedgerDeps {
  readonly pool: pg.Pool;
  readonly db: DependencyBreaker;
  readonly cache: BalanceCache;
  readonly metrics: CreditsMetrics;
  readonly chain: AuditChain;
  readonly keyring: PaymentKeyring;
  readonly logger: Logger;
  readonly idempotencyTtlHours: number;
}

export interface IdempotentCall {
  readonly tenantId: string;
  readonly key: string;
  readonly requestHash: Buffer;
  /** API key id of the caller (audit actor). */
  readonly actor: string;
}

export interface ConsumeItem extends IdempotentCall {
  readonly amount: bigint;
  readonly reference: string;
  readonly metadata: Record<string, string>;
}

export type ConsumeOutcome = { readonly response: ConsumeResponse } | { readonly error: ServiceError };

interface Codec<R> {
  encode(message: R): { finish(): Uint8Array };
  decode(bytes: Uint8Array): R;
}

type TxResult<R> = { response: R } | { failure: ServiceError } | { replay: IdempotencyRecord };

const RETRYABLE_SQLSTATES = new Set(['40P01', '40001']);
const TRANSACTION_ATTEMPTS_MAX = 3;

interface ReservationRow {
  id: string;
  tenant_id: string;
  amount: bigint;
  captured_amount: bigint;
  state: string;
  reference: string;
  expires_at: Date;
  created_at: Date;
  updated_at: Date;
}

function reservationProto(r: ReservationRow): Reservation {
  return {
    id: r.id,
    tenantId: r.tenant_id,
    amount: r.amount,
    capturedAmount: r.captured_amount,
    state: RESERVATION_STATE_TO_PROTO[r.state] ?? ReservationState.RESERVATION_STATE_UNSPECIFIED,
    reference: r.reference,
    expiresAt: r.expires_at,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
  };
}

/** Bound on the account states remembered for the consume fast path (oldest forgotten first). */
const KNOWN_ACCOUNTS_MAX = 10_000;

/** SQLSTATEs raised by credits_consume_batch when the fast path's premise does not hold. */
const FAST_PATH_MISSES = new Set(['CR001', 'CR002', '40P01', '40001']);

export class Ledger {
  /**
   * Account states as of this process's last commit on each account: the consume
   * fast path decides from them, and PostgreSQL re-checks them under the row lock.
   * A hint only: a stale entry costs one fallback to the transactional path.
   */
  private readonly known = new Map<string, KnownAccount>();

  /**
   * One writer per tenant in this replica (tenant-gate.ts): the consume batcher takes its
   * tenants here, and execute() waits here, so neither makes the other's decision stale.
   */
  readonly gate = new TenantGate();

  /** credits_transactions_total's series bound once per type (a label object per movement otherwise). */
  private readonly transactionsByType: Record<TxType, { inc(): void }>;

  constructor(private readonly deps: LedgerDeps) {
    const types = Object.keys(TX_TYPE_TO_PROTO) as TxType[];
    this.transactionsByType = Object.fromEntries(
      types.map((type) => [type, deps.metrics.transactions.labels({ type: type.toLowerCase() })]),
    ) as Record<TxType, { inc(): void }>;
  }

  private remember(states: readonly KnownAccount[]): void {
    for (const state of states) {
      const previous = this.known.get(state.tenantId);
      if (previous && previous.version > state.version) continue;
      this.known.delete(state.tenantId);
      this.known.set(state.tenantId, state);
    }
    while (this.known.size > KNOWN_ACCOUNTS_MAX) this.known.delete(this.known.keys().next().value!);
  }

  // --- PostgreSQL through the breaker -------------------------------------------------

  /** Maps "PostgreSQL is not there" (breaker open, refused, dropped) to DATABASE_UNAVAILABLE. */
  private async guard<T>(work: () => Promise<T>): Promise<T> {
    try {
      return await this.deps.db.run(work);
    } catch (error) {
      if (error instanceof ServiceError) throw error;
      if (isBreakerRejection(error) || isDatabaseUnavailable(error)) throw databaseUnavailable(error);
      throw error;
    }
  }

  /** Runs a read against PostgreSQL through the breaker. */
  guardRead<T>(work: () => Promise<T>): Promise<T> {
    return this.guard(work);
  }

  async query<R extends pg.QueryResultRow>(sql: string, params: unknown[] = []): Promise<pg.QueryResult<R>> {
    return this.guard(() => this.deps.pool.query<R>(sql, params));
  }

  /** One transaction, retried on deadlock / serialization failure (bounded). */
  private async transaction<T>(fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        // withTransaction destroys a connection that broke mid-transaction instead of reusing it.
        return await this.guard(() => withTransaction(this.deps.pool, fn));
      } catch (error) {
        const code = (error as { code?: string }).code;
        if (attempt < TRANSACTION_ATTEMPTS_MAX && code !== undefined && RETRYABLE_SQLSTATES.has(code)) continue;
        throw error;
      }
    }
  }

  /** After a commit: metrics and the write-through cache (never fails the call). */
  private async publish(unit: UnitOfWork, finalStates: readonly KnownAccount[] = unit.finalStates(), committed?: () => void): Promise<void> {
    this.remember(finalStates);
    // The next batch on these accounts may now be decided (from the states just remembered).
    committed?.();
    for (const m of unit.committedMovements) this.transactionsByType[m.type].inc();
    await this.deps.cache.putMany(unit.changedAccounts());
  }

  private replay<R extends { replayed: boolean }>(record: IdempotencyRecord, method: string, hash: Buffer, codec: Codec<R>): R {
    if (record.method !== method || !record.requestHash.equals(hash)) throw ServiceError.idempotencyKeyReused(record.key);
    if (record.state === 'SUCCEEDED' && record.response) return { ...codec.decode(record.response), replayed: true };
    if (record.state === 'FAILED' && record.error) throw serviceErrorOf(record.error, true);
    throw ServiceError.operationInProgress();
  }

  /**
   * Runs one idempotent mutating call: claim the key, run `body` (which locks,
   * decides and records movements), store the response or business failure,
   * write everything, commit; or replay what an earlier call stored.
   */
  private async execute<R extends { replayed: boolean }>(
    call: IdempotentCall,
    method: string,
    codec: Codec<R>,
    body: (unit: UnitOfWork) => Promise<R>,
    /** The accounts `body` writes (held in this replica's gate until their states are remembered). */
    tenants: readonly string[] = [call.tenantId],
  ): Promise<R> {
    let release: Release;
    try {
      release = await this.gate.acquire(tenants);
    } catch (error) {
      if (!(error instanceof GateFullError)) throw error;
      throw writersOverloaded();
    }
    try {
      return await this.executeHeld(call, method, codec, body, release);
    } finally {
      release();
    }
  }

  private async executeHeld<R extends { replayed: boolean }>(
    call: IdempotentCall,
    method: string,
    codec: Codec<R>,
    body: (unit: UnitOfWork) => Promise<R>,
    release: Release,
  ): Promise<R> {
    let unit: UnitOfWork | undefined;
    const claim: KeyClaim = { tenantId: call.tenantId, key: call.key, method, requestHash: call.requestHash };
    const result = await this.transaction<TxResult<R>>(async (client) => {
      unit = undefined;
      const work = new UnitOfWork(client, this.deps.chain, new Date(), call.actor);
      const [existing] = await claimKeys(client, [claim], this.deps.idempotencyTtlHours);
      if (existing) return { replay: existing };
      try {
        const response = await body(work);
        work.complete(claim, { response: codec.encode(response).finish() });
        await work.flush();
        unit = work;
        return { response };
      } catch (error) {
        if (!(error instanceof ServiceError) || !isStorableFailure(error)) throw error;
        work.discard();
        work.complete(claim, { error });
        await work.flush();
        unit = work;
        return { failure: error };
      }
    });
    // The states are remembered before the cache write: the gate may let the next batch decide from them.
    if (unit) await this.publish(unit, undefined, release);
    if ('replay' in result) return this.replay(result.replay, method, call.requestHash, codec);
    if ('failure' in result) throw result.failure;
    return result.response;
  }

  // --- Consume (group commit) ------------------------------------------------------------

  /**
   * Applies many Consume calls in one transaction: one key-claim statement, one
   * lock statement, one write statement. Each item has its own idempotency key
   * and its own outcome; one failing item does not fail the others. Callers
   * must not put two items with the same (tenant, key) in one call.
   */
  async consumeMany(items: readonly ConsumeItem[], committed?: () => void): Promise<ConsumeOutcome[]> {
    const tenants = [...new Set(items.map((i) => i.tenantId))];
    const known = tenants.map((t) => this.known.get(t));
    if (known.every((k) => k !== undefined)) {
      try {
        const outcomes = await this.consumeFast(items, known as KnownAccount[], committed);
        this.deps.metrics.consumeBatches.inc({ path: 'fast' });
        return outcomes;
      } catch (error) {
        // Whatever happened, these states can no longer be trusted.
        for (const t of tenants) this.known.delete(t);
        const code = (error as { code?: unknown }).code;
        if (!(typeof code === 'string' && FAST_PATH_MISSES.has(code))) throw error;
        this.deps.metrics.consumeBatches.inc({ path: 'fallback' });
        return this.consumeLocked(items, committed);
      }
    }
    this.deps.metrics.consumeBatches.inc({ path: 'transactional' });
    return this.consumeLocked(items, committed);
  }

  /**
   * Decides every fresh item of a consume batch on the unit's accounts (in order;
   * a failing item does not stop the others) and records its movement and its
   * idempotency completion; items with an existing record replay it.
   */
  private decideConsumes(work: UnitOfWork, items: readonly ConsumeItem[], existing: readonly (IdempotencyRecord | null)[]): ConsumeOutcome[] {
    const out: ConsumeOutcome[] = new Array(items.length);
    const fresh = items.map((_, i) => i).filter((i) => existing[i] === null);
    const plans = planDebits((t) => work.account(t), fresh.map((i) => items[i]!));
    fresh.forEach((i, k) => {
      const item = items[i]!;
      const plan = plans[k]!;
      if (!plan.ok) {
        work.complete(item, { error: plan.error });
        out[i] = { error: plan.error };
        return;
      }
      const movement = work.move(item.tenantId, 'CONSUME', {
        amount: item.amount,
        balanceDelta: -item.amount,
        reservedDelta: 0n,
        reference: item.reference,
        metadata: item.metadata,
        idempotencyKey: item.key,
        actor: item.actor,
      });
      const response: ConsumeResponse = { transaction: transactionProto(movement), account: accountProto(movement.account), replayed: false };
      work.complete(item, { response: ConsumeResponse.encode(response).finish() });
      out[i] = { response };
    });
    items.forEach((item, i) => {
      const record = existing[i];
      if (!record) return;
      try {
        out[i] = { response: this.replay(record, METHOD.consume, item.requestHash, ConsumeResponse) };
      } catch (error) {
        out[i] = { error: ServiceError.from(error) };
      }
    });
    return out;
  }

  /**
   * Fast path: one round trip, no explicit transaction. Decides from the states
   * this process committed last and sends every row to credits_consume_batch
   * (migrations/credits/0002), which writes them only if each account is still
   * exactly in that state (checked under the row lock) and no key is used yet;
   * otherwise it raises and nothing is written.
   */
  private async consumeFast(items: readonly ConsumeItem[], known: readonly KnownAccount[], committed?: () => void): Promise<ConsumeOutcome[]> {
    const work = new UnitOfWork(NO_CONNECTION, this.deps.chain, new Date(), '');
    work.adopt(known);
    const out = this.decideConsumes(work, items, items.map(() => null));
    const { movements: m, auditPrev, auditHash, completions: c } = work.plan();
    const finalStates = work.finalStates();
    const after = new Map(finalStates.map((a) => [a.tenantId, a]));
    const hex = (b: Buffer | null) => (b === null ? null : b.toString('hex'));
    await this.guard(() =>
      // A miss (CR001/CR002, by design) keeps the connection: createPool's pool.query (platform/db.ts).
      this.deps.pool.query({
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
          known.map((k) => k.tenantId),
          known.map((k) => k.balance),
          known.map((k) => k.reserved),
          known.map((k) => k.version),
          known.map((k) => k.auditSeq),
          known.map((k) => hex(k.auditHead)),
          known.map((k) => after.get(k.tenantId)!.balance - k.balance),
          known.map((k) => after.get(k.tenantId)!.version - k.version),
          known.map((k) => hex(after.get(k.tenantId)!.auditHead)),
          work.now,
          m.map((x) => x.id),
          m.map((x) => x.tenantId),
          m.map((x) => x.amount),
          m.map((x) => x.balanceAfter),
          m.map((x) => x.reservedAfter),
          m.map((x) => x.reference),
          m.map((x) => JSON.stringify(x.metadata)),
          m.map((x) => x.idempotencyKey),
          m.map((x) => x.createdAt),
          m.map((x) => x.auditSeq),
          m.map((x) => auditPrev.get(x.id)!),
          m.map((x) => auditHash.get(x.id)!),
          m.map((x) => x.actor),
          c.map((x) => x.tenantId),
          c.map((x) => x.key),
          METHOD.consume,
          c.map((x) => x.requestHash!.toString('hex')),
          c.map((x) => (x.response ? Buffer.from(x.response).toString('hex') : null)),
          c.map((x) => (x.error ? JSON.stringify(x.error) : null)),
          this.deps.idempotencyTtlHours,
        ],
      }),
    );
    await this.publish(work, finalStates, committed);
    return out;
  }

  /** The transactional path: claim the keys, lock the accounts, decide, write, commit. */
  private async consumeLocked(items: readonly ConsumeItem[], committed?: () => void): Promise<ConsumeOutcome[]> {
    let unit: UnitOfWork | undefined;
    const claims: KeyClaim[] = items.map((i) => ({ tenantId: i.tenantId, key: i.key, method: METHOD.consume, requestHash: i.requestHash }));
    const outcomes = await this.transaction(async (client) => {
      unit = undefined;
      const work = new UnitOfWork(client, this.deps.chain, new Date(), '');
      const existing = await claimKeys(client, claims, this.deps.idempotencyTtlHours);
      await work.lock(items.filter((_, i) => existing[i] === null).map((i) => i.tenantId));
      const out = this.decideConsumes(work, items, existing);
      await work.flush();
      unit = work;
      return out;
    });
    if (unit) await this.publish(unit, undefined, committed);
    return outcomes;
  }

  // --- TopUp -----------------------------------------------------------------------------

  async topUp(
    call: IdempotentCall & { amount: bigint; reference: string; metadata: Record<string, string>; payment: PaymentInput; masked: MaskedCard },
  ): Promise<TopUpResponse> {
    const { tenantId, amount } = call;
    return this.execute(call, METHOD.topUp, TopUpResponse, async (unit) => {
      // The first top-up opens the account.
      await unit.client.query('INSERT INTO credit_accounts (tenant_id) VALUES ($1) ON CONFLICT (tenant_id) DO NOTHING', [tenantId]);
      await unit.lock([tenantId]);
      const account = unit.account(tenantId)!;
      if (account.balance > INT64_MAX - amount) {
        throw balanceLimitExceeded(account.balance);
      }
      const movement = unit.move(tenantId, 'TOP_UP', {
        amount,
        balanceDelta: amount,
        reservedDelta: 0n,
        reference: call.reference,
        metadata: call.metadata,
        idempotencyKey: call.key,
      });
      const encrypted = this.deps.keyring.encrypt(call.payment, tenantId, movement.id);
      unit.then(async (client) => {
        await client.query(
          `INSERT INTO credit_payments (transaction_id, tenant_id, key_id, nonce, ciphertext, auth_tag, card_last4, card_brand, expiry_month, expiry_year)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
          [movement.id, tenantId, encrypted.keyId, encrypted.nonce, encrypted.ciphertext, encrypted.authTag, call.masked.cardLast4, call.masked.cardBrand, call.masked.expiryMonth, call.masked.expiryYear],
        );
      });
      return { transaction: transactionProto(movement), account: accountProto(movement.account), payment: { ...call.masked }, replayed: false };
    });
  }

  // --- Reservations ----------------------------------------------------------------------

  async reserve(call: IdempotentCall & { amount: bigint; ttlMs: number; reference: string; metadata: Record<string, string> }): Promise<ReserveResponse> {
    const { tenantId, amount } = call;
    return this.execute(call, METHOD.reserve, ReserveResponse, async (unit) => {
      await unit.lock([tenantId]);
      const account = unit.account(tenantId);
      if (!account) throw tenantNotFound(tenantId);
      if (account.balance - account.reserved < amount) throw insufficientCredits(account.balance - account.reserved, amount);
      const id = randomUUID();
      const movement = unit.move(tenantId, 'RESERVE', {
        amount,
        balanceDelta: 0n,
        reservedDelta: amount,
        reference: call.reference,
        metadata: call.metadata,
        idempotencyKey: call.key,
        reservationId: id,
      });
      const row: ReservationRow = {
        id,
        tenant_id: tenantId,
        amount,
        captured_amount: 0n,
        state: 'HELD',
        reference: call.reference,
        expires_at: new Date(unit.now.getTime() + call.ttlMs),
        created_at: unit.now,
        updated_at: unit.now,
      };
      unit.then(async (client) => {
        await client.query(
          `INSERT INTO credit_reservations (id, tenant_id, amount, state, reference, metadata, expires_at, created_at, updated_at)
           VALUES ($1, $2, $3, 'HELD', $4, $5::jsonb, $6, $7, $7)`,
          [id, tenantId, amount, call.reference, JSON.stringify(call.metadata), row.expires_at, unit.now],
        );
      });
      return { reservation: reservationProto(row), account: accountProto(movement.account), replayed: false };
    });
  }

  /** Locks the account, then the reservation (the order every writer uses). */
  private async lockReservation(unit: UnitOfWork, tenantId: string, reservationId: string): Promise<ReservationRow> {
    await unit.lock([tenantId]);
    if (!unit.account(tenantId)) throw reservationNotFound(reservationId);
    const { rows } = await unit.client.query<ReservationRow>(
      `SELECT id, tenant_id, amount, captured_amount, state::text AS state, reference, expires_at, created_at, updated_at
         FROM credit_reservations WHERE id = $1 AND tenant_id = $2 FOR UPDATE`,
      [reservationId, tenantId],
    );
    const row = rows[0];
    if (!row) throw reservationNotFound(reservationId);
    if (row.state === 'EXPIRED') throw reservationExpired(reservationId);
    if (row.state !== 'HELD') throw reservationFinalized(reservationId, row.state);
    // Past its TTL but not yet swept: as good as expired (the sweeper releases the hold).
    if (row.expires_at.getTime() <= unit.now.getTime()) throw reservationExpired(reservationId);
    return row;
  }

  private finalize(unit: UnitOfWork, row: ReservationRow, state: 'COMMITTED' | 'RELEASED' | 'EXPIRED', captured: bigint): ReservationRow {
    const updated = { ...row, state, captured_amount: captured, updated_at: unit.now };
    unit.then(async (client) => {
      const result = await client.query(
        `UPDATE credit_reservations SET state = $2::credit_reservation_state, captured_amount = $3, updated_at = $4
          WHERE id = $1 AND state = 'HELD'`,
        [row.id, state, captured, unit.now],
      );
      invariant(result.rowCount === 1, 'a held reservation is finalised exactly once');
    });
    return updated;
  }

  async commitReservation(call: IdempotentCall & { reservationId: string; amount: bigint | undefined }): Promise<CommitReservationResponse> {
    const { tenantId } = call;
    return this.execute(call, METHOD.commitReservation, CommitReservationResponse, async (unit) => {
      const row = await this.lockReservation(unit, tenantId, call.reservationId);
      const capture = call.amount ?? row.amount;
      if (capture > row.amount) {
        // Depends on stored state but is the caller's mistake: not stored, the key stays free.
        throw captureAboveHold(row.amount);
      }
      let captureMovement: Movement | undefined;
      if (capture > 0n) {
        captureMovement = unit.move(tenantId, 'CAPTURE', {
          amount: capture,
          balanceDelta: -capture,
          reservedDelta: -capture,
          reference: row.reference,
          idempotencyKey: call.key,
          reservationId: row.id,
        });
      }
      const rest = row.amount - capture;
      if (rest > 0n) {
        unit.move(tenantId, 'RELEASE', { amount: rest, balanceDelta: 0n, reservedDelta: -rest, reference: row.reference, idempotencyKey: call.key, reservationId: row.id });
      }
      const updated = this.finalize(unit, row, 'COMMITTED', capture);
      return {
        reservation: reservationProto(updated),
        transaction: captureMovement && transactionProto(captureMovement),
        account: accountProto(unit.account(tenantId)!),
        replayed: false,
      };
    });
  }

  async releaseReservation(call: IdempotentCall & { reservationId: string }): Promise<ReleaseReservationResponse> {
    const { tenantId } = call;
    return this.execute(call, METHOD.releaseReservation, ReleaseReservationResponse, async (unit) => {
      const row = await this.lockReservation(unit, tenantId, call.reservationId);
      unit.move(tenantId, 'RELEASE', { amount: row.amount, balanceDelta: 0n, reservedDelta: -row.amount, reference: row.reference, idempotencyKey: call.key, reservationId: row.id });
      const updated = this.finalize(unit, row, 'RELEASED', 0n);
      return { reservation: reservationProto(updated), account: accountProto(unit.account(tenantId)!), replayed: false };
    });
  }

  /**
   * Releases holds past their TTL: at most `limit` reservations, one
   * transaction per tenant, each recorded as an EXPIRE transaction + audit row.
   */
  async expireDue(limit: number): Promise<number> {
    const now = new Date();
    const { rows } = await this.query<{ id: string; tenant_id: string }>(
      `SELECT id, tenant_id FROM credit_reservations WHERE state = 'HELD' AND expires_at <= $1 ORDER BY expires_at LIMIT $2`,
      [now, limit],
    );
    const byTenant = new Map<string, string[]>();
    for (const r of rows) byTenant.set(r.tenant_id, [...(byTenant.get(r.tenant_id) ?? []), r.id]);
    let expired = 0;
    for (const [tenantId, ids] of byTenant) {
      let unit: UnitOfWork | undefined;
      await this.transaction(async (client) => {
        const work = new UnitOfWork(client, this.deps.chain, new Date(), 'system:reservation-expiry');
        await work.lock([tenantId]);
        const held = await client.query<ReservationRow>(
          `SELECT id, tenant_id, amount, captured_amount, state::text AS state, reference, expires_at, created_at, updated_at
             FROM credit_reservations
            WHERE id = ANY($1::uuid[]) AND tenant_id = $2 AND state = 'HELD' AND expires_at <= $3
            ORDER BY id FOR UPDATE`,
          [ids, tenantId, work.now],
        );
        for (const row of held.rows) {
          work.move(tenantId, 'EXPIRE', { amount: row.amount, balanceDelta: 0n, reservedDelta: -row.amount, reference: row.reference, reservationId: row.id });
          this.finalize(work, row, 'EXPIRED', 0n);
        }
        await work.flush();
        unit = work;
        expired += held.rows.length;
      });
      if (unit) await this.publish(unit);
    }
    return expired;
  }

  // --- BatchConsume ----------------------------------------------------------------------

  async batchConsume(
    call: IdempotentCall & { atomic: boolean; items: readonly { tenantId: string; amount: bigint; reference: string; metadata: Record<string, string> }[] },
  ): Promise<BatchConsumeResponse> {
    return this.execute(call, METHOD.batchConsume, BatchConsumeResponse, async (unit) => {
      await unit.lock(call.items.map((i) => i.tenantId));
      const plans = planDebits((t) => unit.account(t), call.items);
      const aborted = call.atomic && plans.some((p) => !p.ok);
      const results: BatchConsumeResult[] = call.items.map((item, index) => {
        const plan = plans[index]!;
        if (!plan.ok) return { index, ok: false, transaction: undefined, errorReason: plan.error.reason, errorMessage: plan.error.message };
        if (aborted) {
          const error = batchAborted();
          return { index, ok: false, transaction: undefined, errorReason: error.reason, errorMessage: error.message };
        }
        const movement = unit.move(item.tenantId, 'CONSUME', {
          amount: item.amount,
          balanceDelta: -item.amount,
          reservedDelta: 0n,
          reference: item.reference,
          metadata: item.metadata,
          idempotencyKey: call.key,
        });
        return { index, ok: true, transaction: transactionProto(movement), errorReason: '', errorMessage: '' };
      });
      const succeeded = results.filter((r) => r.ok).length;
      return { results, succeeded, failed: results.length - succeeded, replayed: false };
    }, call.items.map((i) => i.tenantId));
  }

  // --- Reads -----------------------------------------------------------------------------

  async accounts(tenantIds: readonly string[]): Promise<AccountSnapshot[]> {
    const { rows } = await this.query<{ tenant_id: string; balance: bigint; reserved: bigint; version: bigint; updated_at: Date }>(
      'SELECT tenant_id, balance, reserved, version, updated_at FROM credit_accounts WHERE tenant_id = ANY($1::text[])',
      [tenantIds],
    );
    return rows.map((r) => ({ tenantId: r.tenant_id, balance: r.balance, reserved: r.reserved, version: r.version, updatedAt: r.updated_at }));
  }

  /** Balance from the cache, or PostgreSQL on a miss (then cached). */
  async balance(tenantId: string, consistentRead: boolean): Promise<{ account: AccountSnapshot; fromCache: boolean }> {
    if (!consistentRead) {
      const cached = await this.deps.cache.get(tenantId);
      if (cached) return { account: cached, fromCache: true };
    }
    const [account] = await this.accounts([tenantId]);
    if (!account) throw tenantNotFound(tenantId);
    // Read-repair off the response path: the caller has its answer; put never throws, and its
    // version compare-and-set keeps a slow repair from replacing a newer balance.
    void this.deps.cache.put(account);
    return { account, fromCache: false };
  }

  /**
   * A tenant's transactions, newest first, keyset-paginated on `seq` (stable
   * under concurrent inserts: a page never repeats or skips a row).
   */
  async listTransactions(query: {
    tenantId: string;
    pageSize: number;
    afterSeq: bigint | undefined;
    startTime: Date | undefined;
    endTime: Date | undefined;
    types: readonly TxType[];
  }): Promise<{ transactions: Transaction[]; lastSeq: bigint | undefined; more: boolean }> {
    const { rows } = await this.query<{
      seq: bigint;
      id: string;
      tenant_id: string;
      type: TxType;
      amount: bigint;
      balance_after: bigint;
      reserved_after: bigint;
      reference: string;
      metadata: Record<string, string>;
      idempotency_key: string;
      reservation_id: string | null;
      created_at: Date;
    }>(
      `SELECT seq, id, tenant_id, type::text AS type, amount, balance_after, reserved_after, reference, metadata,
              idempotency_key, reservation_id, created_at
         FROM credit_transactions
        WHERE tenant_id = $1
          AND ($2::bigint IS NULL OR seq < $2)
          AND ($3::timestamptz IS NULL OR created_at >= $3)
          AND ($4::timestamptz IS NULL OR created_at < $4)
          AND (cardinality($5::text[]) = 0 OR type::text = ANY($5::text[]))
        ORDER BY seq DESC
        LIMIT $6`,
      [query.tenantId, query.afterSeq ?? null, query.startTime ?? null, query.endTime ?? null, [...query.types], query.pageSize + 1],
    );
    if (rows.length === 0 && query.afterSeq === undefined && (await this.accounts([query.tenantId])).length === 0) {
      throw tenantNotFound(query.tenantId);
    }
    const page = rows.slice(0, query.pageSize);
    return {
      transactions: page.map((r) =>
        transactionProto({
          id: r.id,
          tenantId: r.tenant_id,
          type: r.type,
          amount: r.amount,
          balanceAfter: r.balance_after,
          reservedAfter: r.reserved_after,
          reference: r.reference,
          metadata: r.metadata,
          idempotencyKey: r.idempotency_key,
          reservationId: r.reservation_id,
          createdAt: r.created_at,
        }),
      ),
      lastSeq: page.length > 0 ? page[page.length - 1]!.seq : undefined,
      more: rows.length > query.pageSize,
    };
  }

  /** Recomputes whole chains (one tenant, or all): the VerifyAuditChain RPC and the periodic full run. */
  async verifyAuditChain(tenantId: string | undefined): Promise<VerifyResult> {
    return this.guard(() => verifyAuditChains(this.deps.pool, this.deps.chain, tenantId));
  }

  /** Verifies only the audit rows appended since each tenant's checkpoint (the periodic run). */
  async verifyNewAuditRows(): Promise<VerifyResult> {
    return this.guard(() => verifyAuditChainsSinceCheckpoints(this.deps.pool, this.deps.chain));
  }

  /** Accounts that break an invariant, against all their ledger rows and holds (a full scan). */
  async invariantViolations(): Promise<number> {
    return this.guard(() => countInvariantViolations(this.deps.pool));
  }

  /** The same, for the accounts that moved since their checkpoint (the periodic run). */
  async invariantViolationsSinceCheckpoints(): Promise<{ violations: number; checked: number }> {
    return this.guard(() => checkInvariantsSinceCheckpoints(this.deps.pool));
  }
}
