/**
 * The plan of a batch: given the accounts as they are (locked, or known from this process's last
 * commit) and the operations of one unit of work, the movements, audit rows and new account heads
 * it produces, and the business error of each item that does not fit. Pure: nothing here reads or
 * writes; store/ledger-writes.ts writes a sealed plan, by one of its two paths.
 *
 * Every movement is one credit_transactions row and one audit row; every account that moves gets
 * one version (and one audit sequence number) per movement.
 */
import { randomUUID } from 'node:crypto';
import { invariant } from '../../../platform/invariant';
import type { ServiceError } from '../../../platform/service-error';
import { batchAborted, insufficientCredits, tenantNotFound } from '../errors';
import { type AccountBalance, type AccountState, available, balanceOf, INT64_MAX, type TxType } from './account';
import type { AuditChain, AuditEntry } from './audit-chain';

export interface MoveSpec {
  readonly amount: bigint;
  readonly balanceDelta: bigint;
  readonly reservedDelta: bigint;
  readonly reference?: string;
  readonly metadata?: Record<string, string>;
  readonly idempotencyKey?: string;
  readonly reservationId?: string | null;
  /** Who caused it (API key id, or a system job); defaults to the plan's actor. */
  readonly actor?: string;
}

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
  /** The account right after this movement. */
  readonly account: AccountBalance;
}

/** A movement with its audit row linked into its account's chain. */
export interface LinkedMovement extends Movement {
  readonly prevHash: Buffer;
  readonly hash: Buffer;
}

/** One account of a sealed plan: as it was taken, and as the plan leaves it. */
export interface AccountHead {
  readonly before: AccountState;
  readonly after: AccountState;
  /** Movements on this account (= after.version - before.version). */
  readonly moves: number;
}

export interface SealedPlan {
  /** Every account of the plan, in the order they were taken (moved or not). */
  readonly accounts: readonly AccountHead[];
  /** In the order they were decided. */
  readonly movements: readonly LinkedMovement[];
}

interface Slot {
  readonly taken: AccountState;
  current: AccountState;
}

export class BatchPlan {
  private readonly accounts = new Map<string, Slot>();
  private movements: Movement[] = [];

  constructor(
    private readonly chain: AuditChain,
    readonly now: Date,
    readonly actor: string,
    private readonly newId: () => string = randomUUID,
  ) {}

  /** Adds accounts as they are now; one already in the plan keeps its planned state. */
  take(states: Iterable<AccountState>): void {
    for (const state of states) {
      if (this.accounts.has(state.tenantId)) continue;
      invariant(state.balance >= 0n, 'a taken account has a non-negative balance');
      invariant(state.reserved >= 0n, 'a taken account has a non-negative reserved amount');
      invariant(available(state) >= 0n, 'a taken account has non-negative available credits');
      this.accounts.set(state.tenantId, { taken: state, current: state });
    }
  }

  has(tenantId: string): boolean {
    return this.accounts.has(tenantId);
  }

  /** The account as changed so far in this plan, or undefined if it was not taken (does not exist). */
  account(tenantId: string): AccountBalance | undefined {
    const slot = this.accounts.get(tenantId);
    return slot && balanceOf(slot.current);
  }

  /** Records one movement on a taken account; asserts every account invariant. */
  move(tenantId: string, type: TxType, spec: MoveSpec): Movement {
    const slot = this.accounts.get(tenantId);
    invariant(slot !== undefined, `account ${tenantId} must be taken before it moves`);
    invariant(spec.amount > 0n, 'amount must be positive');
    invariant(spec.amount <= INT64_MAX, 'amount must fit int64');
    const a = slot.current;
    const balance = a.balance + spec.balanceDelta;
    const reserved = a.reserved + spec.reservedDelta;
    invariant(balance >= 0n, 'balance must stay non-negative');
    invariant(balance <= INT64_MAX, 'balance must stay within int64 max');
    invariant(reserved >= 0n, 'reserved must stay non-negative');
    invariant(balance - reserved >= 0n, 'available must stay non-negative');
    slot.current = { ...a, balance, reserved, version: a.version + 1n, auditSeq: a.auditSeq + 1n, updatedAt: this.now };
    const movement: Movement = {
      id: this.newId(),
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
      auditSeq: slot.current.auditSeq,
      actor: spec.actor ?? this.actor,
      account: balanceOf(slot.current),
    };
    this.movements.push(movement);
    return movement;
  }

  /** Forgets every decided movement (a business failure): accounts return to their taken state. */
  discard(): void {
    for (const slot of this.accounts.values()) slot.current = slot.taken;
    this.movements = [];
  }

  get decided(): readonly Movement[] {
    return this.movements;
  }

  /** Every account of this plan as the plan leaves it (chain heads included once sealed). */
  finalStates(): AccountState[] {
    return [...this.accounts.values()].map((slot) => slot.current);
  }

  /** The final balance of every account that moved (for the cache). */
  changedAccounts(): AccountBalance[] {
    return [...this.accounts.values()].filter((s) => s.current.version !== s.taken.version).map((s) => balanceOf(s.current));
  }

  /**
   * Links the audit rows of every movement (HMAC chain from each account's taken head) and sets
   * each account's new chain head: everything a write needs.
   */
  seal(): SealedPlan {
    const byTenant = new Map<string, Movement[]>();
    for (const m of this.movements) {
      const list = byTenant.get(m.tenantId) ?? [];
      list.push(m);
      byTenant.set(m.tenantId, list);
    }
    const linked = new Map<string, LinkedMovement>();
    const accounts: AccountHead[] = [];
    for (const [tenantId, slot] of this.accounts) {
      const list = byTenant.get(tenantId) ?? [];
      const { taken } = slot;
      if (list.length > 0) {
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
        const rows = this.chain.link({ seq: taken.auditSeq, hash: taken.auditHead }, tenantId, entries);
        rows.forEach((row, i) => linked.set(list[i]!.id, { ...list[i]!, prevHash: row.prevHash, hash: row.hash }));
        slot.current = { ...slot.current, auditHead: rows[rows.length - 1]!.hash };
      }
      const after = slot.current;
      const moves = BigInt(list.length);
      invariant(after.version - taken.version === moves, 'one version per movement');
      invariant(after.auditSeq - taken.auditSeq === moves, 'one audit row per movement');
      accounts.push({ before: taken, after, moves: list.length });
    }
    return { accounts, movements: this.movements.map((m) => linked.get(m.id)!) };
  }
}

// ---------------------------------------------------------------------------------------------
// Debits (the consume batch and BatchConsume).

export interface DebitItem {
  readonly tenantId: string;
  readonly amount: bigint;
}

export type DebitPlan = { readonly ok: true } | { readonly ok: false; readonly error: ServiceError };

/**
 * Decides, in order, which debits fit: each item sees the available credits left by the items
 * before it on the same tenant; a failing item does not stop later (smaller) ones.
 */
export function planDebits(accountOf: (tenantId: string) => AccountBalance | undefined, items: readonly DebitItem[]): DebitPlan[] {
  const left = new Map<string, bigint>();
  return items.map((item) => {
    let credits = left.get(item.tenantId);
    if (credits === undefined) {
      const account = accountOf(item.tenantId);
      if (!account) return { ok: false, error: tenantNotFound(item.tenantId) };
      credits = available(account);
    }
    if (credits < item.amount) {
      left.set(item.tenantId, credits);
      return { ok: false, error: insufficientCredits(credits, item.amount) };
    }
    left.set(item.tenantId, credits - item.amount);
    return { ok: true };
  });
}

export interface ConsumeOperation extends DebitItem {
  readonly reference: string;
  readonly metadata: Record<string, string>;
  readonly key: string;
  readonly actor: string;
}

export type ItemResult = { readonly movement: Movement } | { readonly error: ServiceError };

/**
 * Plans the consumes of a batch, each with its own key: the items `replayed` marks (their key
 * already has a record) are not plan items and get no result (undefined); of the others, those
 * that fit move, in order, and the rest get their business error.
 */
export function planConsumes(plan: BatchPlan, items: readonly ConsumeOperation[], replayed: (index: number) => boolean = () => false): (ItemResult | undefined)[] {
  const fresh = items.map((_, i) => i).filter((i) => !replayed(i));
  const debits = planDebits((t) => plan.account(t), fresh.map((i) => items[i]!));
  const out: (ItemResult | undefined)[] = new Array(items.length).fill(undefined);
  fresh.forEach((i, k) => {
    const item = items[i]!;
    const debit = debits[k]!;
    if (!debit.ok) {
      out[i] = { error: debit.error };
      return;
    }
    out[i] = {
      movement: plan.move(item.tenantId, 'CONSUME', {
        amount: item.amount,
        balanceDelta: -item.amount,
        reservedDelta: 0n,
        reference: item.reference,
        metadata: item.metadata,
        idempotencyKey: item.key,
        actor: item.actor,
      }),
    };
  });
  return out;
}

/**
 * BatchConsume: one key for the whole call. Items that fit move; an atomic batch with any item
 * that does not fit moves nothing, and its fitting items report BATCH_ABORTED.
 */
export function planBatchConsume(
  plan: BatchPlan,
  items: readonly { tenantId: string; amount: bigint; reference: string; metadata: Record<string, string> }[],
  options: { readonly atomic: boolean; readonly key: string },
): ItemResult[] {
  const debits = planDebits((t) => plan.account(t), items);
  const aborted = options.atomic && debits.some((d) => !d.ok);
  return items.map((item, index) => {
    const debit = debits[index]!;
    if (!debit.ok) return { error: debit.error };
    if (aborted) return { error: batchAborted() };
    return {
      movement: plan.move(item.tenantId, 'CONSUME', {
        amount: item.amount,
        balanceDelta: -item.amount,
        reservedDelta: 0n,
        reference: item.reference,
        metadata: item.metadata,
        idempotencyKey: options.key,
      }),
    };
  });
}
