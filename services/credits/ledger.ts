/**
 * The ledger's use cases: each mutating RPC as one idempotent unit of work (claim the key, lock,
 * plan, write, commit; or replay), the consume group commit with its one-round-trip fast path, and
 * the reads. The rules are in domain/ (batch-plan.ts, reservations.ts, account.ts), the rows in
 * store/ (ledger-writes.ts owns both write paths), the proto shapes in rpc/encode.ts.
 *
 * Every change is one credit_transactions row and one audit row, written in the same commit as
 * the account update and the idempotency record.
 */
import type pg from 'pg';
import { randomUUID } from 'node:crypto';
import {
  BatchConsumeResponse,
  type BatchConsumeResult,
  CommitReservationResponse,
  ConsumeResponse,
  ReleaseReservationResponse,
  ReserveResponse,
  type Transaction,
  TopUpResponse,
} from '../../gen/shieldx/credits/v1/credits';
import { invariant } from '../../platform/invariant';
import type { Logger } from '../../platform/logger';
import { ServiceError } from '../../platform/service-error';
import { type AccountBalance, type AccountState, INT64_MAX, TX_TYPES, type TxType } from './domain/account';
import type { AuditChain } from './domain/audit-chain';
import { BatchPlan, type ConsumeOperation, type Movement, planBatchConsume, planConsumes, planDebits } from './domain/batch-plan';
import type { MaskedCard, PaymentInput, PaymentKeyring } from './domain/payment-crypto';
import { assertHeld, type ReservationRow, settle } from './domain/reservations';
import { balanceLimitExceeded, reservationNotFound, tenantNotFound, writersOverloaded } from './errors';
import { accountProto, reservationProto, transactionProto } from './rpc/encode';
import type { CreditsMetrics } from './credits-metrics';
import { GateFullError, type Release, TenantGate } from './tenant-gate';
import { insertPayment, openAccount, readAccounts, readTransactions } from './store/accounts';
import { verifyAuditChains, verifyAuditChainsSinceCheckpoints, type VerifyResult } from './store/audit-verify';
import type { BalanceCache } from './store/balance-cache';
import type { Database } from './store/database';
import { claimKeys, findRecord, type IdempotencyRecord, isStorableFailure, type KeyClaim, probeKey, serviceErrorOf } from './store/idempotency';
import { checkInvariantsSinceCheckpoints, countInvariantViolations } from './store/ledger-invariants';
import { type Completion, completion, UnitOfWork, writeConsumeBatch } from './store/ledger-writes';
import { dueReservations, finalizeReservation, insertReservation, lockDueReservations, lockReservation } from './store/reservations';

export { INT64_MAX, type TxType };

export const METHOD = {
  consume: '/shieldx.credits.v1.CreditsService/Consume',
  topUp: '/shieldx.credits.v1.CreditsService/TopUp',
  reserve: '/shieldx.credits.v1.CreditsService/Reserve',
  commitReservation: '/shieldx.credits.v1.CreditsService/CommitReservation',
  releaseReservation: '/shieldx.credits.v1.CreditsService/ReleaseReservation',
  batchConsume: '/shieldx.credits.v1.CreditsService/BatchConsume',
} as const;

export interface LedgerDeps {
  readonly database: Database;
  readonly cache: BalanceCache;
  readonly metrics: CreditsMetrics;
  readonly chain: AuditChain;
  readonly keyring: PaymentKeyring;
  readonly logger: Logger;
  readonly idempotencyTtlHours: number;
  /**
   * Where reads that may lag go (platform ServiceContext.readPool: the read replica within
   * DB_READ_MAX_LAG_MS, else the primary): transaction history only. Balances, replays and
   * operations read the primary or the cache.
   */
  readonly readPool?: () => pg.Pool;
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

/** Bound on the account states remembered for the consume fast path (oldest forgotten first). */
const KNOWN_ACCOUNTS_MAX = 10_000;

/** SQLSTATEs raised by credits_consume_batch when the fast path's premise does not hold. */
const FAST_PATH_MISSES = new Set(['CR001', 'CR002', '40P01', '40001']);

/** What a commit leaves to publish: the movements it wrote and its accounts' states. */
interface Committed {
  readonly movements: readonly Movement[];
  readonly finalStates: readonly AccountState[];
  readonly changed: readonly AccountBalance[];
}

const committedOf = (plan: BatchPlan): Committed => ({ movements: plan.decided, finalStates: plan.finalStates(), changed: plan.changedAccounts() });

export class Ledger {
  /**
   * Account states as of this process's last commit on each account: the consume fast path
   * decides from them, and PostgreSQL re-checks them under the row lock. A hint only: a stale
   * entry costs one fallback to the transactional path.
   */
  private readonly known = new Map<string, AccountState>();

  /**
   * One writer per tenant in this replica (tenant-gate.ts): the consume batcher takes its
   * tenants here, and execute() waits here, so neither makes the other's decision stale.
   */
  readonly gate = new TenantGate();

  /** credits_transactions_total's series bound once per type (a label object per movement otherwise). */
  private readonly transactionsByType: Record<TxType, { inc(): void }>;

  private readonly db: Database;

  constructor(private readonly deps: LedgerDeps) {
    this.db = deps.database;
    this.transactionsByType = Object.fromEntries(
      TX_TYPES.map((type) => [type, deps.metrics.transactions.labels({ type: type.toLowerCase() })]),
    ) as Record<TxType, { inc(): void }>;
  }

  private remember(states: readonly AccountState[]): void {
    for (const state of states) {
      const previous = this.known.get(state.tenantId);
      if (previous && previous.version > state.version) continue;
      this.known.delete(state.tenantId);
      this.known.set(state.tenantId, state);
    }
    while (this.known.size > KNOWN_ACCOUNTS_MAX) this.known.delete(this.known.keys().next().value!);
  }

  /** Runs a read against PostgreSQL through the breaker. */
  guardRead<T>(work: () => Promise<T>): Promise<T> {
    return this.db.guard(work);
  }

  /** After a commit: metrics and the write-through cache (never fails the call). */
  private async publish(done: Committed, committed?: () => void): Promise<void> {
    this.remember(done.finalStates);
    // The next batch on these accounts may now be decided (from the states just remembered).
    committed?.();
    for (const m of done.movements) this.transactionsByType[m.type].inc();
    await this.deps.cache.putMany(done.changed);
  }

  private replay<R extends { replayed: boolean }>(record: IdempotencyRecord, method: string, hash: Buffer, codec: Codec<R>): R {
    if (record.method !== method || !record.requestHash.equals(hash)) throw ServiceError.idempotencyKeyReused(record.key);
    if (record.state === 'SUCCEEDED' && record.response) return { ...codec.decode(record.response), replayed: true };
    if (record.state === 'FAILED' && record.error) throw serviceErrorOf(record.error, true);
    throw ServiceError.operationInProgress();
  }

  /**
   * Runs one idempotent mutating call: claim the key, run `body` (which locks, decides and
   * records movements), store the response or business failure, write everything, commit; or
   * replay what an earlier call stored.
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
    const result = await this.db.transaction<TxResult<R>>(async (client) => {
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
        // Refused for an account that does not exist: nothing is stored (the key claim rolls
        // back with the transaction), so made-up tenant ids cannot grow the key table.
        if (!work.plan.has(call.tenantId)) throw error;
        work.discard();
        work.complete(claim, { error });
        await work.flush();
        unit = work;
        return { failure: error };
      }
    });
    // The states are remembered before the cache write: the gate may let the next batch decide from them.
    if (unit) await this.publish(committedOf(unit.plan), release);
    if ('replay' in result) return this.replay(result.replay, method, call.requestHash, codec);
    if ('failure' in result) throw result.failure;
    return result.response;
  }

  // --- Consume (group commit) ------------------------------------------------------------

  /**
   * Applies many Consume calls in one transaction: one key-claim statement, one lock statement,
   * one write statement. Each item has its own idempotency key and its own outcome; one failing
   * item does not fail the others. Callers must not put two items with the same (tenant, key) in
   * one call.
   */
  async consumeMany(items: readonly ConsumeItem[], committed?: () => void): Promise<ConsumeOutcome[]> {
    invariant(new Set(items.map((i) => `${i.tenantId}\u0000${i.key}`)).size === items.length, 'a consume batch holds each (tenant, key) once');
    const tenants = [...new Set(items.map((i) => i.tenantId))];
    const known = tenants.map((t) => this.known.get(t));
    if (known.every((k) => k !== undefined)) {
      try {
        const outcomes = await this.consumeFast(items, known as AccountState[], committed);
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
   * Decides every fresh item of a consume batch on the plan's accounts (domain/batch-plan.ts)
   * and records its idempotency completion; items with an existing record replay it.
   */
  private decideConsumes(
    plan: BatchPlan,
    items: readonly ConsumeItem[],
    existing: readonly (IdempotencyRecord | null)[],
    complete: (item: ConsumeItem, outcome: { response: Uint8Array } | { error: ServiceError }) => void,
  ): ConsumeOutcome[] {
    const operations: readonly ConsumeOperation[] = items;
    const planned = planConsumes(plan, operations, (i) => existing[i] !== null);
    return items.map((item, i): ConsumeOutcome => {
      const record = existing[i];
      if (record) {
        try {
          return { response: this.replay(record, METHOD.consume, item.requestHash, ConsumeResponse) };
        } catch (error) {
          return { error: ServiceError.from(error) };
        }
      }
      const result = planned[i]!;
      if ('error' in result) {
        complete(item, { error: result.error });
        return { error: result.error };
      }
      const response: ConsumeResponse = { transaction: transactionProto(result.movement), account: accountProto(result.movement.account), replayed: false };
      complete(item, { response: ConsumeResponse.encode(response).finish() });
      return { response };
    });
  }

  /**
   * Fast path: one round trip, no explicit transaction. Decides from the states this process
   * committed last and writes through credits_consume_batch (store/ledger-writes.ts), which
   * checks them under the row lock; otherwise it raises and nothing is written.
   */
  private async consumeFast(items: readonly ConsumeItem[], known: readonly AccountState[], committed?: () => void): Promise<ConsumeOutcome[]> {
    const now = new Date();
    const plan = new BatchPlan(this.deps.chain, now, '');
    plan.take(known);
    const completions: Completion[] = [];
    const out = this.decideConsumes(plan, items, items.map(() => null), (item, outcome) => completions.push(completion(item, outcome)));
    const sealed = plan.seal();
    // A miss (CR001/CR002, by design) keeps the connection: createPool's pool.query (platform/db.ts).
    await this.db.guard(() =>
      writeConsumeBatch((config) => this.db.pool.query(config), sealed, completions, {
        now,
        method: METHOD.consume,
        idempotencyTtlHours: this.deps.idempotencyTtlHours,
      }),
    );
    await this.publish(committedOf(plan), committed);
    return out;
  }

  /** The transactional path: claim the keys, lock the accounts, decide, write, commit. */
  private async consumeLocked(items: readonly ConsumeItem[], committed?: () => void): Promise<ConsumeOutcome[]> {
    let unit: UnitOfWork | undefined;
    const claims: KeyClaim[] = items.map((i) => ({ tenantId: i.tenantId, key: i.key, method: METHOD.consume, requestHash: i.requestHash }));
    const outcomes = await this.db.transaction(async (client) => {
      unit = undefined;
      const work = new UnitOfWork(client, this.deps.chain, new Date(), '');
      const existing = await claimKeys(client, claims, this.deps.idempotencyTtlHours);
      await work.lock(items.filter((_, i) => existing[i] === null).map((i) => i.tenantId));
      const out = this.decideConsumes(work.plan, items, existing, (item, outcome) => work.complete(item, outcome));
      await work.flush();
      unit = work;
      return out;
    });
    if (unit) await this.publish(committedOf(unit.plan), committed);
    return outcomes;
  }

  // --- TopUp -----------------------------------------------------------------------------

  async topUp(
    call: IdempotentCall & { amount: bigint; reference: string; metadata: Record<string, string>; payment: PaymentInput; masked: MaskedCard },
  ): Promise<TopUpResponse> {
    const { tenantId, amount } = call;
    return this.execute(call, METHOD.topUp, TopUpResponse, async (unit) => {
      // The first top-up opens the account.
      await openAccount(unit.client, tenantId);
      await unit.lock([tenantId]);
      const account = unit.plan.account(tenantId);
      invariant(account !== undefined, 'an opened account can be locked');
      if (account.balance > INT64_MAX - amount) throw balanceLimitExceeded(account.balance);
      const movement = unit.plan.move(tenantId, 'TOP_UP', {
        amount,
        balanceDelta: amount,
        reservedDelta: 0n,
        reference: call.reference,
        metadata: call.metadata,
        idempotencyKey: call.key,
      });
      const encrypted = this.deps.keyring.encrypt(call.payment, tenantId, movement.id);
      unit.then((client) => insertPayment(client, movement.id, tenantId, encrypted, call.masked));
      return { transaction: transactionProto(movement), account: accountProto(movement.account), payment: { ...call.masked }, replayed: false };
    });
  }

  // --- Reservations ----------------------------------------------------------------------

  async reserve(call: IdempotentCall & { amount: bigint; ttlMs: number; reference: string; metadata: Record<string, string> }): Promise<ReserveResponse> {
    const { tenantId, amount } = call;
    return this.execute(call, METHOD.reserve, ReserveResponse, async (unit) => {
      await unit.lock([tenantId]);
      const account = unit.plan.account(tenantId);
      if (!account) throw tenantNotFound(tenantId);
      const [debit] = planDebits(() => account, [{ tenantId, amount }]);
      if (!debit!.ok) throw debit!.error;
      const id = randomUUID();
      const movement = unit.plan.move(tenantId, 'RESERVE', {
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
      unit.then((client) =>
        insertReservation(client, { id, tenantId, amount, reference: call.reference, metadata: call.metadata, expiresAt: row.expires_at, now: unit.now }),
      );
      return { reservation: reservationProto(row), account: accountProto(movement.account), replayed: false };
    });
  }

  /** Locks the account, then the reservation (the order every writer uses); throws unless it is held. */
  private async lockHeld(unit: UnitOfWork, tenantId: string, reservationId: string): Promise<ReservationRow> {
    await unit.lock([tenantId]);
    if (!unit.plan.has(tenantId)) throw reservationNotFound(reservationId);
    const row = await lockReservation(unit.client, reservationId, tenantId);
    if (!row) throw reservationNotFound(reservationId);
    assertHeld(row, unit.now);
    return row;
  }

  private finalize(unit: UnitOfWork, row: ReservationRow, state: 'COMMITTED' | 'RELEASED' | 'EXPIRED', captured: bigint): ReservationRow {
    unit.then((client) => finalizeReservation(client, row.id, state, captured, unit.now));
    return { ...row, state, captured_amount: captured, updated_at: unit.now };
  }

  async commitReservation(call: IdempotentCall & { reservationId: string; amount: bigint | undefined }): Promise<CommitReservationResponse> {
    const { tenantId } = call;
    return this.execute(call, METHOD.commitReservation, CommitReservationResponse, async (unit) => {
      const row = await this.lockHeld(unit, tenantId, call.reservationId);
      const { capture, release } = settle(row, call.amount);
      let captureMovement: Movement | undefined;
      if (capture > 0n) {
        captureMovement = unit.plan.move(tenantId, 'CAPTURE', {
          amount: capture,
          balanceDelta: -capture,
          reservedDelta: -capture,
          reference: row.reference,
          idempotencyKey: call.key,
          reservationId: row.id,
        });
      }
      if (release > 0n) {
        unit.plan.move(tenantId, 'RELEASE', { amount: release, balanceDelta: 0n, reservedDelta: -release, reference: row.reference, idempotencyKey: call.key, reservationId: row.id });
      }
      const updated = this.finalize(unit, row, 'COMMITTED', capture);
      return {
        reservation: reservationProto(updated),
        transaction: captureMovement && transactionProto(captureMovement),
        account: accountProto(unit.plan.account(tenantId)!),
        replayed: false,
      };
    });
  }

  async releaseReservation(call: IdempotentCall & { reservationId: string }): Promise<ReleaseReservationResponse> {
    const { tenantId } = call;
    return this.execute(call, METHOD.releaseReservation, ReleaseReservationResponse, async (unit) => {
      const row = await this.lockHeld(unit, tenantId, call.reservationId);
      unit.plan.move(tenantId, 'RELEASE', { amount: row.amount, balanceDelta: 0n, reservedDelta: -row.amount, reference: row.reference, idempotencyKey: call.key, reservationId: row.id });
      const updated = this.finalize(unit, row, 'RELEASED', 0n);
      return { reservation: reservationProto(updated), account: accountProto(unit.plan.account(tenantId)!), replayed: false };
    });
  }

  /**
   * Releases holds past their TTL: at most `limit` reservations, one transaction per tenant,
   * each recorded as an EXPIRE transaction + audit row.
   */
  async expireDue(limit: number): Promise<number> {
    const rows = await dueReservations(this.db.query, new Date(), limit);
    const byTenant = new Map<string, string[]>();
    for (const r of rows) byTenant.set(r.tenant_id, [...(byTenant.get(r.tenant_id) ?? []), r.id]);
    let expired = 0;
    for (const [tenantId, ids] of byTenant) {
      let unit: UnitOfWork | undefined;
      await this.db.transaction(async (client) => {
        const work = new UnitOfWork(client, this.deps.chain, new Date(), 'system:reservation-expiry');
        await work.lock([tenantId]);
        const held = await lockDueReservations(client, ids, tenantId, work.now);
        for (const row of held) {
          work.plan.move(tenantId, 'EXPIRE', { amount: row.amount, balanceDelta: 0n, reservedDelta: -row.amount, reference: row.reference, reservationId: row.id });
          this.finalize(work, row, 'EXPIRED', 0n);
        }
        await work.flush();
        unit = work;
        expired += held.length;
      });
      if (unit) await this.publish(committedOf(unit.plan));
    }
    return expired;
  }

  // --- BatchConsume ----------------------------------------------------------------------

  async batchConsume(
    call: IdempotentCall & { atomic: boolean; items: readonly { tenantId: string; amount: bigint; reference: string; metadata: Record<string, string> }[] },
  ): Promise<BatchConsumeResponse> {
    return this.execute(
      call,
      METHOD.batchConsume,
      BatchConsumeResponse,
      async (unit) => {
        await unit.lock(call.items.map((i) => i.tenantId));
        const planned = planBatchConsume(unit.plan, call.items, { atomic: call.atomic, key: call.key });
        const results: BatchConsumeResult[] = planned.map((result, index) =>
          'error' in result
            ? { index, ok: false, transaction: undefined, errorReason: result.error.reason, errorMessage: result.error.message }
            : { index, ok: true, transaction: transactionProto(result.movement), errorReason: '', errorMessage: '' },
        );
        const succeeded = results.filter((r) => r.ok).length;
        return { results, succeeded, failed: results.length - succeeded, replayed: false };
      },
      call.items.map((i) => i.tenantId),
    );
  }

  // --- Reads -----------------------------------------------------------------------------

  async accounts(tenantIds: readonly string[]): Promise<AccountBalance[]> {
    return readAccounts(this.db.query, tenantIds);
  }

  /** Balance from the cache, or PostgreSQL on a miss (then cached). */
  async balance(tenantId: string, consistentRead: boolean): Promise<{ account: AccountBalance; fromCache: boolean }> {
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
   * A tenant's transactions, newest first, keyset-paginated on `seq` (stable under concurrent
   * inserts: a page never repeats or skips a row).
   */
  async listTransactions(query: {
    tenantId: string;
    pageSize: number;
    afterSeq: bigint | undefined;
    startTime: Date | undefined;
    endTime: Date | undefined;
    types: readonly TxType[];
  }): Promise<{ transactions: Transaction[]; lastSeq: bigint | undefined; more: boolean }> {
    const readPool = this.deps.readPool;
    const reads: typeof this.db.query = readPool ? (sql, params = []) => this.db.guard(() => readPool().query(sql, params)) : this.db.query;
    const rows = await readTransactions(reads, {
      tenantId: query.tenantId,
      limit: query.pageSize + 1,
      beforeSeq: query.afterSeq,
      startTime: query.startTime,
      endTime: query.endTime,
      types: query.types,
    });
    if (rows.length === 0 && query.afterSeq === undefined && (await this.accounts([query.tenantId])).length === 0) {
      throw tenantNotFound(query.tenantId);
    }
    const page = rows.slice(0, query.pageSize);
    return {
      transactions: page.map((r) => transactionProto(r)),
      lastSeq: page.length > 0 ? page[page.length - 1]!.seq : undefined,
      more: rows.length > query.pageSize,
    };
  }

  /**
   * The idempotency record of a key (GetOperation): the record, 'in_flight' while its first call
   * has not committed, or undefined (never made, or pruned).
   */
  async operation(tenantId: string, key: string): Promise<IdempotencyRecord | 'in_flight' | undefined> {
    const pool = this.db.pool;
    const record = await this.db.guard(() => findRecord(pool, tenantId, key));
    if (record) return record;
    const holder = await this.db.guard(() => probeKey(pool, tenantId, key));
    if (holder === 'in_flight') return 'in_flight';
    // Committed between the read and the probe: it exists, read it again.
    if (holder === 'committed') return this.db.guard(() => findRecord(pool, tenantId, key));
    return undefined;
  }

  /** Recomputes whole chains (one tenant, or all): the VerifyAuditChain RPC and the periodic full run. */
  async verifyAuditChain(tenantId: string | undefined): Promise<VerifyResult> {
    return this.db.guard(() => verifyAuditChains(this.db.pool, this.deps.chain, tenantId));
  }

  /** Verifies only the audit rows appended since each tenant's checkpoint (the periodic run). */
  async verifyNewAuditRows(): Promise<VerifyResult> {
    return this.db.guard(() => verifyAuditChainsSinceCheckpoints(this.db.pool, this.deps.chain));
  }

  /** Accounts that break an invariant, against all their ledger rows and holds (a full scan). */
  async invariantViolations(): Promise<number> {
    return this.db.guard(() => countInvariantViolations(this.db.pool));
  }

  /** The same, for the accounts that moved since their checkpoint (the periodic run). */
  async invariantViolationsSinceCheckpoints(): Promise<{ violations: number; checked: number }> {
    return this.db.guard(() => checkInvariantsSinceCheckpoints(this.db.pool));
  }
}
