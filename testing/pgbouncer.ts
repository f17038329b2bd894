/**
 * PgBouncer for the tests: the machine's `pgbouncer` (Debian package `pgbouncer`, 1.18 on Debian 12)
 * started on a free loopback port in front of the run's PostgreSQL, in TRANSACTION pooling mode,
 * with nothing but what a user must set to run one (docs/runbooks/pgbouncer.md lists the same):
 *
 *   [databases]  * = host=… port=…          where PostgreSQL is (every database name passes through)
 *   listen_addr, listen_port                  where PgBouncer listens
 *   auth_type, auth_file                      how clients log in (here: trust on loopback; the file
 *                                             holds the password PgBouncer logs in to PostgreSQL with)
 *   pool_mode = transaction                   the mode under test
 *   max_client_conn                           the production figure (500): every replica's pool
 *
 * plus where a foreground test process keeps its files (logfile, pidfile, no unix socket). No
 * `ignore_startup_parameters`, no `max_prepared_statements` (1.18 has none): the services must work
 * with PgBouncer's defaults. PgBouncer refuses to run as root, so as root it runs as `postgres`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chownSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../dev/local-servers';
import { isRoot, osUser } from './scratch-cluster';
import { requireTool } from './require-tool';

export interface PgBouncer {
  /** `postgresUrl` with host and port replaced by PgBouncer's. */
  url(postgresUrl: string): string;
  readonly port: number;
  /** PgBouncer's log so far (for failure messages). */
  log(): string;
  stop(): Promise<void>;
}

/** In a suite's `before`: the pgbouncer binary, or a skip (a failure under CI=true) naming the package. */
export function requirePgBouncer(context: Mocha.Context): string {
  return requireTool(context, 'pgbouncer', 'the Debian package `pgbouncer`');
}

export interface PgBouncerOptions {
  /** Extra [pgbouncer] settings (a test of one setting); none by default. */
  readonly settings?: Readonly<Record<string, string>>;
}

/** Starts PgBouncer in front of the PostgreSQL server of `serverUrl` (any database on it). */
export async function startPgBouncer(binary: string, serverUrl: string, options: PgBouncerOptions = {}): Promise<PgBouncer> {
  const server = new URL(serverUrl);
  const user = decodeURIComponent(server.username || 'postgres');
  const password = decodeURIComponent(server.password);
  const dir = mkdtempSync(join(tmpdir(), 'shieldx-pgbouncer-'));
  const port = await freePort();
  const settings: Record<string, string> = {
    listen_addr: '127.0.0.1',
    listen_port: String(port),
    auth_type: 'trust',
    auth_file: join(dir, 'userlist.txt'),
    pool_mode: 'transaction',
    max_client_conn: '500',
    logfile: join(dir, 'pgbouncer.log'),
    pidfile: join(dir, 'pgbouncer.pid'),
    unix_socket_dir: '',
    ...options.settings,
  };
  const ini =
    `[databases]\n* = host=${server.hostname} port=${server.port || '5432'}\n\n[pgbouncer]\n` +
    Object.entries(settings)
      .map(([k, v]) => `${k} = ${v}`)
      .join('\n') +
    '\n';
  writeFileSync(join(dir, 'pgbouncer.ini'), ini);
  writeFileSync(join(dir, 'userlist.txt'), `"${user}" "${password.replace(/"/g, '""')}"\n`, { mode: 0o600 });
  writeFileSync(join(dir, 'pgbouncer.log'), '');
  const ids = isRoot() ? osUser() : undefined;
  if (ids) for (const file of ['', 'pgbouncer.ini', 'userlist.txt', 'pgbouncer.log']) chownSync(join(dir, file), ids.uid, ids.gid);

  const child: ChildProcess = spawn(binary, [join(dir, 'pgbouncer.ini')], {
    stdio: ['ignore', 'ignore', 'pipe'],
    ...(ids ? { uid: ids.uid, gid: ids.gid } : {}),
  });
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const log = () => {
    try {
      return readFileSync(join(dir, 'pgbouncer.log'), 'utf8') + stderr;
    } catch {
      return stderr;
    }
  };
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGINT');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(timer);
    }
    rmSync(dir, { recursive: true, force: true });
  };
  // Listening once a TCP connect succeeds (bounded: 10 s).
  for (let attempt = 0; ; attempt++) {
    if (child.exitCode !== null) {
      const text = log();
      await stop();
      throw new Error(`pgbouncer exited at start (${child.exitCode}): ${text}`);
    }
    if (await canConnect(port)) break;
    if (attempt >= 100) {
      const text = log();
      await stop();
      throw new Error(`pgbouncer did not listen on 127.0.0.1:${port} within 10 s: ${text}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return {
    port,
    url(postgresUrl: string) {
      const url = new URL(postgresUrl);
      url.hostname = '127.0.0.1';
      url.port = String(port);
      return url.toString();
    },
    log,
    stop,
  };
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}
