/**
 * Test support: a PostgreSQL server whose pg_dump/pg_restore are installed.
 * The run's own server (test/harness.ts) when tools of its major exist —
 * TEST_DATABASE_URL at the machine's PostgreSQL 15 — otherwise a scratch
 * cluster of the machine's PostgreSQL: the embedded PostgreSQL 18 the harness
 * starts by default ships no pg_dump, and pg_dump 15 refuses to dump 18.
 */
import { testInfrastructure } from './harness';
import { skipOrFailInCi } from './require-tool';
import { findServerBinDir, startScratchCluster } from './scratch-cluster';
import { pickBinDir, serverVersion } from '../ops/backup/pg-tools';

export interface BackupTestServer {
  /** Server URL (database postgres) to create test databases on. */
  readonly serverUrl: string;
  readonly description: string;
  stop(): void;
}

export async function backupTestServer(): Promise<BackupTestServer | { skip: string }> {
  const { serverUrl } = testInfrastructure();
  const version = await serverVersion(serverUrl);
  try {
    const tools = pickBinDir({ tools: ['pg_dump', 'pg_restore'], minMajor: version.major, reason: `server is ${version.text}` });
    return { serverUrl, description: `test server ${version.text}, tools ${tools.dir}`, stop: () => undefined };
  } catch {
    // No client tools for the run's server: fall back to a cluster of the machine's PostgreSQL.
  }
  const found = findServerBinDir(['postgres', 'initdb', 'pg_ctl', 'pg_dump', 'pg_restore']);
  if ('missing' in found) return { skip: `no pg_dump for the test server (${version.text}) and ${found.missing}` };
  const cluster = await startScratchCluster({ binDir: found.binDir, prefix: 'shieldx-backup-pg-' });
  return { serverUrl: cluster.url, description: `scratch cluster PostgreSQL ${found.binDir.major} (${found.binDir.dir})`, stop: () => cluster.destroy() };
}

/** In a mocha `before`: the server, or skip (fail under CI=true) when none can be had. */
export async function backupTestServerOrSkip(context: Mocha.Context): Promise<BackupTestServer> {
  const server = await backupTestServer();
  return 'skip' in server ? skipOrFailInCi(context, server.skip) : server;
}
