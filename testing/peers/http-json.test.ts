/**
 * JSON over HTTP (the Connect protocol, platform/http-gateway.ts), called with real curl: the same
 * API as gRPC, with the same keys and scopes, the same validation, the same error reasons
 * (google.rpc.ErrorInfo and BadRequest in Connect's error details, their JSON in `debug`), and
 * WatchRollout as a Connect server stream.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { expect } from 'chai';
import { freePort } from '../../dev/local-servers';
import { metricValue, scrapeMetrics } from '../../platform/prometheus-text';
import type { RunningService } from '../../platform/server';
import { serviceEntry } from '../../scripts/services';
import { startTestService, testKeys } from '../harness';
import { findOnPath, skipOrFailInCi } from '../require-tool';
import { insertEvaluation } from '../rollout-kit';

const run = promisify(execFile);

interface CurlAnswer {
  readonly status: number;
  readonly body: string;
}

/** curl, as a user would type it: `curl -H 'content-type: application/json' -d '{...}' URL`. */
async function curl(url: string, body: string | Buffer, headers: Record<string, string> = {}, contentType = 'application/json'): Promise<CurlAnswer> {
  // A binary body (a Connect stream envelope) goes through a file, as `--data-binary @file`.
  let data = typeof body === 'string' ? body : '';
  if (typeof body !== 'string') {
    data = `@${join(mkdtempSync(join(tmpdir(), 'shieldx-curl-')), 'body')}`;
    writeFileSync(data.slice(1), body);
  }
  const args = ['-sS', '-o', '-', '-w', '\n%{http_code}', '-H', `content-type: ${contentType}`, '--data-binary', data];
  for (const [name, value] of Object.entries(headers)) args.push('-H', `${name}: ${value}`);
  const { stdout } = await run('curl', [...args, url], { timeout: 30_000, encoding: 'latin1' });
  const cut = stdout.lastIndexOf('\n');
  return { status: Number(stdout.slice(cut + 1)), body: stdout.slice(0, cut) };
}

const bearer = (key: { key: string } = testKeys.admin) => ({ authorization: `Bearer ${key.key}` });

interface ConnectErrorBody {
  code: string;
  message: string;
  details?: { type: string; value: string; debug?: Record<string, unknown> }[];
}

function errorInfo(body: ConnectErrorBody): { reason?: string; domain?: string; metadata?: Record<string, string> } | undefined {
  return body.details?.find((d) => d.type === 'google.rpc.ErrorInfo')?.debug as never;
}

describe('JSON over HTTP, through curl', function () {
  this.timeout(120_000);
  let credits: RunningService;
  let shadow: RunningService;
  let routerDir: string;
  const base = (s: RunningService) => `http://127.0.0.1:${s.httpPort}`;

  before(async function () {
    if (!findOnPath('curl')) skipOrFailInCi(this, 'curl is not on PATH (install the Debian package `curl`)');
    routerDir = mkdtempSync(join(tmpdir(), 'shieldx-http-json-'));
    credits = await startTestService(serviceEntry('credits').load(), { HTTP_PORT: String(await freePort()) });
    shadow = await startTestService(serviceEntry('shadow').load(), {
      HTTP_PORT: String(await freePort()),
      ROLLOUT_CONTROLLER: 'off',
      ROLLOUT_FILE_ROUTER_DIR: routerDir,
      ROLLOUT_WATCH_POLL_MS: '50',
      SHADOW_DEMO_DATA: 'false',
    });
  });
  after(async () => {
    await Promise.all([credits?.shutdown(), shadow?.shutdown()]);
    rmSync(routerDir, { recursive: true, force: true });
  });

  // A top-up and a balance read answer the proto3 JSON a gRPC client would decode, and the calls
  // are counted in the same grpc_server_handled_total as gRPC calls.
  it('answers unary calls with their JSON, counted as gRPC calls', async () => {
    const topUp = await curl(
      `${base(credits)}/shieldx.credits.v1.CreditsService/TopUp`,
      JSON.stringify({
        tenant_id: 'curl-acme',
        amount: '1000',
        idempotency_key: 'curl-topup-1',
        payment: { card_number: '4242424242424242', expiry_month: 12, expiry_year: 2030, cardholder_name: 'Ada' },
      }),
      bearer(),
    );
    expect(topUp.status, topUp.body).to.equal(200);
    expect(JSON.parse(topUp.body).account).to.deep.include({ tenantId: 'curl-acme', balance: '1000' });
    const balance = await curl(`${base(credits)}/shieldx.credits.v1.CreditsService/GetBalance`, '{"tenant_id":"curl-acme"}', bearer());
    expect(balance.status, balance.body).to.equal(200);
    expect(JSON.parse(balance.body).account).to.deep.include({ balance: '1000', available: '1000' });
    const metrics = await scrapeMetrics(credits);
    const handled = metricValue(metrics, 'grpc_server_handled_total', {
      grpc_service: 'shieldx.credits.v1.CreditsService',
      grpc_method: 'GetBalance',
      grpc_code: 'OK',
    });
    expect(handled).to.be.at.least(1);
  });

  // No key: 401 unauthenticated; a key without the scope: 403 permission_denied; nothing written.
  it('refuses a missing or wrong key like gRPC does', async () => {
    const url = `${base(credits)}/shieldx.credits.v1.CreditsService/GetBalance`;
    const none = await curl(url, '{"tenant_id":"curl-acme"}');
    expect(none.status).to.equal(401);
    expect((JSON.parse(none.body) as ConnectErrorBody).code).to.equal('unauthenticated');
    const wrong = await curl(url, '{"tenant_id":"curl-acme"}', { authorization: 'Bearer shx_not_a_key' });
    expect(wrong.status).to.equal(401);
    expect(errorInfo(JSON.parse(wrong.body))?.reason).to.equal('INVALID_CREDENTIALS');
    const readOnly = await curl(
      `${base(credits)}/shieldx.credits.v1.CreditsService/Consume`,
      JSON.stringify({ tenant_id: 'curl-acme', amount: '1', idempotency_key: 'curl-denied-1' }),
      bearer(testKeys.creditsReader),
    );
    expect(readOnly.status, readOnly.body).to.equal(403);
    expect(errorInfo(JSON.parse(readOnly.body))?.reason).to.equal('MISSING_SCOPE');
  });

  // A bad field: 400 invalid_argument, with the reason and the proto field in the details.
  it('answers a validation error with its field and reason', async () => {
    const answer = await curl(
      `${base(credits)}/shieldx.credits.v1.CreditsService/Consume`,
      JSON.stringify({ tenant_id: 'curl-acme', amount: '0', idempotency_key: 'curl-bad-1' }),
      bearer(),
    );
    expect(answer.status).to.equal(400);
    const body = JSON.parse(answer.body) as ConnectErrorBody;
    expect(body.code).to.equal('invalid_argument');
    expect(errorInfo(body)).to.deep.include({ reason: 'INVALID_ARGUMENT', domain: 'credits.shieldx.io' });
    expect(errorInfo(body)?.metadata).to.deep.include({ field: 'amount' });
    const badRequest = body.details?.find((d) => d.type === 'google.rpc.BadRequest')?.debug as { fieldViolations: { field: string }[] };
    expect(badRequest.fieldViolations.map((v) => v.field)).to.deep.equal(['amount']);
  });

  // A business error keeps its reason (INSUFFICIENT_CREDITS) and metadata, and moves no money.
  it('answers a business error with its reason', async () => {
    const answer = await curl(
      `${base(credits)}/shieldx.credits.v1.CreditsService/Consume`,
      JSON.stringify({ tenant_id: 'curl-acme', amount: '5000', idempotency_key: 'curl-overdraw-1' }),
      bearer(),
    );
    const body = JSON.parse(answer.body) as ConnectErrorBody;
    expect(body.code, answer.body).to.equal('failed_precondition');
    expect(answer.status).to.equal(400);
    expect(errorInfo(body)?.reason).to.equal('INSUFFICIENT_CREDITS');
    const balance = await curl(`${base(credits)}/shieldx.credits.v1.CreditsService/GetBalance`, '{"tenant_id":"curl-acme"}', bearer());
    expect(JSON.parse(balance.body).account.balance).to.equal('1000');
  });

  // Client-streaming and bidirectional methods stay gRPC-only: an HTTP call to one is refused.
  it('leaves streaming-request methods to gRPC', async () => {
    const answer = await curl(`${base(credits)}/shieldx.credits.v1.CreditsService/ConsumeStream`, '{}', bearer());
    expect(answer.status).to.be.oneOf([404, 415]);
  });

  // WatchRollout as a Connect server stream (enveloped JSON): the rollout's state, then its end
  // once it is aborted (also over curl).
  it('streams WatchRollout as a Connect stream', async () => {
    const evaluationId = await insertEvaluation(shadow.pool, 'approved');
    const created = await curl(
      `${base(shadow)}/shieldx.shadow.v1.ShadowService/CreateRollout`,
      JSON.stringify({
        evaluation_id: evaluationId,
        target: { namespace: 'shieldx', virtual_service: 'curl-watch', host: 'credits.shieldx.svc.cluster.local', stable_subset: 'stable', canary_subset: 'canary' },
        auto_rollback: true,
        idempotency_key: 'curl-rollout-1',
      }),
      bearer(),
    );
    expect(created.status, created.body).to.equal(200);
    const rolloutId = (JSON.parse(created.body) as { rollout: { id: string } }).rollout.id;
    const request = Buffer.from(JSON.stringify({ id: rolloutId }));
    const envelope = Buffer.concat([Buffer.from([0, 0, 0, 0, 0]), request]);
    envelope.writeUInt32BE(request.length, 1);
    const watching = curl(`${base(shadow)}/shieldx.shadow.v1.ShadowService/WatchRollout`, envelope, { ...bearer(), 'connect-timeout-ms': '20000' }, 'application/connect+json');
    await new Promise((resolve) => setTimeout(resolve, 500));
    const aborted = await curl(`${base(shadow)}/shieldx.shadow.v1.ShadowService/AbortRollout`, JSON.stringify({ id: rolloutId, reason: 'curl test', idempotency_key: 'curl-abort-1' }), bearer());
    expect(aborted.status, aborted.body).to.equal(200);
    const answer = await watching;
    expect(answer.status).to.equal(200);
    // Envelopes: flags byte, 4-byte length, JSON; the last one (flags 0x02) is the end of stream.
    const bytes = Buffer.from(answer.body, 'latin1');
    const messages: { flags: number; json: Record<string, unknown> }[] = [];
    for (let at = 0; at + 5 <= bytes.length; ) {
      const length = bytes.readUInt32BE(at + 1);
      messages.push({ flags: bytes[at]!, json: JSON.parse(bytes.subarray(at + 5, at + 5 + length).toString('utf8')) });
      at += 5 + length;
    }
    const states = messages.filter((m) => m.flags === 0).map((m) => (m.json as { rollout: { state: string } }).rollout.state);
    expect(states.length, JSON.stringify(messages)).to.be.at.least(1);
    expect(states.at(-1)).to.equal('ROLLOUT_STATE_ABORTED');
    const end = messages.at(-1)!;
    expect(end.flags).to.equal(2);
    expect(end.json).to.not.have.property('error');
  });
});
