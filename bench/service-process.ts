/**
 * Runs a service as its own process through the production entry point, so a
 * benchmark's load generator and the service do not share an event loop (on
 * two cores, each gets one — as a client fleet and a pod would in production).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { join } from 'node:path';

export interface ServiceProcess {
  readonly port: number;
  stop(): Promise<void>;
}

export async function startServiceProcess(service: string, env: NodeJS.ProcessEnv): Promise<ServiceProcess> {
  // BENCH_SERVICE_NODE_ARGS: extra node flags for the service only, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof".
  const nodeArgs = (process.env.BENCH_SERVICE_NODE_ARGS ?? '').split(' ').filter(Boolean);
  const child: ChildProcess = spawn(process.execPath, [...nodeArgs, '--import', 'tsx', join(__dirname, '..', 'scripts', 'start-service.ts')], {
    env: { ...process.env, ...env, SHIELDX_SERVICE: service },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${service} did not start within 60 s`)), 60_000);
    let buffer = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      buffer += chunk.toString();
      const match = /"grpc_port":(\d+)/.exec(buffer);
      if (match) {
        clearTimeout(timer);
        resolve(Number(match[1]));
      }
      if (buffer.length > 100_000) buffer = buffer.slice(-10_000);
    });
    child.once('exit', (code) => reject(new Error(`${service} exited with ${code}`)));
  });
  // BENCH_SERVICE_LOG: keep the service's stdout (its JSON logs, --trace-gc lines) in that file.
  if (process.env.BENCH_SERVICE_LOG) child.stdout!.pipe(createWriteStream(process.env.BENCH_SERVICE_LOG));
  else child.stdout!.resume();
  return {
    port,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}
