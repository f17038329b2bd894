/**
 * Camouflage Assess benchmark over gRPC with a real Redis.
 *
 *   npx tsx bench/camouflage.ts [--seconds 10] [--concurrency 64] [--rate 2000]
 *
 * Starts the camouflage service as its own process on a free port against
 * BENCH_REDIS_URL (default redis://127.0.0.1:6379, keys under a fresh prefix)
 * and BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres;
 * camouflage keeps no rows there), then measures
 *   (a) closed-loop throughput at a fixed concurrency (how many assessments/s), and
 *   (b) open-loop latency at a fixed offered rate (p50/p95/p99 at 2,000 req/s),
 *   (c) and (d): the same two over AssessStream (one long-lived bidirectional call per
 *       connection, answers matched by request_id), the API for a proxy that assesses
 *       every request it forwards,
 * on a realistic mix: 80 % browsing, 20 % scanners/probes, over 500 sessions.
 * Targets (issue 6): >= 10,000 assessments/s; p99 < 5 ms at 2,000 req/s offered.
 */
import { randomUUID } from 'node:crypto';
import { Metadata } from '@grpc/grpc-js';
import * as grpc from '@grpc/grpc-js';
import { service as healthServiceDefinition } from 'grpc-health-check';
import { CamouflageServiceClient, type AssessRequest } from '../gen/shieldx/camouflage/v1/camouflage';
import { generateApiKey } from '../platform/auth';
import { startServiceProcess } from './service-process';
import { insecure } from '../testing/harness';
import { formatResult, runLoad, streamCaller } from './grpc-load';
import { benchArgs } from './args';

const SCANNER_UAS = ['sqlmap/1.7.2', 'Mozilla/5.00 (Nikto/2.5.0)', 'Nuclei - Open-source project', 'gobuster/3.6', 'python-requests/2.31'];
const PROBES = ['/.env', '/.git/config', '/wp-admin/', '/phpinfo.php', '/actuator/env', '/?id=1%27%20OR%201=1--'];
const PAGES = ['/', '/products', '/products/42', '/cart', '/account', '/search?q=shoes', '/static/app.js'];

function requestFor(i: number): AssessRequest {
  const attacker = i % 5 === 0;
  const session = `bench-${i % 500}`;
  return {
    clientIp: `198.51.${(i % 500) >> 8}.${i % 250}`,
    method: 'GET',
    path: attacker ? PROBES[i % PROBES.length]! : PAGES[i % PAGES.length]!,
    query: '',
    headers: attacker ? {} : { accept: 'text/html', 'accept-language': 'en', host: 'shop.example.com' },
    userAgent: attacker ? SCANNER_UAS[i % SCANNER_UAS.length]! : 'Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0 Safari/537.36',
    tlsFingerprint: '',
    sessionKey: session,
    timestamp: new Date(),
    previousStatus: attacker ? 404 : 200,
    policy: 0,
  };
}

async function main(): Promise<void> {
  const { seconds, concurrency, rate } = benchArgs({
    seconds: { type: 'number', default: 10, min: 0 },
    concurrency: { type: 'number', default: 64, integer: true, min: 1 },
    rate: { type: 'number', default: 2000, min: 1 },
  });
  const key = generateApiKey('bench', ['*']);
  // BENCH_CAMOUFLAGE_ADDRESS + BENCH_API_KEY: measure a service that is already running (e.g. under a profiler).
  const external = process.env.BENCH_CAMOUFLAGE_ADDRESS;
  const apiKey = external ? (process.env.BENCH_API_KEY ?? '') : key.key;
  // The address is used as given (host and port, or any gRPC target), never reduced to a port on 127.0.0.1.
  const service = external
    ? { target: external, stop: async () => undefined }
    : await startServiceProcess('camouflage', {
    GRPC_HOST: '127.0.0.1',
    GRPC_PORT: '0',
    METRICS_PORT: '0',
    DATABASE_URL: process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres',
    REDIS_URL: process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379',
    SHIELDX_API_KEYS: JSON.stringify([key.config]),
    CAMOUFLAGE_REDIS_PREFIX: `bench:${randomUUID().slice(0, 8)}:`,
    MIGRATE_ON_START: 'false',
    LOG_LEVEL: 'info',
    }).then((started) => ({ target: `127.0.0.1:${started.port}`, stop: () => started.stop() }));
  // A connection per channel (grpc-js otherwise shares one subchannel between identical channels).
  const channelOptions = { 'grpc.use_local_subchannel_pool': 1 };
  // Several HTTP/2 connections, as a fleet of guardians would open.
  const clients = Array.from({ length: 4 }, () =>
    new CamouflageServiceClient(service.target, insecure, channelOptions),
  );
  const metadata = new Metadata();
  metadata.set('authorization', `Bearer ${apiKey}`);
  const call = (i: number) =>
    new Promise<void>((resolve, reject) => {
      clients[i % clients.length]!.assess(requestFor(i), metadata, (error) => (error ? reject(error) : resolve()));
    });
  try {
    console.log(`camouflage Assess over gRPC, Redis ${process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379'}, ${seconds} s per phase`);
    const durationMs = seconds * 1000;
    // The same run's ceiling: grpc.health.v1 Check through the same server, interceptors and
    // connections, with no work behind it. Assess cannot go faster than this on this machine.
    const Health = grpc.makeGenericClientConstructor(healthServiceDefinition, 'Health');
    const health = clients.map(() => new Health(service.target, insecure, channelOptions) as unknown as { check(r: object, cb: (e: unknown) => void): void; close(): void });
    const healthCall = (i: number) => new Promise<void>((resolve, reject) => health[i % health.length]!.check({ service: '' }, (e) => (e ? reject(e) : resolve())));
    const ceiling = await runLoad({ name: `Health/Check (gRPC ceiling), concurrency ${concurrency}`, mode: { kind: 'closed', concurrency }, durationMs, warmupMs: 1000, call: healthCall });
    console.log(formatResult(ceiling));
    for (const h of health) h.close();
    const closed = await runLoad({ name: `Assess closed loop, concurrency ${concurrency}`, mode: { kind: 'closed', concurrency }, durationMs, warmupMs: 2000, call });
    console.log(formatResult(closed));
    console.log(`Assess throughput = ${((closed.throughputPerSecond / ceiling.throughputPerSecond) * 100).toFixed(0)} % of the gRPC ceiling measured above`);
    console.log(formatResult(await runLoad({ name: `Assess open loop, ${rate} req/s offered`, mode: { kind: 'open', ratePerSecond: rate }, durationMs, warmupMs: 1000, call })));

    // AssessStream: one call per connection, each assessment a message on it.
    const { call: streamCall, close: closeStreams } = streamCaller(
      clients.map((client) => client.assessStream(metadata)),
      (requestId, i) => ({ requestId, request: requestFor(i) }),
    );
    const streamConcurrency = concurrency * 4;
    const streamed = await runLoad({ name: `AssessStream closed loop, ${streamConcurrency} in flight`, mode: { kind: 'closed', concurrency: streamConcurrency }, durationMs, warmupMs: 2000, call: streamCall });
    console.log(formatResult(streamed));
    console.log(`AssessStream throughput = ${((streamed.throughputPerSecond / ceiling.throughputPerSecond) * 100).toFixed(0)} % of the unary gRPC ceiling, ${(streamed.throughputPerSecond / closed.throughputPerSecond).toFixed(1)}x unary Assess`);
    console.log(formatResult(await runLoad({ name: `AssessStream open loop, ${rate} req/s offered`, mode: { kind: 'open', ratePerSecond: rate }, durationMs, warmupMs: 1000, call: streamCall })));
    closeStreams();
    console.log(`machine: ${require('node:os').cpus().length} cores, load average ${require('node:os').loadavg().map((l: number) => l.toFixed(2)).join(' ')}`);
    console.log('targets: >= 10,000 assessments/s (closed loop); p99 < 5 ms at 2,000 req/s offered');
  } finally {
    for (const c of clients) c.close();
    await service.stop();
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
