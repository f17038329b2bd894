/**
 * Test harness: real PostgreSQL and real Redis for every run, no set-up needed.
 * Uses TEST_DATABASE_URL / TEST_REDIS_URL when set (a fresh database is created
 * in that server for each run), otherwise starts embedded PostgreSQL and a
 * `redis-server` from PATH on free loopback ports. The root hooks in
 * testing/setup.ts call `startTestInfrastructure` once per run.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { credentials, Metadata } from '@grpc/grpc-js';
import pg from 'pg';
import { generateApiKey } from '../platform/auth';
import { withDatabase } from '../platform/db';
import { startEmbeddedPostgres, startRedisServer, type LocalServer, type RedisServerOptions } from '../dev/local-servers';
import { startService, type RunningService, type ServiceModule, type StartOptions } from '../platform/server';

interface Infrastructure {
  /** Server-level URL (database `postgres`), for creating more databases. */
  serverUrl: string;
  /** The run's fresh database, migrated by the services that start on it. */
  databaseUrl: string;
  redisUrl: string;
  stops: (() => Promise<void>)[];
}

let infra: Infrastructure | undefined;

/** Creates an empty database on the test server and returns its URL. */
export async function createDatabase(serverUrl: string, prefix = 'shieldx_test'): Promise<{ url: string; drop: () => Promise<void> }> {
  const name = `${prefix}_${Date.now().toString(36)}_${randomBytes(3).toString('hex')}`;
  const admin = new pg.Client({ connectionString: serverUrl });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  return {
    url: withDatabase(serverUrl, name),
    drop: async () => {
      const client = new pg.Client({ connectionString: serverUrl });
      await client.connect();
      try {
        await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await client.end();
      }
    },
  };
}

export interface InfrastructureOptions {
  /** Server-level PostgreSQL URL to create the run's database in; embedded PostgreSQL when unset. */
  readonly serverUrl?: string;
  /** Redis URL; a `redis-server` from PATH when unset. */
  readonly redisUrl?: string;
  /** How to start that redis-server. */
  readonly redisServer?: RedisServerOptions;
  /** Told the URL of each local server as soon as it runs (a test proves a failed start stops them). */
  readonly onLocalServer?: (kind: 'postgres' | 'redis', url: string) => void;
}

/**
 * Starts (or connects to) the servers a run needs and creates its fresh
 * database. If a step fails, what the earlier steps started is stopped before
 * the error is thrown: no embedded PostgreSQL or redis-server outlives it.
 */
export async function openInfrastructure(options: InfrastructureOptions = {}): Promise<Infrastructure> {
  const stops: (() => Promise<void>)[] = [];
  try {
    let serverUrl = options.serverUrl;
    if (!serverUrl) {
      const dataDir = mkdtempSync(join(tmpdir(), 'shieldx-test-pg-'));
      // Run as root, PostgreSQL runs as the `postgres` user, who must reach the data directory.
      chmodSync(dataDir, 0o755);
      const removeDataDir = async () => rmSync(dataDir, { recursive: true, force: true });
      stops.push(removeDataDir);
      const embedded: LocalServer = await startEmbeddedPostgres({
        dataDir: join(dataDir, 'data'),
        password: randomBytes(12).toString('hex'),
        persistent: false,
      });
      serverUrl = embedded.url;
      // Stopped before its data directory is removed (stops run in reverse order).
      stops.push(() => embedded.stop());
      options.onLocalServer?.('postgres', embedded.url);
    }
    const database = await createDatabase(serverUrl);
    // Dropped before the server stops.
    let redisUrl = options.redisUrl;
    if (!redisUrl) {
      const redis = await startRedisServer(options.redisServer);
      redisUrl = redis.url;
      stops.push(() => redis.stop());
      options.onLocalServer?.('redis', redis.url);
    }
    stops.push(() => database.drop().catch(() => undefined));
    return { serverUrl, databaseUrl: database.url, redisUrl, stops };
  } catch (error) {
    await runStops(stops);
    throw error;
  }
}

/** Runs `stops` last first, each even if an earlier one failed. */
async function runStops(stops: (() => Promise<void>)[]): Promise<void> {
  for (const stop of [...stops].reverse()) await stop().catch(() => undefined);
}

export async function startTestInfrastructure(): Promise<Infrastructure> {
  if (infra) return infra;
  infra = await openInfrastructure({ serverUrl: process.env.TEST_DATABASE_URL, redisUrl: process.env.TEST_REDIS_URL });
  // Code under test that reads these (e.g. helpers) sees the run's own servers.
  process.env.TEST_REDIS_URL_RUN = infra.redisUrl;
  return infra;
}

export async function stopTestInfrastructure(): Promise<void> {
  const current = infra;
  infra = undefined;
  if (!current) return;
  await runStops(current.stops);
}

export function testInfrastructure(): Infrastructure {
  if (!infra) throw new Error('test infrastructure not started: run tests through mocha (testing/setup.ts root hooks)');
  return infra;
}

/** Unique Redis key prefix for one test, so tests never see each other's keys. */
export function uniquePrefix(name: string): string {
  return `test:${name}:${randomBytes(4).toString('hex')}:`;
}

/** API keys every test service accepts: one per role. */
export const testKeys = {
  admin: generateApiKey('test-admin', ['*']),
  creditsReader: generateApiKey('test-credits-reader', ['credits:read']),
  creditsWriter: generateApiKey('test-credits-writer', ['credits:read', 'credits:write']),
  shadowWriter: generateApiKey('test-shadow-writer', ['shadow:read', 'shadow:write', 'shadow:rollout']),
  camouflage: generateApiKey('test-camouflage', ['camouflage:assess', 'camouflage:read']),
  noScopes: generateApiKey('test-no-scopes', ['nothing']),
  reflection: generateApiKey('test-reflection', ['reflection']),
};

export function bearer(key: { key: string } = testKeys.admin): Metadata {
  const metadata = new Metadata();
  metadata.set('authorization', `Bearer ${key.key}`);
  return metadata;
}

/**
 * Per-run credits keys, random for each run (never committed). Every credits
 * instance in a run must share the audit key: any of them may append audit
 * rows (e.g. its reservation sweeper) to any tenant in the run's database.
 */
export const creditsTestKeys = {
  CREDITS_PAYMENT_KEYS: JSON.stringify({ 'test-payment-key': randomBytes(32).toString('base64') }),
  CREDITS_PAYMENT_ACTIVE_KEY_ID: 'test-payment-key',
  CREDITS_AUDIT_HMAC_KEY: randomBytes(32).toString('base64'),
};

/** Base environment for an in-process service on free ports against the run's servers. */
export function serviceEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const { databaseUrl, redisUrl } = testInfrastructure();
  return {
    GRPC_HOST: '127.0.0.1',
    GRPC_PORT: '0',
    METRICS_PORT: '0',
    // Off unless a test asks for it (a free port): the entry point's default 8004-8006 would collide.
    HTTP_PORT: '0',
    DATABASE_URL: databaseUrl,
    REDIS_URL: redisUrl,
    SHIELDX_API_KEYS: JSON.stringify(Object.values(testKeys).map((k) => k.config)),
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
    SHUTDOWN_GRACE_MS: '5000',
    ...creditsTestKeys,
    ...extra,
  };
}

export async function startTestService(
  module: ServiceModule,
  extra: Record<string, string> = {},
  options: StartOptions = {},
): Promise<RunningService> {
  return startService(module, serviceEnv(extra), options);
}

export const insecure = credentials.createInsecure();

export function address(service: RunningService): string {
  return `127.0.0.1:${service.grpcPort}`;
}

/**
 * Whether a process with this pid exists (signal 0 only checks; EPERM means it exists but is not
 * ours): for tests proving that what spawns a child (service processes, local servers) leaves no
 * process behind.
 */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Polls `probe` until it returns a value (not undefined) or `timeoutMs` passes. */
export async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 20_000, intervalMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}
