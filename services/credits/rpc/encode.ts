/** The ledger's values as proto messages (and back, for transaction types). */
import { type Account, type Reservation, ReservationState, type Transaction, TransactionType } from '../../../gen/shieldx/credits/v1/credits';
import { type AccountBalance, available, type TxType } from '../domain/account';
import type { Movement } from '../domain/batch-plan';
import type { ReservationRow } from '../domain/reservations';

export const TX_TYPE_TO_PROTO: Record<TxType, TransactionType> = {
  CONSUME: TransactionType.TRANSACTION_TYPE_CONSUME,
  TOP_UP: TransactionType.TRANSACTION_TYPE_TOP_UP,
  RESERVE: TransactionType.TRANSACTION_TYPE_RESERVE,
  CAPTURE: TransactionType.TRANSACTION_TYPE_CAPTURE,
  RELEASE: TransactionType.TRANSACTION_TYPE_RELEASE,
  EXPIRE: TransactionType.TRANSACTION_TYPE_EXPIRE,
};
export const PROTO_TO_TX_TYPE = new Map<TransactionType, TxType>(Object.entries(TX_TYPE_TO_PROTO).map(([k, v]) => [v, k as TxType]));

const RESERVATION_STATE_TO_PROTO: Record<string, ReservationState> = {
  HELD: ReservationState.RESERVATION_STATE_HELD,
  COMMITTED: ReservationState.RESERVATION_STATE_COMMITTED,
  RELEASED: ReservationState.RESERVATION_STATE_RELEASED,
  EXPIRED: ReservationState.RESERVATION_STATE_EXPIRED,
};

export function accountProto(a: AccountBalance): Account {
  return { tenantId: a.tenantId, balance: a.balance, reserved: a.reserved, available: available(a), version: a.version, updatedAt: a.updatedAt };
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

export function reservationProto(r: ReservationRow): Reservation {
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
