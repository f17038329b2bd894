/**
 * `npm start`: the whole mesh on one machine with nothing installed but Node.
 * Starts an embedded PostgreSQL (data under .data/) unless DATABASE_URL is set,
 * generates development keys on first start (kept in .data/dev-secrets.json,
 * never in the repo), then runs credits, shadow and camouflage as three
 * processes (as they run in production) and prints where they listen.
 * Without REDIS_URL each service uses the in-process Redis stand-in (dev/start-service.ts).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { createInterface } from 'node:readline';
import pg from 'pg';
import { generateApiKey } from '../platform/auth';
import { ConfigError } from '../platform/config';
import { withDatabase } from '../platform/db';
import { startEmbeddedPostgres, type EmbeddedPostgresServer } from './local-servers';
import { projectRoot } from '../platform/paths';
import { SERVICES } from '../scripts/services';
import { devServiceEnv, portSetting, usesDevApiKey, type DevSecrets } from './dev-env';

const root = projectRoot();
const dataDir = join(root, '.data');

function loadOrCreateSecrets(): DevSecrets {
  const file = join(dataDir, 'dev-secrets.json');
  if (existsSync(file)) return JSON.parse(readFileSync(file, 'utf8')) as DevSecrets;
  const { key, config } = generateApiKey('dev', ['*']);
  const secrets: DevSecrets = {
    postgresPassword: randomBytes(18).toString('base64url'),
    apiKey: key,
    apiKeySha256: config.sha256,
    paymentKeyId: `dev-${randomBytes(3).toString('hex')}`,
    paymentKey: randomBytes(32).toString('base64'),
    auditHmacKey: randomBytes(32).toString('base64'),
  };
  writeFileSync(file, `${JSON.stringify(secrets, null, 2)}\n`, { mode: 0o600 });
  return secrets;
}

async function ensureDatabase(serverUrl: string, name: string): Promise<string> {
  const client = new pg.Client({ connectionString: serverUrl });
  await client.connect();
  try {
    const exists = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
    if (exists.rowCount === 0) await client.query(`CREATE DATABASE ${name}`);
  } finally {
    await client.end();
  }
  return withDatabase(serverUrl, name);
}

async function main(): Promise<void> {
  // Every port is checked before anything starts. A port that is taken fails the service that
  // binds it, which says so on stderr, and npm start then stops the mesh.
  // CREDITS_PORT, CREDITS_METRICS_PORT, SHADOW_PORT, ... (README, Configuration).
  const ports = SERVICES.map((s) => {
    const prefix = s.name.toUpperCase();
    return {
      name: s.name,
      grpcPort: portSetting(process.env, `${prefix}_PORT`, s.defaultGrpcPort),
      metricsPort: portSetting(process.env, `${prefix}_METRICS_PORT`, s.defaultMetricsPort),
      httpPort: portSetting(process.env, `${prefix}_HTTP_PORT`, s.defaultHttpPort),
    };
  });
  const embeddedPort = portSetting(process.env, 'EMBEDDED_POSTGRES_PORT', 0) || undefined;
  mkdirSync(dataDir, { recursive: true });
  // PostgreSQL run for root switches to the `postgres` user, who must reach .data/.
  chmodSync(dataDir, 0o755);
  const secrets = loadOrCreateSecrets();

  let embedded: EmbeddedPostgresServer | undefined;
  let databaseUrl = process.env.DATABASE_URL;
  if (!databaseUrl) {
    process.stdout.write('starting embedded PostgreSQL ...\n');
    embedded = await startEmbeddedPostgres({
      dataDir: join(dataDir, 'postgres'),
      password: secrets.postgresPassword,
      persistent: true,
      port: embeddedPort,
    });
    // As root in a directory the postgres user cannot enter, the data lives elsewhere: say where.
    process.stdout.write(`embedded PostgreSQL: data in ${relative(root, embedded.dataDir).startsWith('..') ? embedded.dataDir : relative(root, embedded.dataDir)}\n`);
    databaseUrl = await ensureDatabase(embedded.url, 'shieldx').catch(async (error: unknown) => {
      // Not left running behind the error.
      await embedded?.stop().catch(() => undefined);
      throw error;
    });
  }

  const devKey = usesDevApiKey(process.env);
  const children = new Map<string, ChildProcess>();
  const ready = new Set<string>();
  let stopping = false;

  const stopAll = async (code: number) => {
    if (stopping) return;
    stopping = true;
    await Promise.all(
      [...children.values()].map(
        (child) =>
          new Promise<void>((resolve) => {
            if (child.exitCode !== null || child.signalCode !== null) return resolve();
            child.once('exit', () => resolve());
            child.kill('SIGTERM');
          }),
      ),
    );
    await embedded?.stop().catch(() => undefined);
    process.exit(code);
  };
  process.once('SIGINT', () => void stopAll(0));
  process.once('SIGTERM', () => void stopAll(0));

  for (const service of ports) {
    const child = spawn(process.execPath, ['--import', 'tsx', join(root, 'dev', 'start-service.ts')], {
      cwd: root,
      stdio: ['ignore', 'pipe', 'inherit'],
      env: devServiceEnv(process.env, secrets, service, databaseUrl),
    });
    children.set(service.name, child);
    createInterface({ input: child.stdout! }).on('line', (line) => {
      process.stdout.write(`${line}\n`);
      if (!ready.has(service.name) && line.includes(`"${service.name} listening"`)) {
        ready.add(service.name);
        if (ready.size === SERVICES.length) printBanner(ports, secrets, devKey, embedded?.dataDir);
      }
    });
    child.once('exit', (code) => {
      if (stopping) return;
      process.stderr.write(`${service.name} exited with code ${code}; stopping the mesh\n`);
      void stopAll(1);
    });
  }
}

function printBanner(
  ports: { name: string; grpcPort: number; metricsPort: number; httpPort: number }[],
  secrets: DevSecrets,
  devKey: boolean,
  embeddedDataDir: string | undefined,
): void {
  const lines = [
    '',
    'ShieldX mesh is up:',
    ...ports.map(
      (p) => `  ${p.name.padEnd(11)} gRPC 127.0.0.1:${p.grpcPort}   JSON http://127.0.0.1:${p.httpPort}   metrics http://127.0.0.1:${p.metricsPort}/metrics`,
    ),
    `  PostgreSQL: ${embeddedDataDir ? `embedded (data in ${embeddedDataDir})` : 'DATABASE_URL'}; cache: ${process.env.REDIS_URL ? 'REDIS_URL' : 'in-process'}`,
    devKey ? `  development API key (all scopes): ${secrets.apiKey}` : '  API keys: from SHIELDX_API_KEYS',
    '',
    '  try:',
    `    grpcurl -plaintext 127.0.0.1:${ports[0]!.grpcPort} list`,
    `    curl -H 'content-type: application/json' -H "authorization: Bearer ${devKey ? secrets.apiKey : '<key>'}" -d '{"tenant_id":"acme"}' http://127.0.0.1:${ports[0]!.httpPort}/shieldx.credits.v1.CreditsService/GetBalance`,
    `    grpcurl -plaintext -H "authorization: Bearer ${devKey ? secrets.apiKey : '<key>'}" -d '{"tenant_id":"acme","amount":"100","idempotency_key":"topup-1","payment":{"card_number":"4242424242424242","expiry_month":12,"expiry_year":2030}}' 127.0.0.1:${ports[0]!.grpcPort} shieldx.credits.v1.CreditsService/TopUp`,
    '',
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
}

main().catch((error: unknown) => {
  if (error instanceof ConfigError) {
    process.stderr.write(`${error.message}\n`);
    process.exit(2);
  }
  // One line a new user can act on; LOG_LEVEL=debug adds the stack.
  const code = (error as { code?: unknown }).code;
  const hint =
    code === 'ENOSPC'
      ? ' (no space left on the disk that holds .data/: free some, or point DATABASE_URL at another PostgreSQL)'
      : code === 'EACCES'
        ? ' (permission denied: run from a directory you own, or point DATABASE_URL at another PostgreSQL)'
        : '';
  const message = error instanceof Error ? error.message.split('\n')[0] : String(error);
  process.stderr.write(`npm start failed: ${message}${hint}\n`);
  if (process.env.LOG_LEVEL === 'debug' && error instanceof Error) process.stderr.write(`${error.stack}\n`);
  process.exit(1);
});
