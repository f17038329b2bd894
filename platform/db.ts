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

/**
 * What the pool talks to. `session`: PostgreSQL itself, or a pooler that keeps one server connection
 * per client connection (PgBouncer pool_mode = session): a session setting holds for the connection's
 * life. `transaction`: a transaction pooler (PgBouncer pool_mode = transaction, the default of most
 * managed poolers): consecutive transactions of one client connection may run on different server
 * connections, so nothing may rely on session state (SET, named prepared statements, LISTEN,
 * advisory locks).
 */
export type PoolMode = 'session' | 'transaction';

export interface PoolOptions {
  readonly max: number;
  readonly statementTimeoutMs: number;
  readonly applicationName: string;
  readonly connectTimeoutMs?: number;
  /** Default `session`; platform/server.ts passes DB_POOL_MODE (or what it detected). */
  readonly poolMode?: PoolMode;
  /**
   * Whether statements given a `name` are prepared once per connection (default: only in session
   * mode). A transaction pooler keeps them only with protocol-level support (PgBouncer >= 1.21 with
   * max_prepared_statements > 0); without it a statement prepared on one server connection is
   * missing on the next ("prepared statement ... does not exist"). Off, the name is dropped and the
   * statement is sent unnamed: parsed and planned each time, correct everywhere.
   */
  readonly preparedStatements?: boolean;
}

interface PoolSettings {
  readonly mode: PoolMode;
  /** `SET LOCAL statement_timeout` as the first statement of a transaction (same round trip as BEGIN). */
  readonly begin: string;
}

const poolSettings = new WeakMap<pg.Pool, PoolSettings>();

/** BEGIN plus this pool's statement timeout for the transaction, in one simple-protocol round trip. */
function beginStatement(pool: pg.Pool): string {
  return poolSettings.get(pool)?.begin ?? 'BEGIN';
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

/**
 * A pool that works on PostgreSQL directly and behind PgBouncer in any pooling mode (1.18 and
 * later, with its defaults). It sends no startup parameter but user, database and
 * application_name (PgBouncer refuses others, `statement_timeout` among them, with "unsupported
 * startup parameter", unless told to ignore them, and then the timeout would silently be 0). The
 * statement timeout is set instead:
 * - behind a transaction pooler, in every transaction, by `SET LOCAL` in the round trip of its
 *   BEGIN (withTransaction): the transaction runs on one server connection;
 * - in session mode, once per connection (`SET` at connect, one round trip per new connection),
 *   for its transactions and its lone statements alike;
 * - for a lone statement (pool.query) behind a transaction pooler: wrapped in a transaction of its
 *   own with that SET LOCAL (two more round trips), since a session setting would land on whichever
 *   server connection ran it.
 */
export function createPool(databaseUrl: string, options: PoolOptions, logger?: Logger): pg.Pool {
  if (!Number.isInteger(options.statementTimeoutMs) || options.statementTimeoutMs <= 0) {
    throw new RangeError(`statementTimeoutMs must be a positive integer, got ${options.statementTimeoutMs}`);
  }
  const mode = options.poolMode ?? 'session';
  const prepared = options.preparedStatements ?? mode === 'session';
  const pool = new pg.Pool({
    connectionString: databaseUrl,
    max: options.max,
    // A query that times out this way is failed and its connection destroyed (query() and
    // transaction() below mark it broken).
    query_timeout: options.statementTimeoutMs + QUERY_READ_TIMEOUT_MARGIN_MS,
    application_name: options.applicationName,
    connectionTimeoutMillis: options.connectTimeoutMs ?? 5_000,
    idleTimeoutMillis: 30_000,
    types: types as never,
  });
  const timeout = `statement_timeout = '${options.statementTimeoutMs}ms'`;
  // In session mode the connection already carries the timeout (SET at connect, below): a plain
  // BEGIN; only behind a transaction pooler does each transaction set it for itself.
  poolSettings.set(pool, { mode, begin: mode === 'session' ? 'BEGIN' : `BEGIN; SET LOCAL ${timeout}` });
  pool.on('connect', (client) => {
    // Queued before any query of the caller the pool hands this client to. A failure here means
    // the connection is gone; the caller's own query then fails the same way.
    if (mode === 'session') client.query(`SET ${timeout}`).catch((err: Error) => logger?.warn({ err: err.message }, 'could not set statement_timeout'));
    if (!prepared) unnameStatements(client);
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

/** Makes `client` send every statement unnamed (see PoolOptions.preparedStatements). */
function unnameStatements(client: pg.PoolClient): void {
  const original = client.query.bind(client) as (...args: unknown[]) => unknown;
  (client as unknown as { query: (...args: unknown[]) => unknown }).query = (config: unknown, ...rest: unknown[]) => {
    if (config !== null && typeof config === 'object' && 'name' in config && (config as pg.QueryConfig).name !== undefined) {
      const { name: _name, ...unnamed } = config as pg.QueryConfig;
      return original(unnamed, ...rest);
    }
    return original(config, ...rest);
  };
}

/**
 * Whether `client` reaches PostgreSQL through a connection pooler: a pooler answers the startup
 * with a cancel key of its own (BackendKeyData), so the process id the client was given is not
 * the backend's. (PgBouncer, in any mode; a chance of 1 in 2^32 of a false "direct".)
 */
export async function connectedThroughPooler(client: pg.ClientBase): Promise<boolean> {
  const { rows } = await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
  return rows[0]!.pid !== (client as unknown as { processID: number | null }).processID;
}

/**
 * The pool mode for DB_POOL_MODE=auto: `transaction` when the pool's connections go through a
 * pooler (which may pool per transaction: the safe assumption), `session` when they reach
 * PostgreSQL itself. Throws when the database cannot be reached.
 */
export async function detectPoolMode(databaseUrl: string, connectTimeoutMs = 5_000): Promise<PoolMode> {
  const client = new pg.Client({ connectionString: databaseUrl, connectionTimeoutMillis: connectTimeoutMs, application_name: 'shieldx-pool-detect' });
  client.on('error', () => undefined);
  await client.connect();
  try {
    return (await connectedThroughPooler(client)) ? 'transaction' : 'session';
  } finally {
    await client.end().catch(() => undefined);
  }
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
  // Behind a transaction pooler a statement on its own carries its statement timeout in a
  // transaction of its own (createPool).
  if (poolSettings.get(pool)?.mode === 'transaction') return transaction(pool, (client) => client.query<R>(config), 'COMMIT');
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
      await client.query(beginStatement(pool));
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
