/**
 * Point-in-time recovery, end to end, with the scripts the runbook tells an
 * operator to run: a throwaway cluster archiving WAL through archive-wal.sh, a
 * base backup by base-backup.sh, writes before and after a noted time, then
 * recover.sh rebuilds a new cluster at that time and it holds exactly the
 * first writes. Needs the machine's PostgreSQL server binaries
 * (postgresql-15 on Debian): skipped without them, except under CI=true.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import pg from 'pg';
import { freePort } from '../../dev/local-servers';
import { projectPath } from '../../platform/paths';
import { skipOrFailInCi } from '../../testing/require-tool';
import type { PgBinDir } from '../backup/pg-tools';
import { findServerBinDir, ownedDir, runAsClusterUser, startScratchCluster, type ScratchCluster } from '../../testing/scratch-cluster';

const PITR_TOOLS = ['postgres', 'initdb', 'pg_ctl', 'pg_basebackup', 'pg_verifybackup', 'psql'];

async function withClient<T>(url: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

function runScript(script: string, args: string[]): { code: number; stdout: string; stderr: string } {
  const result = spawnSync('bash', [projectPath('ops', 'pitr', script), ...args], { encoding: 'utf8', timeout: 180_000 });
  return { code: result.status ?? -1, stdout: result.stdout, stderr: result.stderr };
}

const ROWS_SQL = 'SELECT id, tenant, amount::text AS amount FROM ledger_events ORDER BY id';

describe('point-in-time recovery (ops/pitr, real PostgreSQL cluster)', function () {
  this.timeout(180_000);
  let bin: PgBinDir;
  let cluster: ScratchCluster;
  let work: string;
  let archiveDir: string;
  let baseDir: string;
  /** The server's clock between the first and second batch of writes. */
  let targetTime: string;
  let rowsAtTarget: unknown[];
  let rowsAtEnd: unknown[];
  const recovered: string[] = [];

  before(async function () {
    const found = findServerBinDir(PITR_TOOLS);
    bin = 'missing' in found ? skipOrFailInCi(this, found.missing) : found.binDir;

    // Settings need the archive path before initdb's cluster starts; the cluster's own temp root is made by
    // startScratchCluster, so the WAL archive and scripts live in a second postgres-owned dir inside /tmp.
    work = ownedDir(mkdtempSync(join(tmpdir(), 'shieldx-pitr-')));
    archiveDir = ownedDir(join(work, 'wal-archive'));
    ownedDir(join(work, 'bin'));
    // The server runs as `postgres`, who may not be able to read the checkout (e.g. under /root): install a copy, as the runbook does.
    const archiveScript = join(work, 'bin', 'archive-wal.sh');
    copyFileSync(projectPath('ops', 'pitr', 'archive-wal.sh'), archiveScript);
    chmodSync(archiveScript, 0o755);
    cluster = await startScratchCluster({
      binDir: bin,
      prefix: 'shieldx-pitr-primary-',
      settings: {
        wal_level: 'replica',
        archive_mode: 'on',
        archive_command: `'${archiveScript} "%p" "%f" ${archiveDir}'`,
        max_wal_senders: '4',
      },
    });

    await withClient(cluster.url, (c) => c.query('CREATE TABLE ledger_events (id int PRIMARY KEY, tenant text NOT NULL, amount bigint NOT NULL)'));
    baseDir = join(work, 'base');
    const base = runScript('base-backup.sh', ['--db-url', cluster.url, '--out', baseDir, '--bin-dir', bin.dir]);
    expect(base.code, base.stderr).to.equal(0);

    await withClient(cluster.url, async (c) => {
      // First writes: separate transactions, including an update and a delete.
      for (let id = 1; id <= 5; id++) await c.query('INSERT INTO ledger_events VALUES ($1, $2, $3)', [id, `tenant-${id}`, id * 100]);
      await c.query('UPDATE ledger_events SET amount = amount + 1 WHERE id = 2');
      await c.query('DELETE FROM ledger_events WHERE id = 5');
      rowsAtTarget = (await c.query(ROWS_SQL)).rows;
      // Noted on the server's own clock, after the first writes committed and before any of the second.
      targetTime = (await c.query<{ t: string }>(`SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00' AS t`)).rows[0]!.t;
      // Second writes: more rows, changes to the first ones, and new DDL.
      for (let id = 6; id <= 8; id++) await c.query('INSERT INTO ledger_events VALUES ($1, $2, $3)', [id, `tenant-${id}`, id * 100]);
      await c.query('UPDATE ledger_events SET amount = 0 WHERE id = 1');
      await c.query('DELETE FROM ledger_events WHERE id = 3');
      await c.query('CREATE TABLE created_later (x int)');
      rowsAtEnd = (await c.query(ROWS_SQL)).rows;
      // Close the current segment and wait until archive_command has stored it.
      const segment = (await c.query<{ f: string }>('SELECT pg_walfile_name(pg_switch_wal()) AS f')).rows[0]!.f;
      for (let attempt = 0; attempt < 300; attempt++) {
        const { rows } = await c.query<{ last: string | null; failed: string }>(
          'SELECT last_archived_wal AS last, failed_count::text AS failed FROM pg_stat_archiver',
        );
        if (rows[0]!.last !== null && rows[0]!.last >= segment) break;
        if (attempt === 299) throw new Error(`segment ${segment} not archived (archiver: ${JSON.stringify(rows[0])})`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    });
    cluster.stop();
  });

  after(() => {
    for (const dataDir of recovered) {
      if (existsSync(join(dataDir, 'postmaster.pid'))) {
        try {
          runAsClusterUser(join(bin.dir, 'pg_ctl'), ['-D', dataDir, '-m', 'immediate', '-w', 'stop']);
        } catch {
          // already stopped
        }
      }
    }
    cluster?.destroy();
    if (work) spawnSync('rm', ['-rf', work]);
  });

  // The premise: the two batches differ, WAL was archived, and the base backup predates the first writes.
  it('archived WAL and took a verified base backup', () => {
    expect(rowsAtTarget).to.not.deep.equal(rowsAtEnd);
    expect(readdirSync(archiveDir).filter((f) => /^[0-9A-F]{24}$/.test(f)).length).to.be.at.least(2);
    expect(existsSync(join(baseDir, 'backup_manifest'))).to.equal(true);
    expect(existsSync(join(baseDir, 'backup_label'))).to.equal(true);
  });

  // recover.sh to the noted time gives a promoted, writable cluster holding exactly the first writes (the second batch's rows,
  // updates, deletes and DDL are all absent).
  it('recovers to the noted time and finds exactly the first writes', async () => {
    const dataDir = join(work, 'recovered');
    recovered.push(dataDir);
    const port = await freePort();
    const result = runScript('recover.sh', [
      '--base-backup', baseDir,
      '--wal-archive', archiveDir,
      '--target-time', targetTime,
      '--data-dir', dataDir,
      '--port', String(port),
      '--socket-dir', ownedDir(join(work, 'sock-recovered')),
      '--bin-dir', bin.dir,
      '--timeout', '120',
    ]);
    expect(result.code, `${result.stdout}\n${result.stderr}`).to.equal(0);
    expect(result.stdout).to.match(/recovery stopping before commit of transaction \d+/);
    expect(result.stdout).to.match(/selected new timeline ID: 2/);

    const url = `postgres://postgres@127.0.0.1:${port}/postgres`;
    await withClient(url, async (c) => {
      expect((await c.query(ROWS_SQL)).rows).to.deep.equal(rowsAtTarget);
      expect((await c.query("SELECT to_regclass('created_later') AS t")).rows[0].t).to.equal(null);
      expect((await c.query('SELECT pg_is_in_recovery() AS r')).rows[0].r).to.equal(false);
      // Promoted: it takes writes, and does not archive into the original cluster's WAL archive.
      await c.query("INSERT INTO ledger_events VALUES (100, 'after-recovery', 1)");
      expect((await c.query('SHOW archive_mode')).rows[0].archive_mode).to.equal('off');
    });
  });

  // A target after the last archived commit cannot be reached: recover.sh fails, says so, and shows the server's reason.
  it('fails clearly when the target time is beyond the archived WAL', async () => {
    const dataDir = join(work, 'recovered-too-far');
    recovered.push(dataDir);
    const result = runScript('recover.sh', [
      '--base-backup', baseDir,
      '--wal-archive', archiveDir,
      '--target-time', '2999-01-01 00:00:00+00',
      '--data-dir', dataDir,
      '--port', String(await freePort()),
      '--socket-dir', ownedDir(join(work, 'sock-too-far')),
      '--bin-dir', bin.dir,
      '--timeout', '120',
    ]);
    expect(result.code).to.equal(1);
    expect(result.stderr).to.match(/recovery ended before configured recovery target was reached/);
  });

  // The script refuses to overwrite a non-empty data directory, or to start from something that is not a base backup.
  it('refuses a non-empty data directory and a non-backup source', () => {
    const occupied = runScript('recover.sh', ['--base-backup', baseDir, '--wal-archive', archiveDir, '--target-time', targetTime, '--data-dir', baseDir]);
    expect(occupied.code).to.equal(1);
    expect(occupied.stderr).to.match(/exists and is not empty/);
    const notBackup = runScript('recover.sh', ['--base-backup', archiveDir, '--wal-archive', archiveDir, '--target-time', targetTime, '--data-dir', join(work, 'x')]);
    expect(notBackup.code).to.equal(1);
    expect(notBackup.stderr).to.match(/not a plain-format base backup/);
    const badTime = runScript('recover.sh', ['--base-backup', baseDir, '--wal-archive', archiveDir, '--target-time', 'yesterday-ish', '--data-dir', join(work, 'y')]);
    expect(badTime.code).to.equal(1);
    expect(badTime.stderr).to.match(/is not a timestamp/);
  });
});
