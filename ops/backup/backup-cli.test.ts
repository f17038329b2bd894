/**
 * The backup CLI against a real PostgreSQL with the real pg_dump/pg_restore:
 * backup → verify → restore round trips, every refusal (tampered, truncated,
 * wrong key, wrong manifest, non-empty target), retention pruning, and tool
 * selection. Most calls go through `main()` in-process (same code path as the
 * binary minus process start-up); two go through `node ops/backup/cli.ts` to
 * prove the entry point and its exit codes.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import pg from 'pg';
import { createDatabase } from '../../testing/harness';
import { withDatabase } from '../../platform/db';
import { projectRoot } from '../../platform/paths';
import { PgToolError } from './backup-errors';
import { keyIdOf } from './backup-key';
import { main } from './cli';
import { manifestPathFor, sha256File, type Manifest } from './manifest';
import { pickBinDir, serverVersion } from './pg-tools';
import { snapshotDatabase, sequenceValues } from './table-snapshot';
import { backupTestServerOrSkip, type BackupTestServer } from '../../testing/backup-server';

interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

async function cli(argv: string[], env: NodeJS.ProcessEnv): Promise<CliResult> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(argv, env, (l) => out.push(l), (l) => err.push(l));
  return { code, stdout: out.join('\n'), stderr: err.join('\n') };
}

function cliProcess(argv: string[], env: NodeJS.ProcessEnv): CliResult {
  const result = spawnSync(process.execPath, ['--import', 'tsx', join('ops', 'backup', 'cli.ts'), ...argv], {
    cwd: projectRoot(),
    env,
    encoding: 'utf8',
    timeout: 60_000,
  });
  return { code: result.status ?? -1, stdout: result.stdout, stderr: result.stderr };
}

async function query<T extends pg.QueryResultRow>(url: string, sql: string, params: unknown[] = []): Promise<T[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<T>(sql, params)).rows;
  } finally {
    await client.end();
  }
}

async function databaseExists(serverUrl: string, name: string): Promise<boolean> {
  return (await query(serverUrl, 'SELECT 1 FROM pg_database WHERE datname = $1', [name])).length === 1;
}

const CANARY = `canary-${randomBytes(6).toString('hex')}`;

/** A schema with the column types a ledger uses, a view, a function, and enough rows for several chunks. */
const SEED_SQL = `
  CREATE TABLE accounts (id bigserial PRIMARY KEY, tenant text NOT NULL UNIQUE, balance bigint NOT NULL CHECK (balance >= 0),
                         meta jsonb NOT NULL DEFAULT '{}', created_at timestamptz NOT NULL DEFAULT now());
  CREATE TABLE entries (account_id bigint NOT NULL REFERENCES accounts(id), seq int NOT NULL, amount bigint NOT NULL,
                        note text, digest bytea, PRIMARY KEY (account_id, seq));
  CREATE VIEW balances AS SELECT tenant, balance FROM accounts;
  CREATE FUNCTION total() RETURNS numeric LANGUAGE sql AS 'SELECT sum(balance) FROM accounts';
  INSERT INTO accounts (tenant, balance, meta)
    SELECT 'tenant-' || i, i * 1000, jsonb_build_object('tier', i % 3, 'name', 'Zoë ' || i) FROM generate_series(1, 200) i;
  INSERT INTO entries SELECT a, s, (a * s) % 997 - 400, md5(a::text || s::text) || ' ${CANARY}', sha256((a * s)::text::bytea)
    FROM generate_series(1, 200) a, generate_series(1, 60) s;
  UPDATE accounts SET balance = 9223372036854775807 WHERE id = 7;`;

describe('backup CLI (real PostgreSQL, pg_dump, pg_restore)', function () {
  this.timeout(120_000);
  let server: BackupTestServer;
  let source: { url: string; drop: () => Promise<void> };
  let dir: string;
  let keyFile: string;
  let env: NodeJS.ProcessEnv;
  let backupDir: string;
  let archive: string;
  let manifest: Manifest;
  const created: string[] = [];

  before(async function () {
    server = await backupTestServerOrSkip(this);
    source = await createDatabase(server.serverUrl, 'shieldx_bk_src');
    await query(source.url, SEED_SQL);
    dir = mkdtempSync(join(tmpdir(), 'shieldx-backup-test-'));
    keyFile = join(dir, 'backup.key');
    env = { ...process.env, SHIELDX_BACKUP_KEY: '', DATABASE_URL: '' };
    const keygen = await cli(['keygen', '--out', keyFile], env);
    expect(keygen.code, keygen.stderr).to.equal(0);
    backupDir = join(dir, 'backups');
    // Small chunks so the test archive has many of them.
    const result = await cli(['backup', '--db-url', source.url, '--out-dir', backupDir, '--key-file', keyFile, '--chunk-kib', '32', '--json'], env);
    expect(result.code, result.stderr).to.equal(0);
    const printed = JSON.parse(result.stdout) as { archivePath: string };
    archive = printed.archivePath;
    manifest = JSON.parse(readFileSync(manifestPathFor(archive), 'utf8')) as Manifest;
  });

  after(async () => {
    for (const name of created) {
      await query(server.serverUrl, `DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`).catch(() => undefined);
    }
    await source?.drop();
    if (dir) rmSync(dir, { recursive: true, force: true });
    server?.stop();
  });

  function targetName(what: string): string {
    const name = `shieldx_bk_${what}_${randomBytes(3).toString('hex')}`;
    created.push(name);
    return name;
  }

  function damagedCopy(name: string, damage: (path: string) => void): string {
    const copy = join(dir, `${name}.pgdump.enc`);
    copyFileSync(archive, copy);
    const m = { ...manifest, archive: `${name}.pgdump.enc` };
    writeFileSync(manifestPathFor(copy), JSON.stringify(m));
    damage(copy);
    return copy;
  }

  // The archive and manifest are written, the manifest's checksum, sizes and key id describe the file, and no plaintext is visible in it.
  it('writes an encrypted archive and a manifest that describes it', async () => {
    expect(readdirSync(backupDir).sort()).to.deep.equal([manifest.archive, `${manifest.archive}.manifest.json`].sort());
    const version = await serverVersion(source.url);
    expect(manifest).to.include({ tool: 'shieldx-backup', formatVersion: 1, compression: 'gzip', cipher: 'aes-256-gcm', serverVersionNum: version.num });
    expect(manifest.database).to.match(/^shieldx_bk_src_/);
    expect(manifest.keyId).to.equal(keyIdOf(Buffer.from(readFileSync(keyFile, 'utf8').trim(), 'base64')));
    expect(manifest.pgDumpVersion).to.match(/^pg_dump \(PostgreSQL\) \d+/);
    expect(manifest.pgDumpMajor).to.be.at.least(version.major);
    expect(manifest.sha256).to.equal(await sha256File(archive));
    expect(manifest.sizes.encryptedBytes).to.equal(statSync(archive).size);
    expect(manifest.sizes.compressedBytes).to.be.lessThan(manifest.sizes.plainBytes);
    expect(manifest.chunkCount).to.equal(Math.ceil(manifest.sizes.compressedBytes / (32 * 1024)));
    expect(Date.parse(manifest.completedAt)).to.be.at.least(Date.parse(manifest.createdAt));
    expect(readFileSync(archive).includes(Buffer.from(CANARY))).to.equal(false);
    expect(statSync(archive).mode & 0o777).to.equal(0o600);
  });

  // verify, run as the real binary, authenticates the archive and lists its contents through pg_restore --list.
  it('verifies the archive and lists its contents (CLI binary)', () => {
    const result = cliProcess(['verify', archive, '--key-file', keyFile], env);
    expect(result.code, result.stderr).to.equal(0);
    expect(result.stdout).to.include(`${manifest.chunkCount} chunks authenticated`);
    expect(result.stdout).to.match(/TABLE DATA public accounts/).and.match(/TABLE DATA public entries/).and.match(/VIEW public balances/);
    expect(result.stdout).to.match(/FUNCTION public total\(\)/);
  });

  // One flipped byte in the middle: the real binary exits 3 with a message naming tampering.
  it('rejects a tampered archive with exit code 3 (CLI binary)', () => {
    const copy = damagedCopy('tampered', (path) => {
      const bytes = readFileSync(path);
      bytes[Math.floor(bytes.length / 2)]! ^= 0x20;
      writeFileSync(path, bytes);
    });
    const result = cliProcess(['verify', copy, '--key-file', keyFile], env);
    expect(result.code).to.equal(3);
    expect(result.stderr).to.match(/INTEGRITY FAILURE \(TAMPERED\): chunk \d+ failed authentication/);
    expect(result.stdout).to.equal('');
  });

  // A truncated archive (cut mid-file, or just the last byte) is rejected as truncated.
  it('rejects a truncated archive', async () => {
    for (const keep of [Math.floor(manifest.sizes.encryptedBytes / 2), manifest.sizes.encryptedBytes - 1]) {
      const copy = damagedCopy(`truncated${keep}`, (path) => truncateSync(path, keep));
      const result = await cli(['verify', copy, '--key-file', keyFile], env);
      expect(result.code).to.equal(3);
      expect(result.stderr).to.match(/INTEGRITY FAILURE \(TRUNCATED\)/);
    }
  });

  // Another key, a manifest whose checksum is not this file's, and a missing manifest each fail with their own reason.
  it('rejects the wrong key, a mismatched manifest and a missing manifest', async () => {
    const otherKey = join(dir, 'other.key');
    writeFileSync(otherKey, randomBytes(32), { mode: 0o600 });
    const wrongKey = await cli(['verify', archive, '--key-file', otherKey], env);
    expect(wrongKey.code).to.equal(3);
    expect(wrongKey.stderr).to.match(/WRONG_KEY/).and.include(manifest.keyId);

    const badSum = damagedCopy('badsum', (path) => {
      const m = JSON.parse(readFileSync(manifestPathFor(path), 'utf8')) as Manifest;
      writeFileSync(manifestPathFor(path), JSON.stringify({ ...m, sha256: 'ab'.repeat(32) }));
    });
    const mismatch = await cli(['verify', badSum, '--key-file', keyFile], env);
    expect(mismatch.code).to.equal(3);
    expect(mismatch.stderr).to.match(/CHECKSUM_MISMATCH/);

    const orphan = damagedCopy('orphan', (path) => rmSync(manifestPathFor(path)));
    const missing = await cli(['verify', orphan, '--key-file', keyFile], env);
    expect(missing.code).to.equal(3);
    expect(missing.stderr).to.match(/MANIFEST_INVALID/).and.match(/no manifest/);
  });

  // Restore into a new database creates it; every table (ordered by primary key) and every sequence equals the source.
  it('restores into a new database, identical to the source', async () => {
    const target = targetName('restored');
    const result = await cli(['restore', archive, '--target-db', target, '--db-url', server.serverUrl, '--key-file', keyFile, '--json'], env);
    expect(result.code, result.stderr).to.equal(0);
    expect(JSON.parse(result.stdout)).to.include({ ok: true, created: true, droppedExisting: false, tables: 2 });
    const targetUrl = withDatabase(server.serverUrl, target);
    const [want, got] = [await snapshotDatabase(source.url), await snapshotDatabase(targetUrl)];
    expect([...got.keys()]).to.deep.equal(['public.accounts', 'public.entries']);
    expect(got.get('public.entries')!.rows).to.have.length(12_000);
    expect(got).to.deep.equal(want);
    expect(await sequenceValues(targetUrl)).to.deep.equal(await sequenceValues(source.url));
    expect(await query(targetUrl, 'SELECT total()::text AS t')).to.deep.equal(await query(source.url, 'SELECT total()::text AS t'));
  });

  // A non-empty target is refused (exit 5) and left exactly as it was; --force drops it and restores the backup.
  it('refuses to overwrite a non-empty database unless --force', async () => {
    const target = targetName('occupied');
    await query(server.serverUrl, `CREATE DATABASE "${target}"`);
    const targetUrl = withDatabase(server.serverUrl, target);
    await query(targetUrl, "CREATE TABLE precious (note text); INSERT INTO precious VALUES ('keep me')");

    const refused = await cli(['restore', archive, '--target-db', target, '--db-url', server.serverUrl, '--key-file', keyFile], env);
    expect(refused.code).to.equal(5);
    expect(refused.stderr).to.match(/restore refused: database ".*" is not empty/).and.match(/--force/);
    expect(await query(targetUrl, 'SELECT note FROM precious')).to.deep.equal([{ note: 'keep me' }]);
    expect((await snapshotDatabase(targetUrl)).has('public.accounts')).to.equal(false);

    const forced = await cli(['restore', archive, '--target-db', target, '--db-url', server.serverUrl, '--key-file', keyFile, '--force', '--json'], env);
    expect(forced.code, forced.stderr).to.equal(0);
    expect(JSON.parse(forced.stdout)).to.include({ droppedExisting: true });
    const snapshot = await snapshotDatabase(targetUrl);
    expect(snapshot.has('public.precious')).to.equal(false);
    expect(snapshot).to.deep.equal(await snapshotDatabase(source.url));
  });

  // An existing but empty database is restored into as it is (no --force needed).
  it('restores into an existing empty database', async () => {
    const target = targetName('empty');
    await query(server.serverUrl, `CREATE DATABASE "${target}" TEMPLATE template0`);
    const result = await cli(['restore', archive, '--target-db', target, '--db-url', server.serverUrl, '--key-file', keyFile, '--json'], env);
    expect(result.code, result.stderr).to.equal(0);
    expect(JSON.parse(result.stdout)).to.include({ created: false, droppedExisting: false, tables: 2 });
  });

  // A tampered or truncated archive restores nothing: verification refuses it first, and without verification the
  // restore pass kills pg_restore before its transaction commits; the database it created is dropped again.
  it('leaves no database behind when the archive is damaged', async () => {
    const tampered = damagedCopy('tampered-restore', (path) => {
      const bytes = readFileSync(path);
      bytes[bytes.length - 40]! ^= 0x01;
      writeFileSync(path, bytes);
    });
    const truncated = damagedCopy('truncated-restore', (path) => truncateSync(path, manifest.sizes.encryptedBytes - 10));
    for (const [copy, flags] of [
      [tampered, []],
      [tampered, ['--skip-verify']],
      [truncated, ['--skip-verify']],
    ] as const) {
      const target = targetName('damaged');
      const result = await cli(['restore', copy, '--target-db', target, '--db-url', server.serverUrl, '--key-file', keyFile, ...flags], env);
      expect(result.code, `${copy} ${flags.join(' ')}`).to.equal(3);
      expect(result.stderr).to.match(/INTEGRITY FAILURE/);
      expect(await databaseExists(server.serverUrl, target), `${target} left behind`).to.equal(false);
    }
  });

  // --compression none keeps pg_dump's own compression; the archive still verifies and restores identically.
  it('backs up with pg_dump compression only (--compression none)', async () => {
    const out = join(dir, 'plain-compression');
    const made = await cli(['backup', '--db-url', source.url, '--out-dir', out, '--compression', 'none', '--json'], {
      ...env,
      SHIELDX_BACKUP_KEY: readFileSync(keyFile, 'utf8').trim(),
    });
    expect(made.code, made.stderr).to.equal(0);
    const m = JSON.parse(made.stdout) as Manifest & { archivePath: string };
    expect(m.compression).to.equal('none');
    expect(m.sizes.compressedBytes).to.equal(m.sizes.plainBytes);
    const target = targetName('nocompress');
    const restored = await cli(['restore', m.archivePath, '--target-db', target, '--db-url', server.serverUrl, '--key-file', keyFile], env);
    expect(restored.code, restored.stderr).to.equal(0);
    expect(await snapshotDatabase(withDatabase(server.serverUrl, target))).to.deep.equal(await snapshotDatabase(source.url));
  });

  // pg_dump failing part-way (a stand-in that writes some bytes, then errors) leaves no archive and no manifest.
  it('leaves nothing behind when pg_dump fails', async () => {
    const major = (await serverVersion(source.url)).major;
    const fakeBin = join(dir, 'fake-bin');
    mkdirSync(fakeBin);
    writeFileSync(
      join(fakeBin, 'pg_dump'),
      `#!/bin/sh\nif [ "$1" = "--version" ]; then echo "pg_dump (PostgreSQL) ${major}.99"; exit 0; fi\n` +
        `head -c 100000 /dev/urandom\necho "pg_dump: error: simulated failure" >&2\nexit 1\n`,
    );
    chmodSync(join(fakeBin, 'pg_dump'), 0o755);
    const out = join(dir, 'failed');
    const result = await cli(['backup', '--db-url', source.url, '--out-dir', out, '--key-file', keyFile], { ...env, PG_BIN_DIR: fakeBin });
    expect(result.code).to.equal(4);
    expect(result.stderr).to.match(/pg_dump exited with code 1: pg_dump: error: simulated failure/);
    expect(readdirSync(out)).to.deep.equal([]);
  });

  // pg_restore failing part-way (a stand-in that reads some input, then errors) is reported with its own message, and the
  // database the restore created is dropped again.
  it('reports a failing pg_restore and leaves no database behind', async () => {
    const fakeBin = join(dir, 'fake-restore-bin');
    mkdirSync(fakeBin);
    writeFileSync(
      join(fakeBin, 'pg_restore'),
      `#!/bin/sh\nif [ "$1" = "--version" ]; then echo "pg_restore (PostgreSQL) ${manifest.pgDumpMajor}.99"; exit 0; fi\n` +
        `head -c 1000 >/dev/null\necho "pg_restore: error: simulated failure" >&2\nexit 1\n`,
    );
    chmodSync(join(fakeBin, 'pg_restore'), 0o755);
    const target = targetName('failing');
    const result = await cli(['restore', archive, '--target-db', target, '--db-url', server.serverUrl, '--key-file', keyFile, '--skip-verify'], {
      ...env,
      PG_BIN_DIR: fakeBin,
    });
    expect(result.code).to.equal(4);
    expect(result.stderr).to.match(/pg_restore failed; nothing was committed: pg_restore: error: simulated failure/);
    expect(await databaseExists(server.serverUrl, target)).to.equal(false);
  });

  // Tools are chosen by the server's major version; when none fits, the message says what was found and what to install.
  it('picks tools by server version and explains when none fits', async () => {
    const version = await serverVersion(source.url);
    const chosen = pickBinDir({ tools: ['pg_dump'], minMajor: version.major, preferMajor: version.major, reason: 'test' });
    expect(chosen.major).to.be.at.least(version.major);
    expect(() => pickBinDir({ tools: ['pg_dump'], minMajor: 99, preferMajor: 99, reason: 'server is 99.0' }))
      .to.throw(PgToolError, /no pg_dump for PostgreSQL 99 or newer \(server is 99.0\); found: .*Install postgresql-client-99 or set PG_BIN_DIR/);
    const result = await cli(['backup', '--db-url', source.url, '--out-dir', join(dir, 'x'), '--key-file', keyFile], { ...env, PG_BIN_DIR: join(dir, 'nowhere') });
    expect(result.code).to.equal(4);
    expect(result.stderr).to.match(/PG_BIN_DIR=.*nowhere has no pg_dump/);
  });

  // Usage errors exit 2: unknown option, missing target, unknown command.
  it('exits 2 on usage errors', async () => {
    expect((await cli(['verify', archive, '--bogus'], env)).code).to.equal(2);
    expect((await cli(['restore', archive, '--key-file', keyFile, '--db-url', server.serverUrl], env)).stderr).to.match(/--target-db is required/);
    expect((await cli(['frobnicate'], env)).code).to.equal(2);
  });

  // Options belong to their command: `restore … --dry-run --force` is refused (exit 2) before any connection,
  // instead of ignoring --dry-run and dropping the target; the target is left exactly as it was.
  it('refuses an option of another command, e.g. restore --dry-run, and restores nothing', async () => {
    const target = targetName('dryrun');
    await query(server.serverUrl, `CREATE DATABASE "${target}"`);
    const targetUrl = withDatabase(server.serverUrl, target);
    await query(targetUrl, "CREATE TABLE precious (note text); INSERT INTO precious VALUES ('keep me')");

    const refused = await cli(['restore', archive, '--target-db', target, '--db-url', server.serverUrl, '--key-file', keyFile, '--dry-run', '--force'], env);
    expect(refused.code).to.equal(2);
    expect(refused.stderr).to.match(/^usage error: restore does not take --dry-run/);
    expect(refused.stdout).to.equal('');
    expect(await query(targetUrl, 'SELECT note FROM precious')).to.deep.equal([{ note: 'keep me' }]);
    expect((await snapshotDatabase(targetUrl)).has('public.accounts')).to.equal(false);

    // A new target is not created, and the refusal comes before connecting (an unreachable server still gives 2).
    const fresh = targetName('dryrun_new');
    const notCreated = await cli(['restore', archive, '--target-db', fresh, '--db-url', server.serverUrl, '--key-file', keyFile, '--dry-run'], env);
    expect(notCreated.code).to.equal(2);
    expect(await databaseExists(server.serverUrl, fresh)).to.equal(false);
    const unreachable = await cli(['restore', archive, '--target-db', fresh, '--db-url', 'postgres://127.0.0.1:1/postgres', '--key-file', keyFile, '--dry-run=true'], env);
    expect(unreachable.code).to.equal(2);
    expect(unreachable.stderr).to.match(/restore does not take --dry-run/);

    // The same for the other commands.
    for (const [argv, flag] of [
      [['verify', archive, '--key-file', keyFile, '--force'], '--force'],
      [['backup', '--db-url', source.url, '--out-dir', join(dir, 'never'), '--key-file', keyFile, '--dry-run'], '--dry-run'],
      [['prune', '--dir', backupDir, '--older-than-days', '0', '--keep-last', '0', '--force'], '--force'],
      [['keygen', '--out', join(dir, 'never.key'), '--key-file', keyFile], '--key-file'],
    ] as const) {
      const result = await cli([...argv], env);
      expect(result.code, argv.join(' ')).to.equal(2);
      expect(result.stderr, argv.join(' ')).to.match(new RegExp(`^usage error: ${argv[0]} does not take ${flag}`));
    }
    expect(existsSync(join(dir, 'never'))).to.equal(false);
    expect(existsSync(join(dir, 'never.key'))).to.equal(false);
    expect(readdirSync(backupDir).sort()).to.deep.equal([manifest.archive, `${manifest.archive}.manifest.json`].sort());
  });

  // A manifest whose sizes, chunk count or chunk size disagree with the archive (checksum still right) is a
  // MANIFEST_MISMATCH (exit 3), on verify and on restore, which then creates nothing.
  it('rejects a manifest whose sizes or chunk count disagree with the archive (MANIFEST_MISMATCH)', async () => {
    const withManifest = (name: string, change: (m: Manifest) => Manifest) =>
      damagedCopy(name, (path) => {
        const m = JSON.parse(readFileSync(manifestPathFor(path), 'utf8')) as Manifest;
        writeFileSync(manifestPathFor(path), JSON.stringify(change(m)));
      });
    const cases: Array<[string, (m: Manifest) => Manifest, RegExp]> = [
      [
        'sizes',
        (m) => ({ ...m, chunkCount: m.chunkCount + 1, sizes: { ...m.sizes, plainBytes: m.sizes.plainBytes + 1 } }),
        new RegExp(
          `INTEGRITY FAILURE \\(MANIFEST_MISMATCH\\): archive does not match its manifest: ` +
            `dump ${manifest.sizes.plainBytes} B vs ${manifest.sizes.plainBytes + 1} B, ${manifest.chunkCount} chunks vs ${manifest.chunkCount + 1}`,
        ),
      ],
      [
        'filesize',
        (m) => ({ ...m, sizes: { ...m.sizes, encryptedBytes: m.sizes.encryptedBytes - 1, compressedBytes: m.sizes.compressedBytes + 7 } }),
        new RegExp(
          `MANIFEST_MISMATCH\\): archive does not match its manifest: file ${manifest.sizes.encryptedBytes} B vs ${manifest.sizes.encryptedBytes - 1} B, ` +
            `compressed ${manifest.sizes.compressedBytes} B vs ${manifest.sizes.compressedBytes + 7} B`,
        ),
      ],
      [
        'chunksize',
        (m) => ({ ...m, chunkSizeBytes: m.chunkSizeBytes * 2 }),
        /MANIFEST_MISMATCH\): archive header \(compression gzip, chunk 32768 B\) does not match its manifest \(compression gzip, chunk 65536 B\)/,
      ],
    ];
    for (const [name, change, message] of cases) {
      const copy = withManifest(`mismatch-${name}`, change);
      const verified = await cli(['verify', copy, '--key-file', keyFile], env);
      expect(verified.code, name).to.equal(3);
      expect(verified.stderr, name).to.match(message);
      expect(verified.stdout, name).to.equal('');
    }
    const target = targetName('mismatch');
    const restored = await cli(['restore', withManifest('mismatch-restore', (m) => ({ ...m, chunkCount: m.chunkCount + 1 })), '--target-db', target, '--db-url', server.serverUrl, '--key-file', keyFile], env);
    expect(restored.code).to.equal(3);
    expect(restored.stderr).to.match(/MANIFEST_MISMATCH/);
    expect(await databaseExists(server.serverUrl, target)).to.equal(false);
  });
});

describe('backup keys', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'shieldx-backup-key-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  // keygen never overwrites: an existing key file (the only copy of a key, maybe) is refused and left byte for byte.
  it('keygen refuses an existing file and leaves it unchanged', async () => {
    const keyFile = join(dir, 'backup.key');
    const first = await cli(['keygen', '--out', keyFile, '--json'], {});
    expect(first.code, first.stderr).to.equal(0);
    const before = readFileSync(keyFile);
    const mode = statSync(keyFile).mode;
    const again = await cli(['keygen', '--out', keyFile], {});
    expect(again.code).to.equal(2);
    expect(again.stderr).to.match(/^usage error: cannot create key file .*backup\.key: EEXIST/);
    expect(again.stdout).to.equal('');
    expect(readFileSync(keyFile).equals(before)).to.equal(true);
    expect(statSync(keyFile).mode).to.equal(mode);

    const other = join(dir, 'notes.txt');
    writeFileSync(other, 'not a key');
    expect((await cli(['keygen', '--out', other], {})).code).to.equal(2);
    expect(readFileSync(other, 'utf8')).to.equal('not a key');
  });

  // A key of the wrong length (raw bytes, base64 text, or the environment variable) is refused with a message
  // saying what a key must be, before any archive or database is touched.
  it('refuses a key of the wrong length with a clear error', async () => {
    const archive = join(dir, 'absent.pgdump.enc');
    const cases: Array<[string, Buffer | string, RegExp]> = [
      ['raw16.key', randomBytes(16), /key file .*raw16\.key is not base64 \(expected 32 bytes, base64-encoded: 44 characters\)/],
      ['raw33.key', Buffer.concat([randomBytes(32), Buffer.from([0xff])]), /key file .*raw33\.key is not base64/],
      ['b64-16.key', `${randomBytes(16).toString('base64')}\n`, /key file .*b64-16\.key decodes to 16 bytes; an AES-256 key is 32 bytes/],
      ['b64-48.key', randomBytes(48).toString('base64'), /key file .*b64-48\.key decodes to 48 bytes; an AES-256 key is 32 bytes/],
      ['empty.key', '', /key file .*empty\.key is not base64/],
    ];
    for (const [name, content, message] of cases) {
      const keyFile = join(dir, name);
      writeFileSync(keyFile, content, { mode: 0o600 });
      const result = await cli(['verify', archive, '--key-file', keyFile], {});
      expect(result.code, name).to.equal(2);
      expect(result.stderr, name).to.match(message);
    }
    const fromEnv = await cli(['backup', '--db-url', 'postgres://127.0.0.1:1/x', '--out-dir', join(dir, 'out')], {
      SHIELDX_BACKUP_KEY: randomBytes(31).toString('base64'),
    });
    expect(fromEnv.code).to.equal(2);
    expect(fromEnv.stderr).to.match(/SHIELDX_BACKUP_KEY decodes to 31 bytes; an AES-256 key is 32 bytes/);
    expect(existsSync(join(dir, 'out'))).to.equal(false);
  });
});

describe('backup prune', () => {
  let dir: string;
  const now = Date.now();
  const DAY = 86_400_000;

  /** A backup pair whose manifest says it was taken `ageDays` ago (prune never decrypts, so the archive is filler). */
  function fakeBackup(database: string, ageDays: number): string {
    const createdAt = new Date(now - ageDays * DAY);
    const archive = `${database}-${createdAt.toISOString().replace(/[-:.]/g, '')}.pgdump.enc`;
    const body = randomBytes(100);
    writeFileSync(join(dir, archive), body);
    const manifest: Manifest = {
      tool: 'shieldx-backup',
      formatVersion: 1,
      archive,
      database,
      serverVersion: '15.20',
      serverVersionNum: 150020,
      pgDumpVersion: 'pg_dump (PostgreSQL) 15.20',
      pgDumpMajor: 15,
      createdAt: createdAt.toISOString(),
      completedAt: createdAt.toISOString(),
      compression: 'gzip',
      cipher: 'aes-256-gcm',
      chunkSizeBytes: 1048576,
      chunkCount: 1,
      keyId: '0011223344556677',
      sizes: { plainBytes: 1, compressedBytes: 1, encryptedBytes: body.length },
      sha256: '00'.repeat(32),
    };
    writeFileSync(join(dir, `${archive}.manifest.json`), JSON.stringify(manifest));
    return archive;
  }

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'shieldx-prune-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  // Only old backups with a valid manifest go; the newest of each database stays; orphans, bad manifests and partials are untouched.
  it('deletes only old backups with valid manifests, keeping the newest per database', async () => {
    const a40 = fakeBackup('ledger', 40);
    const a20 = fakeBackup('ledger', 20);
    const a1 = fakeBackup('ledger', 1);
    const b50 = fakeBackup('other', 50);
    const b45 = fakeBackup('other', 45);
    const sizeLie = fakeBackup('third', 90);
    writeFileSync(join(dir, sizeLie), randomBytes(7)); // archive no longer the manifest's size
    writeFileSync(join(dir, 'orphan-20200101T000000000Z.pgdump.enc'), randomBytes(10));
    writeFileSync(join(dir, 'garbage.pgdump.enc.manifest.json'), '{not json');
    writeFileSync(join(dir, 'garbage.pgdump.enc'), randomBytes(10));
    writeFileSync(join(dir, 'half-20200101T000000000Z.pgdump.enc.partial'), randomBytes(10));
    writeFileSync(join(dir, 'README.txt'), 'operator notes');

    const result = await cli(['prune', '--dir', dir, '--older-than-days', '30', '--json'], {});
    expect(result.code, result.stderr).to.equal(0);
    const report = JSON.parse(result.stdout) as { deleted: { archive: string }[]; kept: { archive: string }[]; skipped: { file: string }[] };
    expect(report.deleted.map((d) => d.archive).sort()).to.deep.equal([a40, b50].sort());
    expect(report.kept.map((d) => d.archive).sort()).to.deep.equal([a1, a20, b45].sort());
    expect(report.skipped.map((s) => s.file).sort()).to.deep.equal(
      [
        `${sizeLie}.manifest.json`,
        sizeLie,
        'garbage.pgdump.enc.manifest.json',
        'garbage.pgdump.enc',
        'half-20200101T000000000Z.pgdump.enc.partial',
        'orphan-20200101T000000000Z.pgdump.enc',
      ].sort(),
    );
    for (const gone of [a40, b50]) {
      expect(existsSync(join(dir, gone))).to.equal(false);
      expect(existsSync(join(dir, `${gone}.manifest.json`))).to.equal(false);
    }
    for (const still of [a20, a1, b45, sizeLie, 'orphan-20200101T000000000Z.pgdump.enc', 'garbage.pgdump.enc', 'README.txt']) {
      expect(existsSync(join(dir, still)), still).to.equal(true);
    }
  });

  // --dry-run reports and deletes nothing; --keep-last 0 lets the newest old backup go too.
  it('dry-run deletes nothing; --keep-last 0 removes the age floor', async () => {
    const b50 = fakeBackup('other', 50);
    const b45 = fakeBackup('other', 45);
    const before = readdirSync(dir).sort();
    const dry = await cli(['prune', '--dir', dir, '--older-than-days', '30', '--keep-last', '0', '--dry-run'], {});
    expect(dry.code, dry.stderr).to.equal(0);
    expect(dry.stdout).to.include(`would delete ${b50}`).and.include(`would delete ${b45}`).and.include('(dry run)');
    expect(readdirSync(dir).sort()).to.deep.equal(before);
    const real = await cli(['prune', '--dir', dir, '--older-than-days', '30', '--keep-last', '0'], {});
    expect(real.code).to.equal(0);
    expect(readdirSync(dir)).to.deep.equal([]);
  });

  // Bad arguments are usage errors and touch nothing.
  it('rejects bad arguments', async () => {
    fakeBackup('ledger', 400);
    fakeBackup('ledger', 300);
    for (const [argv, message] of [
      [['prune', '--dir', dir], /--older-than-days is required/],
      // `=` form: `--older-than-days -1` would be refused by parseArgs as ambiguous, never reaching prune's own check.
      [['prune', '--dir', dir, '--older-than-days=-1'], /^usage error: --older-than-days must be a number of days, 0 or more$/],
      [['prune', '--dir', dir, '--older-than-days', 'ten'], /--older-than-days must be a number \(got "ten"\)/],
      [['prune', '--dir', join(dir, 'absent'), '--older-than-days', '1'], /cannot read backup directory .*absent/],
    ] as const) {
      const result = await cli([...argv], {});
      expect(result.code, argv.join(' ')).to.equal(2);
      expect(result.stderr, argv.join(' ')).to.match(message);
    }
    expect(readdirSync(dir)).to.have.length(4);
  });
});
