/**
 * Shared set-up for the credits tests: service env (payment + audit keys),
 * a promisified generated client, and direct PostgreSQL access for asserting
 * what was (not) written.
 */
import { randomBytes } from 'node:crypto';
import type { CallOptions, Metadata } from '@grpc/grpc-js';
import pg from 'pg';
import { CreditsServiceClient } from '../gen/shieldx/credits/v1/credits';
import { errorDetails } from '../platform/grpc-errors';
import type { ErrorDetails } from '../platform/status-details';
import type { RunningService } from '../platform/server';
import { address, bearer, creditsTestKeys, insecure, startTestService, testInfrastructure, testKeys, uniquePrefix } from './harness';
import { creditsService } from '../services/credits';

export const PAYMENT_KEY_A = randomBytes(32).toString('base64');
export const PAYMENT_KEY_B = randomBytes(32).toString('base64');
/** The run's audit key (test/harness.ts): every credits instance in a run must share it. */
export const AUDIT_KEY = creditsTestKeys.CREDITS_AUDIT_HMAC_KEY;

export function creditsEnv(extra: Record<string, string> = {}): Record<string, string> {
  return {
    CREDITS_PAYMENT_KEYS: JSON.stringify({ a: PAYMENT_KEY_A, b: PAYMENT_KEY_B }),
    CREDITS_PAYMENT_ACTIVE_KEY_ID: 'a',
    CREDITS_AUDIT_HMAC_KEY: AUDIT_KEY,
    CREDITS_CACHE_KEY_PREFIX: uniquePrefix('credits'),
    // Background jobs stay out of the way unless a test asks for them.
    CREDITS_RESERVATION_SWEEP_INTERVAL_MS: '3600000',
    CREDITS_AUDIT_VERIFY_INTERVAL_SECONDS: '86400',
    CREDITS_INVARIANT_CHECK_INTERVAL_SECONDS: '86400',
    ...extra,
  };
}

export function startCredits(extra: Record<string, string> = {}): Promise<RunningService> {
  return startTestService(creditsService as never, creditsEnv(extra));
}

type Unary<Req, Res> = (req: Req, metadata: Metadata, options: Partial<CallOptions>, cb: (err: Error | null, res: Res) => void) => unknown;

/** The generated client with promise-returning methods (admin key unless given). */
export class Credits {
  readonly raw: CreditsServiceClient;

  constructor(service: RunningService, private readonly key = testKeys.admin) {
    this.raw = new CreditsServiceClient(address(service), insecure);
  }

  call<Req, Res>(method: keyof CreditsServiceClient, req: Req, deadlineMs = 20_000): Promise<Res> {
    const fn = (this.raw[method] as unknown as Unary<Req, Res>).bind(this.raw);
    return new Promise((resolve, reject) =>
      fn(req, bearer(this.key), { deadline: Date.now() + deadlineMs }, (err, res) => (err ? reject(err) : resolve(res))),
    );
  }

  close(): void {
    this.raw.close();
  }
}

/** The ErrorInfo of a call that must fail. */
export async function failure(promise: Promise<unknown>): Promise<ErrorDetails> {
  try {
    await promise;
  } catch (error) {
    const details = errorDetails(error);
    if (!details) throw error;
    return details;
  }
  throw new Error('expected the call to fail, it succeeded');
}

export function tenant(name = 't'): string {
  return `${name}-${randomBytes(5).toString('hex')}`;
}

export function key(name = 'k'): string {
  return `${name}-${randomBytes(8).toString('hex')}`;
}

/** A Luhn-valid test card. */
export const VISA = '4242 4242 4242 4242';

export function payment(card = VISA) {
  return { cardNumber: card, expiryMonth: 12, expiryYear: new Date().getUTCFullYear() + 2, cardholderName: 'Ada Lovelace', processorReference: 'ch_1' };
}

let adminPool: pg.Pool | undefined;

/** A pool on the run's database (superuser on the test server). */
export function db(): pg.Pool {
  if (!adminPool) {
    adminPool = new pg.Pool({ connectionString: testInfrastructure().databaseUrl, max: 4 });
    // The run's database is dropped WITH (FORCE) at the end: idle clients are cut off.
    adminPool.on('error', () => undefined);
  }
  return adminPool;
}

/** Row counts a bad request must not change. */
export async function footprint(tenantId: string): Promise<string> {
  const { rows } = await db().query(
    `SELECT (SELECT count(*) FROM credit_accounts WHERE tenant_id = $1) AS a,
            (SELECT count(*) FROM credit_transactions WHERE tenant_id = $1) AS t,
            (SELECT count(*) FROM credit_idempotency_keys WHERE tenant_id = $1) AS k,
            (SELECT count(*) FROM credit_audit_logs WHERE tenant_id = $1) AS l,
            (SELECT count(*) FROM credit_reservations WHERE tenant_id = $1) AS r,
            (SELECT coalesce(max(balance), -1) FROM credit_accounts WHERE tenant_id = $1) AS b`,
    [tenantId],
  );
  return JSON.stringify(rows[0]);
}

/** The ledger's tables: every row a credits call can write lives in one of them. */
const LEDGER_TABLES = ['credit_accounts', 'credit_transactions', 'credit_idempotency_keys', 'credit_audit_logs', 'credit_reservations', 'credit_payments'] as const;

/**
 * The whole ledger, every tenant: per table the row count and an order-free
 * digest of every row's text, so an insert, delete or update anywhere — under
 * any tenant id, not only the one a test looks at — changes it. For requests
 * whose tenant id is itself the bad input: a per-tenant count of that id
 * would miss a write under another (truncated, normalised) id.
 *
 * Only meaningful while nothing else writes the ledger: creditsEnv() puts the
 * expiry sweeper on an hourly timer, and the periodic audit and invariant
 * checks write their own checkpoint tables, which are not counted here.
 */
export async function databaseFootprint(): Promise<string> {
  const columns = LEDGER_TABLES.map(
    (table) => `(SELECT json_build_object('rows', count(*), 'digest', coalesce(sum(hashtextextended(r::text, 0)), 0)::text) FROM ${table} r) AS ${table}`,
  );
  const { rows } = await db().query(`SELECT ${columns.join(', ')}`);
  return JSON.stringify(rows[0]);
}

/**
 * Everything a refused call must leave as it was: the account (balance,
 * reserved, version, audit head) and the tenant's row counts.
 */
export async function ledgerState(tenantId: string): Promise<string> {
  const { rows } = await db().query(
    `SELECT a.balance::text, a.reserved::text, a.version::text, a.audit_seq::text, encode(a.audit_head, 'hex') AS audit_head,
            (SELECT count(*) FROM credit_transactions WHERE tenant_id = $1) AS transactions,
            (SELECT count(*) FROM credit_idempotency_keys WHERE tenant_id = $1) AS keys,
            (SELECT count(*) FROM credit_audit_logs WHERE tenant_id = $1) AS audit_rows,
            (SELECT count(*) FROM credit_reservations WHERE tenant_id = $1) AS reservations,
            (SELECT count(*) FROM credit_payments WHERE tenant_id = $1) AS payments
       FROM (SELECT $1::text AS tenant_id) q LEFT JOIN credit_accounts a ON a.tenant_id = q.tenant_id`,
    [tenantId],
  );
  return JSON.stringify(rows[0]);
}

/** Whether an idempotency record exists for (tenant, key). */
export async function keyStored(tenantId: string, idempotencyKey: string): Promise<boolean> {
  const { rows } = await db().query('SELECT 1 FROM credit_idempotency_keys WHERE tenant_id = $1 AND key = $2', [tenantId, idempotencyKey]);
  return rows.length > 0;
}

/** Runs `sql` with the triggers (append-only, foreign keys) bypassed, as a superuser could. */
export async function asSuperuser(pool: pg.Pool, sql: string, params: unknown[]): Promise<void> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    await client.query('SET LOCAL session_replication_role = replica');
    await client.query(sql, params);
    await client.query('COMMIT');
  } catch (error) {
    // A refused statement (a test checking a constraint) must not hand the next caller an aborted transaction.
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  } finally {
    client.release();
  }
}
