/**
 * Runs a service as its own process through the production entry point
 * (scripts/start-service.ts), for what only a real process shows: signals,
 * exit codes, telemetry loaded before grpc-js. The spawning itself is
 * platform/service-process.ts, shared with the benches.
 */
import { spawnServiceProcess, type ServiceProcess } from '../platform/service-process';
import type { ServiceName } from '../platform/service-registry';
import { serviceEnv } from './harness';

export type ChildService = ServiceProcess;

/** Environment every service accepts (development-style keys derived for the test). */
export function childEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  // serviceEnv() carries the run's credits keys: a child credits process may write audit rows too.
  return { ...process.env, ...serviceEnv(), LOG_LEVEL: 'info', ...extra };
}

/** Spawns the entry point on free ports; resolves once the service logs that it listens. */
export async function spawnService(service: ServiceName, extra: Record<string, string> = {}): Promise<ChildService> {
  return spawnServiceProcess(service, { env: childEnv(extra) });
}

/** Whether a process with this pid exists (signal 0 only checks; EPERM means it exists but is not ours). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}
