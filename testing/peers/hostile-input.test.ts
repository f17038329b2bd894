/**
 * Issue 21, items 3-6: hostile input must be refused with the right status, counted and logged
 * once, written nowhere, and logged below error level when it is the caller's mistake. Raw
 * HTTP/2 (node:http2, not grpc-js) sends what a grpc-js client never would; unary calls with
 * hand-made protobuf bodies reach fields a typed client cannot fill (timestamps out of range).
 */
import http2 from 'node:http2';
import { Client, type ServiceError as GrpcError } from '@grpc/grpc-js';
import { BinaryWriter } from '@bufbuild/protobuf/wire';
import { expect } from 'chai';
import { ListTransactionsRequest, ReleaseReservationRequest } from '../../gen/shieldx/credits/v1/credits';
import { IngestSamplesRequest, ListEvaluationsRequest, StartEvaluationRequest, StartEvaluationResponse } from '../../gen/shieldx/shadow/v1/shadow';
import { filterFingerprint } from '../../platform/page-token';
import type { RunningService } from '../../platform/server';
import { SERVICES } from '../../scripts/services';
import { address, bearer, insecure, startTestService, testKeys } from '../harness';

const load = (name: string) => SERVICES.find((entry) => entry.name === name)!.load();

/** A unary call with a body we made ourselves; resolves with the status code and details. */
function rawUnary(service: RunningService, path: string, body: Uint8Array): Promise<{ code: number; details: string }> {
  const client = new Client(address(service), insecure);
  return new Promise((resolve) => {
    client.makeUnaryRequest(
      path,
      (b: Buffer) => b,
      (b: Buffer) => b,
      Buffer.from(body),
      bearer(testKeys.admin),
      { deadline: Date.now() + 10_000 },
      (err: GrpcError | null) => {
        client.close();
        resolve({ code: err?.code ?? 0, details: err?.details ?? '' });
      },
    );
  });
}

/** `message` with a google.protobuf.Timestamp field `field` = {seconds, nanos} appended. */
function withTimestamp(message: Uint8Array, field: number, seconds: bigint, nanos = 0): Uint8Array {
  const ts = new BinaryWriter();
  ts.uint32(8).int64(seconds);
  if (nanos !== 0) ts.uint32(16).int32(nanos);
  const w = new BinaryWriter();
  w.raw(message);
  w.uint32((field << 3) | 2).bytes(ts.finish());
  return w.finish();
}

/** One call over raw HTTP/2; resolves with grpc-status (or the RST code as `rst`). */
function rawHttp2(
  session: http2.ClientHttp2Session,
  path: string,
  headers: Record<string, string>,
  body: Buffer,
): Promise<{ status?: string; message?: string; rst?: number }> {
  return new Promise((resolve) => {
    const req = session.request({
      ':method': 'POST',
      ':path': path,
      'content-type': 'application/grpc',
      te: 'trailers',
      authorization: `Bearer ${testKeys.admin.key}`,
      ...headers,
    });
    let status: string | undefined;
    let message: string | undefined;
    const take = (h: http2.IncomingHttpHeaders) => {
      if (h['grpc-status'] !== undefined) status = String(h['grpc-status']);
      if (h['grpc-message'] !== undefined) message = decodeURIComponent(String(h['grpc-message']));
    };
    req.on('response', take);
    req.on('trailers', take);
    req.on('data', () => undefined);
    req.on('error', () => undefined);
    req.on('close', () => resolve(status === undefined ? { rst: req.rstCode } : { status, message }));
    req.end(body);
  });
}

const frame = (payload: Buffer, compressed = false) => Buffer.concat([Buffer.from([compressed ? 1 : 0, 0, 0, 0, payload.length]), payload]);

async function counter(service: RunningService, name: string, method: string): Promise<number> {
  const metric = await service.registry.getSingleMetric(name)?.get();
  return (metric?.values ?? []).filter((v) => v.labels.grpc_method === method).reduce((sum, v) => sum + v.value, 0);
}

/** Records what the service logs at each level (the logger is the service's own pino instance). */
function spyLogs(service: RunningService): { lines: { level: string; args: unknown[] }[] } {
  const spy = { lines: [] as { level: string; args: unknown[] }[] };
  const logger = service.logger as unknown as Record<string, (...args: unknown[]) => void>;
  for (const level of ['error', 'warn', 'info', 'debug']) {
    const original = logger[level]!.bind(logger);
    logger[level] = (...args: unknown[]) => {
      spy.lines.push({ level, args });
      original(...args);
    };
  }
  return spy;
}

describe('hostile input (issue 21)', function () {
  this.timeout(60_000);
  let credits: RunningService;
  let shadow: RunningService;

  before(async () => {
    credits = await startTestService(load('credits'), { SHUTDOWN_GRACE_MS: '20000' });
    shadow = await startTestService(load('shadow'));
  });
  after(async () => {
    await Promise.all([credits?.shutdown(), shadow?.shutdown()]);
  });

  // (3) Calls grpc-js refuses itself are answered, counted in grpc_server_handled_total and logged once.
  it('counts and logs calls grpc-js refuses before the handler, with the spec codes', async () => {
    const path = '/shieldx.credits.v1.CreditsService/GetBalance';
    const logs = spyLogs(credits);
    const handledBefore = await counter(credits, 'grpc_server_handled_total', 'GetBalance');
    const session = http2.connect(`http://${address(credits)}`);
    session.on('error', () => undefined);
    try {
      const undecodable = await rawHttp2(session, path, {}, frame(Buffer.from([0xff, 0xff, 0xff])));
      expect(undecodable.status, 'undecodable body').to.equal('13');
      const badGzip = await rawHttp2(session, path, { 'grpc-encoding': 'gzip' }, frame(Buffer.from('not gzip at all'), true));
      expect(badGzip.status, 'corrupt gzip').to.equal('13');
      const unknownEncoding = await rawHttp2(session, path, { 'grpc-encoding': 'zstd-x' }, frame(Buffer.from('x'), true));
      expect(unknownEncoding.status, 'unsupported encoding').to.equal('12');
      const badTimeout = await rawHttp2(session, path, { 'grpc-timeout': '10' }, frame(Buffer.alloc(0)));
      expect(badTimeout.status, 'grpc-timeout without a unit').to.equal('3');
    } finally {
      session.close();
    }
    const handled = (await counter(credits, 'grpc_server_handled_total', 'GetBalance')) - handledBefore;
    expect(handled, 'grpc_server_handled_total for the four refused calls').to.equal(4);
    const accessLines = logs.lines.filter((l) => l.args.some((a) => typeof a === 'object' && a !== null && (a as { grpc_method?: string }).grpc_method === path));
    expect(accessLines.map((l) => l.level), 'one access-log line each, none at error').to.deep.equal(['info', 'info', 'info', 'info']);
  });

  // (4) Out-of-range timestamps are INVALID_ARGUMENT naming the field, never INTERNAL.
  it('refuses timestamps outside the protobuf range as INVALID_ARGUMENT', async () => {
    const base = ListTransactionsRequest.encode({ tenantId: 'acme', pageSize: 0, pageToken: '', types: [] }).finish();
    for (const seconds of [-(2n ** 63n), 2n ** 63n - 1n, 8_640_000_000_001n, 253_402_300_800n]) {
      const answer = await rawUnary(credits, '/shieldx.credits.v1.CreditsService/ListTransactions', withTimestamp(base, 5, seconds));
      expect(answer, `end_time.seconds = ${seconds}`).to.deep.include({ code: 3 });
      expect(answer.details).to.match(/^end_time/);
    }
  });

  // (4) A NUL character in a shadow text field is INVALID_ARGUMENT naming the field.
  it('refuses NUL characters in shadow text fields', async () => {
    const client = new Client(address(shadow), insecure);
    const ingest = await new Promise<{ code: number; details: string }>((resolve) => {
      const call = client.makeClientStreamRequest(
        '/shieldx.shadow.v1.ShadowService/IngestSamples',
        (b: Buffer) => b,
        (b: Buffer) => b,
        bearer(testKeys.admin),
        { deadline: Date.now() + 10_000 },
        (err: GrpcError | null) => resolve({ code: err?.code ?? 0, details: err?.details ?? '' }),
      );
      // dataset = 1, samples = 2 { timestamp = 1, client_key = 2 (with a NUL), method = 4, path = 5 }
      const sample = new BinaryWriter().uint32(18).string('k\u0000').uint32(34).string('GET').uint32(42).string('/').finish();
      call.write(Buffer.from(new BinaryWriter().uint32(10).string('nul-test').uint32(18).bytes(sample).finish()));
      call.end();
    });
    client.close();
    // The row is refused as a row (IngestSamples' own rule) or the call INVALID_ARGUMENT: never INTERNAL.
    expect(ingest.code, ingest.details).to.be.oneOf([0, 3]);
  });

  // (4) A forged page token (valid shape, right fingerprint, a cursor PostgreSQL refuses) is INVALID_ARGUMENT.
  it('refuses a forged shadow page token as INVALID_ARGUMENT', async () => {
    const forged = Buffer.from(
      JSON.stringify({ v: 1, c: ['0000-01-01T00:00:00.000000Z', '00000000-0000-4000-8000-000000000000'], f: filterFingerprint({ state: null }) }),
    ).toString('base64url');
    const body = ListEvaluationsRequest.encode(ListEvaluationsRequest.fromPartial({ pageToken: forged })).finish();
    const answer = await rawUnary(shadow, '/shieldx.shadow.v1.ShadowService/ListEvaluations', body);
    expect(answer.code, answer.details).to.equal(3);
  });

  // (5) ReleaseReservation for a tenant that does not exist writes nothing.
  it('stores no idempotency record for a refused ReleaseReservation', async () => {
    const tenantId = `nobody-${Date.now()}`;
    const body = ReleaseReservationRequest.encode({ tenantId, reservationId: '00000000-0000-4000-8000-000000000000', idempotencyKey: 'release-1' }).finish();
    const answer = await rawUnary(credits, '/shieldx.credits.v1.CreditsService/ReleaseReservation', body);
    expect(answer.code).to.equal(5);
    const { rows } = await credits.pool.query('SELECT count(*)::int AS n FROM credit_idempotency_keys WHERE tenant_id = $1', [tenantId]);
    expect(rows[0].n, 'idempotency rows under the made-up tenant').to.equal(0);
  });

  // (6) An evaluation whose selection holds no samples is the caller's mistake: logged below error.
  it('logs an evaluation over an empty selection below error level', async () => {
    const logs = spyLogs(shadow);
    const client = new Client(address(shadow), insecure);
    const call = <T>(method: string, body: Uint8Array) =>
      new Promise<T>((resolve, reject) =>
        client.makeUnaryRequest(`/shieldx.shadow.v1.ShadowService/${method}`, (b: Buffer) => b, (b: Buffer) => b, Buffer.from(body), bearer(testKeys.admin), (err: GrpcError | null, res?: Buffer) =>
          err ? reject(err) : resolve(res as T),
        ),
      );
    await new Promise<void>((resolve, reject) => {
      const stream = client.makeClientStreamRequest('/shieldx.shadow.v1.ShadowService/IngestSamples', (b: Buffer) => b, (b: Buffer) => b, bearer(testKeys.admin), (err: GrpcError | null) =>
        err ? reject(err) : resolve(),
      );
      stream.write(Buffer.from(IngestSamplesRequest.encode(IngestSamplesRequest.fromPartial({
        dataset: 'empty-window',
        idempotencyKey: `ingest-${Date.now()}`,
        samples: [{ timestamp: new Date('2024-06-01T10:00:00Z'), clientKey: 'k', clientIp: '203.0.113.7', method: 'GET', path: '/', status: 200 }],
      })).finish()));
      stream.end();
    });
    const started = StartEvaluationResponse.decode(
      await call<Buffer>('StartEvaluation', StartEvaluationRequest.encode(StartEvaluationRequest.fromPartial({
        name: 'empty window',
        rule: { kind: { $case: 'pathPattern', value: { patterns: ['^/admin'], caseInsensitive: false } } },
        selection: { dataset: 'empty-window', startTime: new Date('2030-01-01T00:00:00Z'), endTime: new Date('2030-01-02T00:00:00Z') },
      })).finish()),
    );
    const id = started.evaluation!.id;
    const deadline = Date.now() + 20_000;
    for (;;) {
      const { rows } = await shadow.pool.query<{ state: string }>('SELECT state FROM shadow_evaluations WHERE id = $1', [id]);
      if (rows[0]?.state === 'FAILED' || rows[0]?.state === 'SUCCEEDED') break;
      if (Date.now() > deadline) throw new Error(`evaluation ${id} did not finish`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    client.close();
    const mentions = logs.lines.filter((l) => JSON.stringify(l.args, (_k, v: unknown) => (v instanceof Error ? v.message : v)).includes('no samples'));
    expect(mentions.length, 'a log line about the empty selection').to.be.greaterThan(0);
    expect(mentions.map((l) => l.level)).to.not.include('error');
  });
});

