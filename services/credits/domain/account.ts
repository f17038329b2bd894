/**
 * The one account shape of the ledger, and the rules every account obeys.
 *
 * `AccountState` is an account as of a commit (what the consume fast path decides from, what a
 * lock reads, what a plan ends with). `AccountBalance` is the same shape without the audit chain
 * head: what the balance cache holds (its value format has no room for the chain head) and what
 * the RPCs show. It is a view of AccountState (a `Pick`), not a second definition.
 *
 * Invariants (asserted by the plan before anything is written, and again by CHECK constraints in
 * migrations/credits/0001_ledger.sql): balance >= 0, reserved >= 0, balance - reserved >= 0,
 * balance <= int64 max.
 */
export const INT64_MAX = 9_223_372_036_854_775_807n;

export const TX_TYPES = ['CONSUME', 'TOP_UP', 'RESERVE', 'CAPTURE', 'RELEASE', 'EXPIRE'] as const;
export type TxType = (typeof TX_TYPES)[number];

export interface AccountState {
  readonly tenantId: string;
  readonly balance: bigint;
  readonly reserved: bigint;
  /** Increases by one with every committed change. */
  readonly version: bigint;
  /** The audit chain head: the last audit row's sequence and hash (null before the first row). */
  readonly auditSeq: bigint;
  readonly auditHead: Buffer | null;
  readonly updatedAt: Date;
}

export type AccountBalance = Pick<AccountState, 'tenantId' | 'balance' | 'reserved' | 'version' | 'updatedAt'>;

/** What can still be consumed or reserved. */
export function available(account: Pick<AccountState, 'balance' | 'reserved'>): bigint {
  return account.balance - account.reserved;
}

/** The balance view of a state (a copy: a state's extra fields never leak into the cache or the wire). */
export function balanceOf(a: AccountBalance): AccountBalance {
  return { tenantId: a.tenantId, balance: a.balance, reserved: a.reserved, version: a.version, updatedAt: a.updatedAt };
}
