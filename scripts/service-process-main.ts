/**
 * One service process, as the entry points run it: reads SHIELDX_SERVICE, starts telemetry
 * first, before grpc-js, pg and ioredis are loaded, so their instrumentations can patch them,
 * then requires and starts the service and drains it on SIGTERM / SIGINT. The production entry
 * point (scripts/start-service.ts) calls it as it is; `npm start` (dev/start-service.ts) adds
 * the in-process Redis stand-in.
 */
import type { StartOptions } from '../platform/server';
import { startTelemetry, stopTelemetry } from '../platform/telemetry';
// Loads no service module until load() is called below, after telemetry.
import { isServiceName, SERVICE_NAMES, serviceEntry, type ServiceName } from './services';

export function runServiceProcess(options: Pick<StartOptions, 'redisStandIn'> = {}): void {
  const requested = process.env.SHIELDX_SERVICE;
  if (!isServiceName(requested)) {
    process.stderr.write(`invalid configuration: SHIELDX_SERVICE must be one of ${SERVICE_NAMES.join(', ')}\n`);
    process.exit(2);
  }
  const name: ServiceName = requested;
  startTelemetry({ serviceName: `shieldx-${name}` });

  async function main(): Promise<void> {
    // Loaded only now: telemetry has patched the modules they require.
    /* eslint-disable @typescript-eslint/no-require-imports */
    const { startService } = require('../platform/server') as typeof import('../platform/server');
    const { ConfigError } = require('../platform/config') as typeof import('../platform/config');
    /* eslint-enable @typescript-eslint/no-require-imports */
    let running: Awaited<ReturnType<typeof startService>>;
    try {
      const entry = serviceEntry(name);
      running = await startService(entry.load(), process.env, {
        ...options,
        defaultPorts: { grpc: entry.defaultGrpcPort, metrics: entry.defaultMetricsPort, http: entry.defaultHttpPort },
      });
    } catch (error) {
      if (error instanceof ConfigError) {
        process.stderr.write(`${error.message}\n`);
        process.exit(2);
      }
      throw error;
    }
    const stop = (signal: string) => {
      running
        .shutdown(`received ${signal}`)
        .then(() => stopTelemetry())
        .then(
          () => process.exit(0),
          (error: unknown) => {
            running.logger.error({ err: error }, 'shutdown failed');
            process.exit(1);
          },
        );
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  }

  main().catch((error: unknown) => {
    // One line an operator can act on (e.g. "connect ECONNREFUSED 10.0.0.5:5432"); LOG_LEVEL=debug adds the stack.
    const message = error instanceof Error ? error.message.split('\n')[0] : String(error);
    process.stderr.write(`${name} failed to start: ${message}\n`);
    if (process.env.LOG_LEVEL === 'debug' && error instanceof Error) process.stderr.write(`${error.stack}\n`);
    process.exit(1);
  });
}
