/**
 * Runs a service as its own process through the production entry point
 * (scripts/start-service.ts), for what only a real process shows: signals,
 * exit codes, telemetry loaded before grpc-js. The spawning itself is
 * testing/service-process.ts, shared with the benches.
 */
import { spawnServiceProcess, type ServiceProcess } from './service-process';
import type { ServiceName } from '../scripts/services';
import { serviceEnv } from './harness';

export type ChildService = ServiceProcess;

/**
 * What a child service gets on top of this process's environment (which spawnServiceProcess adds):
 * the run's servers and keys — serviceEnv() carries the credits keys, a child credits process may
 * write audit rows too — and LOG_LEVEL info, since readiness is read from the "listening" log line.
 */
export function childEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return serviceEnv({ LOG_LEVEL: 'info', ...extra });
}

/** Spawns the entry point on free ports; resolves once the service logs that it listens. */
export async function spawnService(service: ServiceName, extra: Record<string, string> = {}): Promise<ChildService> {
  return spawnServiceProcess(service, { env: childEnv(extra) });
}
