/**
 * A real Prometheus for tests, scraping Istio-shaped series that the test
 * drives.
 *
 * - `startIstioSeries()` serves `/metrics` on a free loopback port with
 *   istio_requests_total and istio_request_duration_milliseconds (histogram)
 *   for any (host, subset) the test configures: requests per second, the share
 *   answered 5xx, the share answered with a gRPC status (HTTP 200 + grpc
 *   status), and a latency. Counters advance with wall time between scrapes,
 *   as a sidecar's would. Each request is reported twice, by the
 *   `destination` and the `source` reporter, like Istio does, so a query that
 *   forgets `reporter="destination"` double-counts and a test notices.
 * - `startPrometheus(targets)` runs the `prometheus` binary (Debian package
 *   `prometheus`) on a free loopback port with a generated config scraping the
 *   targets every second, a throw-away TSDB directory, and waits until it is
 *   ready and has scraped each target once.
 *
 * Tests call `requirePrometheus(this)` in `before`: without the binary they
 * skip with the reason, unless CI=true, where they fail.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../dev/local-servers';
import { findOnPath, isExecutable, skipOrFailInCi } from './require-tool';

/** Istio's default buckets for istio_request_duration_milliseconds. */
export const ISTIO_DURATION_BUCKETS_MS = [1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000];

export interface SubsetTraffic {
  /** Requests per second. */
  readonly rps: number;
  /** Share answered HTTP 503, 0..1. */
  readonly http5xxRatio?: number;
  /** Share answered HTTP 200 with this gRPC status (e.g. 14 UNAVAILABLE, 5 NOT_FOUND). */
  readonly grpcStatusRatio?: number;
  readonly grpcStatus?: number;
  /** Every request's latency. */
  readonly latencyMs: number;
}

interface SeriesState {
  traffic: SubsetTraffic;
  lastAdvanceMs: number;
  ok: number;
  http5xx: number;
  grpcStatus: number;
  /** Cumulative per bucket bound, then +Inf. */
  buckets: number[];
  sum: number;
}

export interface IstioSeries {
  readonly port: number;
  /** host:port, for a scrape config. */
  readonly target: string;
  /** Sets (or with undefined, removes) the traffic of one subset of `host`. */
  set(host: string, subset: string, traffic: SubsetTraffic | undefined): void;
  close(): Promise<void>;
}

const escapeLabel = (value: string) => value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
const labels = (pairs: Record<string, string>) =>
  `{${Object.entries(pairs)
    .map(([k, v]) => `${k}="${escapeLabel(v)}"`)
    .join(',')}}`;

export async function startIstioSeries(): Promise<IstioSeries> {
  const series = new Map<string, { host: string; subset: string; state: SeriesState }>();

  const advance = (state: SeriesState, nowMs: number) => {
    const seconds = Math.max(0, (nowMs - state.lastAdvanceMs) / 1000);
    state.lastAdvanceMs = nowMs;
    const requests = state.traffic.rps * seconds;
    if (requests === 0) return;
    const http5xx = requests * (state.traffic.http5xxRatio ?? 0);
    const grpc = requests * (state.traffic.grpcStatusRatio ?? 0);
    state.http5xx += http5xx;
    state.grpcStatus += grpc;
    state.ok += requests - http5xx - grpc;
    ISTIO_DURATION_BUCKETS_MS.forEach((bound, index) => {
      if (state.traffic.latencyMs <= bound) state.buckets[index]! += requests;
    });
    state.buckets[ISTIO_DURATION_BUCKETS_MS.length]! += requests;
    state.sum += requests * state.traffic.latencyMs;
  };

  const render = (): string => {
    const now = Date.now();
    const requestLines: string[] = [];
    const durationLines: string[] = [];
    for (const { host, subset, state } of series.values()) {
      advance(state, now);
      for (const reporter of ['destination', 'source']) {
        const base = {
          reporter,
          source_workload: 'loadgen',
          destination_service: host,
          destination_service_name: host.split('.')[0]!,
          destination_version: subset,
          destination_workload: `${host.split('.')[0]}-${subset}`,
          request_protocol: 'grpc',
        };
        const grpcStatus = String(state.traffic.grpcStatus ?? 14);
        requestLines.push(`istio_requests_total${labels({ ...base, response_code: '200', grpc_response_status: '0' })} ${state.ok}`);
        requestLines.push(`istio_requests_total${labels({ ...base, response_code: '503', grpc_response_status: '14' })} ${state.http5xx}`);
        requestLines.push(`istio_requests_total${labels({ ...base, response_code: '200', grpc_response_status: grpcStatus })} ${state.grpcStatus}`);
        ISTIO_DURATION_BUCKETS_MS.forEach((bound, index) => {
          durationLines.push(`istio_request_duration_milliseconds_bucket${labels({ ...base, le: String(bound) })} ${state.buckets[index]}`);
        });
        durationLines.push(`istio_request_duration_milliseconds_bucket${labels({ ...base, le: '+Inf' })} ${state.buckets[ISTIO_DURATION_BUCKETS_MS.length]}`);
        durationLines.push(`istio_request_duration_milliseconds_sum${labels(base)} ${state.sum}`);
        durationLines.push(`istio_request_duration_milliseconds_count${labels(base)} ${state.buckets[ISTIO_DURATION_BUCKETS_MS.length]}`);
      }
    }
    return [
      '# HELP istio_requests_total Requests by the Istio proxies.',
      '# TYPE istio_requests_total counter',
      ...requestLines,
      '# HELP istio_request_duration_milliseconds Request duration.',
      '# TYPE istio_request_duration_milliseconds histogram',
      ...durationLines,
      '',
    ].join('\n');
  };

  const server: Server = createServer((req, res) => {
    if (req.url !== '/metrics') {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' });
    res.end(render());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    target: `127.0.0.1:${port}`,
    set(host, subset, traffic) {
      const key = `${host}\u0000${subset}`;
      const existing = series.get(key);
      if (traffic === undefined) {
        series.delete(key);
        return;
      }
      if (existing) {
        advance(existing.state, Date.now());
        existing.state.traffic = traffic;
        return;
      }
      series.set(key, {
        host,
        subset,
        state: { traffic, lastAdvanceMs: Date.now(), ok: 0, http5xx: 0, grpcStatus: 0, buckets: new Array(ISTIO_DURATION_BUCKETS_MS.length + 1).fill(0), sum: 0 },
      });
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** Path of the prometheus binary ($PROMETHEUS_BIN, else PATH), or undefined. */
export function prometheusBinary(): string | undefined {
  const override = process.env.PROMETHEUS_BIN;
  if (override) return isExecutable(override) ? override : undefined;
  return findOnPath('prometheus') ?? findOnPath('prometheus', '/usr/bin');
}

/**
 * For a suite's `before`: the prometheus binary; without it the suite skips
 * (with the reason), but fails under CI=true, where it must be installed
 * (`apt-get install -y prometheus`).
 */
export function requirePrometheus(context: Mocha.Context): string {
  return (
    prometheusBinary() ??
    skipOrFailInCi(context, 'prometheus binary not found (install the Debian package: apt-get install -y prometheus, or set PROMETHEUS_BIN)')
  );
}

export interface RunningPrometheus {
  readonly url: string;
  /** Instant query; returns the raw `data.result`. */
  query(promql: string): Promise<unknown[]>;
  stop(): Promise<void>;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export async function startPrometheus(binary: string, targets: readonly string[], options: { timeoutMs?: number } = {}): Promise<RunningPrometheus> {
  const dir = mkdtempSync(join(tmpdir(), 'shieldx-prometheus-'));
  const configPath = join(dir, 'prometheus.yml');
  writeFileSync(
    configPath,
    [
      'global:',
      '  scrape_interval: 1s',
      '  scrape_timeout: 900ms',
      '  evaluation_interval: 1s',
      'scrape_configs:',
      '  - job_name: istio',
      '    static_configs:',
      `      - targets: [${targets.map((t) => JSON.stringify(t)).join(', ')}]`,
      '',
    ].join('\n'),
  );
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const child: ChildProcess = spawn(
    binary,
    [
      `--config.file=${configPath}`,
      `--storage.tsdb.path=${join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--storage.tsdb.retention.time=1h',
      '--log.level=warn',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr = (stderr + chunk.toString()).slice(-4000);
  });
  let exited = false;
  const exit = new Promise<void>((resolve) =>
    child.once('exit', () => {
      exited = true;
      resolve();
    }),
  );

  const stop = async () => {
    if (!exited) {
      child.kill('SIGTERM');
      const killTimer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exit;
      clearTimeout(killTimer);
    }
    rmSync(dir, { recursive: true, force: true });
  };

  const query = async (promql: string): Promise<unknown[]> => {
    const response = await fetch(`${url}/api/v1/query?query=${encodeURIComponent(promql)}`);
    const body = (await response.json()) as { status: string; data: { result: unknown[] } };
    if (body.status !== 'success') throw new Error(`query failed: ${JSON.stringify(body)}`);
    return body.data.result;
  };

  const deadline = Date.now() + (options.timeoutMs ?? 30_000);
  try {
    // Ready, then every target scraped at least once.
    for (;;) {
      if (exited) throw new Error(`prometheus exited during start-up: ${stderr}`);
      if (Date.now() > deadline) throw new Error(`prometheus not ready on ${url}: ${stderr}`);
      const ready = await fetch(`${url}/-/ready`).then((r) => r.ok, () => false);
      if (ready) {
        const up = (await query('up{job="istio"} == 1')) as unknown[];
        if (up.length === targets.length) break;
      }
      await sleep(200);
    }
  } catch (error) {
    await stop();
    throw error;
  }
  return { url, query, stop };
}
