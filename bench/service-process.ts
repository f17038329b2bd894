/**
 * Runs a service as its own process through the production entry point, so a
 * benchmark's load generator and the service do not share an event loop (on
 * two cores, each gets one — as a client fleet and a pod would in production).
 * The spawning itself is testing/service-process.ts, shared with the tests.
 *
 * BENCH_SERVICE_NODE_ARGS: extra node flags for the service only, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof".
 * BENCH_SERVICE_LOG: keep the service's stdout (its JSON logs, --trace-gc lines) in that file.
 */
import type { ChildProcess } from 'node:child_process';
import { spawnServiceProcess, type ServiceProcess } from '../testing/service-process';

export interface BenchServiceProcess extends ServiceProcess {
  /** The gRPC port. */
  readonly port: number;
}

/** Child processes this bench started and that still run: killed if the bench itself is interrupted. */
const running = new Set<ChildProcess>();
let interruptHandled = false;

/**
 * Ctrl-C or a kill of the bench skips its cleanups: without this a child (a service, a floor
 * server) would go on running, holding ports and loading the machine for whatever is measured
 * next. SIGKILL: a service told to stop gracefully would be left writing to a closed pipe.
 */
export function killOnInterrupt(child: ChildProcess): void {
  if (!interruptHandled) {
    interruptHandled = true;
    for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
      process.once(signal, () => {
        for (const c of running) c.kill('SIGKILL');
        process.exit(code);
      });
    }
  }
  running.add(child);
  child.once('exit', () => running.delete(child));
}

/**
 * Starts `service`, or with `script` a stand-in server (bench/grpc-floor-server.ts) that logs the
 * same listening line. BENCH_SERVICE_NODE_ARGS and BENCH_SERVICE_LOG apply to the service only.
 */
export async function startServiceProcess(service: string, env: NodeJS.ProcessEnv, script?: string): Promise<BenchServiceProcess> {
  const isService = script === undefined;
  const started = await spawnServiceProcess(service, {
    // JSON/HTTP off unless the bench asks: replicas would collide on the entry point's default 8004-8006.
    env: { HTTP_PORT: '0', ...env },
    script,
    nodeArgs: isService ? (process.env.BENCH_SERVICE_NODE_ARGS ?? '').split(' ').filter(Boolean) : [],
    stdoutFile: isService ? process.env.BENCH_SERVICE_LOG || undefined : undefined,
    // The bench prints the service's errors as they come.
    stderr: 'inherit',
    startTimeoutMs: 60_000,
  });
  killOnInterrupt(started.process);
  return { ...started, port: started.grpcPort };
}
