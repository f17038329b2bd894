/**
 * The services this repository runs, written out once: the entry point
 * (scripts/start-service.ts), `npm start`, `npm run migrate`, migrations and the
 * tests all read this list, so adding a service is one entry here (plus its
 * module).
 *
 * Importing this file loads nothing but itself: a module is required only when
 * `load()` is called, because the entry point must start telemetry before
 * grpc-js, pg and ioredis are first required.
 */
import type { z } from 'zod';
import type { ServiceModule } from '../platform/server';

export const SERVICE_NAMES = ['credits', 'shadow', 'camouflage'] as const;
export type ServiceName = (typeof SERVICE_NAMES)[number];

export interface ServiceEntry {
  readonly name: ServiceName;
  /**
   * The service's default ports, written only here: startService applies them, and
   * `npm start` prints and passes them without loading every service.
   */
  readonly defaultGrpcPort: number;
  readonly defaultMetricsPort: number;
  /** JSON over HTTP (Connect); HTTP_PORT=0 turns it off. */
  readonly defaultHttpPort: number;
  /** Requires the service's module (and with it grpc-js, pg, ioredis). */
  load(): ServiceModule<z.ZodRawShape>;
}

/* eslint-disable @typescript-eslint/no-require-imports */
const ENTRIES: Readonly<Record<ServiceName, ServiceEntry>> = {
  credits: {
    name: 'credits',
    defaultGrpcPort: 5004,
    defaultMetricsPort: 9004,
    defaultHttpPort: 8004,
    load: () => (require('../services/credits') as typeof import('../services/credits')).creditsService as never,
  },
  shadow: {
    name: 'shadow',
    defaultGrpcPort: 5005,
    defaultMetricsPort: 9005,
    defaultHttpPort: 8005,
    load: () => (require('../services/shadow') as typeof import('../services/shadow')).shadowService as never,
  },
  camouflage: {
    name: 'camouflage',
    defaultGrpcPort: 5006,
    defaultMetricsPort: 9006,
    defaultHttpPort: 8006,
    load: () => (require('../services/camouflage') as typeof import('../services/camouflage')).camouflageService as never,
  },
};
/* eslint-enable @typescript-eslint/no-require-imports */

/** Every service, in SERVICE_NAMES order. */
export const SERVICES: readonly ServiceEntry[] = SERVICE_NAMES.map((name) => ENTRIES[name]);

export function isServiceName(value: unknown): value is ServiceName {
  return typeof value === 'string' && (SERVICE_NAMES as readonly string[]).includes(value);
}

export function serviceEntry(name: ServiceName): ServiceEntry {
  return ENTRIES[name];
}
