/**
 * Runs a service as its own process through the production entry point, so a
 * benchmark's load generator and the service do not share an event loop (on
 * two cores, each gets one — as a client fleet and a pod would in production).
 * The spawning itself is platform/service-process.ts, shared with the tests.
 *
 * BENCH_SERVICE_NODE_ARGS: extra node flags for the service only, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof".
 * BENCH_SERVICE_LOG: keep the service's stdout (its JSON logs, --trace-gc lines) in that file.
 */
import { spawnServiceProcess, type ServiceProcess } from '../platform/service-process';

export interface BenchServiceProcess extends ServiceProcess {
  /** The gRPC port. */
  readonly port: number;
}

export async function startServiceProcess(service: string, env: NodeJS.ProcessEnv): Promise<BenchServiceProcess> {
  const started = await spawnServiceProcess(service, {
    env,
    nodeArgs: (process.env.BENCH_SERVICE_NODE_ARGS ?? '').split(' ').filter(Boolean),
    stdoutFile: process.env.BENCH_SERVICE_LOG || undefined,
    // The bench prints the service's errors as they come.
    stderr: 'inherit',
    startTimeoutMs: 60_000,
  });
  return { ...started, port: started.grpcPort };
}
