/**
 * Jepsen-style bank test: many parallel clients, two service instances on one
 * database, few tenants, a random mix of consumes, top-ups, reserves, commits,
 * releases, short-TTL holds the sweeper expires, and repeated keys (same
 * payload, concurrently or later, and different payloads). Afterwards, per
 * tenant: top-ups − consumed − captured = balance, held = reserved, nothing
 * negative, every key applied at most once, every replay equal to the
 * original, cache equal to the database, audit chain valid.
 */
import { randomInt } from 'node:crypto';
import { expect } from 'chai';
import type {
  CommitReservationResponse,
  ConsumeResponse,
  GetBalanceResponse,
  ReserveResponse,
  TopUpResponse,
  VerifyAuditChainResponse,
} from '../../../gen/shieldx/credits/v1/credits';
import { errorDetails } from '../../../platform/grpc-errors';
import type { RunningService } from '../../../platform/server';
import { uniquePrefix, waitFor } from '../../../testing/harness';
import { Credits, db, key, payment, startCredits, tenant } from '../../../testing/credits-kit';

const TENANTS = 4;
const WORKERS = 12;
const OPS_PER_WORKER = 40;
const EXPECTED_REASONS = new Set(['INSUFFICIENT_CREDITS', 'RESERVATION_ALREADY_FINALIZED', 'RESERVATION_EXPIRED', 'RESERVATION_NOT_FOUND']);

type Method = 'consume' | 'topUp' | 'reserve' | 'commitReservation' | 'releaseReservation';
interface Sent {
  method: Method;
  request: Record<string, unknown>;
  /** Transaction/reservation id of the first answer, or its error reason. */
  outcome?: string;
}

function outcomeOf(method: Method, res: unknown): string {
  if (method === 'reserve') return (res as ReserveResponse).reservation!.id;
  if (method === 'commitReservation') return `${(res as CommitReservationResponse).reservation!.id}:${(res as CommitReservationResponse).transaction?.id ?? ''}`;
  if (method === 'releaseReservation') return 'released';
  return (res as ConsumeResponse | TopUpResponse).transaction!.id;
}

describe('credits bank test', function () {
  this.timeout(120_000);
  const services: RunningService[] = [];
  const clients: Credits[] = [];

  before(async () => {
    const shared = { CREDITS_CACHE_KEY_PREFIX: uniquePrefix('bank'), CREDITS_RESERVATION_SWEEP_INTERVAL_MS: '200' };
    for (let i = 0; i < 2; i++) {
      services.push(await startCredits(shared));
      clients.push(new Credits(services[i]!));
    }
  });
  after(async () => {
    for (const c of clients) c.close();
    for (const s of services) await s.shutdown();
  });

  // The invariants of a bank hold after a concurrent random history.
  it('keeps every invariant under concurrent mixed traffic', async () => {
    const tenants = Array.from({ length: TENANTS }, () => tenant('bank'));
    const sent = new Map<string, Sent>();
    const held: { tenantId: string; id: string; amount: bigint }[] = [];
    const unexpected: string[] = [];
    const replayMismatches: string[] = [];
    let replays = 0;
    let reusedRefusals = 0;

    for (const t of tenants) {
      await clients[0]!.call('topUp', { tenantId: t, amount: 200n, idempotencyKey: key('seed'), reference: '', payment: payment(), metadata: {} });
    }
    const pick = <T>(xs: readonly T[]): T => xs[randomInt(xs.length)]!;
    const client = () => pick(clients);

    async function send(method: Method, request: Record<string, unknown>, via = client()): Promise<{ res?: unknown; reason?: string; message?: string }> {
      try {
        return { res: await via.call(method, request) };
      } catch (error) {
        return { reason: errorDetails(error)?.reason ?? String(error), message: String(error) };
      }
    }

    /** A fresh call: remembered by key, its first outcome recorded. */
    async function fresh(method: Method, request: Record<string, unknown>, concurrentDuplicate = false): Promise<unknown> {
      const k = request.idempotencyKey as string;
      const entry: Sent = { method, request };
      sent.set(`${request.tenantId}/${k}`, entry);
      const attempts = concurrentDuplicate ? [send(method, request, clients[0]), send(method, request, clients[1])] : [send(method, request)];
      const results = await Promise.all(attempts);
      const outcomes = results.map((r) => (r.res ? outcomeOf(method, r.res) : `error:${r.reason}`));
      if (new Set(outcomes).size !== 1) replayMismatches.push(`${method} ${k}: ${outcomes.join(' vs ')}`);
      const applied = results.filter((r) => r.res && !(r.res as { replayed: boolean }).replayed);
      if (applied.length > 1) replayMismatches.push(`${method} ${k} applied ${applied.length} times`);
      const first = results[0]!;
      entry.outcome = outcomes[0];
      if (first.reason && !EXPECTED_REASONS.has(first.reason)) unexpected.push(`${method}: ${first.reason} (${first.message})`);
      return first.res;
    }

    async function worker(): Promise<void> {
      for (let i = 0; i < OPS_PER_WORKER; i++) {
        const t = pick(tenants);
        const roll = randomInt(100);
        if (roll < 35) {
          await fresh('consume', { tenantId: t, amount: BigInt(randomInt(1, 26)), idempotencyKey: key('c'), reference: '', metadata: {} }, roll < 5);
        } else if (roll < 45) {
          await fresh('topUp', { tenantId: t, amount: BigInt(randomInt(1, 61)), idempotencyKey: key('t'), reference: '', payment: payment(), metadata: {} });
        } else if (roll < 60) {
          const short = randomInt(3) === 0;
          const res = (await fresh('reserve', {
            tenantId: t,
            amount: BigInt(randomInt(1, 31)),
            idempotencyKey: key('r'),
            reference: '',
            metadata: {},
            ttl: short ? { seconds: 0n, nanos: 300_000_000 } : { seconds: 60n, nanos: 0 },
          })) as ReserveResponse | undefined;
          if (res) held.push({ tenantId: t, id: res.reservation!.id, amount: res.reservation!.amount });
        } else if (roll < 78 && held.length > 0) {
          const r = pick(held);
          if (roll < 70) {
            // Whole hold (no amount) or a partial capture of 0..2, never more than held (that is INVALID_ARGUMENT).
            const amount = randomInt(2) === 0 ? undefined : BigInt(randomInt(0, Math.min(2, Number(r.amount)) + 1));
            await fresh('commitReservation', { tenantId: r.tenantId, reservationId: r.id, amount, idempotencyKey: key('cm') });
          } else {
            await fresh('releaseReservation', { tenantId: r.tenantId, reservationId: r.id, idempotencyKey: key('rl') });
          }
        } else if (sent.size > 0) {
          const [id, original] = pick([...sent.entries()]);
          if (original.outcome === undefined) continue;
          if (roll < 90) {
            // Same key, same payload: the original outcome, replayed.
            const { res, reason } = await send(original.method, original.request);
            const outcome = res ? outcomeOf(original.method, res) : `error:${reason}`;
            if (outcome !== original.outcome) replayMismatches.push(`${id}: ${original.outcome} then ${outcome}`);
            if (res && !(res as { replayed: boolean }).replayed) replayMismatches.push(`${id}: not marked replayed`);
            replays += 1;
          } else {
            // Same key, different payload: refused.
            const changed: Record<string, unknown> = { ...original.request, reference: `changed-${randomInt(1e9)}` };
            if (original.method === 'commitReservation' || original.method === 'releaseReservation') changed.reservationId = '00000000-0000-4000-8000-000000000001';
            const { reason } = await send(original.method, changed);
            if (reason !== 'IDEMPOTENCY_KEY_REUSED') replayMismatches.push(`${id}: different payload gave ${reason ?? 'success'}`);
            reusedRefusals += 1;
          }
        }
      }
    }

    /** Balance reads on every replica while the money moves: they fill each replica's near cache. */
    let working = true;
    let reads = 0;
    async function reader(via: Credits): Promise<void> {
      while (working) {
        await via.call<object, GetBalanceResponse>('getBalance', { tenantId: pick(tenants), consistentRead: false });
        reads += 1;
      }
    }
    const readers = clients.map((c) => reader(c));
    await Promise.all(Array.from({ length: WORKERS }, () => worker()));
    working = false;
    await Promise.all(readers);
    expect(reads).to.be.greaterThan(0);
    // Joined so that a failure prints every entry (chai truncates arrays).
    expect(unexpected.join('\n'), 'unexpected errors').to.equal('');
    expect(replayMismatches.join('\n'), 'replays').to.equal('');
    expect(replays).to.be.greaterThan(0);
    expect(reusedRefusals).to.be.greaterThan(0);

    // Let the sweeper expire every short hold (300 ms; the others hold for 60 s), including those not yet due:
    // after that nothing moves the accounts, so the database and every cache must settle on the same state.
    await waitFor('the sweeper to expire the short holds', async () => {
      const { rows } = await db().query(
        `SELECT count(*)::int AS n FROM credit_reservations WHERE tenant_id = ANY($1) AND state = 'HELD' AND expires_at <= now() + interval '5 seconds'`,
        [tenants],
      );
      return rows[0].n === 0 ? true : undefined;
    }, 10_000);

    for (const t of tenants) {
      const { rows } = await db().query(
        `SELECT a.balance, a.reserved, a.version,
                (SELECT coalesce(sum(amount), 0) FROM credit_transactions WHERE tenant_id = $1 AND type = 'TOP_UP') AS top_ups,
                (SELECT coalesce(sum(amount), 0) FROM credit_transactions WHERE tenant_id = $1 AND type = 'CONSUME') AS consumed,
                (SELECT coalesce(sum(amount), 0) FROM credit_transactions WHERE tenant_id = $1 AND type = 'CAPTURE') AS captured,
                (SELECT coalesce(sum(amount), 0) FROM credit_reservations WHERE tenant_id = $1 AND state = 'HELD') AS held,
                (SELECT count(*) FROM credit_transactions WHERE tenant_id = $1) AS transactions,
                (SELECT count(*) FROM credit_transactions WHERE tenant_id = $1 AND (balance_after < 0 OR reserved_after < 0 OR balance_after < reserved_after)) AS negative
           FROM credit_accounts a WHERE a.tenant_id = $1`,
        [t],
      );
      const r = rows[0];
      const [balance, reserved] = [BigInt(r.balance), BigInt(r.reserved)];
      expect(BigInt(r.top_ups) - BigInt(r.consumed) - BigInt(r.captured), `balance of ${t}`).to.equal(balance);
      expect(BigInt(r.held), `held of ${t}`).to.equal(reserved);
      expect(balance >= reserved && reserved >= 0n).to.equal(true);
      expect(Number(r.negative)).to.equal(0);
      // Every transaction of this run was one version step.
      expect(BigInt(r.version)).to.equal(BigInt(r.transactions));

      // What clients were told adds up to what the ledger holds.
      let toldConsumed = 0n;
      for (const s of sent.values()) {
        if (s.method === 'consume' && s.request.tenantId === t && s.outcome && !s.outcome.startsWith('error:')) toldConsumed += s.request.amount as bigint;
      }
      expect(toldConsumed, `consumed by ${t}`).to.equal(BigInt(r.consumed));

      // Every replica's cached view (near cache or Redis) agrees with the database once the last
      // write-through and its invalidations have landed (a replica sees another's write once they have).
      const fresh = await clients[1]!.call<object, GetBalanceResponse>('getBalance', { tenantId: t, consistentRead: true });
      for (const [i, c] of clients.entries()) {
        const cachedView = () => c.call<object, GetBalanceResponse>('getBalance', { tenantId: t, consistentRead: false });
        const sameVersion = async () => ((await cachedView()).account?.version === fresh.account?.version ? true : undefined);
        await waitFor(`replica ${i}'s cache of ${t} to match the database`, sameVersion, 2_000, 20).catch(() => undefined);
        const cached = await cachedView();
        expect(cached.fromCache, `replica ${i}'s cache of ${t}`).to.equal(true);
        expect(cached.account, `replica ${i}'s cache of ${t}: ${String(cached.account?.version)} vs ${String(fresh.account?.version)}`).to.deep.equal(fresh.account);
      }

      const chain = await clients[0]!.call<object, VerifyAuditChainResponse>('verifyAuditChain', { tenantId: t });
      expect(chain.valid).to.equal(true);
      expect(chain.rowsChecked).to.equal(BigInt(r.transactions));
    }

    // Every key moved money at most once per movement kind.
    const dup = await db().query(
      `SELECT tenant_id, idempotency_key, type, count(*) FROM credit_transactions
        WHERE tenant_id = ANY($1) AND idempotency_key <> '' GROUP BY 1, 2, 3 HAVING count(*) > 1`,
      [tenants],
    );
    expect(dup.rows).to.deep.equal([]);

    // The reads above went through the replicas' near caches, not only Redis.
    for (const service of services) {
      const localHits = (await service.registry.getSingleMetric('credits_cache_local_hits_total')!.get()).values[0]?.value ?? 0;
      expect(localHits, `${service.name} near-cache hits`).to.be.greaterThan(0);
    }
  });
});
