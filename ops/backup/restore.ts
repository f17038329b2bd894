/**
 * `restore`: archive → decrypt → gunzip → `pg_restore --single-transaction
 * --exit-on-error` into a named database.
 *
 * Safety, in order:
 *  1. the key must be the manifest's; by default the whole archive is verified
 *     first (tags, end marker, checksum), so nothing is touched for a bad file;
 *  2. the target is created (from template0) when absent; an existing
 *     non-empty database is refused unless `force`, which drops and recreates it;
 *  3. during the restore pass pg_restore only sees authenticated bytes, its
 *     stdin is closed only after the end marker and the checksum checked, and
 *     on any failure it is SIGKILLed first, so its single transaction never
 *     commits a partial restore; a database this run created is dropped again.
 */
import { join } from 'node:path';
import pg from 'pg';
import { withDatabase } from '../../platform/db';
import { BackupIntegrityError, BackupUsageError, PgToolError, RestoreRefusedError } from './backup-errors';
import { feedStdin, killTool, startTool } from './child-process';
import { locateManifest, type Manifest } from './manifest';
import { connectionForTool, databaseOf, serverVersion, type PgBinDir } from './pg-tools';
import { assertKeyMatches, readArchive, type ReadSummary } from './read-archive';
import { pgRestoreFor, verify } from './verify';

export interface RestoreOptions {
  /** The archive or its manifest. */
  readonly path: string;
  readonly key: Buffer;
  /** A connection URL on the target server (its database is only used to connect for CREATE/DROP). */
  readonly serverUrl: string;
  readonly targetDb: string;
  /** Drop and recreate a non-empty target. */
  readonly force?: boolean;
  /** Skip the verification pass (the restore pass still authenticates every chunk). */
  readonly skipVerify?: boolean;
  /** pg_restore --no-owner: objects owned by the connecting role (restoring to another cluster). */
  readonly noOwner?: boolean;
  /** pg_restore --no-privileges: skip GRANT/REVOKE. */
  readonly noPrivileges?: boolean;
  readonly env?: NodeJS.ProcessEnv;
}

export interface RestoreResult {
  readonly targetDb: string;
  readonly targetUrl: string;
  readonly created: boolean;
  readonly droppedExisting: boolean;
  readonly manifest: Manifest;
  readonly summary: ReadSummary;
  readonly pgRestore: PgBinDir;
  /** Tables in the restored database, outside the system schemas. */
  readonly tableCount: number;
}

const RESERVED_DATABASES = new Set(['template0', 'template1']);

function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

function validateTarget(targetDb: string, maintenanceDb: string): void {
  if (targetDb.length === 0) throw new BackupUsageError('--target-db must not be empty');
  if (Buffer.byteLength(targetDb) > 63) throw new BackupUsageError(`--target-db "${targetDb}" is longer than PostgreSQL's 63-byte limit`);
  if (RESERVED_DATABASES.has(targetDb)) throw new RestoreRefusedError(`refusing to restore into template database "${targetDb}"`);
  if (targetDb === maintenanceDb) {
    throw new BackupUsageError(
      `--target-db "${targetDb}" is the database the connection URL points at; connect through another one (e.g. /postgres) to create or drop it`,
    );
  }
}

/** User objects in a database: tables, sequences, views, functions, types, schemas, extensions. */
const USER_OBJECTS_SQL = `
  WITH user_ns AS (
    SELECT oid, nspname FROM pg_namespace
    WHERE nspname NOT IN ('pg_catalog', 'information_schema') AND nspname NOT LIKE 'pg\\_%'
  )
  SELECT
    (SELECT count(*) FROM pg_class c JOIN user_ns n ON n.oid = c.relnamespace)
    + (SELECT count(*) FROM pg_proc p JOIN user_ns n ON n.oid = p.pronamespace)
    + (SELECT count(*) FROM pg_type t JOIN user_ns n ON n.oid = t.typnamespace WHERE t.typtype IN ('e', 'd', 'r', 'm'))
    + (SELECT count(*) FROM user_ns WHERE nspname <> 'public')
    + (SELECT count(*) FROM pg_extension WHERE extname <> 'plpgsql') AS objects`;

async function withClient<T>(url: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 10_000 });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}

export async function countUserObjects(databaseUrl: string): Promise<number> {
  return withClient(databaseUrl, async (client) => Number((await client.query<{ objects: string }>(USER_OBJECTS_SQL)).rows[0]!.objects));
}

async function dropDatabase(serverUrl: string, name: string): Promise<void> {
  await withClient(serverUrl, async (client) => {
    await client.query(`DROP DATABASE IF EXISTS ${quoteIdent(name)} WITH (FORCE)`);
  });
}

async function createDatabase(serverUrl: string, name: string): Promise<void> {
  // template0: a clean database, as pg_dump's documentation asks for; nothing from template1 collides with the dump.
  await withClient(serverUrl, async (client) => {
    await client.query(`CREATE DATABASE ${quoteIdent(name)} TEMPLATE template0`);
  });
}

async function databaseExists(serverUrl: string, name: string): Promise<boolean> {
  return withClient(serverUrl, async (client) => (await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [name])).rowCount === 1);
}

export async function restore(options: RestoreOptions): Promise<RestoreResult> {
  const env = options.env ?? process.env;
  const { manifest, archivePath } = locateManifest(options.path);
  assertKeyMatches(manifest, options.key);
  validateTarget(options.targetDb, databaseOf(options.serverUrl));
  const server = await serverVersion(options.serverUrl);
  if (server.major < 13) throw new PgToolError(`target server is ${server.text}; restore needs PostgreSQL 13 or newer (DROP DATABASE ... WITH (FORCE))`);
  const pgRestore = pgRestoreFor(manifest, env, server.major);

  if (!options.skipVerify) await verify({ path: archivePath, key: options.key, list: false, env });

  const targetUrl = withDatabase(options.serverUrl, options.targetDb);
  let droppedExisting = false;
  // True when this run made the database (new, or recreated by --force): a failure drops it again.
  let createdByUs = false;
  if (await databaseExists(options.serverUrl, options.targetDb)) {
    const objects = await countUserObjects(targetUrl);
    if (objects > 0) {
      if (!options.force) {
        throw new RestoreRefusedError(
          `database "${options.targetDb}" is not empty (${objects} user object(s)); restore into a new name, or pass --force to drop and recreate it`,
        );
      }
      await dropDatabase(options.serverUrl, options.targetDb);
      droppedExisting = true;
      await createDatabase(options.serverUrl, options.targetDb);
      createdByUs = true;
    }
  } else {
    await createDatabase(options.serverUrl, options.targetDb);
    createdByUs = true;
  }

  const connection = connectionForTool(options.serverUrl, env, options.targetDb);
  const args = ['--exit-on-error', '--single-transaction', '--no-password', `--dbname=${connection.dbname}`];
  if (options.noOwner) args.push('--no-owner');
  if (options.noPrivileges) args.push('--no-privileges');
  const tool = startTool(join(pgRestore.dir, 'pg_restore'), args, connection.env);
  let summary: ReadSummary;
  try {
    summary = await readArchive(archivePath, manifest, options.key, (plaintext) => feedStdin(plaintext, tool.child, false));
  } catch (error) {
    // Killed before its stdin closes: its transaction cannot commit.
    await killTool(tool);
    if (createdByUs) await dropDatabase(options.serverUrl, options.targetDb).catch(() => undefined);
    if (error instanceof BackupIntegrityError) throw error;
    // pg_restore stopping early (an SQL error under --exit-on-error) shows up here as a closed stdin: report its own words.
    throw new PgToolError(`pg_restore failed; nothing was committed: ${tool.stderr() || (error as Error).message}`, tool.stderr());
  }
  tool.child.stdin.end();
  const code = await tool.exited;
  if (code !== 0) {
    if (createdByUs) await dropDatabase(options.serverUrl, options.targetDb).catch(() => undefined);
    throw new PgToolError(`pg_restore failed; nothing was committed: ${tool.stderr() || '(no message)'} (exit ${code})`, tool.stderr());
  }
  const tableCount = await withClient(targetUrl, async (client) =>
    Number(
      (
        await client.query<{ n: string }>(
          "SELECT count(*) AS n FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
        )
      ).rows[0]!.n,
    ),
  );
  return { targetDb: options.targetDb, targetUrl, created: createdByUs, droppedExisting, manifest, summary, pgRestore, tableCount };
}
