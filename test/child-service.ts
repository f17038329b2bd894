/**
 * Runs a service as its own process through the production entry point
 * (scripts/start-service.ts), for what only a real process shows: signals,
 * exit codes, telemetry loaded before grpc-js.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { freePort } from '../platform/local-servers';
import type { ServiceName } from '../platform/service-registry';
import { serviceEnv } from './harness';

export interface ChildService {
  readonly process: ChildProcess;
  readonly grpcPort: number;
  readonly stderr: () => string;
  /** Every stdout line so far (the service's JSON logs). */
  readonly stdout: () => string[];
  readonly exited: Promise<number | null>;
}

/** Environment every service accepts (development-style keys derived for the test). */
export function childEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  // serviceEnv() carries the run's credits keys: a child credits process may write audit rows too.
  return { ...process.env, ...serviceEnv(), LOG_LEVEL: 'info', ...extra };
}

/** Spawns the entry point; resolves once the service logs that it listens. */
export async function spawnService(service: ServiceName, extra: Record<string, string> = {}): Promise<ChildService> {
  const grpcPort = await freePort();
  const metricsPort = await freePort();
  const child = spawn(process.execPath, ['--import', 'tsx', join(__dirname, '..', 'scripts', 'start-service.ts')], {
    env: childEnv({ SHIELDX_SERVICE: service, GRPC_PORT: String(grpcPort), METRICS_PORT: String(metricsPort), ...extra }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  const lines: string[] = [];
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${service} did not start in 30 s: ${stderr}`)), 30_000);
    createInterface({ input: child.stdout! }).on('line', (line) => {
      if (lines.length < 10_000) lines.push(line);
      if (line.includes(`"${service} listening"`)) {
        clearTimeout(timer);
        resolve();
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`${service} exited with ${code} before listening: ${stderr}`));
    });
  });
  return { process: child, grpcPort, stderr: () => stderr, stdout: () => lines, exited };
}
