/**
 * Prometheus metrics: one registry per service process, the go-grpc-prometheus
 * server metrics (so existing dashboards and alerts work unchanged), default
 * process metrics, and the `/metrics` HTTP endpoint.
 */
import { createServer, type Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

/** Go's codes.Code String() names: the label values go-grpc-prometheus uses. */
export const GRPC_CODE_NAMES = [
  'OK',
  'Canceled',
  'Unknown',
  'InvalidArgument',
  'DeadlineExceeded',
  'NotFound',
  'AlreadyExists',
  'PermissionDenied',
  'ResourceExhausted',
  'FailedPrecondition',
  'Aborted',
  'OutOfRange',
  'Unimplemented',
  'Internal',
  'Unavailable',
  'DataLoss',
  'Unauthenticated',
] as const;

export function grpcCodeName(code: number): string {
  return GRPC_CODE_NAMES[code] ?? 'Unknown';
}

export type GrpcType = 'unary' | 'client_stream' | 'server_stream' | 'bidi_stream';

/** The standard set for a gRPC server. */
export class GrpcServerMetrics {
  readonly started: Counter<'grpc_type' | 'grpc_service' | 'grpc_method'>;
  readonly handled: Counter<'grpc_type' | 'grpc_service' | 'grpc_method' | 'grpc_code'>;
  readonly handlingSeconds: Histogram<'grpc_type' | 'grpc_service' | 'grpc_method'>;
  readonly messagesReceived: Counter<'grpc_type' | 'grpc_service' | 'grpc_method'>;
  readonly messagesSent: Counter<'grpc_type' | 'grpc_service' | 'grpc_method'>;

  constructor(registry: Registry) {
    const labelNames = ['grpc_type', 'grpc_service', 'grpc_method'] as const;
    this.started = new Counter({
      name: 'grpc_server_started_total',
      help: 'Total number of RPCs started on the server.',
      labelNames,
      registers: [registry],
    });
    this.handled = new Counter({
      name: 'grpc_server_handled_total',
      help: 'Total number of RPCs completed on the server, regardless of success or failure.',
      labelNames: [...labelNames, 'grpc_code'],
      registers: [registry],
    });
    this.handlingSeconds = new Histogram({
      name: 'grpc_server_handling_seconds',
      help: 'Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.',
      labelNames,
      // Fine buckets at the low end: the ledger's p99 target is 10 ms.
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    });
    this.messagesReceived = new Counter({
      name: 'grpc_server_msg_received_total',
      help: 'Total number of RPC stream messages received on the server.',
      labelNames,
      registers: [registry],
    });
    this.messagesSent = new Counter({
      name: 'grpc_server_msg_sent_total',
      help: 'Total number of gRPC stream messages sent by the server.',
      labelNames,
      registers: [registry],
    });
  }
}

export function createRegistry(service: string): Registry {
  const registry = new Registry();
  registry.setDefaultLabels({ service });
  collectDefaultMetrics({ register: registry });
  return registry;
}

/** Pool gauges the DatabaseConnectionPoolExhausted alert reads. */
export function registerPoolMetrics(
  registry: Registry,
  service: string,
  pool: { totalCount: number; idleCount: number; waitingCount: number; options: { max?: number } },
): void {
  new Gauge({
    name: 'db_pool_connections',
    help: 'PostgreSQL pool connections by state (total, idle, waiting clients).',
    labelNames: ['pool', 'state'],
    registers: [registry],
    collect() {
      this.set({ pool: service, state: 'total' }, pool.totalCount);
      this.set({ pool: service, state: 'idle' }, pool.idleCount);
      this.set({ pool: service, state: 'waiting' }, pool.waitingCount);
    },
  });
  new Gauge({
    name: 'db_pool_max_connections',
    help: 'Configured maximum size of the PostgreSQL pool.',
    labelNames: ['pool'],
    registers: [registry],
    collect() {
      this.set({ pool: service }, pool.options.max ?? 10);
    },
  });
}

/** Serves `GET /metrics` (and `/healthz` for plain HTTP checks). */
export async function startMetricsServer(registry: Registry, host: string, port: number): Promise<HttpServer> {
  const server = createServer((req, res) => {
    if (req.method === 'GET' && req.url?.split('?')[0] === '/metrics') {
      registry
        .metrics()
        .then((body) => {
          res.writeHead(200, { 'content-type': registry.contentType });
          res.end(body);
        })
        .catch(() => {
          res.writeHead(500).end('metrics collection failed\n');
        });
      return;
    }
    if (req.method === 'GET' && req.url === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return server;
}

export function boundPort(server: HttpServer): number {
  return (server.address() as AddressInfo).port;
}
