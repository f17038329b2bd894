/**
 * The PostgreSQL part of docs/runbooks/failover.md ("PostgreSQL primary
 * lost"), on throwaway clusters: a primary with a streaming replica made by
 * `pg_basebackup -R`, WAL archived by archive-wal.sh; the primary is lost
 * (fenced: immediate stop, as abrupt as a crash); the replica is promoted with
 * `pg_promote()`, holds every replicated commit and takes writes; the old
 * primary is rewound with `pg_rewind --restore-target-wal -R` and rejoins as a
 * replica of the new primary. PgBouncer is not part of this test.
 * Skipped without PostgreSQL server binaries, except under CI=true.
 */
import { appendFileSync, chmodSync, copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import pg from 'pg';
import { freePort } from '../../dev/local-servers';
import { projectPath } from '../../platform/paths';
import { skipOrFailInCi } from '../../testing/require-tool';
import type { PgBinDir } from '../backup/pg-tools';
import { findServerBinDir, ownedDir, runAsClusterUser, startScratchCluster, type ScratchCluster } from '../../testing/scratch-cluster';

const TOOLS = ['postgres', 'initdb', 'pg_ctl', 'pg_basebackup', 'pg_rewind'];

async function sql<T extends pg.QueryResultRow>(url: string, text: string, params: unknown[] = []): Promise<T[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<T>(text, params)).rows;
  } finally {
    await client.end();
  }
}

/** Polls until `check` is true (bounded: 30 s). */
async function eventually(what: string, check: () => Promise<boolean>): Promise<void> {
  for (let attempt = 0; attempt < 300; attempt++) {
    if (await check().catch(() => false)) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** Has `replicaUrl` replayed everything `primaryUrl` has written so far? */
async function caughtUp(primaryUrl: string, replicaUrl: string): Promise<void> {
  const [{ lsn }] = await sql<{ lsn: string }>(primaryUrl, 'SELECT pg_current_wal_lsn()::text AS lsn');
  await eventually(`replay of ${lsn}`, async () => {
    const [{ done }] = await sql<{ done: boolean }>(replicaUrl, 'SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn AS done', [lsn]);
    return done;
  });
}

const ROWS = 'SELECT id, note FROM ledger ORDER BY id';

describe('failover: promote a streaming replica, rewind the old primary (failover.md)', function () {
  this.timeout(180_000);
  let bin: PgBinDir;
  let primary: ScratchCluster;
  let work: string;
  let replicaData: string;
  let replicaPort: number;
  let replicaUrl: string;
  const running: string[] = [];

  const pgCtl = (dataDir: string, ...args: string[]) => runAsClusterUser(join(bin.dir, 'pg_ctl'), ['-D', dataDir, '-w', '-t', '60', ...args]);

  before(async function () {
    const found = findServerBinDir(TOOLS);
    bin = 'missing' in found ? skipOrFailInCi(this, found.missing) : found.binDir;
    work = ownedDir(mkdtempSync(join(tmpdir(), 'shieldx-failover-')));
    const archiveDir = ownedDir(join(work, 'wal-archive'));
    const archiveScript = join(ownedDir(join(work, 'bin')), 'archive-wal.sh');
    copyFileSync(projectPath('ops', 'pitr', 'archive-wal.sh'), archiveScript);
    chmodSync(archiveScript, 0o755);
    // As the runbook's set-up: WAL archived (pg_rewind --restore-target-wal fetches what the old primary recycled),
    // and wal_log_hints, which pg_rewind needs (or data checksums).
    primary = await startScratchCluster({
      binDir: bin,
      prefix: 'shieldx-failover-primary-',
      settings: {
        wal_level: 'replica',
        max_wal_senders: '5',
        wal_log_hints: 'on',
        hot_standby: 'on',
        archive_mode: 'on',
        archive_command: `'${archiveScript} "%p" "%f" ${archiveDir}'`,
        restore_command: `'cp "${archiveDir}/%f" "%p"'`,
      },
    });
    await sql(primary.url, 'CREATE TABLE ledger (id int PRIMARY KEY, note text NOT NULL)');
    await sql(primary.url, "INSERT INTO ledger SELECT i, 'before replica ' || i FROM generate_series(1, 50) i");

    replicaData = join(work, 'replica');
    replicaPort = await freePort();
    replicaUrl = `postgres://postgres@127.0.0.1:${replicaPort}/postgres`;
    // The runbook's "rebuild a replica": pg_basebackup -R writes standby.signal and primary_conninfo.
    runAsClusterUser(join(bin.dir, 'pg_basebackup'), ['-d', `${primary.url}?application_name=replica1`, '-D', replicaData, '-R', '-X', 'stream', '-c', 'fast']);
    appendFileSync(join(replicaData, 'postgresql.auto.conf'), `port = ${replicaPort}\nunix_socket_directories = '${ownedDir(join(work, 'sock'))}'\n`);
    pgCtl(replicaData, '-l', join(work, 'replica.log'), 'start');
    running.push(replicaData);
  });

  after(() => {
    for (const dataDir of running) {
      try {
        pgCtl(dataDir, '-m', 'immediate', 'stop');
      } catch {
        // already stopped
      }
    }
    primary?.destroy();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  // The replica streams: rows committed on the primary after it was built arrive, and it refuses writes.
  it('streams the primary’s commits to a read-only replica', async () => {
    await sql(primary.url, "INSERT INTO ledger SELECT i, 'streamed ' || i FROM generate_series(51, 80) i");
    await caughtUp(primary.url, replicaUrl);
    expect(await sql(replicaUrl, ROWS)).to.deep.equal(await sql(primary.url, ROWS));
    expect((await sql<{ r: boolean }>(replicaUrl, 'SELECT pg_is_in_recovery() AS r'))[0]!.r).to.equal(true);
    const refused = await sql(replicaUrl, "INSERT INTO ledger VALUES (999, 'x')").catch((e: Error) => e);
    expect(refused).to.be.instanceOf(Error).with.property('message').that.matches(/read-only transaction/);
  });

  // Primary lost (fenced by an immediate stop), replica promoted: every replicated commit is there, on a new timeline, writable.
  it('promotes the replica with every replicated commit', async () => {
    await sql(primary.url, "UPDATE ledger SET note = 'updated before failover' WHERE id <= 10");
    await caughtUp(primary.url, replicaUrl);
    const before = await sql(primary.url, ROWS);
    // Step 2 of the runbook, fence: the old primary stops accepting anything (immediate: as abrupt as a crash).
    primary.stop('immediate');
    // Step 3: the replica's position (the only replica here, so it wins).
    const [position] = await sql<{ replay: string | null }>(replicaUrl, 'SELECT pg_last_wal_replay_lsn()::text AS replay');
    expect(position!.replay).to.be.a('string');
    // Step 4: promote.
    const [{ promoted }] = await sql<{ promoted: boolean }>(replicaUrl, 'SELECT pg_promote(wait => true, wait_seconds => 60) AS promoted');
    expect(promoted).to.equal(true);
    expect((await sql<{ r: boolean }>(replicaUrl, 'SELECT pg_is_in_recovery() AS r'))[0]!.r).to.equal(false);
    expect(await sql(replicaUrl, ROWS)).to.deep.equal(before);
    await sql(replicaUrl, "INSERT INTO ledger VALUES (1000, 'written on the new primary')");
    // The promotion started timeline 2 (visible in the control file after the next checkpoint).
    await sql(replicaUrl, 'CHECKPOINT');
    const [{ timeline }] = await sql<{ timeline: number }>(replicaUrl, 'SELECT timeline_id AS timeline FROM pg_control_checkpoint()');
    expect(timeline).to.equal(2);
  });

  // Step 7: the old primary (crashed, not shut down cleanly) is rewound onto the new timeline and rejoins as a replica of the
  // new primary; it never acts as a primary again.
  it('rewinds the old primary into a replica of the new one', async () => {
    const sourceServer = `host=127.0.0.1 port=${replicaPort} user=postgres dbname=postgres`;
    runAsClusterUser(join(bin.dir, 'pg_rewind'), ['--target-pgdata', primary.dataDir, '--source-server', sourceServer, '--restore-target-wal', '--write-recovery-conf']);
    // pg_rewind copied the new primary's configuration files too: put back this node's own port and socket directory.
    appendFileSync(join(primary.dataDir, 'postgresql.auto.conf'), `port = ${primary.port}\nunix_socket_directories = '${primary.socketDir}'\n`);
    primary.start();
    await sql(replicaUrl, "INSERT INTO ledger VALUES (1001, 'after the old primary rejoined')");
    await caughtUp(replicaUrl, primary.url);
    expect((await sql<{ r: boolean }>(primary.url, 'SELECT pg_is_in_recovery() AS r'))[0]!.r).to.equal(true);
    expect(await sql(primary.url, ROWS)).to.deep.equal(await sql(replicaUrl, ROWS));
    const [{ n }] = await sql<{ n: string }>(replicaUrl, "SELECT count(*)::text AS n FROM pg_stat_replication WHERE state = 'streaming'");
    expect(n).to.equal('1');
  });
});
