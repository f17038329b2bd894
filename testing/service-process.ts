/**
 * A service run as its own process through the production entry point
 * (scripts/start-service.ts, from source with tsx), for what only a real
 * process shows (signals, exit codes, telemetry loaded before grpc-js) and so
 * that a benchmark's load generator does not share the service's event loop.
 * Used by the tests (test/child-service.ts) and the benches
 * (bench/service-process.ts). Not used in production.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { projectPath } from '../platform/paths';

export interface ServiceProcessOptions {
  /** Added to this process's environment; SHIELDX_SERVICE is set to the service started. */
  readonly env?: NodeJS.ProcessEnv;
  /** Node flags for the service process only, e.g. `--cpu-prof`. */
  readonly nodeArgs?: readonly string[];
  /** Also write the service's stdout (its JSON logs, --trace-gc lines) to this file. */
  readonly stdoutFile?: string;
  /** The service's stderr: kept for errors and `stderr()` (default), or passed through to ours. */
  readonly stderr?: 'keep' | 'inherit';
  /** How long the service may take to log that it listens. */
  readonly startTimeoutMs?: number;
  /**
   * Another entry point than scripts/start-service.ts (a bench's stand-in server); it must log
   * the same JSON line `{"msg":"<service> listening","grpc_port":…,"metrics_port":…}` once bound.
   */
  readonly script?: string;
  /**
   * Run `script` as compiled JavaScript with plain node (no tsx), from `cwd`: the production
   * install (dist/ after `npm ci --omit=dev`, testing/production-smoke.ts).
   */
  readonly compiled?: { readonly cwd: string };
}

export interface ServiceProcess {
  readonly process: ChildProcess;
  /** The ports the service logged it listens on (so GRPC_PORT=0 works). */
  readonly grpcPort: number;
  readonly metricsPort: number;
  /** stderr so far (empty with `stderr: 'inherit'`). */
  stderr(): string;
  /** stdout lines so far (the service's JSON logs), the first STDOUT_LINES_MAX of them. */
  stdout(): string[];
  /** The exit code, or null when a signal ended it. */
  readonly exited: Promise<number | null>;
  /** SIGTERM, then SIGKILL if it has not exited within `graceMs`; resolves once it has exited. */
  stop(graceMs?: number): Promise<void>;
}

/** The service did not come up; `pid` is the process that was started (and has been stopped). */
export class ServiceStartError extends Error {
  override readonly name = 'ServiceStartError';
  constructor(
    readonly service: string,
    readonly pid: number | undefined,
    message: string,
  ) {
    super(message);
  }
}

const STDOUT_LINES_MAX = 10_000;
const STDERR_CHARS_MAX = 100_000;
const STOP_GRACE_MS = 30_000;

/**
 * Spawns `service` and resolves once it logs `"<service> listening"`. If it
 * exits first or does not listen in time, rejects with a ServiceStartError
 * carrying its stderr — and then no process is left behind.
 */
export async function spawnServiceProcess(service: string, options: ServiceProcessOptions = {}): Promise<ServiceProcess> {
  const startTimeoutMs = options.startTimeoutMs ?? 30_000;
  const loader = options.compiled ? [] : ['--import', 'tsx'];
  const child = spawn(process.execPath, [...(options.nodeArgs ?? []), ...loader, options.script ?? projectPath('scripts', 'start-service.ts')], {
    cwd: options.compiled?.cwd,
    env: { ...process.env, ...options.env, SHIELDX_SERVICE: service },
    stdio: ['ignore', 'pipe', options.stderr === 'inherit' ? 'inherit' : 'pipe'],
  });
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    if (stderr.length < STDERR_CHARS_MAX) stderr += chunk.toString();
  });
  const lines: string[] = [];
  if (options.stdoutFile) child.stdout!.pipe(createWriteStream(options.stdoutFile));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const hasExited = () => child.exitCode !== null || child.signalCode !== null;
  const stop = async (graceMs = STOP_GRACE_MS) => {
    if (hasExited()) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    await exited;
    clearTimeout(timer);
  };

  let ports: { grpcPort: number; metricsPort: number };
  try {
    ports = await new Promise((resolve, reject) => {
      // Settled once: a later exit (the service stopped after listening, or killed after a timeout) is no start failure.
      let settled = false;
      const fail = (message: string) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        reject(new ServiceStartError(service, child.pid, stderr === '' ? message : `${message}: ${stderr}`));
      };
      const timer = setTimeout(() => fail(`${service} did not start in ${startTimeoutMs / 1000} s`), startTimeoutMs);
      createInterface({ input: child.stdout! }).on('line', (line) => {
        if (lines.length < STDOUT_LINES_MAX) lines.push(line);
        if (settled || !line.includes(`"${service} listening"`)) return;
        settled = true;
        clearTimeout(timer);
        const logged = JSON.parse(line) as { grpc_port?: number; metrics_port?: number };
        resolve({ grpcPort: Number(logged.grpc_port), metricsPort: Number(logged.metrics_port) });
      });
      // Even a clean exit (code 0) before listening is a failed start.
      void exited.then((code) =>
        fail(code === null ? `${service} was ended by ${child.signalCode} before listening` : `${service} exited with ${code} before listening`),
      );
    });
  } catch (error) {
    await stop(0);
    throw error;
  }
  return { process: child, ...ports, stderr: () => stderr, stdout: () => lines, exited, stop };
}
