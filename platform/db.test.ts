/**
 * withTransaction against a real PostgreSQL: a connection killed in the middle of a
 * transaction fails that call (no crash from the client's 'error' event) and is not
 * handed to the next caller.
 */
import { expect } from 'chai';
import pg from 'pg';
import { createPool, withDatabase, withTransaction } from './db';
import { testInfrastructure } from '../test/harness';

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

describe('platform db: withDatabase', () => {
  // Only the database changes: user, password, host, port and query parameters stay, and the name is encoded.
  it('swaps the database and keeps everything else', () => {
    const server = 'postgres://app:p%40ss@db.example:6432/postgres?sslmode=require&application_name=x';
    expect(withDatabase(server, 'shieldx')).to.equal('postgres://app:p%40ss@db.example:6432/shieldx?sslmode=require&application_name=x');
    expect(withDatabase('postgres://127.0.0.1', 'a/b c')).to.equal('postgres://127.0.0.1/a%2Fb%20c');
  });
});
