/**
 * withTransaction against a real PostgreSQL: a connection killed in the middle of a
 * transaction fails that call (no crash from the client's 'error' event) and is not
 * handed to the next caller.
 */
import { expect } from 'chai';
import pg from 'pg';
import { createPool, isQueryReadTimeout, query, withDatabase, withLockTimeout, withRolledBackTransaction, withTransaction } from './db';
import { testInfrastructure } from '../testing/harness';
import { proxyFor, type TcpProxy } from '../testing/tcp-proxy';

describe('platform db: withTransaction', function () {
  this.timeout(30_000);
  let pool: pg.Pool;
  let admin: pg.Pool;
  before(() => {
    pool = createPool(testInfrastructure().databaseUrl, { max: 1, statementTimeoutMs: 10_000, applicationName: 'db-test' });
    admin = new pg.Pool({ connectionString: testInfrastructure().databaseUrl, max: 1 });
  });
  after(async () => {
    await pool.end();
    await admin.end();
  });

  it('commits, and rolls back on error', async () => {
    await pool.query('CREATE TABLE IF NOT EXISTS db_test_rows (n int)');
    await withTransaction(pool, (c) => c.query('INSERT INTO db_test_rows VALUES (1)'));
    const failed = await withTransaction(pool, async (c) => {
      await c.query('INSERT INTO db_test_rows VALUES (2)');
      throw new Error('boom');
    }).catch((e: Error) => e.message);
    expect(failed).to.equal('boom');
    expect((await pool.query('SELECT array_agg(n) AS ns FROM db_test_rows')).rows[0].ns).to.deep.equal([1]);
  });

  it('survives its connection being killed mid-transaction and does not reuse it', async () => {
    const killed = await withTransaction(pool, async (c) => {
      const { rows } = await c.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
      await admin.query('SELECT pg_terminate_backend($1)', [rows[0]!.pid]);
      await c.query('SELECT 1');
      return 'not reached';
    }).catch((e: Error) => e.message);
    expect(killed).to.not.equal('not reached');
    // The pool (max 1) hands out a fresh, working connection.
    expect((await withTransaction(pool, (c) => c.query('SELECT 1 AS one'))).rows[0].one).to.equal(1);
  });
});

describe('platform db: withLockTimeout', function () {
  this.timeout(30_000);
  let pool: pg.Pool;
  before(async () => {
    pool = createPool(testInfrastructure().databaseUrl, { max: 2, statementTimeoutMs: 10_000, applicationName: 'db-test-locks' });
    await pool.query('CREATE TABLE IF NOT EXISTS db_test_locks (id int PRIMARY KEY, n int NOT NULL)');
    await pool.query('INSERT INTO db_test_locks VALUES (1, 0) ON CONFLICT (id) DO NOTHING');
  });
  after(() => pool.end());
  const lockRow = (c: pg.PoolClient) => c.query<{ n: number }>('SELECT n FROM db_test_locks WHERE id = 1 FOR UPDATE');

  // With the row free, fn's value comes back, and lock_timeout is its default again for the rest of the transaction.
  it('returns what fn returned when the lock is free', async () => {
    const lockTimeout = async (c: pg.PoolClient) => (await c.query<{ t: string }>("SELECT current_setting('lock_timeout') AS t")).rows[0]!.t;
    const { before, attempt, after } = await withRolledBackTransaction(pool, async (c) => ({
      before: await lockTimeout(c),
      attempt: await withLockTimeout(c, async () => (await lockRow(c)).rows[0]!.n),
      after: await lockTimeout(c),
    }));
    expect(attempt).to.deep.equal({ lockHeld: false, value: 0 });
    expect(after).to.equal(before);
  });

  // A second connection holds the row lock in an open transaction: the attempt reports it at once instead of
  // waiting for that transaction to end; an error that is not a lock timeout still propagates.
  it('reports a row lock that another transaction holds', async () => {
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    let locked!: () => void;
    const isLocked = new Promise<void>((resolve) => (locked = resolve));
    const holder = withTransaction(pool, async (c) => {
      await lockRow(c);
      locked();
      await released;
    });
    try {
      await isLocked;
      const attempt = await withRolledBackTransaction(pool, (c) => withLockTimeout(c, () => lockRow(c)));
      expect(attempt).to.deep.equal({ lockHeld: true });
      const other = await withRolledBackTransaction(pool, (c) => withLockTimeout(c, () => c.query('SELECT 1/0'))).catch(
        (e: { code?: string }) => e.code,
      );
      expect(other).to.equal('22012');
    } finally {
      release();
      await holder;
    }
  });
});

describe('platform db: withDatabase', () => {
  // Only the database changes: user, password, host, port and query parameters stay, and the name is encoded.
  it('swaps the database and keeps everything else', () => {
    const server = 'postgres://app:p%40ss@db.example:6432/postgres?sslmode=require&application_name=x';
    expect(withDatabase(server, 'shieldx')).to.equal('postgres://app:p%40ss@db.example:6432/shieldx?sslmode=require&application_name=x');
    expect(withDatabase('postgres://127.0.0.1', 'a/b c')).to.equal('postgres://127.0.0.1/a%2Fb%20c');
  });
});

describe('platform db: a database that goes silent', function () {
  this.timeout(30_000);
  let proxy: TcpProxy;
  let pool: pg.Pool;
  before(async () => {
    const proxied = await proxyFor(testInfrastructure().databaseUrl, 5432);
    proxy = proxied.proxy;
    pool = createPool(proxied.url, { max: 1, statementTimeoutMs: 300, applicationName: 'db-test-silent', connectTimeoutMs: 1_000 });
  });
  after(async () => {
    await pool.end();
    await proxy.close();
  });

  // A query that gets no answer at all (the connection black-holed, nothing closed) fails with the
  // read timeout, in and out of a transaction, and its connection is dropped: once the database can be
  // reached again the pool (max 1) works, instead of staying pinned by a connection that never answers.
  it('fails the query and frees the pool for a new connection', async () => {
    expect((await pool.query('SELECT 1 AS one')).rows[0].one).to.equal(1);
    proxy.blackHole();
    const plain = await pool.query('SELECT 2').catch((e: unknown) => e);
    expect(isQueryReadTimeout(plain), String(plain)).to.equal(true);
    proxy.restore();
    expect((await pool.query('SELECT 3 AS three')).rows[0].three).to.equal(3);

    proxy.blackHole();
    const inTransaction = await withTransaction(pool, (c) => c.query('SELECT 4')).catch((e: unknown) => e);
    expect(isQueryReadTimeout(inTransaction), String(inTransaction)).to.equal(true);
    proxy.restore();
    expect((await withTransaction(pool, (c) => c.query('SELECT 5 AS five'))).rows[0].five).to.equal(5);
  });
});

describe('platform db: query', function () {
  this.timeout(30_000);
  let pool: pg.Pool;
  before(() => {
    pool = createPool(testInfrastructure().databaseUrl, { max: 1, statementTimeoutMs: 10_000, applicationName: 'db-test-query' });
  });
  after(() => pool.end());

  const pid = async () => (await query<{ pid: number }>(pool, { text: 'SELECT pg_backend_pid() AS pid' })).rows[0]!.pid;

  const RAISE = "DO $$ BEGIN RAISE EXCEPTION 'stale' USING ERRCODE = 'CR002'; END $$";

  // A statement PostgreSQL refuses (here a RAISE with a SQLSTATE of our own, as the consume fast path
  // raises) fails the call but keeps the connection: the next query runs on the same backend, through
  // query() and through the pool's own query alike. A plain pg.Pool, for contrast, throws it away.
  it('keeps the connection after an error PostgreSQL answered with', async () => {
    const before = await pid();
    const refused = await query(pool, { text: RAISE }).catch((e: { code?: string }) => e);
    expect((refused as { code?: string }).code).to.equal('CR002');
    expect(await pid()).to.equal(before);
    const viaPool = await pool.query(RAISE).catch((e: { code?: string }) => e);
    expect((viaPool as { code?: string }).code).to.equal('CR002');
    expect(await pid()).to.equal(before);
    // Values and config objects reach the server as given.
    expect((await pool.query<{ n: number }>('SELECT $1::int AS n', [7])).rows[0]!.n).to.equal(7);
    expect((await pool.query<{ n: number }>({ text: 'SELECT $1::int AS n', values: [8] })).rows[0]!.n).to.equal(8);

    const plain = new pg.Pool({ connectionString: testInfrastructure().databaseUrl, max: 1 });
    try {
      const plainPid = async () => (await plain.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
      const first = await plainPid();
      await plain.query(RAISE).catch(() => undefined);
      expect(await plainPid()).to.not.equal(first);
    } finally {
      await plain.end();
    }
  });

  // A session that ended (terminated by an administrator: 57P01) is not handed out again.
  it('drops a connection whose session is over', async () => {
    const before = await pid();
    const killed = await query(pool, { text: 'SELECT pg_terminate_backend(pg_backend_pid())' }).catch((e: unknown) => e);
    expect(killed).to.be.instanceOf(Error);
    expect(await pid()).to.not.equal(before);
  });
});
