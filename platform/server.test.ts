import { expect } from 'chai';
import { status as grpcStatus } from '@grpc/grpc-js';
import { CreditsServiceClient, type GetBalanceResponse } from '../gen/shieldx/credits/v1/credits';
import { errorDetails } from './grpc-errors';
import { ConfigError } from './config';
import { freePort } from '../dev/local-servers';
import { proxyFor } from '../testing/tcp-proxy';
import type { RunningService } from './server';
import { address, bearer, insecure, startTestService, testInfrastructure, testKeys, waitFor } from '../testing/harness';
import { metricValue, scrapeMetrics } from './prometheus-text';
import { checkHealth, probeModule, type ProbeState } from '../testing/probe-service';
import { PRINCIPAL_METADATA_KEY } from './interceptors';
import { clientFromReflection, listServices } from '../testing/reflection-client';
import { Metadata } from '@grpc/grpc-js';

type Result = { error: unknown; response: GetBalanceResponse | undefined };

function getBalance(client: CreditsServiceClient, tenantId: string, metadata = bearer(testKeys.creditsReader), deadlineMs?: number): Promise<Result> {
  return new Promise((resolve) => {
    const options = deadlineMs ? { deadline: Date.now() + deadlineMs } : {};
    client.getBalance({ tenantId, consistentRead: false }, metadata, options, (error, response) => resolve({ error, response }));
  });
}

describe('platform server', () => {
  const state: ProbeState = { handlerCalls: 0 };
  let service: RunningService;
  let client: CreditsServiceClient;

  before(async () => {
    service = await startTestService(probeModule(state), { MIGRATE_ON_START: 'false', GRPC_MAX_MESSAGE_BYTES: '65536' });
    client = new CreditsServiceClient(address(service), insecure);
  });
  after(async () => {
    client.close();
    await service.shutdown();
  });

  describe('authentication', () => {
    // A call without credentials is refused before the handler runs.
    it('rejects a missing key with UNAUTHENTICATED', async () => {
      const before = state.handlerCalls;
      const { error } = await getBalance(client, 'acme', new Metadata());
      expect(errorDetails(error)).to.include({ code: grpcStatus.UNAUTHENTICATED, reason: 'MISSING_CREDENTIALS', domain: 'probe.shieldx.io' });
      expect(state.handlerCalls).to.equal(before);
    });

    // An unknown key, and a malformed header, are both UNAUTHENTICATED and never reach the handler.
    it('rejects an invalid key with UNAUTHENTICATED', async () => {
      const before = state.handlerCalls;
      const wrong = new Metadata();
      wrong.set('authorization', `Bearer ${testKeys.admin.key}x`);
      expect(errorDetails((await getBalance(client, 'acme', wrong)).error)).to.include({ code: grpcStatus.UNAUTHENTICATED, reason: 'INVALID_CREDENTIALS' });
      const malformed = new Metadata();
      malformed.set('authorization', testKeys.admin.key);
      expect(errorDetails((await getBalance(client, 'acme', malformed)).error)).to.include({ code: grpcStatus.UNAUTHENTICATED, reason: 'INVALID_CREDENTIALS' });
      expect(state.handlerCalls).to.equal(before);
    });

    // The key id a handler sees (credits' audit actor) comes from the authenticated key only: a caller that sends
    // its own x-shieldx-key-id header cannot pose as another key.
    it('ignores a caller-sent key id and tells the handler which key authenticated', async () => {
      const forged = bearer(testKeys.creditsReader);
      forged.set(PRINCIPAL_METADATA_KEY, testKeys.admin.config.id);
      const { error } = await getBalance(client, 'acme', forged);
      expect(error).to.equal(null);
      expect(state.lastKeyId).to.equal(testKeys.creditsReader.config.id);
    });

    // A valid key without the method's scope is PERMISSION_DENIED, naming the scope, and the handler never runs.
    it('rejects a key without the scope with PERMISSION_DENIED', async () => {
      const before = state.handlerCalls;
      const { error } = await getBalance(client, 'acme', bearer(testKeys.noScopes));
      const details = errorDetails(error);
      expect(details).to.include({ code: grpcStatus.PERMISSION_DENIED, reason: 'MISSING_SCOPE' });
      expect(details?.metadata).to.deep.equal({ scope: 'credits:read' });
      expect(state.handlerCalls).to.equal(before);
    });

    // A method missing from the scope table needs the admin scope: new methods are closed by default.
    it('closes methods missing from the scope table to all but admin keys', async () => {
      const call = (metadata: Metadata) =>
        new Promise<unknown>((resolve) =>
          client.topUp({ tenantId: 'acme', amount: 1n, idempotencyKey: 'k', reference: '', metadata: {} }, metadata, (error) => resolve(error)),
        );
      expect(errorDetails(await call(bearer(testKeys.creditsWriter)))?.code).to.equal(grpcStatus.PERMISSION_DENIED);
      // The admin key passes auth and reaches the (unimplemented) handler.
      expect(errorDetails(await call(bearer(testKeys.admin)))?.code).to.equal(grpcStatus.UNIMPLEMENTED);
    });

    // The right scope reaches the handler and gets its answer.
    it('lets a key with the scope through', async () => {
      const before = state.handlerCalls;
      const { error, response } = await getBalance(client, 'acme');
      expect(error).to.equal(null);
      expect(response?.account?.available).to.equal(5n);
      expect(state.handlerCalls).to.equal(before + 1);
    });

    // Health needs no key: load balancers and kubelets call it unauthenticated.
    it('leaves health open', async () => {
      expect(await checkHealth(address(service))).to.equal('SERVING');
      expect(await checkHealth(address(service), 'shieldx.credits.v1.CreditsService')).to.equal('SERVING');
    });
  });

  describe('errors', () => {
    // A ServiceError reaches the client as its code plus ErrorInfo and BadRequest details in the trailer.
    it('carries reason and field violations in grpc-status-details-bin', async () => {
      const details = errorDetails((await getBalance(client, 'invalid')).error);
      expect(details).to.include({ code: grpcStatus.INVALID_ARGUMENT, reason: 'INVALID_ARGUMENT', domain: 'probe.shieldx.io' });
      expect(details?.fieldViolations).to.deep.equal([{ field: 'tenant_id', description: 'must not be "invalid"' }]);
    });

    // An unexpected error is INTERNAL with a generic message: its text (which may hold secrets) stays in the server.
    it('hides unexpected errors behind INTERNAL', async () => {
      const details = errorDetails((await getBalance(client, 'crash')).error);
      expect(details).to.include({ code: grpcStatus.INTERNAL, reason: 'INTERNAL', message: 'internal error' });
      expect(JSON.stringify(details)).not.to.include('hunter2');
    });

    // A request over the configured maximum message size is refused with RESOURCE_EXHAUSTED.
    it('enforces the maximum message size', async () => {
      const { error } = await getBalance(client, 'x'.repeat(100_000));
      expect((error as { code: number }).code).to.equal(grpcStatus.RESOURCE_EXHAUSTED);
    });
  });

  describe('metrics', () => {
    // /metrics counts calls by method and code, with go-grpc-prometheus names and labels.
    it('counts handled calls with the right grpc_code', async () => {
      const labels = { grpc_type: 'unary', grpc_service: 'shieldx.credits.v1.CreditsService', grpc_method: 'GetBalance' };
      const before = await scrapeMetrics(service);
      const okBefore = metricValue(before, 'grpc_server_handled_total', { ...labels, grpc_code: 'OK' }) ?? 0;
      const deniedBefore = metricValue(before, 'grpc_server_handled_total', { ...labels, grpc_code: 'PermissionDenied' }) ?? 0;
      const startedBefore = metricValue(before, 'grpc_server_started_total', labels) ?? 0;
      const timedBefore = metricValue(before, 'grpc_server_handling_seconds_count', labels) ?? 0;
      await getBalance(client, 'acme');
      await getBalance(client, 'acme');
      await getBalance(client, 'acme', bearer(testKeys.noScopes));
      const after = await scrapeMetrics(service);
      expect(metricValue(after, 'grpc_server_handled_total', { ...labels, grpc_code: 'OK' })).to.equal(okBefore + 2);
      expect(metricValue(after, 'grpc_server_handled_total', { ...labels, grpc_code: 'PermissionDenied' })).to.equal(deniedBefore + 1);
      expect(metricValue(after, 'grpc_server_started_total', labels)).to.equal(startedBefore + 3);
      expect(metricValue(after, 'grpc_server_handling_seconds_count', labels)).to.equal(timedBefore + 3);
      expect(after).to.include('process_cpu_seconds_total');
      expect(after).to.include('db_pool_max_connections');
    });
  });

  describe('reflection', () => {
    // A client that only knows reflection (like grpcurl) can find the method and call it.
    it('serves complete descriptors: a client built from reflection alone calls an RPC', async () => {
      const Reflected = await clientFromReflection(address(service), 'shieldx.credits.v1.CreditsService');
      const reflected = new Reflected(address(service), insecure) as unknown as {
        GetBalance(req: object, md: Metadata, cb: (e: unknown, r: { account: { tenant_id: string; available: string } }) => void): void;
        close(): void;
      };
      const response = await new Promise<{ account: { tenant_id: string; available: string } }>((resolve, reject) =>
        reflected.GetBalance({ tenant_id: 'by-reflection' }, bearer(testKeys.creditsReader), (e, r) => (e ? reject(e) : resolve(r))),
      );
      reflected.close();
      expect(response.account).to.include({ tenant_id: 'by-reflection', available: '5' });
    });

    // GRPC_REFLECTION defaults to open (README): grpcurl lists the services without a key.
    it('is open by default: lists services without a key', async () => {
      expect(await listServices(address(service))).to.deep.equal(['grpc.health.v1.Health', 'shieldx.credits.v1.CreditsService']);
    });
  });
});

/** The gRPC status a rejected reflection call ended with. */
async function reflectionError(target: string, metadata?: Metadata): Promise<number | undefined> {
  return listServices(target, metadata).then(
    () => undefined,
    (error: { code?: number }) => error.code,
  );
}

describe('platform server: GRPC_REFLECTION', () => {
  // off: the reflection service is not registered at all, so even an admin key gets UNIMPLEMENTED; health stays open.
  it('off: reflection is UNIMPLEMENTED, for any key', async () => {
    const service = await startTestService(probeModule({ handlerCalls: 0 }), { MIGRATE_ON_START: 'false', GRPC_REFLECTION: 'off' });
    try {
      expect(await reflectionError(address(service), bearer(testKeys.admin))).to.equal(grpcStatus.UNIMPLEMENTED);
      expect(await reflectionError(address(service), bearer(testKeys.reflection))).to.equal(grpcStatus.UNIMPLEMENTED);
      expect(await checkHealth(address(service))).to.equal('SERVING');
    } finally {
      await service.shutdown();
    }
  });

  // authenticated: no key is UNAUTHENTICATED, a key without scope "reflection" PERMISSION_DENIED,
  // a key with it (or an admin key) lists the service; health stays open.
  it('authenticated: needs a key with scope "reflection"', async () => {
    const service = await startTestService(probeModule({ handlerCalls: 0 }), { MIGRATE_ON_START: 'false', GRPC_REFLECTION: 'authenticated' });
    const listed = ['grpc.health.v1.Health', 'shieldx.credits.v1.CreditsService'];
    try {
      expect(await reflectionError(address(service))).to.equal(grpcStatus.UNAUTHENTICATED);
      expect(await reflectionError(address(service), bearer(testKeys.noScopes))).to.equal(grpcStatus.PERMISSION_DENIED);
      expect(await listServices(address(service), bearer(testKeys.reflection))).to.deep.equal(listed);
      expect(await listServices(address(service), bearer(testKeys.admin))).to.deep.equal(listed);
      expect(await checkHealth(address(service))).to.equal('SERVING');
    } finally {
      await service.shutdown();
    }
  });
});

describe('platform server: start-up failure', () => {
  // A port already in use fails the start, and what the service had started is closed, not leaked.
  it('closes the service when its port is taken', async () => {
    const holder = await startTestService(probeModule({ handlerCalls: 0 }), { MIGRATE_ON_START: 'false' });
    const state: ProbeState = { handlerCalls: 0 };
    try {
      const error = await startTestService(probeModule(state), { MIGRATE_ON_START: 'false', GRPC_PORT: String(holder.grpcPort) }).then(
        (s) => s.shutdown().then(() => undefined),
        (e: Error) => e,
      );
      expect(error).to.be.instanceOf(ConfigError);
      expect((error as ConfigError).message).to.equal(
        `invalid configuration: GRPC_PORT ${holder.grpcPort} on 127.0.0.1 is taken (another process listens there) or cannot be bound: set GRPC_PORT to a free port`,
      );
      expect(state.closes).to.equal(1);
    } finally {
      await holder.shutdown();
    }
  });

  // The metrics and JSON/HTTP ports too: the variable is named, and nothing is left running.
  it('names METRICS_PORT or HTTP_PORT when that port is taken', async () => {
    const holder = await startTestService(probeModule({ handlerCalls: 0 }), { MIGRATE_ON_START: 'false', HTTP_PORT: String(await freePort()) });
    try {
      for (const [variable, port] of [
        ['METRICS_PORT', holder.metricsPort],
        ['HTTP_PORT', holder.httpPort],
      ] as const) {
        const state: ProbeState = { handlerCalls: 0 };
        const error = await startTestService(probeModule(state), { MIGRATE_ON_START: 'false', [variable]: String(port) }).then(
          (s) => s.shutdown().then(() => undefined),
          (e: Error) => e,
        );
        expect(error, variable).to.be.instanceOf(ConfigError);
        expect((error as ConfigError).variable).to.equal(variable);
        expect((error as ConfigError).message).to.include(`${port} on 127.0.0.1 is taken`);
        expect(state.closes, variable).to.equal(1);
      }
    } finally {
      await holder.shutdown();
    }
  });
});

describe('platform server: deadlines and shutdown', () => {
  // A call without a client deadline still ends: the server applies its default deadline.
  it('applies the default deadline when the client sets none', async () => {
    const state: ProbeState = { handlerCalls: 0 };
    const service = await startTestService(probeModule(state), { MIGRATE_ON_START: 'false', GRPC_DEFAULT_DEADLINE_MS: '150' });
    const client = new CreditsServiceClient(address(service), insecure);
    try {
      const { error } = await getBalance(client, 'slow-1000');
      expect(errorDetails(error)).to.include({ code: grpcStatus.DEADLINE_EXCEEDED, reason: 'DEADLINE_EXCEEDED' });
    } finally {
      client.close();
      await service.shutdown();
    }
  });

  // A handler learns through ctx.signal that its deadline passed (the server's default one or the client's),
  // so it can stop work whose answer nobody will read.
  it("tells the handler when the call's deadline passes", async () => {
    const state: ProbeState = { handlerCalls: 0 };
    const service = await startTestService(probeModule(state), { MIGRATE_ON_START: 'false', GRPC_DEFAULT_DEADLINE_MS: '150' });
    const client = new CreditsServiceClient(address(service), insecure);
    try {
      for (const clientDeadlineMs of [undefined, 150]) {
        state.signalReason = undefined;
        const { error } = await getBalance(client, 'watch-5000', bearer(testKeys.creditsReader), clientDeadlineMs);
        expect((error as { code: number }).code, `client deadline ${clientDeadlineMs}`).to.equal(grpcStatus.DEADLINE_EXCEEDED);
        await waitFor('the handler to end', async () => state.signalReason, 3_000, 10);
        expect(state.signalReason, `client deadline ${clientDeadlineMs}`).to.equal('DEADLINE_EXCEEDED');
      }
    } finally {
      client.close();
      await service.shutdown();
    }
  });

  // Shutdown turns health NOT_SERVING at once, lets the in-flight call finish OK, then refuses new calls.
  it('goes NOT_SERVING, drains in-flight calls, then stops', async () => {
    const state: ProbeState = { handlerCalls: 0 };
    const service = await startTestService(probeModule(state), { MIGRATE_ON_START: 'false', SHUTDOWN_DELAY_MS: '300' });
    const client = new CreditsServiceClient(address(service), insecure);
    try {
      expect(await checkHealth(address(service))).to.equal('SERVING');
      const inFlight = getBalance(client, 'slow-800');
      await new Promise((resolve) => setTimeout(resolve, 100));
      const stopping = service.shutdown('test');
      // Still accepting during the shutdown delay, but reporting NOT_SERVING.
      expect(await checkHealth(address(service))).to.equal('NOT_SERVING');
      const duringDelay = await getBalance(client, 'acme');
      expect(duringDelay.error).to.equal(null);
      const finished = await inFlight;
      expect(finished.error).to.equal(null);
      expect(finished.response?.account?.tenantId).to.equal('slow-800');
      await stopping;
      const after = await getBalance(client, 'acme', bearer(testKeys.creditsReader), 1000);
      expect((after.error as { code: number }).code).to.be.oneOf([grpcStatus.UNAVAILABLE, grpcStatus.DEADLINE_EXCEEDED]);
    } finally {
      client.close();
    }
  });

  // A call still running when SHUTDOWN_GRACE_MS is over is cut off (the client gets an error, not a
  // late answer), and the shutdown still completes: background work closed, new calls refused.
  it('cuts off calls that outlive the grace period and still stops', async () => {
    const state: ProbeState = { handlerCalls: 0 };
    const service = await startTestService(probeModule(state), { MIGRATE_ON_START: 'false', SHUTDOWN_GRACE_MS: '200' });
    const client = new CreditsServiceClient(address(service), insecure);
    try {
      // Far longer than the grace period (and than this test's timeout): only a forced shutdown ends it.
      const inFlight = getBalance(client, 'slow-60000');
      await waitFor('the slow call to reach its handler', async () => (state.handlerCalls === 1 ? true : undefined));
      await service.shutdown('test');
      const cutOff = await inFlight;
      expect(state.handlerEnds ?? 0, 'the handler was still running').to.equal(0);
      expect(cutOff.response).to.equal(undefined);
      expect((cutOff.error as { code: number }).code).to.be.oneOf([grpcStatus.CANCELLED, grpcStatus.UNAVAILABLE]);
      expect(state.closes).to.equal(1);
      const after = await getBalance(client, 'acme', bearer(testKeys.creditsReader), 1000);
      expect((after.error as { code: number }).code).to.be.oneOf([grpcStatus.UNAVAILABLE, grpcStatus.DEADLINE_EXCEEDED]);
    } finally {
      client.close();
    }
  });
});

describe('platform server: readiness follows the database', function () {
  this.timeout(60_000);
  // A pod whose database cannot be reached is not SERVING (so Kubernetes stops routing to it) and
  // is SERVING again once the database answers; health itself keeps answering throughout.
  it('reports NOT_SERVING while PostgreSQL does not answer, SERVING once it does', async () => {
    const proxied = await proxyFor(testInfrastructure().databaseUrl, 5432);
    const service = await startTestService(probeModule({ handlerCalls: 0 }), {
      MIGRATE_ON_START: 'false',
      DATABASE_URL: proxied.url,
      DB_HEALTH_CHECK_INTERVAL_MS: '200',
      DB_STATEMENT_TIMEOUT_MS: '500',
    });
    try {
      expect(await checkHealth(address(service))).to.equal('SERVING');
      proxied.proxy.blackHole();
      await waitFor('NOT_SERVING', async () => ((await checkHealth(address(service))) === 'NOT_SERVING' ? true : undefined), 30_000, 200);
      proxied.proxy.restore();
      await waitFor('SERVING again', async () => ((await checkHealth(address(service))) === 'SERVING' ? true : undefined), 30_000, 200);
    } finally {
      proxied.proxy.restore();
      await service.shutdown();
      await proxied.proxy.close();
    }
  });
});
