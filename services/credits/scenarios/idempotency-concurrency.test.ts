/**
 * Concurrent duplicates on the generic idempotent path (Ledger.execute: TopUp, Reserve,
 * CommitReservation, ReleaseReservation, BatchConsume; Consume has its own batch path, proven
 * in credits-rpc.test.ts). Eight identical calls at once, split over two service instances on
 * one database: one applies, the others replay its response, the money moves once. The same
 * key with two different payloads racing: exactly one payload applies, every call with the
 * other gets IDEMPOTENCY_KEY_REUSED (the proto's contract; never both applied).
 */
import { expect } from 'chai';
import type { CreditsServiceClient, ReserveResponse, VerifyAuditChainResponse } from '../../../gen/shieldx/credits/v1/credits';
import { errorDetails } from '../../../platform/grpc-errors';
import type { RunningService } from '../../../platform/server';
import { uniquePrefix } from '../../../testing/harness';
import { Credits, db, key, payment, startCredits, tenant } from '../../../testing/credits-kit';

const DUPLICATES = 8;

type Method = keyof CreditsServiceClient & ('topUp' | 'reserve' | 'commitReservation' | 'releaseReservation' | 'batchConsume');
type Replayable = { replayed: boolean } & Record<string, unknown>;
type Outcome = { res: Replayable; reason?: undefined } | { res?: undefined; reason: string };

/** What one case's calls act on, and the two payloads that share one key. */
interface Prepared {
  /** Tenant that owns the key (BatchConsume: the call's tenant_id). */
  readonly owner: string;
  /** Every tenant whose account the calls may move. */
  readonly tenants: readonly string[];
  /** Two requests with the same idempotency key and different payloads. */
  readonly requests: readonly [Record<string, unknown>, Record<string, unknown>];
}

interface Case {
  readonly method: Method;
  prepare(): Promise<Prepared>;
  /** Per tenant (in `tenants` order): balance and reserved once request `applied` has applied once. */
  readonly after: (applied: 0 | 1) => readonly { balance: bigint; reserved: bigint }[];
  /** credit_transactions (and audit) rows written under the key by request `applied`. */
  readonly movements: (applied: 0 | 1) => number;
}

describe('credits idempotency under concurrent duplicates', function () {
  this.timeout(60_000);
  let a: RunningService;
  let b: RunningService;
  let ca: Credits;
  let cb: Credits;

  before(async () => {
    // Two replicas on one database and one cache key space, as in production.
    const shared = { CREDITS_CACHE_KEY_PREFIX: uniquePrefix('idem-race') };
    a = await startCredits(shared);
    b = await startCredits(shared);
    ca = new Credits(a);
    cb = new Credits(b);
  });
  after(async () => {
    ca?.close();
    cb?.close();
    await Promise.all([a?.shutdown(), b?.shutdown()]);
  });

  async function fund(amount = 100n): Promise<string> {
    const t = tenant('race');
    await ca.call('topUp', { tenantId: t, amount, idempotencyKey: key('fund'), reference: '', payment: payment(), metadata: {} });
    return t;
  }

  async function hold(t: string, amount: bigint): Promise<string> {
    const res = await ca.call<object, ReserveResponse>('reserve', {
      tenantId: t,
      amount,
      idempotencyKey: key('hold'),
      reference: 'hold',
      metadata: {},
      ttl: { seconds: 600n, nanos: 0 },
    });
    return res.reservation!.id;
  }

  const cases: Case[] = [
    {
      method: 'topUp',
      // A fresh tenant: the first top-up also opens the account.
      prepare: async () => {
        const t = tenant('race');
        const k = key();
        const base = { tenantId: t, idempotencyKey: k, reference: 'r', payment: payment(), metadata: { m: 'v' } };
        return { owner: t, tenants: [t], requests: [{ ...base, amount: 50n }, { ...base, amount: 70n }] };
      },
      after: (w) => [{ balance: [50n, 70n][w]!, reserved: 0n }],
      movements: () => 1,
    },
    {
      method: 'reserve',
      prepare: async () => {
        const t = await fund();
        const base = { tenantId: t, idempotencyKey: key(), reference: 'r', metadata: {}, ttl: { seconds: 600n, nanos: 0 } };
        return { owner: t, tenants: [t], requests: [{ ...base, amount: 30n }, { ...base, amount: 40n }] };
      },
      after: (w) => [{ balance: 100n, reserved: [30n, 40n][w]! }],
      movements: () => 1,
    },
    {
      method: 'commitReservation',
      prepare: async () => {
        const t = await fund();
        const base = { tenantId: t, reservationId: await hold(t, 40n), idempotencyKey: key() };
        return { owner: t, tenants: [t], requests: [{ ...base, amount: 25n }, { ...base, amount: 10n }] };
      },
      after: (w) => [{ balance: [75n, 90n][w]!, reserved: 0n }],
      // The capture, and the release of the rest of the hold.
      movements: () => 2,
    },
    {
      method: 'releaseReservation',
      prepare: async () => {
        const t = await fund();
        const first = await hold(t, 40n);
        const second = await hold(t, 30n);
        const k = key();
        return {
          owner: t,
          tenants: [t],
          requests: [
            { tenantId: t, reservationId: first, idempotencyKey: k },
            { tenantId: t, reservationId: second, idempotencyKey: k },
          ],
        };
      },
      // The other hold is still held.
      after: (w) => [{ balance: 100n, reserved: [30n, 40n][w]! }],
      movements: () => 1,
    },
    {
      method: 'batchConsume',
      prepare: async () => {
        const [t1, t2] = [await fund(), await fund()];
        const k = key();
        const item = (tenantId: string, amount: bigint) => ({ tenantId, amount, reference: 'b', metadata: {} });
        return {
          owner: t1,
          tenants: [t1, t2],
          requests: [
            { tenantId: t1, idempotencyKey: k, atomic: false, items: [item(t1, 10n), item(t2, 20n), item(t1, 5n)] },
            { tenantId: t1, idempotencyKey: k, atomic: true, items: [item(t1, 1n)] },
          ],
        };
      },
      after: (w) => [
        { balance: [85n, 99n][w]!, reserved: 0n },
        { balance: [80n, 100n][w]!, reserved: 0n },
      ],
      movements: (w) => [3, 1][w]!,
    },
  ];

  /** Sends each request at once, alternately through replica a and replica b. */
  async function race(method: Method, requests: readonly Record<string, unknown>[]): Promise<Outcome[]> {
    return Promise.all(
      requests.map(async (request, i): Promise<Outcome> => {
        try {
          return { res: await (i % 2 === 0 ? ca : cb).call<object, Replayable>(method, request) };
        } catch (error) {
          const details = errorDetails(error);
          if (!details) throw error;
          return { reason: details.reason };
        }
      }),
    );
  }

  /** The response without its `replayed` flag: what every duplicate must be told alike. */
  function body(res: Replayable): Record<string, unknown> {
    const { replayed: _, ...rest } = res;
    return rest;
  }

  /** Asserts the answers to one payload: one applied, the rest replays of exactly its response. */
  function appliedOnce(outcomes: readonly Outcome[], what: string): void {
    const reasons = outcomes.filter((o) => o.reason !== undefined).map((o) => o.reason);
    expect(reasons, `${what}: failed calls`).to.deep.equal([]);
    const responses = outcomes.map((o) => o.res!);
    expect(responses.filter((r) => !r.replayed), `${what}: calls that applied`).to.have.length(1);
    for (const r of responses) expect(body(r), `${what}: every duplicate's response`).to.deep.equal(body(responses[0]!));
  }

  /** Asserts that the money moved exactly as request `applied` once, and the key holds one record. */
  async function movedOnce(c: Case, prepared: Prepared, applied: 0 | 1, k: string): Promise<void> {
    const { rows: accounts } = await db().query(
      `SELECT tenant_id, balance::text, reserved::text FROM credit_accounts WHERE tenant_id = ANY($1)`,
      [prepared.tenants],
    );
    const byTenant = new Map(accounts.map((r) => [r.tenant_id, { balance: BigInt(r.balance), reserved: BigInt(r.reserved) }]));
    expect(prepared.tenants.map((t) => byTenant.get(t)), `${c.method}: accounts`).to.deep.equal(c.after(applied));

    const { rows } = await db().query(
      `SELECT (SELECT count(*) FROM credit_transactions WHERE tenant_id = ANY($1) AND idempotency_key = $3)::int AS transactions,
              (SELECT count(*) FROM credit_audit_logs WHERE tenant_id = ANY($1) AND idempotency_key = $3)::int AS audits,
              (SELECT count(*) FROM credit_payments p JOIN credit_transactions x ON x.id = p.transaction_id
                WHERE x.tenant_id = ANY($1) AND x.idempotency_key = $3)::int AS payments,
              (SELECT count(*) FROM credit_reservations WHERE tenant_id = ANY($1))::int AS reservations,
              (SELECT array_agg(state ORDER BY key) FROM credit_idempotency_keys WHERE tenant_id = $2 AND key = $3) AS records`,
      [prepared.tenants, prepared.owner, k],
    );
    const expectedReservations = { topUp: 0, reserve: 1, commitReservation: 1, releaseReservation: 2, batchConsume: 0 }[c.method];
    expect(rows[0], `${c.method}: rows written under the key`).to.deep.equal({
      transactions: c.movements(applied),
      audits: c.movements(applied),
      payments: c.method === 'topUp' ? 1 : 0,
      reservations: expectedReservations,
      records: ['SUCCEEDED'],
    });
    // One chain per tenant, never forked by two writers of one key.
    for (const t of prepared.tenants) {
      const chain = await ca.call<object, VerifyAuditChainResponse>('verifyAuditChain', { tenantId: t });
      expect(chain.valid, `${c.method}: audit chain of ${t}`).to.equal(true);
    }
  }

  for (const c of cases) {
    // Eight identical calls at once over two replicas: applied once, everyone gets that response, one record.
    it(`${c.method}: applies concurrent identical duplicates once, on either replica`, async () => {
      const prepared = await c.prepare();
      const request = prepared.requests[0];
      const outcomes = await race(c.method, Array.from({ length: DUPLICATES }, () => request));
      appliedOnce(outcomes, c.method);
      await movedOnce(c, prepared, 0, request.idempotencyKey as string);
      // And a later duplicate replays the same response.
      const [late] = await race(c.method, [request]);
      expect(late!.res?.replayed).to.equal(true);
      expect(body(late!.res!)).to.deep.equal(body(outcomes[0]!.res!));
    });

    // One key, two payloads racing (four calls each, over two replicas): one payload applies once, the other is refused.
    it(`${c.method}: applies one of two different payloads racing on one key, refuses the other`, async () => {
      const prepared = await c.prepare();
      const requests = Array.from({ length: DUPLICATES }, (_, i) => prepared.requests[i % 2 === 0 ? 0 : 1]!);
      const outcomes = await race(c.method, requests);
      const payload = (which: 0 | 1) => outcomes.filter((_, i) => requests[i] === prepared.requests[which]);
      const applied: 0 | 1 = payload(0).some((o) => o.res) ? 0 : 1;
      const refused: 0 | 1 = applied === 0 ? 1 : 0;
      appliedOnce(payload(applied), `${c.method} winning payload`);
      expect(payload(refused).map((o) => o.reason ?? 'applied'), `${c.method} other payload`).to.deep.equal(
        Array.from({ length: DUPLICATES / 2 }, () => 'IDEMPOTENCY_KEY_REUSED'),
      );
      await movedOnce(c, prepared, applied, prepared.requests[0].idempotencyKey as string);
    });
  }
});
