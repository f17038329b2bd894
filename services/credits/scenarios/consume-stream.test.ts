/**
 * ConsumeStream: many Consume calls over one bidirectional call. Each request is
 * answered once by its request_id with exactly what the unary Consume would
 * answer (result, replay, or error with its ErrorInfo), and nothing is applied
 * twice or lost — including when the server shuts down mid-stream.
 */
import { status as grpcStatus } from '@grpc/grpc-js';
import { expect } from 'chai';
import type { Status } from '../../../gen/google/rpc/status';
import type {
  ConsumeResponse,
  ConsumeStreamRequest,
  ConsumeStreamResponse,
  CreditsServiceClient,
  GetBalanceResponse,
} from '../../../gen/shieldx/credits/v1/credits';
import { errorDetails } from '../../../platform/grpc-errors';
import type { RunningService } from '../../../platform/server';
import { statusDetails } from '../../../platform/status-details';
import { bearer, testKeys, waitFor } from '../../../testing/harness';
import { exchange } from '../../../testing/streams';
import { Credits, db, footprint, key, payment, startCredits, tenant } from '../../../testing/credits-kit';

/** Sends `items` on one ConsumeStream call (half-closing when `halfClose`), collects answers until the call ends. */
const consumeStream = (client: CreditsServiceClient, items: ConsumeStreamRequest[], apiKey = testKeys.creditsWriter, halfClose = true) =>
  exchange<ConsumeStreamRequest, ConsumeStreamResponse>(client.consumeStream(bearer(apiKey)), items, halfClose);

const responseOf = (answer: ConsumeStreamResponse | undefined): ConsumeResponse => {
  expect(answer?.result?.$case, answer?.requestId).to.equal('response');
  return (answer!.result as { value: ConsumeResponse }).value;
};

const errorOf = (answer: ConsumeStreamResponse | undefined) => {
  expect(answer?.result?.$case, answer?.requestId).to.equal('error');
  return statusDetails((answer!.result as { value: Status }).value);
};

describe('credits ConsumeStream', function () {
  this.timeout(60_000);
  let service: RunningService;
  let credits: Credits;

  before(async () => {
    service = await startCredits();
    credits = new Credits(service);
  });
  after(async () => {
    credits.close();
    await service.shutdown();
  });

  const topUp = (tenantId: string, amount: bigint) =>
    credits.call('topUp', { tenantId, amount, idempotencyKey: key('seed'), reference: '', payment: payment(), metadata: {} });

  // Many consumes on three tenants over one call: each answered once by id, balances and versions exactly as if
  // made one by one, every row written once; an item that does not fit fails alone with INSUFFICIENT_CREDITS.
  it('answers every request by id with what Consume would answer', async () => {
    const tenants = [tenant('s1'), tenant('s2'), tenant('s3')];
    for (const t of tenants) await topUp(t, 100n);
    const items: ConsumeStreamRequest[] = [];
    for (let i = 0; i < 240; i++) {
      items.push({ requestId: `r-${i}`, request: { tenantId: tenants[i % 3]!, amount: 1n, idempotencyKey: `k-${i}`, reference: `ref-${i}`, metadata: { i: String(i) } } });
    }
    // 80 consumes of 1 leave 20 per tenant: 21 does not fit, 20 does (whichever of the two the batcher takes first,
    // the other must fail or succeed accordingly — so they go on separate tenants).
    items.push({ requestId: 'too-much', request: { tenantId: tenants[0]!, amount: 21n, idempotencyKey: 'k-too-much', reference: '', metadata: {} } });
    items.push({ requestId: 'rest', request: { tenantId: tenants[1]!, amount: 20n, idempotencyKey: 'k-rest', reference: '', metadata: {} } });
    const { answers, ended } = consumeStream(credits.raw, items);
    expect((await ended).error).to.equal(null);
    expect(answers).to.have.length(items.length);
    const byId = new Map(answers.map((m) => [m.requestId, m]));
    expect(byId.size).to.equal(items.length);
    for (let i = 0; i < 240; i++) {
      const response = responseOf(byId.get(`r-${i}`));
      expect(response.replayed).to.equal(false);
      expect(response.transaction!.idempotencyKey).to.equal(`k-${i}`);
      expect(response.transaction!.metadata).to.deep.equal({ i: String(i) });
    }
    expect(errorOf(byId.get('too-much'))).to.deep.include({ code: grpcStatus.FAILED_PRECONDITION, reason: 'INSUFFICIENT_CREDITS' });
    expect(errorOf(byId.get('too-much')).metadata).to.include({ available: '20', requested: '21' });
    expect(responseOf(byId.get('rest')).account!.available).to.equal(0n);
    // Per tenant, the versions handed out are exactly 2..(n+1), each once: no consume applied twice or skipped.
    for (const [i, t] of tenants.entries()) {
      const versions = answers
        .filter((m) => m.result?.$case === 'response' && (m.result.value as ConsumeResponse).account!.tenantId === t)
        .map((m) => Number((m.result as { value: ConsumeResponse }).value.account!.version))
        .sort((x, y) => x - y);
      const expected = i === 1 ? 81 : 80;
      expect(versions).to.deep.equal(Array.from({ length: expected }, (_, k) => k + 2));
    }
    const { rows } = await db().query<{ tenant_id: string; balance: string; txs: number; keys: number }>(
      `SELECT a.tenant_id, a.balance::text,
              (SELECT count(*) FROM credit_transactions x WHERE x.tenant_id = a.tenant_id AND x.type = 'CONSUME')::int AS txs,
              (SELECT count(*) FROM credit_idempotency_keys k WHERE k.tenant_id = a.tenant_id)::int AS keys
         FROM credit_accounts a WHERE a.tenant_id = ANY($1) ORDER BY a.tenant_id`,
      [tenants],
    );
    const byTenant = new Map(rows.map((r) => [r.tenant_id, r]));
    expect(byTenant.get(tenants[0]!)).to.deep.include({ balance: '20', txs: 80, keys: 82 }); // + seed + stored failure
    expect(byTenant.get(tenants[1]!)).to.deep.include({ balance: '0', txs: 81, keys: 82 });
    expect(byTenant.get(tenants[2]!)).to.deep.include({ balance: '20', txs: 80, keys: 81 });
  });

  // Keys behave as on the unary RPC: a repeated request replays (on the stream or by unary Consume), a changed one
  // is refused with IDEMPOTENCY_KEY_REUSED; bad items get their own INVALID_ARGUMENT naming the field, write
  // nothing, and the stream goes on.
  it('replays repeated keys, refuses reused ones and answers bad items without stopping', async () => {
    const t = tenant('replay');
    await topUp(t, 50n);
    const first = consumeStream(credits.raw, [{ requestId: 'a', request: { tenantId: t, amount: 5n, idempotencyKey: 'same', reference: '', metadata: {} } }]);
    expect((await first.ended).error).to.equal(null);
    const original = responseOf(first.answers[0]);
    const before = await footprint(t);
    const nobody = tenant('nobody');
    const { answers, ended } = consumeStream(credits.raw, [
      { requestId: 'again', request: { tenantId: t, amount: 5n, idempotencyKey: 'same', reference: '', metadata: {} } },
      { requestId: 'changed', request: { tenantId: t, amount: 6n, idempotencyKey: 'same', reference: '', metadata: {} } },
      { requestId: 'zero', request: { tenantId: t, amount: 0n, idempotencyKey: key(), reference: '', metadata: {} } },
      { requestId: 'no-key', request: { tenantId: t, amount: 1n, idempotencyKey: '', reference: '', metadata: {} } },
      { requestId: 'no-tenant', request: { tenantId: '', amount: 1n, idempotencyKey: key(), reference: '', metadata: {} } },
      { requestId: 'unknown-tenant', request: { tenantId: nobody, amount: 1n, idempotencyKey: key(), reference: '', metadata: {} } },
      { requestId: 'no-request', request: undefined },
      { requestId: '', request: { tenantId: t, amount: 1n, idempotencyKey: key(), reference: '', metadata: {} } },
      { requestId: 'x'.repeat(129), request: { tenantId: t, amount: 1n, idempotencyKey: key(), reference: '', metadata: {} } },
    ]);
    expect((await ended).error).to.equal(null);
    expect(answers).to.have.length(9);
    const byId = new Map(answers.map((m) => [m.requestId, m]));
    const replay = responseOf(byId.get('again'));
    expect(replay.replayed).to.equal(true);
    expect(replay.transaction).to.deep.equal(original.transaction);
    expect(errorOf(byId.get('changed'))).to.deep.include({ code: grpcStatus.FAILED_PRECONDITION, reason: 'IDEMPOTENCY_KEY_REUSED' });
    expect(errorOf(byId.get('zero')).fieldViolations[0]!.field).to.equal('amount');
    expect(errorOf(byId.get('no-key')).fieldViolations[0]!.field).to.equal('idempotency_key');
    expect(errorOf(byId.get('no-tenant')).fieldViolations[0]!.field).to.equal('tenant_id');
    expect(errorOf(byId.get('unknown-tenant'))).to.deep.include({ code: grpcStatus.NOT_FOUND, reason: 'TENANT_NOT_FOUND' });
    expect(errorOf(byId.get('no-request')).fieldViolations[0]!.field).to.equal('request');
    expect(errorOf(byId.get('')).fieldViolations[0]!.field).to.equal('request_id');
    expect(errorOf(byId.get('x'.repeat(129))).fieldViolations[0]!.field).to.equal('request_id');
    expect(await footprint(t)).to.equal(before);
    // The unary RPC sees the same record.
    const unary = await credits.call<object, ConsumeResponse>('consume', { tenantId: t, amount: 5n, idempotencyKey: 'same', reference: '', metadata: {} });
    expect(unary.replayed).to.equal(true);
    expect(unary.transaction!.id).to.equal(original.transaction!.id);
  });

  // Same scope as Consume: no key → UNAUTHENTICATED, a read-only key → PERMISSION_DENIED, before any item is applied.
  it('refuses a missing key and a key without credits:write', async () => {
    const t = tenant('auth');
    await topUp(t, 10n);
    const before = await footprint(t);
    const anonymous = credits.raw.consumeStream();
    const refused = await new Promise<unknown>((resolve) => {
      anonymous.on('error', resolve);
      anonymous.on('data', () => undefined);
      anonymous.write({ requestId: 'r', request: { tenantId: t, amount: 1n, idempotencyKey: key(), reference: '', metadata: {} } });
      anonymous.end();
    });
    expect(errorDetails(refused)?.code).to.equal(grpcStatus.UNAUTHENTICATED);
    const { answers, ended } = consumeStream(
      credits.raw,
      [{ requestId: 'r', request: { tenantId: t, amount: 1n, idempotencyKey: key(), reference: '', metadata: {} } }],
      testKeys.creditsReader,
    );
    expect(errorDetails((await ended).error)?.code).to.equal(grpcStatus.PERMISSION_DENIED);
    expect(answers).to.deep.equal([]);
    expect(await footprint(t)).to.equal(before);
  });

  // Shutdown mid-stream: every request the server read is answered exactly once before the call ends UNAVAILABLE
  // (SERVER_SHUTTING_DOWN); what the ledger holds is exactly the answered successes — resending the unanswered
  // ones elsewhere is safe and nothing is lost or doubled.
  it('answers what it read, then ends UNAVAILABLE, when the server shuts down', async () => {
    const own = await startCredits();
    const client = new Credits(own);
    const t = tenant('shutdown');
    try {
      await client.call('topUp', { tenantId: t, amount: 10_000n, idempotencyKey: key('seed'), reference: '', payment: payment(), metadata: {} });
      const items = Array.from({ length: 400 }, (_, i) => ({
        requestId: `s-${i}`,
        request: { tenantId: t, amount: 1n, idempotencyKey: `s-${i}`, reference: '', metadata: {} },
      }));
      const { answers, ended } = consumeStream(client.raw, items, testKeys.creditsWriter, false);
      // Shut down once the call is established and answering — most items are then still queued or in a batch.
      await waitFor('a first answer', async () => (answers.length > 0 ? true : undefined), 10_000, 5);
      const shutdown = own.shutdown();
      const details = errorDetails((await ended).error);
      await shutdown;
      expect(details, JSON.stringify(details)).to.include({ code: grpcStatus.UNAVAILABLE, reason: 'SERVER_SHUTTING_DOWN' });
      const ids = answers.map((m) => m.requestId);
      expect(new Set(ids).size, 'no request answered twice').to.equal(ids.length);
      const succeeded = answers.filter((m) => m.result?.$case === 'response');
      for (const m of answers) if (m.result?.$case === 'error') expect(errorOf(m).reason).to.equal('SERVER_SHUTTING_DOWN');
      const { rows } = await db().query<{ balance: string; txs: number }>(
        `SELECT balance::text, (SELECT count(*) FROM credit_transactions WHERE tenant_id = $1 AND type = 'CONSUME')::int AS txs
           FROM credit_accounts WHERE tenant_id = $1`,
        [t],
      );
      expect(rows[0]).to.deep.equal({ balance: String(10_000 - succeeded.length), txs: succeeded.length });
      // Resending everything through another instance applies only what was not answered as applied.
      const resent = consumeStream(credits.raw, items);
      expect((await resent.ended).error).to.equal(null);
      const replays = resent.answers.filter((m) => responseOf(m).replayed).length;
      expect(replays).to.equal(succeeded.length);
      const balance = await credits.call<object, GetBalanceResponse>('getBalance', { tenantId: t, consistentRead: true });
      expect(balance.account!.balance).to.equal(10_000n - 400n);
    } finally {
      client.close();
      await own.shutdown().catch(() => undefined);
    }
  });
});
