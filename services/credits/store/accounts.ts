/** credit_accounts, credit_transactions and credit_payments: the ledger's reads and its extra rows. */
import type pg from 'pg';
import type { AccountBalance, TxType } from '../domain/account';
import type { Movement } from '../domain/batch-plan';
import type { EncryptedPayment, MaskedCard } from '../domain/payment-crypto';

export type Query = <R extends pg.QueryResultRow>(sql: string, params: unknown[]) => Promise<pg.QueryResult<R>>;

/** The first top-up opens the account. */
export async function openAccount(client: pg.PoolClient, tenantId: string): Promise<void> {
  await client.query('INSERT INTO credit_accounts (tenant_id) VALUES ($1) ON CONFLICT (tenant_id) DO NOTHING', [tenantId]);
}

export async function readAccounts(query: Query, tenantIds: readonly string[]): Promise<AccountBalance[]> {
  const { rows } = await query<{ tenant_id: string; balance: bigint; reserved: bigint; version: bigint; updated_at: Date }>(
    'SELECT tenant_id, balance, reserved, version, updated_at FROM credit_accounts WHERE tenant_id = ANY($1::text[])',
    [tenantIds],
  );
  return rows.map((r) => ({ tenantId: r.tenant_id, balance: r.balance, reserved: r.reserved, version: r.version, updatedAt: r.updated_at }));
}

/** A stored transaction: the movement as its batch planned it, with its place in the ledger. */
export interface TransactionRow extends Omit<Movement, 'auditSeq' | 'actor' | 'account'> {
  readonly seq: bigint;
}

/** Up to `limit` of a tenant's transactions, newest first, before `beforeSeq` (keyset pagination on seq). */
export async function readTransactions(
  query: Query,
  q: { tenantId: string; limit: number; beforeSeq: bigint | undefined; startTime: Date | undefined; endTime: Date | undefined; types: readonly TxType[] },
): Promise<TransactionRow[]> {
  const { rows } = await query<{
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
    [q.tenantId, q.beforeSeq ?? null, q.startTime ?? null, q.endTime ?? null, [...q.types], q.limit],
  );
  return rows.map((r) => ({
    seq: r.seq,
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
  }));
}

export async function insertPayment(client: pg.PoolClient, transactionId: string, tenantId: string, encrypted: EncryptedPayment, masked: MaskedCard): Promise<void> {
  await client.query(
    `INSERT INTO credit_payments (transaction_id, tenant_id, key_id, nonce, ciphertext, auth_tag, card_last4, card_brand, expiry_month, expiry_year)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
    [transactionId, tenantId, encrypted.keyId, encrypted.nonce, encrypted.ciphertext, encrypted.authTag, masked.cardLast4, masked.cardBrand, masked.expiryMonth, masked.expiryYear],
  );
}
