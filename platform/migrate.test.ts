import { expect } from 'chai';
import pg from 'pg';
import { runMigrations } from './migrate';
import { createDatabase, testInfrastructure } from '../testing/harness';
import { readdirSync } from 'node:fs';
import { projectPath } from './paths';

/** Every service with a migrations/<service>/ folder: platform reads the folders, not the launchers' list. */
const SERVICES = readdirSync(projectPath('migrations'), { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name);

describe('migrations', () => {
  // Every service's migrations apply on an empty database, and a second run applies nothing and changes nothing.
  it('apply on an empty database and are idempotent on a second run', async function () {
    this.timeout(60_000);
    const database = await createDatabase(testInfrastructure().serverUrl, 'shieldx_migrate');
    const client = new pg.Client({ connectionString: database.url });
    try {
      for (const service of SERVICES) {
        const files = readdirSync(projectPath('migrations', service)).filter((f) => f.endsWith('.sql')).sort();
        const first = await runMigrations(database.url, service);
        expect(first).to.deep.equal(files.map((f) => f.replace(/\.sql$/, '')));
      }
      await client.connect();
      const schema = async () =>
        (
          await client.query(
            `SELECT table_name, column_name, data_type FROM information_schema.columns
             WHERE table_schema = 'public' ORDER BY table_name, column_name`,
          )
        ).rows;
      const before = await schema();
      expect(before.map((r) => r.table_name)).to.include('shadow_samples');
      for (const service of SERVICES) expect(await runMigrations(database.url, service)).to.deep.equal([]);
      expect(await schema()).to.deep.equal(before);
      // Each service keeps its own bookkeeping table, so they deploy independently.
      const tables = await client.query(`SELECT tablename FROM pg_tables WHERE tablename LIKE 'pgmigrations_%' ORDER BY 1`);
      expect(tables.rows.map((r) => r.tablename)).to.include.members(['pgmigrations_credits', 'pgmigrations_shadow']);
    } finally {
      await client.end().catch(() => undefined);
      await database.drop();
    }
  });
});

describe('migrations run concurrently', () => {
  // Three services (or replicas) starting at once wait for the shared lock instead of failing.
  it('serialises concurrent runners instead of failing', async function () {
    this.timeout(60_000);
    const database = await createDatabase(testInfrastructure().serverUrl, 'shieldx_migrate_race');
    try {
      const results = await Promise.all([
        runMigrations(database.url, 'credits'),
        runMigrations(database.url, 'shadow'),
        runMigrations(database.url, 'camouflage'),
        runMigrations(database.url, 'shadow'),
      ]);
      // Each service's files were applied exactly once between the two shadow runners.
      const shadowApplied = results[1]!.length + results[3]!.length;
      expect(shadowApplied).to.equal(readdirSync(projectPath('migrations', 'shadow')).filter((f) => f.endsWith('.sql')).length);
    } finally {
      await database.drop();
    }
  });
});
