/**
 * Credits behind a real PgBouncer (Debian's, 1.18: no prepared statement support) in transaction
 * pooling mode, with PgBouncer's defaults (testing/pgbouncer.ts), two service instances on it:
 * every RPC answers, and a consume race on one tenant from both instances loses or doubles nothing
 * and never answers INTERNAL (a prepared statement on the wrong server connection used to).
 */
import { expect } from 'chai';
import type {
  BatchConsumeResponse,
  CommitReservationResponse,
  ConsumeResponse,
  ConsumeStreamRequest,
  ConsumeStreamResponse,
  GetBalanceResponse,
  GetOperationResponse,
  ListTransactionsResponse,
  ReleaseReservationResponse,
  ReserveResponse,
  TopUpResponse,
  VerifyAuditChainResponse,
} from '../../../gen/shieldx/credits/v1/credits';
import { errorDetails } from '../../../platform/grpc-errors';
import { runMigrations } from '../../../platform/migrate';
import type { RunningService } from '../../../platform/server';
import { bearer, testInfrastructure, testKeys } from '../../../testing/harness';
import { exchange } from '../../../testing/streams';
import { Credits, db, key, payment, startCredits, tenant } from '../../../testing/credits-kit';
import { requirePgBouncer, startPgBouncer, type PgBouncer } from '../../../testing/pgbouncer';

describe('credits through PgBouncer (transaction pooling, two instances)', function () {
  this.timeout(120_000);
  let bouncer: PgBouncer | undefined;
  const services: RunningService[] = [];
  const clients: Credits[] = [];

  before(async function () {
    const binary = requirePgBouncer(this);
    const { databaseUrl } = testInfrastructure();
    // What a deployment behind PgBouncer does: migrations over a direct connection, first.
    await runMigrations(databaseUrl, 'credits');
    // Fewer server connections than the two instances' clients, as in production (100 for 3-10 pods of
    // 20): PgBouncer then moves each client's transactions between server connections.
    bouncer = await startPgBouncer(binary, databaseUrl, { settings: { default_pool_size: '4' } });
    // One instance detects the pooler (DB_POOL_MODE=auto, the default), the other is told.
    for (let i = 0; i < 2; i++) {
      const service = await startCredits({ DATABASE_URL: bouncer.url(databaseUrl), MIGRATE_ON_START: 'false', DB_POOL_MODE: i === 0 ? 'auto' : 'transaction' });
      services.push(service);
      clients.push(new Credits(service));
    }
  });
  after(async () => {
    for (const client of clients) client.close();
    for (const service of services) await service.shutdown();
    await bouncer?.stop();
  });

  const [a, b] = [() => clients[0]!, () => clients[1]!];
  const topUp = (via: Credits, tenantId: string, amount: bigint) =>
    via.call<object, TopUpResponse>('topUp', { tenantId, amount, idempotencyKey: key('top'), reference: 'r', payment: payment(), metadata: {} });

  it('answers every RPC, alternating between the two instances', async () => {
    const t = tenant('pgb');
    expect((await topUp(a(), t, 100n)).account!.balance).to.equal(100n);
    const k = key('c');
    const consumed = await b().call<object, ConsumeResponse>('consume', { tenantId: t, amount: 10n, idempotencyKey: k, reference: 'x', metadata: {} });
    expect(consumed.account!.balance).to.equal(90n);
    // Its own write, read back: never older (on the instance that wrote it, or consistently on the other).
    expect((await b().call<object, GetBalanceResponse>('getBalance', { tenantId: t, consistentRead: false })).account!.balance).to.equal(90n);
    expect((await a().call<object, GetBalanceResponse>('getBalance', { tenantId: t, consistentRead: true })).account!.balance).to.equal(90n);
    const replay = await a().call<object, ConsumeResponse>('consume', { tenantId: t, amount: 10n, idempotencyKey: k, reference: 'x', metadata: {} });
    expect(replay.replayed).to.equal(true);
    expect(replay.account!.balance).to.equal(90n);

    const items: ConsumeStreamRequest[] = Array.from({ length: 20 }, (_, i) => ({
      requestId: `s-${i}`,
      request: { tenantId: t, amount: 1n, idempotencyKey: key(`s${i}`), reference: '', metadata: {} },
    }));
    const stream = exchange<ConsumeStreamRequest, ConsumeStreamResponse>(a().raw.consumeStream(bearer(testKeys.creditsWriter)), items);
    expect((await stream.ended).error).to.equal(null);
    expect(stream.answers.map((m) => m.result?.$case)).to.deep.equal(items.map(() => 'response'));

    const reserved = await b().call<object, ReserveResponse>('reserve', {
      tenantId: t, amount: 20n, idempotencyKey: key('r'), reference: 'job', metadata: {}, ttl: { seconds: 60n, nanos: 0 },
    });
    const committed = await a().call<object, CommitReservationResponse>('commitReservation', {
      tenantId: t, reservationId: reserved.reservation!.id, amount: 5n, idempotencyKey: key('cr'),
    });
    expect(committed.account!.balance).to.equal(65n);
    const second = await a().call<object, ReserveResponse>('reserve', {
      tenantId: t, amount: 7n, idempotencyKey: key('r2'), reference: 'job', metadata: {}, ttl: { seconds: 60n, nanos: 0 },
    });
    const released = await b().call<object, ReleaseReservationResponse>('releaseReservation', {
      tenantId: t, reservationId: second.reservation!.id, idempotencyKey: key('rel'),
    });
    expect(released.account!.reserved).to.equal(0n);
    const batch = await b().call<object, BatchConsumeResponse>('batchConsume', {
      tenantId: t, idempotencyKey: key('b'), atomic: true,
      items: [{ tenantId: t, amount: 2n, reference: '', metadata: {} }, { tenantId: t, amount: 3n, reference: '', metadata: {} }],
    });
    expect(batch.results.map((r) => r.ok)).to.deep.equal([true, true]);

    const history = await a().call<object, ListTransactionsResponse>('listTransactions', { tenantId: t, pageSize: 100, pageToken: '', types: [] });
    // top-up, consume, 20 stream consumes, 2 reserves, the commit, the release, 2 batch items (and the
    // commit's return of what it did not use).
    expect(history.transactions).to.have.length(29);
    expect(history.transactions.map((x) => x.idempotencyKey)).to.include(k);
    const op = await b().call<object, GetOperationResponse>('getOperation', { tenantId: t, idempotencyKey: k });
    expect(op.method).to.equal('/shieldx.credits.v1.CreditsService/Consume');
    const chain = await a().call<object, VerifyAuditChainResponse>('verifyAuditChain', { tenantId: t });
    expect(chain.valid).to.equal(true);
    expect((await b().call<object, GetBalanceResponse>('getBalance', { tenantId: t, consistentRead: true })).account!.balance).to.equal(60n);
  });

  // Both instances consume 1 from one tenant at once, 400 calls: every call succeeds or is refused for
  // lack of credits (never INTERNAL), and the balance, the rows and the versions add up exactly.
  it('loses or doubles nothing in a concurrent consume race on one tenant, with no INTERNAL', async () => {
    const t = tenant('race');
    await topUp(a(), t, 300n);
    // Other tenants' consumes at the same time keep more transactions in flight on both instances.
    const others = Array.from({ length: 8 }, (_, i) => tenant(`busy${i}`));
    for (const o of others) await topUp(b(), o, 1_000n);
    const background = Array.from({ length: 400 }, (_, i) =>
      clients[i % 2]!.call<object, ConsumeResponse>('consume', { tenantId: others[i % 8]!, amount: 1n, idempotencyKey: `bg-${i}`, reference: '', metadata: {} }).then(
        () => 'ok',
        (error: unknown) => errorDetails(error)?.reason ?? String(error),
      ),
    );
    const calls = Array.from({ length: 400 }, (_, i) =>
      clients[i % 2]!.call<object, ConsumeResponse>('consume', { tenantId: t, amount: 1n, idempotencyKey: `race-${i}`, reference: '', metadata: {} }).then(
        (res) => ({ ok: true as const, version: res.account!.version }),
        (error: unknown) => ({ ok: false as const, reason: errorDetails(error)?.reason ?? String(error) }),
      ),
    );
    const results = await Promise.all(calls);
    expect([...new Set(await Promise.all(background))]).to.deep.equal(['ok']);
    const refused = results.filter((r) => !r.ok).map((r) => (r as { reason: string }).reason);
    expect([...new Set(refused)]).to.deep.equal(['INSUFFICIENT_CREDITS']);
    const versions = results.filter((r) => r.ok).map((r) => Number((r as { version: bigint }).version)).sort((x, y) => x - y);
    expect(versions).to.deep.equal(Array.from({ length: 300 }, (_, i) => i + 2));
    const { rows } = await db().query<{ balance: string; txs: number }>(
      `SELECT a.balance::text, (SELECT count(*) FROM credit_transactions x WHERE x.tenant_id = a.tenant_id AND x.type = 'CONSUME')::int AS txs
         FROM credit_accounts a WHERE a.tenant_id = $1`,
      [t],
    );
    expect(rows[0]).to.deep.equal({ balance: '0', txs: 300 });
  });
});
