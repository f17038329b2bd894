/**
 * PostgreSQL pool factory. int8/numeric columns come back as bigint (money never
 * passes through a float); every pool gets a statement timeout so no call hangs
 * on a stuck query, a connect timeout so a dead database fails fast, and a
 * client-side read timeout so a database that stops answering without closing
 * anything (a partition, a failed-over primary) cannot keep connections checked
 * out for ever: the pool would stay full and the service never recover.
 */
import pg from 'pg';
import type { Logger } from './logger';

const INT8_OID = 20;

/**
 * How much longer than statement_timeout the client waits for an answer before it
 * gives the connection up: PostgreSQL itself cancels a slow statement at
 * statement_timeout and answers with the error at once, so silence past this
 * margin means nobody is there.
 */
const QUERY_READ_TIMEOUT_MARGIN_MS = 2_000;

/** node-postgres's message when `query_timeout` passes with no answer. */
const QUERY_READ_TIMEOUT_MESSAGE = 'Query read timeout';

/** True when a query got no answer within the pool's read timeout (the connection is then useless). */
export function isQueryReadTimeout(error: unknown): boolean {
  return error instanceof Error && error.message === QUERY_READ_TIMEOUT_MESSAGE;
}

/** Per-pool type parsers: bigint for int8, without touching pg's global defaults. */
const types = {
  getTypeParser(oid: number, format?: 'text' | 'binary') {
    if (oid === INT8_OID && format !== 'binary') return (value: string) => BigInt(value);
    return pg.types.getTypeParser(oid, format as 'text');
  },
};

export interface PoolOptions {
  readonly max: number;
  readonly statementTimeoutMs: number;
  readonly applicationName: string;
  readonly connectTimeoutMs?: number;
}

/**
 * `databaseUrl` pointing at another database on the same server (same user,
 * password, host and parameters): for creating, migrating or restoring into one.
 */
export function withDatabase(databaseUrl: string, database: string): string {
  const url = new URL(databaseUrl);
  url.pathname = `/${encodeURIComponent(database)}`;
  return url.toString();
}

export function createPool(databaseUrl: string, options: PoolOptions, logger?: Logger): pg.Pool {
  const pool = new pg.Pool({
    connectionString: databaseUrl,
    max: options.max,
    statement_timeout: options.statementTimeoutMs,
    // A query that times out this way is failed and its connection destroyed (query() and
    // transaction() below mark it broken).
    query_timeout: options.statementTimeoutMs + QUERY_READ_TIMEOUT_MARGIN_MS,
    application_name: options.applicationName,
    connectionTimeoutMillis: options.connectTimeoutMs ?? 5_000,
    idleTimeoutMillis: 30_000,
    types: types as never,
  });
  // An idle client's connection dropping must not crash the process.
  pool.on('error', (err) => logger?.warn({ err: err.message }, 'idle PostgreSQL client error'));
  // pool.query as query() below: a statement PostgreSQL refuses keeps its connection. (Promise form
  // only: nothing here passes a callback or a submittable such as a cursor.)
  const keepingQuery = (config: string | pg.QueryConfig, values?: unknown[]) =>
    query(pool, typeof config === 'string' ? { text: config, values } : values === undefined ? config : { ...config, values });
  (pool as unknown as { query: typeof keepingQuery }).query = keepingQuery;
  return pool;
}

/**
 * Whether a connection that failed a query with `error` can serve the next one:
 * PostgreSQL answered with an error (a DatabaseError carrying a SQLSTATE, such as
 * a constraint violation or a RAISE) and the session is fine, unless that error
 * itself says the session is over (class 08 connection exception, 57P0x shutdown).
 */
function connectionSurvives(error: unknown): boolean {
  if (!(error instanceof pg.DatabaseError)) return false;
  const code = error.code ?? '';
  return !code.startsWith('08') && !code.startsWith('57P0');
}

/**
 * pool.query, but a statement that PostgreSQL refused (see connectionSurvives)
 * keeps its connection; createPool's pools answer pool.query with it. pg-pool's
 * own query destroys the connection on ANY error, so a
 * hot path whose statements fail by design (the credits consume fast path raises
 * when its premise is stale) paid for a new backend each time: a fork, the
 * authentication, the catalog caches and every prepared statement and PL/pgSQL
 * function compiled again. Measured: one new session per refused statement.
 */
export function query<R extends pg.QueryResultRow>(pool: pg.Pool, config: pg.QueryConfig): Promise<pg.QueryResult<R>> {
  return withClient(pool, async (client, broke) => {
    try {
      return await client.query<R>(config);
    } catch (error) {
      if (!connectionSurvives(error)) broke(error as Error);
      throw error;
    }
  });
}

/**
 * Runs `fn` on a pooled client and gives it back: destroyed rather than handed to the
 * next caller when `fn` called `broke`, or when the connection reported an 'error'
 * event meanwhile (which, without a listener, would crash the process).
 */
async function withClient<T>(pool: pg.Pool, fn: (client: pg.PoolClient, broke: (error: Error) => void) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  let broken: Error | undefined;
  const broke = (err: Error) => {
    broken ??= err;
  };
  client.on('error', broke);
  try {
    return await fn(client, broke);
  } finally {
    client.off('error', broke);
    client.release(broken);
  }
}

/**
 * Runs `fn` in one transaction; rolls back on any error. A connection that drops
 * while checked out reports an 'error' event on the client — without a listener
 * that would crash the process — and is destroyed rather than handed to the next
 * caller (as is one whose ROLLBACK failed).
 */
export function withTransaction<T>(pool: pg.Pool, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  return transaction(pool, fn, 'COMMIT');
}

/** As withTransaction, but always rolled back: for probes that must leave nothing behind. */
export function withRolledBackTransaction<T>(pool: pg.Pool, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  return transaction(pool, fn, 'ROLLBACK');
}

function transaction<T>(pool: pg.Pool, fn: (client: pg.PoolClient) => Promise<T>, end: 'COMMIT' | 'ROLLBACK'): Promise<T> {
  return withClient(pool, async (client, broke) => {
    try {
      await client.query('BEGIN');
      const result = await fn(client);
      await client.query(end);
      return result;
    } catch (error) {
      // No answer at all: a ROLLBACK would only queue behind the lost query and time out in turn.
      if (isQueryReadTimeout(error)) broke(error as Error);
      else await client.query('ROLLBACK').catch(broke);
      throw error;
    }
  });
}

/**
 * Deletes in bounded batches, so a large backlog never becomes one long transaction:
 * `sql` is a DELETE whose `$1` is the batch size (typically `WHERE ctid IN (SELECT ctid …
 * LIMIT $1 FOR UPDATE SKIP LOCKED)`, which lets several replicas run it at once), `params`
 * are `$2…`. Stops after a short batch or `batchesMax` batches; returns the rows deleted.
 */
export async function deleteInBatches(pool: pg.Pool, sql: string, params: readonly unknown[], batchRows: number, batchesMax: number): Promise<number> {
  let total = 0;
  for (let batch = 0; batch < batchesMax; batch++) {
    const deleted = (await pool.query(sql, [batchRows, ...params])).rowCount ?? 0;
    total += deleted;
    if (deleted < batchRows) break;
  }
  return total;
}

/** SQLSTATE lock_not_available: a lock wait ran past lock_timeout. */
const LOCK_NOT_AVAILABLE = '55P03';

/** How long `withLockTimeout` waits for a row lock by default. */
export const LOCK_TIMEOUT_MS_DEFAULT = 100;

/** What `withLockTimeout` found: the value `fn` returned, or a lock that another transaction holds. */
export type LockAttempt<T> = { readonly lockHeld: false; readonly value: T } | { readonly lockHeld: true };

/**
 * Runs `fn` inside `client`'s open transaction with a short lock_timeout, for a row lock
 * that an uncommitted transaction may hold (an idempotency key claimed by a call still
 * running): rather than wait for that transaction — possibly a whole client stream —
 * report `{ lockHeld: true }` at once (SQLSTATE 55P03 lock_not_available), so the caller
 * can answer "in flight". Any other error is rethrown.
 *
 * After `lockHeld` the transaction is aborted: the caller must roll it back (throw out of
 * withTransaction, or use withRolledBackTransaction). Otherwise lock_timeout is set back
 * to its default, so the rest of the transaction waits for locks as usual.
 */
export async function withLockTimeout<T>(
  client: pg.PoolClient,
  fn: () => Promise<T>,
  timeoutMs: number = LOCK_TIMEOUT_MS_DEFAULT,
): Promise<LockAttempt<T>> {
  // Interpolated into SET (which takes no parameters): only a positive integer may get there.
  if (!Number.isInteger(timeoutMs) || timeoutMs <= 0) throw new RangeError(`timeoutMs must be a positive integer, got ${timeoutMs}`);
  await client.query(`SET LOCAL lock_timeout = '${timeoutMs}ms'`);
  try {
    return { lockHeld: false, value: await fn() };
  } catch (error) {
    if ((error as { code?: string }).code === LOCK_NOT_AVAILABLE) return { lockHeld: true };
    throw error;
  } finally {
    // Fails harmlessly (and is ignored) when the transaction is already aborted.
    await client.query('SET LOCAL lock_timeout TO DEFAULT').catch(() => undefined);
  }
}
