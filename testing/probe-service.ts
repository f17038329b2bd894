/**
 * A service module for platform tests: the credits contract with handlers that
 * count their calls and can be told to be slow or to fail, so tests can prove
 * what the platform does around a handler (auth, metrics, deadlines, drain).
 */
import * as grpc from '@grpc/grpc-js';
import { service as healthServiceDefinition } from 'grpc-health-check';
import { CreditsServiceService, type GetBalanceRequest, type GetBalanceResponse } from '../gen/shieldx/credits/v1/credits';
import { unary, unimplementedService } from '../platform/handlers';
import type { ServiceModule } from '../platform/server';
import { ServiceError } from '../platform/service-error';

export interface ProbeState {
  /** Calls that reached the GetBalance handler. */
  handlerCalls: number;
  /** GetBalance handlers that ran to their end (a "slow-<ms>" one after its sleep). */
  handlerEnds?: number;
  /** Times the service's close() ran. */
  closes?: number;
  /** The key id the last GetBalance handler was told authenticated it (ctx.keyId). */
  lastKeyId?: string;
  /** What a "watch-<ms>" handler's signal said (its ErrorInfo reason), or "none" if it never aborted. */
  signalReason?: string;
}

/**
 * tenant_id "slow-<ms>" sleeps, "watch-<ms>" waits up to that long for ctx.signal and records why it
 * aborted, "invalid" throws INVALID_ARGUMENT, "crash" throws a plain Error.
 */
export function probeModule(state: ProbeState): ServiceModule {
  return {
    // Its own name (no migrations/probe/, so nothing to migrate); it serves the credits contract
    // because platform's tests need a real generated service to call.
    name: 'probe',
    grpcServiceName: 'shieldx.credits.v1.CreditsService',
    errorDomain: 'probe.shieldx.io',
    scopes: { GetBalance: 'credits:read', Consume: 'credits:write' },
    async create(ctx) {
      const implementation = unimplementedService(CreditsServiceService, ctx.handlerOptions);
      implementation.getBalance = unary<GetBalanceRequest, GetBalanceResponse>(
        CreditsServiceService.getBalance.path,
        ctx.handlerOptions,
        async (request, call) => {
          state.handlerCalls += 1;
          state.lastKeyId = call.keyId;
          const slow = /^slow-(\d+)$/.exec(request.tenantId);
          if (slow) await new Promise((resolve) => setTimeout(resolve, Number(slow[1])));
          const watch = /^watch-(\d+)$/.exec(request.tenantId);
          if (watch) {
            const signal = call.signal;
            await new Promise((resolve) => {
              const timer = setTimeout(resolve, Number(watch[1]));
              signal.addEventListener('abort', () => {
                clearTimeout(timer);
                resolve(undefined);
              });
            });
            state.signalReason = signal.aborted ? ((signal.reason as ServiceError).reason ?? 'unknown') : 'none';
          }
          state.handlerEnds = (state.handlerEnds ?? 0) + 1;
          if (request.tenantId === 'invalid') throw ServiceError.invalidArgument('tenant_id', 'must not be "invalid"');
          if (request.tenantId === 'crash') throw new Error('secret internal detail: password=hunter2');
          return {
            account: { tenantId: request.tenantId, balance: 7n, reserved: 2n, available: 5n, version: 1n, updatedAt: new Date(0) },
            fromCache: false,
          };
        },
      );
      return {
        definition: CreditsServiceService,
        implementation: implementation as never,
        close: async () => {
          state.closes = (state.closes ?? 0) + 1;
        },
      };
    },
  };
}

const HealthClient = grpc.makeGenericClientConstructor(healthServiceDefinition, 'Health');

export type HealthStatus = 'UNKNOWN' | 'SERVING' | 'NOT_SERVING' | 'SERVICE_UNKNOWN';

/** grpc.health.v1.Health/Check over the wire. */
export async function checkHealth(address: string, service = ''): Promise<HealthStatus> {
  const client = new HealthClient(address, grpc.credentials.createInsecure());
  try {
    return await new Promise<HealthStatus>((resolve, reject) => {
      (client as unknown as { check: Function }).check({ service }, (err: grpc.ServiceError | null, res: { status: HealthStatus }) =>
        err ? reject(err) : resolve(res.status),
      );
    });
  } finally {
    client.close();
  }
}
