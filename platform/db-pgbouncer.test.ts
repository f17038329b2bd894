/**
 * platform/db.ts behind a real PgBouncer with its defaults (Debian's 1.18), in transaction and in
 * session pooling mode: the pool connects (it sends no startup parameter PgBouncer refuses), and
 * DB_STATEMENT_TIMEOUT_MS still holds on every statement, alone or in a transaction: a statement
 * outliving it is cancelled by PostgreSQL (SQLSTATE 57014), not left running.
 */
import { expect } from 'chai';
import type pg from 'pg';
import { createPool, withTransaction, type PoolMode } from './db';
import { testInfrastructure } from '../testing/harness';
import { requirePgBouncer, startPgBouncer, type PgBouncer } from '../testing/pgbouncer';

const QUERY_CANCELED = '57014';

async function sqlstate(promise: Promise<unknown>): Promise<string | undefined> {
  try {
    await promise;
  } catch (error) {
    return (error as { code?: string }).code ?? String(error);
  }
  return undefined;
}

for (const pgbouncerMode of ['transaction', 'session'] as const) {
  describe(`PostgreSQL pool through PgBouncer (pool_mode = ${pgbouncerMode})`, function () {
    this.timeout(60_000);
    let bouncer: PgBouncer | undefined;
    let pool: pg.Pool | undefined;
    // The pool is told what it is behind; session pooling needs nothing more than a direct connection.
    const poolMode: PoolMode = pgbouncerMode === 'transaction' ? 'transaction' : 'session';

    before(async function () {
      const binary = requirePgBouncer(this);
      bouncer = await startPgBouncer(binary, testInfrastructure().databaseUrl, { settings: { pool_mode: pgbouncerMode } });
      pool = createPool(bouncer.url(testInfrastructure().databaseUrl), { max: 4, statementTimeoutMs: 1_000, applicationName: 'pgb-test', poolMode });
    });
    after(async () => {
      await pool?.end();
      await bouncer?.stop();
    });

    it('connects and runs statements', async () => {
      const { rows } = await pool!.query<{ one: number }>('SELECT 1 AS one');
      expect(rows).to.deep.equal([{ one: 1 }]);
    });

    it('applies the statement timeout to a statement on its own', async () => {
      const { rows } = await pool!.query<{ statement_timeout: string }>('SHOW statement_timeout');
      expect(rows[0]!.statement_timeout).to.equal('1s');
      expect(await sqlstate(pool!.query('SELECT pg_sleep(30)'))).to.equal(QUERY_CANCELED);
    });

    it('applies the statement timeout inside a transaction', async () => {
      const shown = await withTransaction(pool!, async (client) => (await client.query<{ statement_timeout: string }>('SHOW statement_timeout')).rows[0]!);
      expect(shown.statement_timeout).to.equal('1s');
      expect(await sqlstate(withTransaction(pool!, (client) => client.query('SELECT pg_sleep(30)')))).to.equal(QUERY_CANCELED);
      // The pool still works after the cancelled statements.
      expect((await pool!.query('SELECT 1')).rowCount).to.equal(1);
    });

    // Parallel clients share PgBouncer's server connections: a session setting left on one must not be
    // what protects the others, nor leak to them (each statement carries its own).
    it('holds on every one of many concurrent clients', async () => {
      const other = createPool(bouncer!.url(testInfrastructure().databaseUrl), { max: 8, statementTimeoutMs: 2_000, applicationName: 'pgb-test-2', poolMode });
      try {
        const shown = await Promise.all(
          Array.from({ length: 32 }, (_, i) =>
            (i % 2 ? pool! : other).query<{ statement_timeout: string }>('SHOW statement_timeout').then((r) => [i % 2, r.rows[0]!.statement_timeout]),
          ),
        );
        for (const [odd, value] of shown) expect(value).to.equal(odd ? '1s' : '2s');
      } finally {
        await other.end();
      }
    });
  });
}
