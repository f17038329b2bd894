/**
 * Every credits RPC over real gRPC against real PostgreSQL and Redis: happy
 * paths, each error reason, and bad input (INVALID_ARGUMENT, nothing written).
 */
import { Client } from '@grpc/grpc-js';
import { BinaryWriter } from '@bufbuild/protobuf/wire';
import { expect } from 'chai';
import {
  type BatchConsumeResponse,
  type CommitReservationResponse,
  ConsumeResponse,
  type GetBalanceResponse,
  type GetOperationResponse,
  type ListTransactionsResponse,
  OperationState,
  type ReleaseReservationResponse,
  ReservationState,
  type ReserveResponse,
  type TopUpResponse,
  TransactionType,
  type VerifyAuditChainResponse,
} from '../../../gen/shieldx/credits/v1/credits';
import { Code } from '../../../platform/service-error';
import type { RunningService } from '../../../platform/server';
import { address, bearer, insecure, testKeys } from '../../../testing/harness';
import { Credits, databaseFootprint, db, failure, footprint, key, ledgerState, payment, startCredits, tenant } from '../../../testing/credits-kit';

const INT64_MAX = 9_223_372_036_854_775_807n;

describe('credits RPCs', function () {
  this.timeout(30_000);
  let service: RunningService;
  let credits: Credits;

  before(async () => {
    service = await startCredits();
    credits = new Credits(service);
  });
  after(async () => {
    credits?.close();
    await service?.shutdown();
  });

  const topUp = (tenantId: string, amount: bigint, k = key()) =>
    credits.call<object, TopUpResponse>('topUp', { tenantId, amount, idempotencyKey: k, reference: 'r', payment: payment(), metadata: {} });
  const consume = (tenantId: string, amount: bigint, k = key(), metadata: Record<string, string> = {}) =>
    credits.call<object, ConsumeResponse>('consume', { tenantId, amount, idempotencyKey: k, reference: 'req-1', metadata });
  const balance = (tenantId: string, consistentRead = false) =>
    credits.call<object, GetBalanceResponse>('getBalance', { tenantId, consistentRead });
  const list = (q: object, via?: Credits) =>
    (via ?? credits).call<object, ListTransactionsResponse>('listTransactions', { pageSize: 0, pageToken: '', types: [], ...q });
  const reserve = (tenantId: string, amount: bigint, k = key(), ttlMs = 60_000) =>
    credits.call<object, ReserveResponse>('reserve', {
      tenantId,
      amount,
      idempotencyKey: k,
      reference: 'job',
      metadata: {},
      ttl: { seconds: BigInt(Math.floor(ttlMs / 1000)), nanos: (ttlMs % 1000) * 1_000_000 },
    });

  /** The tenant's money and history (ledgerState without the count of idempotency records, which refusals may add to). */
  async function moneyAndHistory(tenantId: string): Promise<Record<string, unknown>> {
    const { keys: _keys, ...rest } = JSON.parse(await ledgerState(tenantId)) as Record<string, unknown>;
    return rest;
  }

  /** Same key + different request: FAILED_PRECONDITION IDEMPOTENCY_KEY_REUSED naming the key. */
  async function keyReused(call: Promise<unknown>, k: string, what: string): Promise<void> {
    const err = await failure(call);
    expect(err.code, what).to.equal(Code.FAILED_PRECONDITION);
    expect(err.reason, what).to.equal('IDEMPOTENCY_KEY_REUSED');
    expect(err.metadata.idempotency_key, what).to.equal(k);
    expect(err.metadata.field, what).to.equal('idempotency_key');
  }

  describe('TopUp', () => {
    // A first top-up opens the account; the card comes back masked and is stored encrypted only.
    it('credits the account and stores the card encrypted', async () => {
      const t = tenant();
      const res = await topUp(t, 500n);
      expect(res.account!.balance).to.equal(500n);
      expect(res.transaction!.type).to.equal(TransactionType.TRANSACTION_TYPE_TOP_UP);
      expect(res.payment).to.deep.equal({ cardLast4: '4242', cardBrand: 'visa', expiryMonth: 12, expiryYear: new Date().getUTCFullYear() + 2 });
      const { rows } = await db().query('SELECT ciphertext, key_id FROM credit_payments WHERE transaction_id = $1', [res.transaction!.id]);
      expect(rows[0].key_id).to.equal('a');
      expect(Buffer.from(rows[0].ciphertext).toString('latin1')).not.to.contain('4242424242424242');
      // The stored replay (bytes) holds the masked card only: searched as bytes, not as bytea's hex text.
      const stored = await db().query(
        `SELECT position(convert_to('4242424242424242', 'UTF8') IN response) AS full_card, position(convert_to('4242', 'UTF8') IN response) AS last4
           FROM credit_idempotency_keys WHERE tenant_id = $1 AND response IS NOT NULL`,
        [t],
      );
      expect(stored.rows).to.have.length(1);
      expect(stored.rows[0].full_card).to.equal(0);
      expect(stored.rows[0].last4).to.be.greaterThan(0);
    });

    // Malformed card data is INVALID_ARGUMENT and writes nothing.
    it('rejects malformed payment data without writing anything', async () => {
      const t = tenant();
      const bad = [
        undefined,
        { ...payment(), cardNumber: '4242 4242 4242 4241' },
        { ...payment(), cardNumber: '12ab' },
        { ...payment(), expiryMonth: 13 },
        { ...payment(), expiryYear: 2001 },
        { ...payment(), cardholderName: 'x'.repeat(200) },
      ];
      for (const p of bad) {
        const err = await failure(credits.call('topUp', { tenantId: t, amount: 5n, idempotencyKey: key(), reference: '', payment: p, metadata: {} }));
        expect(err.code).to.equal(Code.INVALID_ARGUMENT);
        expect(err.reason).to.equal('INVALID_ARGUMENT');
        expect(err.message).not.to.contain('4242');
      }
      expect(await footprint(t)).to.equal(JSON.stringify({ a: '0', t: '0', k: '0', l: '0', r: '0', b: '-1' }));
    });

    // int64 max is accepted once; a top-up that would overflow is a business failure, not INTERNAL.
    it('accepts int64 max and refuses to overflow it', async () => {
      const t = tenant();
      expect((await topUp(t, INT64_MAX)).account!.balance).to.equal(INT64_MAX);
      const err = await failure(topUp(t, 1n));
      expect(err.reason).to.equal('BALANCE_LIMIT_EXCEEDED');
      expect((await consume(t, INT64_MAX)).account!.balance).to.equal(0n);
    });

    // Same key + same top-up replays the first (same transaction, one credit); same key with another amount, reference,
    // metadata or card is IDEMPOTENCY_KEY_REUSED, and none of them moves money, writes a row or stores a card.
    it('replays a repeated key and refuses a reused one', async () => {
      const t = tenant();
      const k = key();
      const request = { tenantId: t, amount: 50n, idempotencyKey: k, reference: 'r', payment: payment(), metadata: { order: '1' } };
      const first = await credits.call<object, TopUpResponse>('topUp', request);
      const after = await ledgerState(t);
      const again = await credits.call<object, TopUpResponse>('topUp', request);
      expect(again.replayed).to.equal(true);
      expect(again.transaction!.id).to.equal(first.transaction!.id);
      expect(again.account).to.deep.equal(first.account);
      const others: [string, object][] = [
        ['another amount', { ...request, amount: 51n }],
        ['another reference', { ...request, reference: 'r2' }],
        ['other metadata', { ...request, metadata: { order: '2' } }],
        ['another card', { ...request, payment: payment('5555 5555 5555 4444') }],
      ];
      for (const [what, other] of others) await keyReused(credits.call('topUp', other), k, what);
      expect(await ledgerState(t)).to.equal(after);
      expect((await balance(t, true)).account!.balance).to.equal(50n);
    });
  });

  describe('Consume', () => {
    // A debit returns the transaction and the account after it.
    it('debits atomically and returns the new balance', async () => {
      const t = tenant();
      await topUp(t, 100n);
      const res = await consume(t, 30n, key(), { route: '/api' });
      expect(res.account!.balance).to.equal(70n);
      expect(res.account!.available).to.equal(70n);
      expect(res.transaction!.amount).to.equal(30n);
      expect(res.transaction!.balanceAfter).to.equal(70n);
      expect(res.transaction!.metadata).to.deep.equal({ route: '/api' });
      expect(res.replayed).to.equal(false);
    });

    // Short of credits: FAILED_PRECONDITION INSUFFICIENT_CREDITS with the available amount.
    it('fails with INSUFFICIENT_CREDITS and the available amount', async () => {
      const t = tenant();
      await topUp(t, 10n);
      const err = await failure(consume(t, 11n));
      expect(err.code).to.equal(Code.FAILED_PRECONDITION);
      expect(err.reason).to.equal('INSUFFICIENT_CREDITS');
      expect(err.metadata.available).to.equal('10');
      expect((await balance(t, true)).account!.balance).to.equal(10n);
    });

    // Consuming int64 max from a smaller balance is refused, not overflowed.
    it('handles an int64-max consume as insufficient credits', async () => {
      const t = tenant();
      await topUp(t, 10n);
      expect((await failure(consume(t, INT64_MAX))).reason).to.equal('INSUFFICIENT_CREDITS');
    });

    // Unknown tenant: NOT_FOUND TENANT_NOT_FOUND.
    it('fails with TENANT_NOT_FOUND for an unknown tenant', async () => {
      const err = await failure(consume(tenant(), 1n));
      expect(err.code).to.equal(Code.NOT_FOUND);
      expect(err.reason).to.equal('TENANT_NOT_FOUND');
    });

    // Same key + same request replays; same key + different request is IDEMPOTENCY_KEY_REUSED.
    it('replays a repeated key and refuses a reused one', async () => {
      const t = tenant();
      await topUp(t, 100n);
      const k = key();
      const first = await consume(t, 10n, k);
      const again = await consume(t, 10n, k);
      expect(again.replayed).to.equal(true);
      expect(again.transaction!.id).to.equal(first.transaction!.id);
      expect((await failure(consume(t, 11n, k))).reason).to.equal('IDEMPOTENCY_KEY_REUSED');
      expect((await balance(t, true)).account!.balance).to.equal(90n);
    });

    // A stored business failure is replayed even after the tenant could now afford it.
    it('replays a stored INSUFFICIENT_CREDITS', async () => {
      const t = tenant();
      await topUp(t, 5n);
      const k = key();
      expect((await failure(consume(t, 8n, k))).reason).to.equal('INSUFFICIENT_CREDITS');
      await topUp(t, 100n);
      const replay = await failure(consume(t, 8n, k));
      expect(replay.reason).to.equal('INSUFFICIENT_CREDITS');
      expect(replay.metadata.replayed).to.equal('true');
      expect((await balance(t, true)).account!.balance).to.equal(105n);
    });

    // Concurrent duplicates of one key apply once; all see the same transaction.
    it('applies concurrent duplicates once', async () => {
      const t = tenant();
      await topUp(t, 100n);
      const k = key();
      const results = await Promise.all(Array.from({ length: 8 }, () => consume(t, 7n, k)));
      expect(new Set(results.map((r) => r.transaction!.id)).size).to.equal(1);
      expect(results.filter((r) => !r.replayed)).to.have.length(1);
      expect((await balance(t, true)).account!.balance).to.equal(93n);
    });

    // In one coalesced batch, a failing item does not fail the others.
    it('isolates failing items in a coalesced batch', async () => {
      const t = tenant();
      await topUp(t, 10n);
      const settled = await Promise.allSettled([consume(t, 4n), consume(t, 100n), consume(t, 4n), consume(tenant(), 1n), consume(t, 2n)]);
      expect(settled.map((s) => s.status)).to.deep.equal(['fulfilled', 'rejected', 'fulfilled', 'rejected', 'fulfilled']);
      expect((await balance(t, true)).account!.balance).to.equal(0n);
    });

    // Bad inputs: INVALID_ARGUMENT, nothing written, key left unused.
    // The bad tenant ids name no row to count: the whole ledger (every table, every tenant) must be unchanged.
    it('rejects bad input without writing anything', async () => {
      const t = tenant();
      await topUp(t, 100n);
      const before = await footprint(t);
      const everything = await databaseFootprint();
      const cases: [string, object][] = [
        ['tenant_id', { tenantId: '', amount: 1n, idempotencyKey: key() }],
        ['tenant_id', { tenantId: 'x'.repeat(129), amount: 1n, idempotencyKey: key() }],
        ['tenant_id', { tenantId: 'bad tenant', amount: 1n, idempotencyKey: key() }],
        ['amount', { tenantId: t, amount: 0n, idempotencyKey: key() }],
        ['amount', { tenantId: t, amount: -5n, idempotencyKey: key() }],
        ['idempotency_key', { tenantId: t, amount: 1n, idempotencyKey: '' }],
        ['idempotency_key', { tenantId: t, amount: 1n, idempotencyKey: 'k'.repeat(129) }],
        ['reference', { tenantId: t, amount: 1n, idempotencyKey: key(), reference: 'r'.repeat(300) }],
        ['metadata[bad key!]', { tenantId: t, amount: 1n, idempotencyKey: key(), metadata: { 'bad key!': 'v' } }],
      ];
      for (const [field, c] of cases) {
        const what = JSON.stringify(c, (_, v) => (typeof v === 'bigint' ? String(v) : v));
        const err = await failure(credits.call('consume', { reference: '', metadata: {}, ...c }));
        expect(err.code, what).to.equal(Code.INVALID_ARGUMENT);
        expect(err.fieldViolations.map((v) => v.field), what).to.deep.equal([field]);
      }
      expect(await footprint(t)).to.equal(before);
      expect(await databaseFootprint()).to.equal(everything);
    });

    // The generated client refuses an amount above int64; raw bytes above int64 arrive wrapped and are refused.
    it('refuses over-int64 amounts', async () => {
      const t = tenant();
      await topUp(t, 100n);
      const before = await footprint(t);
      // Client-side serialization failure: nothing reaches the server.
      const client = await failure(credits.call('consume', { tenantId: t, amount: INT64_MAX + 1n, idempotencyKey: key(), reference: '', metadata: {} }));
      expect(client.message).to.match(/serializ/i);
      const raw = new Client(address(service), insecure);
      const bytes = new BinaryWriter().uint32(10).string(t).uint32(16).uint64(INT64_MAX + 1n).uint32(26).string(key()).finish();
      const err = await failure(
        new Promise((resolve, reject) =>
          raw.makeUnaryRequest(
            '/shieldx.credits.v1.CreditsService/Consume',
            (b: Buffer) => b,
            (b: Buffer) => ConsumeResponse.decode(b),
            Buffer.from(bytes),
            bearer(),
            (e, r) => (e ? reject(e) : resolve(r)),
          ),
        ),
      );
      raw.close();
      expect(err.code).to.equal(Code.INVALID_ARGUMENT);
      expect(await footprint(t)).to.equal(before);
    });

    // Scopes: a reader key may not consume.
    it('refuses a caller without credits:write', async () => {
      const reader = new Credits(service, testKeys.creditsReader);
      const err = await failure(reader.call('consume', { tenantId: tenant(), amount: 1n, idempotencyKey: key(), reference: '', metadata: {} }));
      reader.close();
      expect(err.code).to.equal(Code.PERMISSION_DENIED);
    });
  });

  describe('GetBalance', () => {
    // A read after a write is served from the write-through cache, and equals the database.
    it('serves the cached balance and reads PostgreSQL on request', async () => {
      const t = tenant();
      await topUp(t, 42n);
      const cached = await balance(t);
      expect(cached.fromCache).to.equal(true);
      expect(cached.account!.balance).to.equal(42n);
      const fresh = await balance(t, true);
      expect(fresh.fromCache).to.equal(false);
      expect(fresh.account).to.deep.equal(cached.account);
    });

    // Unknown tenant and bad tenant id.
    it('fails for an unknown tenant and a bad tenant id', async () => {
      expect((await failure(balance(tenant()))).reason).to.equal('TENANT_NOT_FOUND');
      expect((await failure(balance(''))).code).to.equal(Code.INVALID_ARGUMENT);
      expect((await failure(balance('y'.repeat(200)))).code).to.equal(Code.INVALID_ARGUMENT);
    });
  });

  describe('reservations', () => {
    // Reserve holds; commit captures part and releases the rest.
    it('reserves, captures part and releases the rest', async () => {
      const t = tenant();
      await topUp(t, 100n);
      const r = await reserve(t, 40n);
      expect(r.account!.reserved).to.equal(40n);
      expect(r.account!.available).to.equal(60n);
      expect(r.reservation!.state).to.equal(ReservationState.RESERVATION_STATE_HELD);
      const c = await credits.call<object, CommitReservationResponse>('commitReservation', {
        tenantId: t,
        reservationId: r.reservation!.id,
        amount: 25n,
        idempotencyKey: key(),
      });
      expect(c.reservation!.state).to.equal(ReservationState.RESERVATION_STATE_COMMITTED);
      expect(c.reservation!.capturedAmount).to.equal(25n);
      expect(c.transaction!.type).to.equal(TransactionType.TRANSACTION_TYPE_CAPTURE);
      expect(c.account).to.include({ balance: 75n, reserved: 0n, available: 75n });
    });

    // A reserve beyond the available credits fails; an unknown tenant too.
    it('refuses to reserve more than is available', async () => {
      const t = tenant();
      await topUp(t, 10n);
      expect((await failure(reserve(t, 11n))).reason).to.equal('INSUFFICIENT_CREDITS');
      expect((await failure(reserve(tenant(), 1n))).reason).to.equal('TENANT_NOT_FOUND');
      await reserve(t, 8n);
      expect((await failure(consume(t, 3n))).reason).to.equal('INSUFFICIENT_CREDITS');
    });

    // Release frees the hold; double release with a new key is RESERVATION_ALREADY_FINALIZED; same key replays.
    it('releases once; repeats are a clear error or a replay, never a second move', async () => {
      const t = tenant();
      await topUp(t, 50n);
      const r = await reserve(t, 20n);
      const k = key();
      const rel = await credits.call<object, ReleaseReservationResponse>('releaseReservation', { tenantId: t, reservationId: r.reservation!.id, idempotencyKey: k });
      expect(rel.account).to.include({ balance: 50n, reserved: 0n });
      const released = await moneyAndHistory(t);
      const again = await credits.call<object, ReleaseReservationResponse>('releaseReservation', { tenantId: t, reservationId: r.reservation!.id, idempotencyKey: k });
      expect(again.replayed).to.equal(true);
      const other = await failure(credits.call('releaseReservation', { tenantId: t, reservationId: r.reservation!.id, idempotencyKey: key() }));
      expect(other.reason).to.equal('RESERVATION_ALREADY_FINALIZED');
      const commit = await failure(credits.call('commitReservation', { tenantId: t, reservationId: r.reservation!.id, idempotencyKey: key() }));
      expect(commit.reason).to.equal('RESERVATION_ALREADY_FINALIZED');
      expect((await balance(t, true)).account).to.include({ balance: 50n, reserved: 0n });
      // No second RELEASE, no CAPTURE: account, transactions, audit rows and reservations as after the release.
      expect(await moneyAndHistory(t)).to.deep.equal(released);
    });

    // A committed hold is final: a second commit or a release under another key is RESERVATION_ALREADY_FINALIZED
    // naming the state, and the money (balance, reserved, transactions, audit rows) moved exactly once.
    it('commits once; a second commit or a release with another key moves nothing', async () => {
      const t = tenant();
      await topUp(t, 50n);
      const r = await reserve(t, 20n);
      const id = r.reservation!.id;
      const c = await credits.call<object, CommitReservationResponse>('commitReservation', { tenantId: t, reservationId: id, amount: 15n, idempotencyKey: key() });
      expect(c.account).to.include({ balance: 35n, reserved: 0n });
      const committed = await moneyAndHistory(t);
      const repeats: [string, string, object][] = [
        ['a second commit, same amount', 'commitReservation', { amount: 15n }],
        ['a second commit, whole hold', 'commitReservation', {}],
        ['a release', 'releaseReservation', {}],
      ];
      for (const [what, rpc, extra] of repeats) {
        const err = await failure(credits.call(rpc as never, { tenantId: t, reservationId: id, idempotencyKey: key(), ...extra }));
        expect(err.code, what).to.equal(Code.FAILED_PRECONDITION);
        expect(err.reason, what).to.equal('RESERVATION_ALREADY_FINALIZED');
        expect(err.metadata, what).to.include({ reservation_id: id, state: 'COMMITTED' });
      }
      expect(await moneyAndHistory(t)).to.deep.equal(committed);
      const moves = await db().query('SELECT type::text, amount::text FROM credit_transactions WHERE reservation_id = $1 ORDER BY seq', [id]);
      expect(moves.rows).to.deep.equal([
        { type: 'RESERVE', amount: '20' },
        { type: 'CAPTURE', amount: '15' },
        { type: 'RELEASE', amount: '5' },
      ]);
      const { rows } = await db().query('SELECT state::text, captured_amount::text FROM credit_reservations WHERE id = $1', [id]);
      expect(rows[0]).to.deep.equal({ state: 'COMMITTED', captured_amount: '15' });
    });

    // Same key + same reserve replays the hold (one hold, reserved moved once); same key with another amount, TTL,
    // reference or metadata is IDEMPOTENCY_KEY_REUSED and holds nothing more.
    it('replays a repeated reserve key and refuses a reused one', async () => {
      const t = tenant();
      await topUp(t, 100n);
      const k = key();
      const request = { tenantId: t, amount: 30n, idempotencyKey: k, reference: 'job', metadata: { job: '1' }, ttl: { seconds: 60n, nanos: 0 } };
      const first = await credits.call<object, ReserveResponse>('reserve', request);
      const after = await ledgerState(t);
      const again = await credits.call<object, ReserveResponse>('reserve', request);
      expect(again.replayed).to.equal(true);
      expect(again.reservation).to.deep.equal(first.reservation);
      const others: [string, object][] = [
        ['another amount', { ...request, amount: 31n }],
        ['another TTL', { ...request, ttl: { seconds: 61n, nanos: 0 } }],
        ['another reference', { ...request, reference: 'job-2' }],
        ['other metadata', { ...request, metadata: { job: '2' } }],
      ];
      for (const [what, other] of others) await keyReused(credits.call('reserve', other), k, what);
      expect(await ledgerState(t)).to.equal(after);
      expect((await balance(t, true)).account).to.include({ balance: 100n, reserved: 30n });
    });

    // Commit after the TTL: RESERVATION_EXPIRED; the sweeper then releases the hold and records EXPIRE.
    it('expires holds: commit fails and the sweeper releases them', async () => {
      const sweeping = await startCredits({ CREDITS_RESERVATION_SWEEP_INTERVAL_MS: '100' });
      const client = new Credits(sweeping);
      try {
        const t = tenant();
        await client.call('topUp', { tenantId: t, amount: 30n, idempotencyKey: key(), reference: '', payment: payment(), metadata: {} });
        const r = await client.call<object, ReserveResponse>('reserve', { tenantId: t, amount: 10n, idempotencyKey: key(), reference: '', metadata: {}, ttl: { seconds: 0n, nanos: 200_000_000 } });
        await new Promise((resolve) => setTimeout(resolve, 250));
        const err = await failure(client.call('commitReservation', { tenantId: t, reservationId: r.reservation!.id, idempotencyKey: key() }));
        expect(err.reason).to.equal('RESERVATION_EXPIRED');
        for (let i = 0; i < 50; i++) {
          const { rows } = await db().query('SELECT state::text FROM credit_reservations WHERE id = $1', [r.reservation!.id]);
          if (rows[0].state === 'EXPIRED') break;
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
        const acc = await client.call<object, GetBalanceResponse>('getBalance', { tenantId: t, consistentRead: true });
        expect(acc.account).to.include({ balance: 30n, reserved: 0n });
        const expired = await list({ tenantId: t, types: [TransactionType.TRANSACTION_TYPE_EXPIRE] }, client);
        expect(expired.transactions).to.have.length(1);
        expect((await failure(client.call('commitReservation', { tenantId: t, reservationId: r.reservation!.id, idempotencyKey: key() }))).reason).to.equal('RESERVATION_EXPIRED');
      } finally {
        client.close();
        await sweeping.shutdown();
      }
    });

    // Unknown or foreign reservation: RESERVATION_NOT_FOUND; bad id or capture above the hold: INVALID_ARGUMENT.
    it('reports unknown reservations and bad input', async () => {
      const t = tenant();
      await topUp(t, 50n);
      const r = await reserve(t, 5n);
      const other = tenant();
      await topUp(other, 1n);
      expect((await failure(credits.call('commitReservation', { tenantId: other, reservationId: r.reservation!.id, idempotencyKey: key() }))).reason).to.equal('RESERVATION_NOT_FOUND');
      expect((await failure(credits.call('releaseReservation', { tenantId: t, reservationId: '00000000-0000-4000-8000-000000000000', idempotencyKey: key() }))).reason).to.equal('RESERVATION_NOT_FOUND');
      const before = await footprint(t);
      expect((await failure(credits.call('commitReservation', { tenantId: t, reservationId: 'nope', idempotencyKey: key() }))).code).to.equal(Code.INVALID_ARGUMENT);
      expect((await failure(credits.call('commitReservation', { tenantId: t, reservationId: r.reservation!.id, amount: 6n, idempotencyKey: key() }))).code).to.equal(Code.INVALID_ARGUMENT);
      expect((await failure(credits.call('commitReservation', { tenantId: t, reservationId: r.reservation!.id, amount: -1n, idempotencyKey: key() }))).code).to.equal(Code.INVALID_ARGUMENT);
      expect((await failure(credits.call('commitReservation', { tenantId: t, reservationId: r.reservation!.id, idempotencyKey: '' }))).code).to.equal(Code.INVALID_ARGUMENT);
      expect((await failure(reserve(t, 0n))).code).to.equal(Code.INVALID_ARGUMENT);
      expect((await failure(reserve(t, 1n, key(), 25 * 3_600_000))).code).to.equal(Code.INVALID_ARGUMENT);
      expect(await footprint(t)).to.equal(before);
    });
  });

  describe('BatchConsume', () => {
    // Non-atomic: per-item results; the failing item does not stop the others.
    it('returns per-item results', async () => {
      const [a, b] = [tenant(), tenant()];
      await topUp(a, 10n);
      await topUp(b, 10n);
      const res = await credits.call<object, BatchConsumeResponse>('batchConsume', {
        tenantId: a,
        idempotencyKey: key(),
        atomic: false,
        items: [
          { tenantId: a, amount: 6n, reference: '', metadata: {} },
          { tenantId: a, amount: 6n, reference: '', metadata: {} },
          { tenantId: b, amount: 3n, reference: '', metadata: {} },
          { tenantId: tenant(), amount: 1n, reference: '', metadata: {} },
        ],
      });
      expect(res.results.map((r) => r.ok)).to.deep.equal([true, false, true, false]);
      expect(res.results[1]!.errorReason).to.equal('INSUFFICIENT_CREDITS');
      expect(res.results[3]!.errorReason).to.equal('TENANT_NOT_FOUND');
      expect([res.succeeded, res.failed]).to.deep.equal([2, 2]);
      expect((await balance(a, true)).account!.balance).to.equal(4n);
      expect((await balance(b, true)).account!.balance).to.equal(7n);
    });

    // Atomic: one failure means nothing is applied; the key replays the same outcome.
    it('applies nothing in atomic mode when one item fails', async () => {
      const a = tenant();
      await topUp(a, 10n);
      const k = key();
      const req = { tenantId: a, idempotencyKey: k, atomic: true, items: [{ tenantId: a, amount: 4n, reference: '', metadata: {} }, { tenantId: a, amount: 7n, reference: '', metadata: {} }] };
      const res = await credits.call<object, BatchConsumeResponse>('batchConsume', req);
      expect(res.succeeded).to.equal(0);
      expect(res.results.map((r) => r.errorReason)).to.deep.equal(['BATCH_ABORTED', 'INSUFFICIENT_CREDITS']);
      expect((await balance(a, true)).account!.balance).to.equal(10n);
      expect((await credits.call<object, BatchConsumeResponse>('batchConsume', req)).replayed).to.equal(true);
      const ok = await credits.call<object, BatchConsumeResponse>('batchConsume', { ...req, idempotencyKey: key(), items: req.items.slice(0, 1) });
      expect(ok.succeeded).to.equal(1);
    });

    // Empty, oversized or bad-item batches are INVALID_ARGUMENT naming the field; nothing is written, for any tenant.
    it('rejects bad batches', async () => {
      const a = tenant();
      await topUp(a, 10n);
      const before = await footprint(a);
      const everything = await databaseFootprint();
      const item = { tenantId: a, amount: 1n, reference: '', metadata: {} };
      const cases: [string, object[]][] = [
        ['items', []],
        ['items', Array.from({ length: 101 }, () => item)],
        ['items[1].amount', [item, { ...item, amount: 0n }]],
        ['items[0].tenant_id', [{ ...item, tenantId: '' }]],
      ];
      for (const [field, items] of cases) {
        const err = await failure(credits.call('batchConsume', { tenantId: a, idempotencyKey: key(), atomic: false, items }));
        expect(err.code, field).to.equal(Code.INVALID_ARGUMENT);
        expect(err.fieldViolations.map((v) => v.field)).to.deep.equal([field]);
      }
      expect((await failure(credits.call('batchConsume', { tenantId: a, idempotencyKey: '', atomic: false, items: [item] }))).code).to.equal(Code.INVALID_ARGUMENT);
      expect(await footprint(a)).to.equal(before);
      expect(await databaseFootprint()).to.equal(everything);
    });

    // Same key + same items replays the stored results (same transactions, nothing debited again); same key with
    // other items (amount, order, count, reference, metadata) or another atomic flag is IDEMPOTENCY_KEY_REUSED.
    it('replays a repeated key and refuses a reused one', async () => {
      const [a, b] = [tenant(), tenant()];
      await topUp(a, 100n);
      await topUp(b, 100n);
      const k = key();
      const items = [
        { tenantId: a, amount: 5n, reference: 'x', metadata: { n: '1' } },
        { tenantId: b, amount: 7n, reference: 'y', metadata: {} },
        { tenantId: a, amount: 500n, reference: '', metadata: {} },
      ];
      const request = { tenantId: a, idempotencyKey: k, atomic: false, items };
      const first = await credits.call<object, BatchConsumeResponse>('batchConsume', request);
      expect(first.results.map((r) => r.ok)).to.deep.equal([true, true, false]);
      const [afterA, afterB] = [await ledgerState(a), await ledgerState(b)];
      const again = await credits.call<object, BatchConsumeResponse>('batchConsume', request);
      expect(again.replayed).to.equal(true);
      expect({ ...again, replayed: false }).to.deep.equal(first);
      const others: [string, object][] = [
        ['another amount', { ...request, items: [{ ...items[0]!, amount: 6n }, items[1]!, items[2]!] }],
        ['another order', { ...request, items: [items[1]!, items[0]!, items[2]!] }],
        ['an item fewer', { ...request, items: items.slice(0, 2) }],
        ['an item more', { ...request, items: [...items, items[0]!] }],
        ['another reference', { ...request, items: [{ ...items[0]!, reference: 'z' }, items[1]!, items[2]!] }],
        ['other metadata', { ...request, items: [{ ...items[0]!, metadata: { n: '2' } }, items[1]!, items[2]!] }],
        ['atomic', { ...request, atomic: true }],
      ];
      for (const [what, other] of others) await keyReused(credits.call('batchConsume', other), k, what);
      expect([await ledgerState(a), await ledgerState(b)]).to.deep.equal([afterA, afterB]);
      expect((await balance(a, true)).account!.balance).to.equal(95n);
      expect((await balance(b, true)).account!.balance).to.equal(93n);
    });
  });

  describe('ListTransactions', () => {
    // Newest first, paginated without repeats, filtered by type and time.
    it('pages newest first with filters', async () => {
      const t = tenant();
      await topUp(t, 100n);
      for (let i = 0; i < 5; i++) await consume(t, BigInt(i + 1));
      const seen: bigint[] = [];
      let token = '';
      for (let page = 0; page < 10; page++) {
        const res = await list({ tenantId: t, pageSize: 2, pageToken: token, types: [TransactionType.TRANSACTION_TYPE_CONSUME] });
        seen.push(...res.transactions.map((x) => x.amount));
        token = res.nextPageToken;
        if (!token) break;
      }
      expect(seen).to.deep.equal([5n, 4n, 3n, 2n, 1n]);
      const all = await list({ tenantId: t, types: [] });
      expect(all.transactions).to.have.length(6);
      const future = await list({ tenantId: t, types: [], startTime: new Date(Date.now() + 60_000) });
      expect(future.transactions).to.have.length(0);
      const past = await list({ tenantId: t, types: [], endTime: new Date(Date.now() - 3_600_000) });
      expect(past.transactions).to.have.length(0);
    });

    // Bad page token, page size, time range or type: INVALID_ARGUMENT; unknown tenant: TENANT_NOT_FOUND.
    it('rejects bad queries', async () => {
      const t = tenant();
      await topUp(t, 100n);
      await consume(t, 1n);
      const res = await list({ tenantId: t, pageSize: 1, types: [] });
      const bad = [
        { tenantId: t, pageToken: 'garbage!', types: [] },
        { tenantId: t, pageToken: Buffer.from('{"v":1,"s":"1","f":"x"}').toString('base64url'), types: [] },
        // A token from another filter is refused.
        { tenantId: t, pageToken: res.nextPageToken, types: [TransactionType.TRANSACTION_TYPE_TOP_UP] },
        { tenantId: t, pageSize: -1, types: [] },
        { tenantId: t, types: [TransactionType.TRANSACTION_TYPE_UNSPECIFIED] },
        { tenantId: t, types: [], startTime: new Date(2000), endTime: new Date(1000) },
        { tenantId: '', types: [] },
      ];
      for (const q of bad) expect((await failure(list(q))).code).to.equal(Code.INVALID_ARGUMENT);
      expect((await failure(list({ tenantId: tenant(), types: [] }))).reason).to.equal('TENANT_NOT_FOUND');
    });
  });

  describe('GetOperation', () => {
    // A client that lost a response learns the stored result, or the stored failure.
    it('reports succeeded and failed operations', async () => {
      const t = tenant();
      await topUp(t, 10n);
      const k1 = key();
      const done = await consume(t, 3n, k1);
      const op = await credits.call<object, GetOperationResponse>('getOperation', { tenantId: t, idempotencyKey: k1 });
      expect(op.state).to.equal(OperationState.OPERATION_STATE_SUCCEEDED);
      expect(op.method).to.equal('/shieldx.credits.v1.CreditsService/Consume');
      expect(op.result?.$case).to.equal('consume');
      expect((op.result!.value as ConsumeResponse).transaction!.id).to.equal(done.transaction!.id);
      const k2 = key();
      await failure(consume(t, 300n, k2));
      const failed = await credits.call<object, GetOperationResponse>('getOperation', { tenantId: t, idempotencyKey: k2 });
      expect(failed.state).to.equal(OperationState.OPERATION_STATE_FAILED);
      expect(failed.error!.code).to.equal(Code.FAILED_PRECONDITION);
    });

    // An unknown key is OPERATION_NOT_FOUND; a bad one INVALID_ARGUMENT.
    it('reports unknown keys', async () => {
      expect((await failure(credits.call('getOperation', { tenantId: tenant(), idempotencyKey: key() }))).reason).to.equal('OPERATION_NOT_FOUND');
      expect((await failure(credits.call('getOperation', { tenantId: tenant(), idempotencyKey: '' }))).code).to.equal(Code.INVALID_ARGUMENT);
    });

    // A call still running (its key row uncommitted) is reported IN_PROGRESS.
    it('reports an operation in progress', async () => {
      const t = tenant();
      const k = key();
      const blocker = await db().connect();
      try {
        await blocker.query('BEGIN');
        await blocker.query(`INSERT INTO credit_idempotency_keys (tenant_id, key, method, request_hash, expires_at) VALUES ($1, $2, 'x', '\\x00', now() + interval '1 day')`, [t, k]);
        const op = await credits.call<object, GetOperationResponse>('getOperation', { tenantId: t, idempotencyKey: k });
        expect(op.state).to.equal(OperationState.OPERATION_STATE_IN_PROGRESS);
      } finally {
        await blocker.query('ROLLBACK');
        blocker.release();
      }
    });
  });

  describe('VerifyAuditChain', () => {
    // Every movement is chained; the chain verifies per tenant and for all tenants.
    it('verifies one tenant and all tenants', async () => {
      const t = tenant();
      await topUp(t, 10n);
      await consume(t, 1n);
      const one = await credits.call<object, VerifyAuditChainResponse>('verifyAuditChain', { tenantId: t });
      expect(one).to.deep.include({ valid: true, rowsChecked: 2n, tenantsChecked: 1n });
      const all = await credits.call<object, VerifyAuditChainResponse>('verifyAuditChain', { tenantId: '' });
      expect(all.valid).to.equal(true);
      expect(all.tenantsChecked > 1n).to.equal(true);
    });

    // Only a key with credits:audit may verify.
    it('requires the audit scope', async () => {
      const writer = new Credits(service, testKeys.creditsWriter);
      const err = await failure(writer.call('verifyAuditChain', { tenantId: '' }));
      writer.close();
      expect(err.code).to.equal(Code.PERMISSION_DENIED);
    });
  });
});
