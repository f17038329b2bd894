import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { createServer as createNetServer } from 'node:net';
import { join } from 'node:path';
import { expect } from 'chai';
import { Metadata, status as grpcStatus } from '@grpc/grpc-js';
import { CreditsServiceClient } from '../gen/shieldx/credits/v1/credits';
import { errorDetails } from '../platform/grpc-errors';
import { bearer, insecure, testKeys } from '../testing/harness';
import { childEnv, spawnService } from '../testing/child-service';
import { checkHealth } from '../testing/probe-service';

/** Runs the entry point to completion (for configurations that must not start). */
function runToExit(env: Record<string, string | undefined>): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', join(__dirname, 'start-service.ts')], {
      env: { ...process.env, ...childEnv(), ...env } as NodeJS.ProcessEnv,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.once('exit', (code) => resolve({ code, stderr }));
  });
}

describe('service entry point', function () {
  this.timeout(60_000);

  describe('bad configuration', () => {
    // Each bad variable stops the process with a non-zero exit naming the variable and the problem.
    for (const [variable, value, problem] of [
      ['GRPC_PORT', 'not-a-port', 'must be a port number'],
      ['METRICS_PORT', '70000', 'must be between 0 and 65535'],
      ['DATABASE_URL', 'mysql://localhost/x', 'must be a postgres:// URL'],
      ['SHIELDX_API_KEYS', '[{"id":"x","sha256":"abc","scopes":["*"]}]', 'SHA-256'],
      ['GRPC_REFLECTION', 'sometimes', 'open'],
      ['SHIELDX_SERVICE', 'billing', 'must be one of'],
    ] as const) {
      it(`exits non-zero naming ${variable} when it is ${JSON.stringify(value)}`, async () => {
        const { code, stderr } = await runToExit({ SHIELDX_SERVICE: 'shadow', [variable]: value });
        expect(code).to.equal(2);
        expect(stderr).to.include(variable);
        expect(stderr).to.include(problem);
      });
    }

    // A required variable left unset is named too.
    it('exits non-zero naming a missing required variable', async () => {
      const { code, stderr } = await runToExit({ SHIELDX_SERVICE: 'shadow', SHIELDX_API_KEYS: undefined });
      expect(code).to.equal(2);
      expect(stderr).to.match(/SHIELDX_API_KEYS is required/);
    });

    // Production has no in-process Redis: without REDIS_URL the process refuses to start instead of
    // quietly keeping camouflage's learning and credits' cache per replica. Only npm start's own
    // entry point (dev/start-service.ts) brings the stand-in.
    // A taken port is one line naming the variable and the fix, exit 2, no stack trace.
    it('exits non-zero with one line naming GRPC_PORT when the port is taken', async () => {
      const holder = createNetServer();
      await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', () => resolve()));
      const port = (holder.address() as { port: number }).port;
      try {
        const { code, stderr } = await runToExit({ SHIELDX_SERVICE: 'shadow', GRPC_PORT: String(port), MIGRATE_ON_START: 'false' });
        expect(code).to.equal(2);
        const lines = stderr.split('\n').filter((l) => l !== '' && !l.startsWith('E No address added'));
        expect(lines).to.deep.equal([`invalid configuration: GRPC_PORT ${port} on 127.0.0.1 is taken (another process listens there) or cannot be bound: set GRPC_PORT to a free port`]);
      } finally {
        holder.close();
      }
    });

    // A database that cannot be reached at start: one line with the cause, exit 1, no stack trace.
    it('exits non-zero with one line when the database cannot be reached', async () => {
      const closed = createNetServer();
      await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', () => resolve()));
      const port = (closed.address() as { port: number }).port;
      await new Promise<void>((resolve) => closed.close(() => resolve()));
      const { code, stderr } = await runToExit({ SHIELDX_SERVICE: 'shadow', DATABASE_URL: `postgres://postgres@127.0.0.1:${port}/nothing` });
      expect(code).to.equal(1);
      expect(stderr.trim().split('\n')).to.have.lengthOf(1);
      expect(stderr).to.match(/^shadow failed to start: .*ECONNREFUSED/);
    });

    it('exits non-zero naming REDIS_URL when it is unset', async () => {
      const { code, stderr } = await runToExit({ SHIELDX_SERVICE: 'camouflage', REDIS_URL: undefined });
      expect(code).to.equal(2);
      expect(stderr).to.match(/REDIS_URL is required/);
    });
  });

  // SIGTERM: health flips to NOT_SERVING, calls made during the shutdown delay still succeed, exit code 0.
  it('shuts down gracefully on SIGTERM', async () => {
    const child = await spawnService('credits', { SHUTDOWN_DELAY_MS: '1500' });
    const address = `127.0.0.1:${child.grpcPort}`;
    const client = new CreditsServiceClient(address, insecure);
    try {
      expect(await checkHealth(address)).to.equal('SERVING');
      child.process.kill('SIGTERM');
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(await checkHealth(address)).to.equal('NOT_SERVING');
      const error = await new Promise<unknown>((resolve) =>
        client.getBalance({ tenantId: 'during-shutdown', consistentRead: true }, bearer(testKeys.admin), (e) => resolve(e)),
      );
      // The call reached the service and got its answer (the tenant does not exist), not UNAVAILABLE.
      expect(errorDetails(error)).to.include({ code: grpcStatus.NOT_FOUND, reason: 'TENANT_NOT_FOUND' });
      expect(await child.exited).to.equal(0);
    } finally {
      client.close();
      if (child.process.exitCode === null) child.process.kill('SIGKILL');
    }
  });

  // A call carrying a W3C traceparent produces a server span in that trace, exported over OTLP/HTTP JSON.
  it('exports a server span that continues the caller trace', async () => {
    const bodies: unknown[] = [];
    const collector: Server = createServer((req, res) => {
      let body = '';
      req.on('data', (chunk: Buffer) => (body += chunk.toString()));
      req.on('end', () => {
        if (req.url === '/v1/traces') bodies.push(JSON.parse(body));
        res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      });
    });
    await new Promise<void>((resolve) => collector.listen(0, '127.0.0.1', () => resolve()));
    const collectorPort = (collector.address() as { port: number }).port;
    const child = await spawnService('credits', {
      OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${collectorPort}`,
      OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
      OTEL_BSP_SCHEDULE_DELAY: '50',
      OTEL_SERVICE_NAME: 'credits-under-test',
    });
    const client = new CreditsServiceClient(`127.0.0.1:${child.grpcPort}`, insecure);
    const traceId = randomBytes(16).toString('hex');
    const parentSpanId = randomBytes(8).toString('hex');
    try {
      const metadata: Metadata = bearer(testKeys.admin);
      metadata.set('traceparent', `00-${traceId}-${parentSpanId}-01`);
      await new Promise<void>((resolve) => client.getBalance({ tenantId: 'traced', consistentRead: true }, metadata, () => resolve()));
      type Span = { traceId: string; parentSpanId?: string; kind: number; name: string };
      const spans = (): Span[] =>
        (bodies as { resourceSpans: { scopeSpans: { spans: Span[] }[] }[] }[]).flatMap((b) =>
          b.resourceSpans.flatMap((r) => r.scopeSpans.flatMap((s) => s.spans)),
        );
      const deadline = Date.now() + 10_000;
      while (!spans().some((s) => s.traceId === traceId) && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      const server = spans().find((s) => s.traceId === traceId && s.parentSpanId === parentSpanId);
      expect(server, 'server span in the caller trace').to.not.equal(undefined);
      expect(server!.kind).to.equal(2); // SPAN_KIND_SERVER
      expect(server!.name).to.include('shieldx.credits.v1.CreditsService/GetBalance');
      // The access log line of the call carries the same trace id.
      const logged = child.stdout().map((l) => JSON.parse(l) as { trace_id?: string; grpc_method?: string });
      expect(logged.some((l) => l.trace_id === traceId && l.grpc_method?.endsWith('/GetBalance'))).to.equal(true);
      const resource = JSON.stringify((bodies[0] as { resourceSpans: { resource: unknown }[] }).resourceSpans[0]!.resource);
      expect(resource).to.include('credits-under-test');
    } finally {
      client.close();
      child.process.kill('SIGTERM');
      await child.exited;
      await new Promise((resolve) => collector.close(resolve));
    }
  });
});
