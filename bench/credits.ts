/**
 * Credits benchmark: `npx tsx bench/credits.ts [--duration 10] [--warmup 2] [--service-warmup 8]
 *   [--concurrency 16,32,64] [--tenants 8] [--rate 2000] [--channels 4] [--skip-pgbench] [--in-process]
 *   [--phases closed,stream,open,balance,mix] [--mix consume=60,balance=25,hold=10,topup=3,batch=2] [--mix-concurrency 32]
 *   [--replicas N] [--affinity] [--pgbouncer]`
 * (or the same as env: BENCH_DURATION_SECONDS, BENCH_SERVICE_WARMUP_SECONDS, BENCH_CONCURRENCY, BENCH_TENANTS, BENCH_RATE, BENCH_CHANNELS,
 * BENCH_PHASES, BENCH_MIX, BENCH_MIX_CONCURRENCY). --phases picks which of (a)+(b) "closed", (e) "stream", (c) "open",
 * (d) "balance" and (f) "mix" run, e.g. to profile one of them alone with BENCH_SERVICE_NODE_ARGS.
 *
 * In one run, on one fresh database in the PostgreSQL at BENCH_DATABASE_URL
 * (default postgres://postgres@127.0.0.1:5432/postgres) and the Redis at
 * BENCH_REDIS_URL (default redis://127.0.0.1:6379):
 *  (a) Consume through gRPC, closed loop, at each concurrency;
 *  (b) pgbench with the equivalent one-transaction-per-consume SQL (conditional
 *      UPDATE of the account + INSERT of the transaction row) at the same client
 *      count, and the ratio (a)/(b); then, for a fair picture, pgbench doing
 *      everything the service writes per consume (idempotency record claimed and
 *      completed, debit, transaction row, audit row) at the highest concurrency;
 *  (c) Consume open loop at --rate req/s: p50/p95/p99;
 *  (d) cached GetBalance: closed loop c=1 (latency) and c=8 (capacity), open
 *      loop 1,000/s: p50/p95/p99;
 *  (e) the same consumes over ConsumeStream (one long-lived call per channel,
 *      answers matched by request_id): closed loop at 4x the highest
 *      concurrency in flight, compared with the best pgbench figure of the run,
 *      then open loop at --rate;
 *  (f) a mixed load, closed loop at --mix-concurrency: Consume, cached GetBalance,
 *      "hold" (Reserve, then CommitReservation of part of it), TopUp (card
 *      encrypted) and BatchConsume of 10 items, interleaved by --mix weight;
 *      throughput and p50/p95/p99 overall and for each kind.
 * Calls are spread round-robin over --channels client channels, each with its
 * own HTTP/2 connection (local subchannel pool), so one connection's flow
 * control and stream limit are not the bottleneck.
 * The service runs as a child process (scripts/start-service.ts) so the load
 * generator does not share its event loop; --in-process runs it here instead.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { credentials, Metadata } from '@grpc/grpc-js';
import pg from 'pg';
import {
  ConsumeRequest,
  ConsumeResponse,
  CreditsServiceClient,
  CreditsServiceService,
  GetBalanceRequest,
  GetBalanceResponse,
  type ReserveResponse,
} from '../gen/shieldx/credits/v1/credits';
import { generateApiKey } from '../platform/auth';
import { freePort } from '../dev/local-servers';
import { formatResult, parseMix, percentile, runLoad, streamCaller, weightedMix, type LatencySummary, type LoadMode, type LoadResult } from './grpc-load';
import { H2GrpcClient } from './h2-client';
import { createDatabase } from '../testing/harness';
import { startPgBouncer } from '../testing/pgbouncer';
import { findOnPath } from '../testing/require-tool';
import { runMigrations } from '../platform/migrate';
import { startServiceProcess } from './service-process';
import { benchArgs } from './args';
import { metricSamples, metricValue, scrapeMetrics } from '../platform/prometheus-text';
import { cpuSnapshot, formatCpuPerOp } from './machine-cpu';

const PHASE_NAMES = ['closed', 'stream', 'open', 'balance', 'mix'];
/** What the mixed phase (f) can send: see its comment above. */
const MIX_KINDS = ['consume', 'balance', 'hold', 'topup', 'batch'];
const args = benchArgs({
  duration: { type: 'number', env: 'BENCH_DURATION_SECONDS', default: 10, min: 0 },
  warmup: { type: 'number', env: 'BENCH_WARMUP_SECONDS', default: 2, min: 0 },
  /** Load on the fresh service before the first phase, so that no phase measures its JIT compiling. */
  'service-warmup': { type: 'number', env: 'BENCH_SERVICE_WARMUP_SECONDS', default: 8, min: 0 },
  concurrency: { type: 'numbers', env: 'BENCH_CONCURRENCY', default: [16, 32, 64], integer: true, min: 1 },
  tenants: { type: 'number', env: 'BENCH_TENANTS', default: 8, integer: true, min: 1 },
  rate: { type: 'number', env: 'BENCH_RATE', default: 2000, min: 1 },
  channels: { type: 'number', env: 'BENCH_CHANNELS', default: 4, integer: true },
  /** Unary calls through the generated grpc-js client, or the lean HTTP/2 one (bench/h2-client.ts). */
  client: { type: 'string', env: 'BENCH_CLIENT', default: 'grpc-js', choices: ['grpc-js', 'h2'] },
  phases: { type: 'list', env: 'BENCH_PHASES', default: PHASE_NAMES, choices: PHASE_NAMES },
  mix: { type: 'string', env: 'BENCH_MIX', default: 'consume=60,balance=25,hold=10,topup=3,batch=2' },
  'mix-concurrency': { type: 'number', env: 'BENCH_MIX_CONCURRENCY', default: 32, integer: true, min: 1 },
  /** Service processes on the same database and cache, channels spread over them: how a mesh runs it. */
  replicas: { type: 'number', env: 'BENCH_REPLICAS', default: 1, integer: true, min: 1, max: 4 },
  /**
   * Route each tenant's calls to one channel (so one replica), as the mesh does when callers send
   * x-shieldx-tenant and the DestinationRule hashes on it (mesh/istio/destination-rules.yaml);
   * without it calls go round-robin over channels, a tenant's calls over every replica.
   */
  affinity: { type: 'boolean', env: 'BENCH_AFFINITY' },
  'skip-pgbench': { type: 'boolean' },
  'in-process': { type: 'boolean' },
  /**
   * The services reach PostgreSQL through PgBouncer (Debian's, started here on a free port in
   * transaction pooling, testing/pgbouncer.ts); migrations and pgbench stay on the direct connection.
   * `bench/credits-pgbouncer.ts` runs the same bench with and without it, in one run.
   */
  pgbouncer: { type: 'boolean', env: 'BENCH_PGBOUNCER' },
});
if (args['in-process'] && args.replicas > 1) throw new Error('--in-process runs one service: it cannot go with --replicas');
const flag = (name: 'skip-pgbench' | 'in-process') => args[name];

const DURATION_MS = args.duration * 1000;
const WARMUP_MS = args.warmup * 1000;
const SERVICE_WARMUP_MS = args['service-warmup'] * 1000;
const CONCURRENCIES = args.concurrency;
/** pgbench opens one connection per client: above this the server's max_connections (100 by default) refuses it. */
const PGBENCH_CLIENTS_MAX = 72;
const TENANTS = args.tenants;
const RATE = args.rate;
/** Open loop: calls due within half of the generator's ~1 ms timer tick start at the tick (see grpc-load.ts). */
const START_EARLY_MS = 0.5;
const CHANNELS = Math.max(1, args.channels);
const CLIENT = args.client;
const PHASES = new Set(args.phases);
/** Parsed before anything starts, so a bad --mix stops the bench at once. */
const MIX = parseMix(args.mix, MIX_KINDS);
const SERVER_URL = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const REDIS_URL = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';
const SEED = { tps: 1000, consumeAvgMs: 15, cachedBalanceAvgMs: 2 };
/** prom-client's eventLoopMonitoringPrecision (its default), included in every nodejs_eventloop_lag sample. */
const EVENT_LOOP_SAMPLING_MS = 10;
const START_BALANCE = 1_000_000_000_000n;

function pgbenchPath(): string | undefined {
  for (const p of ['/usr/lib/postgresql/15/bin/pgbench', '/usr/lib/postgresql/16/bin/pgbench', '/usr/lib/postgresql/17/bin/pgbench']) if (existsSync(p)) return p;
  const which = spawnSync('which', ['pgbench'], { encoding: 'utf8' });
  return which.status === 0 ? which.stdout.trim() : undefined;
}

type UnaryMethod = 'consume' | 'getBalance' | 'topUp' | 'reserve' | 'commitReservation' | 'batchConsume';

function unary<Req, Res>(client: CreditsServiceClient, method: UnaryMethod, metadata: Metadata) {
  const fn = (client[method] as unknown as (r: Req, m: Metadata, o: object, cb: (e: Error | null, r: Res) => void) => void).bind(client);
  return (req: Req) =>
    new Promise<Res>((resolve, reject) => fn(req, metadata, { deadline: Date.now() + 10_000 }, (e, r) => (e ? reject(e) : resolve(r))));
}

/** One transaction per consume: the conditional debit, then the ledger row. */
const PGBENCH_MINIMAL = [
  'BEGIN;',
  "UPDATE credit_accounts SET balance = balance - 1, version = version + 1, updated_at = now() WHERE tenant_id = 'pgb-' || :tid AND balance - reserved >= 1 RETURNING balance AS bal, reserved AS res \\gset",
  "INSERT INTO credit_transactions (id, tenant_id, type, amount, balance_after, reserved_after, created_at) VALUES (gen_random_uuid(), 'pgb-' || :tid, 'CONSUME', 1, :bal, :res, now());",
  'COMMIT;',
];

/**
 * One transaction per consume doing what the service writes per consume: claim the
 * idempotency key, debit (advancing the audit head), transaction row, audit row,
 * complete the idempotency record with the response.
 */
const PGBENCH_FULL = [
  "\\set key random(1, 1000000000000)",
  'BEGIN;',
  "INSERT INTO credit_idempotency_keys (tenant_id, key, method, request_hash, expires_at) VALUES ('pgb-' || :tid, 'k' || :key || '-' || :client_id, 'consume', '\\x00', now() + interval '24 hours') ON CONFLICT DO NOTHING;",
  "UPDATE credit_accounts SET balance = balance - 1, version = version + 1, audit_seq = audit_seq + 1, audit_head = sha256(audit_seq::text::bytea), updated_at = now() WHERE tenant_id = 'pgb-' || :tid AND balance - reserved >= 1 RETURNING balance AS bal, reserved AS res, audit_seq AS seq \\gset",
  "INSERT INTO credit_transactions (id, tenant_id, type, amount, balance_after, reserved_after, created_at) VALUES (gen_random_uuid(), 'pgb-' || :tid, 'CONSUME', 1, :bal, :res, now());",
  "INSERT INTO credit_audit_logs (tenant_id, seq, occurred_at, action, amount, balance_after, reserved_after, transaction_id, prev_hash, hash) VALUES ('pgb-' || :tid, :seq, now(), 'CONSUME', 1, :bal, :res, gen_random_uuid(), sha256(:seq::text::bytea), sha256((:seq + 1)::text::bytea));",
  "UPDATE credit_idempotency_keys SET state = 'SUCCEEDED', response = '\\x0102', completed_at = now() WHERE tenant_id = 'pgb-' || :tid AND key = 'k' || :key || '-' || :client_id;",
  'COMMIT;',
];

function runPgbench(
  bin: string,
  url: string,
  clients: number,
  seconds: number,
  tenants: number,
  statements: readonly string[] = PGBENCH_MINIMAL,
): { tps: number; latencyAvgMs: number; cpu: string; output: string } {
  const dir = mkdtempSync(join(tmpdir(), 'credits-pgbench-'));
  const script = join(dir, 'consume.sql');
  // Without idempotency or audit rows (PGBENCH_MINIMAL), which the service also
  // writes, the comparison is tilted towards pgbench.
  writeFileSync(script, ['\\set tid random(1, ' + tenants + ')', ...statements, ''].join('\n'));
  const before = cpuSnapshot();
  const result = spawnSync(bin, ['-n', '-c', String(clients), '-j', '2', '-T', String(seconds), '-f', script, url], { encoding: 'utf8' });
  const after = cpuSnapshot();
  const output = `${result.stdout}\n${result.stderr}`;
  const tps = Number(/tps = ([0-9.]+) \(without initial connection time\)/.exec(output)?.[1] ?? NaN);
  const latencyAvgMs = Number(/latency average = ([0-9.]+) ms/.exec(output)?.[1] ?? NaN);
  const transactions = Number(/number of transactions actually processed: (\d+)/.exec(output)?.[1] ?? NaN);
  return { tps, latencyAvgMs, cpu: formatCpuPerOp(before, after, transactions, 'pgbench'), output };
}

/**
 * pgbench at a fixed offered rate (-R, latency counted from the scheduled start, like our
 * open loop) with per-transaction logs, for latency percentiles: what PostgreSQL on this
 * machine gives one transaction per consume at the rate the service is judged at.
 */
function runPgbenchAtRate(bin: string, url: string, rate: number, seconds: number, tenants: number): { p50: number; p95: number; p99: number; count: number; output: string } {
  const dir = mkdtempSync(join(tmpdir(), 'credits-pgbench-rate-'));
  const script = join(dir, 'consume.sql');
  writeFileSync(script, ['\\set tid random(1, ' + tenants + ')', ...PGBENCH_MINIMAL, ''].join('\n'));
  const result = spawnSync(bin, ['-n', '-c', '16', '-j', '2', '-R', String(rate), '-T', String(seconds), '--log', `--log-prefix=${join(dir, 'tx')}`, '-f', script, url], {
    encoding: 'utf8',
    cwd: dir,
  });
  const output = `${result.stdout}\n${result.stderr}`;
  // Log line: client_id transaction_no time(us) script_no time_epoch time_us schedule_lag(us)
  const latencies: number[] = [];
  for (const file of readdirSync(dir).filter((f) => f.startsWith('tx.'))) {
    for (const line of readFileSync(join(dir, file), 'utf8').split('\n')) {
      const fields = line.split(' ');
      if (fields.length >= 3 && fields[2] !== 'skipped') latencies.push(Number(fields[2]) / 1000);
    }
  }
  latencies.sort((a, b) => a - b);
  return { p50: percentile(latencies, 0.5), p95: percentile(latencies, 0.95), p99: percentile(latencies, 0.99), count: latencies.length, output };
}

/** The bare grpc-js server of bench/grpc-floor-server.ts, as a child process like the service, on an ephemeral port. */
function startFloorServer(): Promise<{ port: number; stop: () => Promise<void> }> {
  return startServiceProcess('floor', {}, join(__dirname, 'grpc-floor-server.ts'));
}

/** Creates the bench's database, runs the bench, and stops the service and drops the database whatever happens. */
async function main(): Promise<void> {
  const database = await createDatabase(SERVER_URL, 'credits_bench');
  const cleanups: (() => Promise<void>)[] = [database.drop];
  try {
    let serviceUrl = database.url;
    if (args.pgbouncer) {
      const bouncer = await startPgBouncer(findOnPath('pgbouncer') ?? '/usr/sbin/pgbouncer', SERVER_URL);
      cleanups.unshift(() => bouncer.stop());
      // The migration lock is session-level: migrations go over the direct connection.
      await runMigrations(database.url, 'credits');
      serviceUrl = bouncer.url(database.url);
      console.log(`services reach PostgreSQL through PgBouncer (transaction pooling) on port ${bouncer.port}`);
    }
    await runBench(database.url, serviceUrl, new URL(database.url).pathname.slice(1), (cleanup) => cleanups.unshift(cleanup));
  } finally {
    for (const cleanup of cleanups) await cleanup().catch((error: unknown) => console.error('cleanup failed:', error));
  }
}

async function runBench(databaseUrl: string, serviceUrl: string, dbName: string, onCleanup: (cleanup: () => Promise<void>) => void): Promise<void> {
  const apiKey = generateApiKey('bench', ['*']);
  const env: NodeJS.ProcessEnv = {
    GRPC_HOST: '127.0.0.1',
    GRPC_PORT: String(await freePort()),
    METRICS_PORT: String(await freePort()),
    DATABASE_URL: serviceUrl,
    ...(serviceUrl === databaseUrl ? {} : { MIGRATE_ON_START: 'false' }),
    REDIS_URL,
    SHIELDX_API_KEYS: JSON.stringify([apiKey.config]),
    LOG_LEVEL: 'info',
    DB_POOL_MAX: '20',
    CREDITS_PAYMENT_KEYS: JSON.stringify({ bench: randomBytes(32).toString('base64') }),
    CREDITS_PAYMENT_ACTIVE_KEY_ID: 'bench',
    CREDITS_AUDIT_HMAC_KEY: randomBytes(32).toString('base64'),
    CREDITS_CACHE_KEY_PREFIX: `bench:${dbName}:`,
  };
  let stopService: () => Promise<void>;
  let port: number;
  /** The metrics port of every service replica (the first one's is env.METRICS_PORT). */
  const metricsPorts = [Number(env.METRICS_PORT)];
  /** The gRPC port of every service replica; client channels are spread over them. */
  const ports: number[] = [];
  if (flag('in-process')) {
    /* eslint-disable @typescript-eslint/no-require-imports */
    const { startService } = require('../platform/server') as typeof import('../platform/server.js');
    const { creditsService } = require('../services/credits') as typeof import('../services/credits');
    /* eslint-enable @typescript-eslint/no-require-imports */
    const running = await startService(creditsService as never, { ...env, LOG_LEVEL: 'warn' });
    port = running.grpcPort;
    stopService = () => running.shutdown();
  } else {
    ({ port, stop: stopService } = await startServiceProcess('credits', env));
  }
  onCleanup(stopService);
  ports.push(port);
  for (let r = 1; r < args.replicas; r++) {
    const metricsPort = await freePort();
    const replica = await startServiceProcess('credits', { ...env, GRPC_PORT: String(await freePort()), METRICS_PORT: String(metricsPort) });
    onCleanup(replica.stop);
    ports.push(replica.port);
    metricsPorts.push(metricsPort);
  }

  /** With --affinity: the channel of every call of a tenant (`bench-N` → N), as a hash of its id would pick one. */
  const channelOfTenant = (tenantId: string) => Number(/(\d+)$/.exec(tenantId)?.[1] ?? 0);
  /** Unary callers of the chosen client kind on --channels connections, spread over the `targets` (ports). */
  const callers = (targets: readonly number[]) => {
    const clients = Array.from(
      { length: CHANNELS },
      (_, k) =>
        new CreditsServiceClient(`127.0.0.1:${targets[k % targets.length]}`, credentials.createInsecure(), {
          'grpc.max_concurrent_streams': 1000,
          // A connection per channel (grpc-js otherwise shares one subchannel between identical channels).
          'grpc.use_local_subchannel_pool': 1,
        }),
    );
    onCleanup(async () => clients.forEach((c) => c.close()));
    const metadata = new Metadata();
    metadata.set('authorization', `Bearer ${apiKey.key}`);
    const roundRobin = <Req extends { tenantId?: string }, Res = unknown>(method: UnaryMethod) => {
      const fns = clients.map((c) => unary<Req, Res>(c, method, metadata));
      let next = 0;
      return (req: Req) => fns[(args.affinity && req.tenantId ? channelOfTenant(req.tenantId) : next++) % fns.length]!(req);
    };
    if (CLIENT === 'h2' && targets.length > 1) throw new Error('--client h2 talks to one address: it cannot go with --replicas');
    const h2 = CLIENT === 'h2' ? new H2GrpcClient(`127.0.0.1:${targets[0]}`, CHANNELS, { authorization: `Bearer ${apiKey.key}` }) : undefined;
    if (h2) onCleanup(async () => h2.close());
    return {
      clients,
      metadata,
      consume: h2
        ? (req: ConsumeRequest) => h2.unary(CreditsServiceService.consume.path, ConsumeRequest, ConsumeResponse, req, 10_000)
        : roundRobin<ConsumeRequest>('consume'),
      getBalance: h2
        ? (req: GetBalanceRequest) => h2.unary(CreditsServiceService.getBalance.path, GetBalanceRequest, GetBalanceResponse, req, 10_000)
        : roundRobin<GetBalanceRequest>('getBalance'),
      topUp: roundRobin<object>('topUp'),
      reserve: roundRobin<object, ReserveResponse>('reserve'),
      commitReservation: roundRobin<object>('commitReservation'),
      batchConsume: roundRobin<object>('batchConsume'),
    };
  };
  const { clients, metadata, consume, getBalance, topUp, reserve, commitReservation, batchConsume } = callers(ports);
  const tenants = Array.from({ length: TENANTS }, (_, i) => `bench-${i + 1}`);
  const card = { cardNumber: '4242424242424242', expiryMonth: 12, expiryYear: new Date().getUTCFullYear() + 3, cardholderName: 'Bench', processorReference: '' };
  for (const t of tenants) {
    await topUp({ tenantId: t, amount: START_BALANCE, idempotencyKey: `seed-${t}`, reference: 'bench', payment: card, metadata: {} });
  }
  const runId = randomBytes(4).toString('hex');
  /**
   * The tenant of call `i`. Calls go round-robin over the channels (i % CHANNELS), so `i % TENANTS`
   * would pin each tenant to one channel, and with --replicas to one replica: a tenant's calls then
   * never meet on two replicas, which a mesh balancing per request does not promise.
   */
  const tenantOf = (i: number) => tenants[Math.floor(i / CHANNELS) % tenants.length]!;
  const consumeCall = (prefix: string) => (i: number) =>
    consume({ tenantId: tenantOf(i), amount: 1n, idempotencyKey: `${prefix}-${runId}-${i}`, reference: 'bench', metadata: {} });

  console.log(
    `credits bench: duration ${DURATION_MS / 1000}s (+${WARMUP_MS / 1000}s warm-up), tenants ${TENANTS}, ${CHANNELS} gRPC channels, ` +
      `unary client ${CLIENT}${args.affinity ? ', tenant affinity' : ''}, service ${flag('in-process') ? 'in-process' : args.replicas > 1 ? `${args.replicas} child processes (replicas)` : 'child process'}, database ${dbName}, load average at start ${loadavg().map((l) => l.toFixed(2)).join(' ')}`,
  );
  const results: LoadResult[] = [];
  /** The first replica's /metrics text; empty when it cannot be read (the figures from it then print NaN). */
  const scrapeServiceMetrics = () => scrapeMetrics({ metricsPort: metricsPorts[0]! }).catch(() => '');
  /** Every replica's /metrics text, the first one's first. */
  const scrapeReplicas = () => Promise.all(metricsPorts.map((metricsPort) => scrapeMetrics({ metricsPort }).catch(() => '')));
  /** A counter summed over the replicas (NaN when a replica lacks it). */
  const sumOver = (texts: readonly string[], name: string, labels?: Record<string, string>) =>
    texts.reduce((sum, text) => sum + (metricValue(text, name, labels) ?? NaN), 0);
  /** The service replicas' CPU time so far (prom-client's process_cpu_seconds_total, summed), in seconds. */
  const serviceCpuSeconds = async () => {
    const texts = await scrapeReplicas();
    return { seconds: sumOver(texts, 'process_cpu_seconds_total'), text: texts[0]! };
  };
  /**
   * runLoad, and the service CPU each call cost (warm-up included on both sides of the division):
   * a figure that stays comparable between runs when the machine's speed does not.
   */
  const runMeasured = async (
    options: Parameters<typeof runLoad>[0],
  ): Promise<LoadResult & { serviceCpuUsPerCall: number; otherCpu: string; metricsAfter: string }> => {
    let calls = 0;
    const counted = (i: number) => options.call(i).finally(() => void (calls += 1));
    const before = await serviceCpuSeconds();
    const machineBefore = cpuSnapshot();
    const result = await runLoad({ ...options, call: counted });
    const machineAfter = cpuSnapshot();
    const after = await serviceCpuSeconds();
    return {
      ...result,
      serviceCpuUsPerCall: ((after.seconds - before.seconds) * 1e6) / Math.max(1, calls),
      otherCpu: formatCpuPerOp(machineBefore, machineAfter, calls, 'load generator'),
      // That scrape also read (and so reset) the event-loop delay of the run.
      metricsAfter: after.text,
    };
  };
  const withCpu = (r: { serviceCpuUsPerCall: number; otherCpu: string } & LoadResult) =>
    `${formatResult(r)}   service CPU ${r.serviceCpuUsPerCall.toFixed(0)} µs/call\n    ${r.otherCpu}`;
  const pgbench = flag('skip-pgbench') ? undefined : pgbenchPath();
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 2 });
  if (pgbench) {
    // Each with its top-up row, so the service's invariant check (balance = sum of movements) holds for them too.
    await pool.query(`INSERT INTO credit_accounts (tenant_id, balance, version) SELECT 'pgb-' || g, $1, 1 FROM generate_series(1, $2) g`, [START_BALANCE, TENANTS]);
    await pool.query(
      `INSERT INTO credit_transactions (id, tenant_id, type, amount, balance_after, reserved_after, created_at)
       SELECT gen_random_uuid(), 'pgb-' || g, 'TOP_UP', $1, $1, 0, now() FROM generate_series(1, $2) g`,
      [START_BALANCE, TENANTS],
    );
  }
  if (SERVICE_WARMUP_MS > 0) {
    // A fresh process spends its first seconds compiling (V8's optimising compiler runs on
    // threads of its own, counted in its CPU): without this the first phase measured, c=16,
    // came out ~35 % slower and ~60 % dearer per call than the same phase run later.
    const warm = await runLoad({ name: 'warm-up', mode: { kind: 'closed', concurrency: 32 }, durationMs: SERVICE_WARMUP_MS, call: consumeCall('warm') });
    const reads = await runLoad({ name: 'warm-up', mode: { kind: 'closed', concurrency: 8 }, durationMs: 1_000, call: (i) => getBalance({ tenantId: tenantOf(i), consistentRead: false }) });
    console.log(`service warm-up (not measured): ${warm.succeeded} consumes, ${reads.succeeded} balance reads${Object.keys({ ...warm.errors, ...reads.errors }).length > 0 ? `, errors ${JSON.stringify({ ...warm.errors, ...reads.errors })}` : ''}`);
  }
  const comparisons: string[] = [];
  let bestPgbench = 0;
  for (const concurrency of PHASES.has('closed') ? CONCURRENCIES : []) {
    const r = await runMeasured({ name: 'Consume (gRPC)', mode: { kind: 'closed', concurrency }, durationMs: DURATION_MS, warmupMs: WARMUP_MS, call: consumeCall(`c${concurrency}`) });
    results.push(r);
    console.log(withCpu(r));
    if (pgbench && concurrency > PGBENCH_CLIENTS_MAX) console.log(`pgbench skipped at c=${concurrency} (more connections than max_connections allows)`);
    else if (pgbench) {
      const b = runPgbench(pgbench, databaseUrl, concurrency, Math.round(DURATION_MS / 1000), TENANTS);
      if (Number.isNaN(b.tps)) console.log(`pgbench failed:\n${b.output}`);
      else bestPgbench = Math.max(bestPgbench, b.tps);
      const line = `pgbench 1 tx/consume     closed c=${String(concurrency).padEnd(7)} ${b.tps.toFixed(0).padStart(7)} tx/s   latency avg ${b.latencyAvgMs.toFixed(2)} ms   ratio service/pgbench = ${(r.throughputPerSecond / b.tps).toFixed(2)}x (service ${r.throughputPerSecond.toFixed(0)}/s, ${r.serviceCpuUsPerCall.toFixed(0)} µs CPU each)`;
      console.log(`${line}\n    ${b.cpu}`);
      comparisons.push(line);
    }
  }
  let fullPgbench: string | undefined;
  if (pgbench && PHASES.has('closed')) {
    const c = Math.max(...CONCURRENCIES.filter((n) => n <= PGBENCH_CLIENTS_MAX));
    const b = runPgbench(pgbench, databaseUrl, c, Math.round(DURATION_MS / 1000), TENANTS, PGBENCH_FULL);
    if (Number.isNaN(b.tps)) console.log(`pgbench (full) failed:\n${b.output}`);
    const same = results.find((r) => r.mode.kind === 'closed' && r.mode.concurrency === c)!;
    fullPgbench = `pgbench 1 tx/consume + idempotency + audit rows, closed c=${c}: ${b.tps.toFixed(0)} tx/s   latency avg ${b.latencyAvgMs.toFixed(2)} ms   ratio service/pgbench = ${(same.throughputPerSecond / b.tps).toFixed(2)}x`;
    console.log(`${fullPgbench}\n    ${b.cpu}`);
  }
  /** Cumulative counts of the service's own Consume handling-time histogram, by upper bound (s). */
  const consumeBuckets = (text: string) =>
    new Map(metricSamples(text, 'grpc_server_handling_seconds_bucket', { grpc_method: 'Consume' }).map((s) => [s.labels.le!, s.value] as const));
  let bucketsBefore = new Map<string, number>();
  /** The service's event-loop delay since the previous scrape (prom-client resets it on each one), and where Consume's server-side time fell. */
  const loopDelay = async (withConsumeTime = true, scraped?: string) => {
    const text = scraped ?? (await scrapeServiceMetrics());
    // prom-client samples the loop every 10 ms and reports whole intervals: an idle loop reads 10.0.
    const value = (name: string) => (metricValue(text, name) ?? NaN) * 1000 - EVENT_LOOP_SAMPLING_MS;
    const buckets = consumeBuckets(text);
    const total = (buckets.get('+Inf') ?? 0) - (bucketsBefore.get('+Inf') ?? 0);
    const upTo = (q: number) => [...buckets.entries()].find(([le, n]) => total > 0 && n - (bucketsBefore.get(le) ?? 0) >= q * total)?.[0] ?? '?';
    const line = `service event-loop lateness p50 ${value('nodejs_eventloop_lag_p50_seconds').toFixed(1)} p99 ${value('nodejs_eventloop_lag_p99_seconds').toFixed(1)} max ${value('nodejs_eventloop_lag_max_seconds').toFixed(1)} ms` +
      (withConsumeTime ? `; Consume in the service (handler start to status): p50 <= ${upTo(0.5)} s, p99 <= ${upTo(0.99)} s` : '');
    bucketsBefore = buckets;
    return line;
  };
  const lat = (r: { latencyMs: LatencySummary }) => `p50 ${r.latencyMs.p50.toFixed(2)} p95 ${r.latencyMs.p95.toFixed(2)} p99 ${r.latencyMs.p99.toFixed(2)} mean ${r.latencyMs.mean.toFixed(2)} ms`;
  const summary: string[] = [];
  if (PHASES.has('stream')) {
    const { call: streamCall, close: closeStreams } = streamCaller(
      clients.map((client) => client.consumeStream(metadata)),
      (requestId, i) => ({
        requestId,
        request: { tenantId: tenantOf(i), amount: 1n, idempotencyKey: `s-${runId}-${requestId}`, reference: 'bench', metadata: {} },
      }),
      (i) => (args.affinity ? channelOfTenant(tenantOf(i)) : i),
    );
    const inFlight = Math.max(...CONCURRENCIES) * 4;
    const streamed = await runMeasured({ name: 'ConsumeStream', mode: { kind: 'closed', concurrency: inFlight }, durationMs: DURATION_MS, warmupMs: WARMUP_MS, call: streamCall });
    results.push(streamed);
    console.log(withCpu(streamed));
    const line = `ConsumeStream closed loop, ${inFlight} in flight: ${streamed.throughputPerSecond.toFixed(0)} consumes/s, service CPU ${streamed.serviceCpuUsPerCall.toFixed(0)} µs each` +
      (bestPgbench > 0 ? `   ratio to the best pgbench figure above (${bestPgbench.toFixed(0)} tx/s) = ${(streamed.throughputPerSecond / bestPgbench).toFixed(2)}x` : '');
    console.log(line);
    summary.push(line);
    await loopDelay();
    const streamOpen = await runMeasured({
      name: 'ConsumeStream',
      mode: { kind: 'open', ratePerSecond: RATE, maxInFlight: 5_000 },
      startEarlyMs: START_EARLY_MS,
      durationMs: DURATION_MS,
      warmupMs: WARMUP_MS,
      call: streamCall,
    });
    console.log(withCpu(streamOpen));
    const streamDelay = await loopDelay(false, streamOpen.metricsAfter);
    console.log(`  during it: ${streamDelay}`);
    summary.push(`ConsumeStream open loop ${RATE}/s: ${lat(streamOpen)} (target p99 < 10 ms), service CPU ${streamOpen.serviceCpuUsPerCall.toFixed(0)} µs each`, `  ${streamDelay}`);
    closeStreams();
  }
  if (PHASES.has('open')) {
    await loopDelay();
    const open = await runMeasured({
      name: 'Consume (gRPC)',
      mode: { kind: 'open', ratePerSecond: RATE, maxInFlight: 5_000 },
      startEarlyMs: START_EARLY_MS,
      durationMs: DURATION_MS,
      warmupMs: WARMUP_MS,
      call: consumeCall('open'),
    });
    results.push(open);
    console.log(withCpu(open));
    const openLoopDelay = await loopDelay(true, open.metricsAfter);
    console.log(`  during it: ${openLoopDelay}`);
    summary.push(`consume open loop ${RATE}/s: ${lat(open)} (target p99 < 10 ms)   seed: ${SEED.consumeAvgMs} ms avg`, `  ${openLoopDelay}`);
    if (pgbench) {
      const b = runPgbenchAtRate(pgbench, databaseUrl, RATE, Math.round(DURATION_MS / 1000), TENANTS);
      if (b.count === 0) console.log(`pgbench -R failed:\n${b.output}`);
      const line = `pgbench 1 tx/consume     open ${RATE}/s (-R, 16 clients): p50 ${b.p50.toFixed(2)} p95 ${b.p95.toFixed(2)} p99 ${b.p99.toFixed(2)} ms over ${b.count} tx`;
      console.log(line);
      summary.push(line);
    }
  }
  if (PHASES.has('balance')) {
    // Cached GetBalance at c=1 (latency), c=8 (capacity, with the service's CPU) and open loop 1,000/s;
    // each right after (same client) against a bare grpc-js server answering from memory: the
    // machine's floor, measured in the same minute so that the host's drift touches both alike.
    const floorServer = await startFloorServer();
    onCleanup(floorServer.stop);
    const floorGetBalance = callers([floorServer.port]).getBalance;
    const service = { name: 'GetBalance (cached)', call: (i: number) => getBalance({ tenantId: tenantOf(i), consistentRead: false }) };
    const floor = { name: 'GetBalance floor', call: (i: number) => floorGetBalance({ tenantId: tenantOf(i), consistentRead: false }) };
    const phase = { durationMs: Math.min(DURATION_MS, 5_000), warmupMs: 1_000 };
    const pair = async (mode: LoadMode, startEarlyMs = 0) => {
      const ours = await runLoad({ ...service, mode, startEarlyMs, ...phase });
      console.log(formatResult(ours));
      const bare = await runLoad({ ...floor, mode, startEarlyMs, ...phase });
      console.log(formatResult(bare));
      return { ours, bare };
    };
    const one = await pair({ kind: 'closed', concurrency: 1 });
    const capacity = await runMeasured({ ...service, mode: { kind: 'closed', concurrency: 8 }, ...phase });
    results.push(capacity);
    console.log(withCpu(capacity));
    const capacityFloor = await runLoad({ ...floor, mode: { kind: 'closed', concurrency: 8 }, ...phase });
    console.log(formatResult(capacityFloor));
    const open = await pair({ kind: 'open', ratePerSecond: 1_000 }, START_EARLY_MS);
    await floorServer.stop();
    summary.push(
      `cached GetBalance closed c=1: ${lat(one.ours)}   closed c=8 (${capacity.throughputPerSecond.toFixed(0)}/s): ${lat(capacity)}`,
      `cached GetBalance open 1000/s: ${lat(open.ours)} (target p99 < 2 ms)   seed: ${SEED.cachedBalanceAvgMs} ms avg`,
      `  floor, bare grpc-js server answering from memory (bench/grpc-floor-server.ts), same client: c=1 ${lat(one.bare)}; ` +
        `c=8 ${capacityFloor.throughputPerSecond.toFixed(0)}/s; open 1000/s ${lat(open.bare)}`,
    );
  }
  if (PHASES.has('mix')) {
    const kindOf = weightedMix(MIX);
    const ops: Record<string, (i: number) => Promise<unknown>> = {
      consume: consumeCall('mix'),
      balance: (i) => getBalance({ tenantId: tenantOf(i), consistentRead: false }),
      hold: async (i) => {
        const held = await reserve({ tenantId: tenantOf(i), amount: 5n, ttl: { seconds: 60n, nanos: 0 }, idempotencyKey: `mix-r-${runId}-${i}`, reference: 'bench', metadata: {} });
        await commitReservation({ tenantId: tenantOf(i), reservationId: held.reservation!.id, amount: 3n, idempotencyKey: `mix-c-${runId}-${i}` });
      },
      topup: (i) => topUp({ tenantId: tenantOf(i), amount: 10n, idempotencyKey: `mix-t-${runId}-${i}`, reference: 'bench', payment: card, metadata: {} }),
      batch: (i) =>
        batchConsume({
          tenantId: tenantOf(i),
          atomic: false,
          idempotencyKey: `mix-b-${runId}-${i}`,
          items: Array.from({ length: 10 }, (_, k) => ({ tenantId: tenantOf(i + k), amount: 1n, reference: 'bench', metadata: {} })),
        }),
    };
    const concurrency = args['mix-concurrency'];
    const mixed = await runMeasured({
      name: 'mix',
      mode: { kind: 'closed', concurrency },
      durationMs: DURATION_MS,
      warmupMs: WARMUP_MS,
      kindOf,
      call: (i) => ops[kindOf(i)]!(i),
    });
    console.log(withCpu(mixed));
    const weights = [...MIX].map(([k, w]) => `${k}=${w}`).join(',');
    summary.push(`mixed load (${weights}), closed c=${concurrency}: ${mixed.throughputPerSecond.toFixed(0)} calls/s, ${lat(mixed)}`);
    for (const [kind, r] of Object.entries(mixed.byKind ?? {})) {
      const errors = Object.entries(r.errors).map(([k, v]) => `${k}=${v}`).join(' ');
      const line = `  ${kind.padEnd(8)} ${r.throughputPerSecond.toFixed(0).padStart(6)} calls/s  ${lat(r)}${errors ? `  errors: ${errors}` : ''}`;
      console.log(line);
      summary.push(line);
    }
  }

  const replicaMetrics = await scrapeReplicas();
  const batchSum = sumOver(replicaMetrics, 'credits_consume_batch_size_sum');
  const batchCount = sumOver(replicaMetrics, 'credits_consume_batch_size_count');
  const closed = results.filter((r) => r.name === 'Consume (gRPC)' && r.mode.kind === 'closed');
  console.log('\nsummary');
  if (closed.length > 0) console.log(`  unary Consume throughput (best closed loop): ${Math.max(...closed.map((r) => r.throughputPerSecond)).toFixed(0)} req/s   seed: ${SEED.tps} TPS`);
  if (bestPgbench > 0) console.log(`  best pgbench 1 tx/consume figure: ${bestPgbench.toFixed(0)} tx/s`);
  for (const c of comparisons) console.log(`  ${c}`);
  if (fullPgbench) console.log(`  ${fullPgbench}`);
  for (const line of summary) console.log(`  ${line}`);
  if (batchCount > 0) console.log(`  mean consume batch size (group commit): ${(batchSum / batchCount).toFixed(1)} over ${batchCount} batches`);
  const byPath = new Map<string, number>();
  for (const text of replicaMetrics) {
    for (const sample of metricSamples(text, 'credits_consume_batches_total')) byPath.set(sample.labels.path!, (byPath.get(sample.labels.path!) ?? 0) + sample.value);
  }
  if (byPath.size > 0) console.log(`  consume batches by path: ${[...byPath].map(([path, n]) => `${path} ${n}`).join(', ')}${args.replicas > 1 ? ` (all ${args.replicas} replicas)` : ''}`);
  const cacheHits = sumOver(replicaMetrics, 'credits_cache_requests_total', { result: 'hit' }) || 0;
  const localHits = sumOver(replicaMetrics, 'credits_cache_local_hits_total') || 0;
  if (cacheHits > 0) console.log(`  balance cache hits: ${cacheHits}, of which from process memory (near cache): ${localHits}`);
  console.log(`  load average at end: ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);

  await pool.end();
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(error);
    process.exit(1);
  },
);
