/**
 * The consume batcher's edges: overload (queue full → RESOURCE_EXHAUSTED
 * OVERLOADED, the refused calls write nothing) and shutdown (calls after close
 * → UNAVAILABLE SERVER_SHUTTING_DOWN; calls queued before close all complete).
 *
 * Made deterministic without timing: the batch in flight is held either by a
 * gate in a hand-written apply function (ConsumeBatcher directly), or — over
 * real gRPC and PostgreSQL — by a test transaction holding the tenant's account
 * row lock, released only once the calls under test are where they should be.
 */
import { expect } from 'chai';
import pg from 'pg';
import { Registry } from 'prom-client';
import type { ConsumeResponse } from '../../../gen/shieldx/credits/v1/credits';
import { errorDetails } from '../../../platform/grpc-errors';
import { createLogger } from '../../../platform/logger';
import type { RunningService } from '../../../platform/server';
import { Code, ServiceError } from '../../../platform/service-error';
import type { ErrorDetails } from '../../../platform/status-details';
import { waitFor } from '../../../testing/harness';
import { ConsumeBatcher } from '../consume-batcher';
import { CreditsMetrics } from '../credits-metrics';
import { Credits, db, key, keyStored, ledgerState, payment, startCredits, tenant } from '../../../testing/credits-kit';
import type { ConsumeItem, ConsumeOutcome } from '../ledger';
import { TenantGate } from '../tenant-gate';

/** An apply function whose batches wait at a gate the test opens. */
class GatedApply {
  /** Keys of the items of each batch, in call order. */
  readonly batches: string[][] = [];
  private readonly arrivals: (() => void)[] = [];
  private release!: () => void;
  private readonly gate = new Promise<void>((resolve) => (this.release = resolve));

  constructor(private readonly fail = false) {}

  readonly apply = async (items: readonly ConsumeItem[]): Promise<ConsumeOutcome[]> => {
    this.batches.push(items.map((i) => i.key));
    for (const arrived of this.arrivals.splice(0)) arrived();
    await this.gate;
    if (this.fail) throw new Error('apply failed');
    return items.map(() => ({ response: { transaction: undefined, account: undefined, replayed: false } }));
  };

  /** Resolves once `n` batches have reached apply. */
  async called(n: number): Promise<void> {
    while (this.batches.length < n) await new Promise<void>((resolve) => this.arrivals.push(resolve));
  }

  open(): void {
    this.release();
  }

  applied(): string[] {
    return this.batches.flat();
  }
}

function item(k: string, tenantId = 't'): ConsumeItem {
  return { tenantId, key: k, amount: 1n, reference: '', metadata: {}, actor: 'test', requestHash: Buffer.alloc(32) };
}

function batcher(
  apply: GatedApply,
  options: { maxBatchItems?: number; maxInFlight?: number; maxQueuedItems?: number } = {},
  gate = new TenantGate(),
): ConsumeBatcher {
  return new ConsumeBatcher(
    apply.apply,
    { maxBatchItems: 1, maxInFlight: 1, maxQueuedItems: 100, lingerMs: 0, ...options },
    new CreditsMetrics(new Registry()),
    createLogger('credits-test', 'silent'),
    gate,
  );
}

function errorOf(outcome: ConsumeOutcome): { code: number; reason: string } {
  expect(outcome).to.have.property('error');
  const { code, reason } = (outcome as { error: { code: number; reason: string } }).error;
  return { code, reason };
}

describe('ConsumeBatcher', () => {
  // With one batch in flight and the queue full, the next call is refused at once with RESOURCE_EXHAUSTED OVERLOADED
  // and never reaches apply; the queued calls complete; once drained, calls are accepted again.
  it('sheds load beyond maxQueuedItems with OVERLOADED', async () => {
    const gated = new GatedApply();
    const b = batcher(gated, { maxInFlight: 1, maxQueuedItems: 2 });
    const first = b.submit(item('a'));
    await gated.called(1);
    const queued = [b.submit(item('b')), b.submit(item('c'))];
    const refused = await b.submit(item('d'));
    expect(errorOf(refused)).to.deep.equal({ code: Code.RESOURCE_EXHAUSTED, reason: 'OVERLOADED' });
    gated.open();
    for (const outcome of await Promise.all([first, ...queued])) expect(outcome).to.have.property('response');
    expect(gated.applied()).to.deep.equal(['a', 'b', 'c']);
    expect(await b.submit(item('e'))).to.have.property('response');
    expect(gated.applied()).not.to.include('d');
    await b.close();
  });

  // After close() a call is refused with UNAVAILABLE SERVER_SHUTTING_DOWN; everything queued or in flight before close
  // is applied exactly once and resolved, and close() resolves only after that.
  it('completes queued calls on close and refuses later ones', async () => {
    const gated = new GatedApply();
    const b = batcher(gated, { maxInFlight: 1, maxBatchItems: 2 });
    const inFlight = b.submit(item('a'));
    await gated.called(1);
    const queued = [b.submit(item('b')), b.submit(item('c')), b.submit(item('d', 'u'))];
    let closed = false;
    const closing = b.close().then(() => {
      closed = true;
    });
    const late = await b.submit(item('late'));
    expect(errorOf(late)).to.deep.equal({ code: Code.UNAVAILABLE, reason: 'SERVER_SHUTTING_DOWN' });
    // The gate is shut: close() cannot have finished, whatever the scheduling.
    await new Promise((resolve) => setImmediate(resolve));
    expect(closed).to.equal(false);
    gated.open();
    for (const outcome of await Promise.all([inFlight, ...queued])) expect(outcome).to.have.property('response');
    await closing;
    expect(gated.applied().sort()).to.deep.equal(['a', 'b', 'c', 'd']);
    expect(errorOf(await b.submit(item('later')))).to.deep.equal({ code: Code.UNAVAILABLE, reason: 'SERVER_SHUTTING_DOWN' });
  });

  // A queued call whose caller has gone (its signal aborted: cancelled, or past its deadline) is dropped when the next
  // batch is cut: it gets its caller's error and never reaches apply; the others in the queue are applied as usual.
  it('drops queued calls whose caller has gone', async () => {
    const gated = new GatedApply();
    const b = batcher(gated, { maxInFlight: 1, maxBatchItems: 10 });
    const inFlight = b.submit(item('a'));
    await gated.called(1);
    const caller = new AbortController();
    const gone = b.submit(item('b'), caller.signal);
    const waiting = b.submit(item('c'), new AbortController().signal);
    caller.abort(new ServiceError(Code.DEADLINE_EXCEEDED, 'DEADLINE_EXCEEDED', 'no response within 100 ms'));
    gated.open();
    expect(errorOf(await gone)).to.deep.equal({ code: Code.DEADLINE_EXCEEDED, reason: 'DEADLINE_EXCEEDED' });
    for (const outcome of await Promise.all([inFlight, waiting])) expect(outcome).to.have.property('response');
    expect(gated.applied()).to.deep.equal(['a', 'c']);
    // Once in a batch, an item is applied whatever happens to its caller.
    const late = new AbortController();
    const gated2 = new GatedApply();
    const b2 = batcher(gated2);
    const applying = b2.submit(item('d'), late.signal);
    await gated2.called(1);
    late.abort(new ServiceError(Code.CANCELLED, 'CANCELLED', 'call cancelled by the client'));
    gated2.open();
    expect(await applying).to.have.property('response');
    await Promise.all([b.close(), b2.close()]);
  });

  // close() waits for the queue to drain; a queue of only abandoned calls drains without any batch.
  it('closes when the only queued calls were abandoned', async () => {
    const gated = new GatedApply();
    const b = batcher(gated, { maxInFlight: 1 });
    const caller = new AbortController();
    caller.abort(new ServiceError(Code.CANCELLED, 'CANCELLED', 'call cancelled by the client'));
    const gone = b.submit(item('a'), caller.signal);
    await b.close();
    expect(errorOf(await gone)).to.deep.equal({ code: Code.CANCELLED, reason: 'CANCELLED' });
    expect(gated.applied()).to.deep.equal([]);
  });

  // A batch that throws while the batcher is closing still settles every queued call (each retried alone, each with its error):
  // nobody is left waiting and close() resolves.
  it('settles every queued call when apply fails during close', async () => {
    const gated = new GatedApply(true);
    const b = batcher(gated, { maxInFlight: 1, maxBatchItems: 10 });
    const first = b.submit(item('a'));
    await gated.called(1);
    const queued = [b.submit(item('b')), b.submit(item('c'))];
    const closing = b.close();
    gated.open();
    for (const outcome of await Promise.all([first, ...queued])) expect(errorOf(outcome)).to.deep.equal({ code: Code.INTERNAL, reason: 'INTERNAL' });
    await closing;
    // The failed two-item batch was retried one item at a time.
    expect(gated.batches).to.deep.equal([['a'], ['b', 'c'], ['b'], ['c']]);
  });

  // A batch that fails as a whole (one poison item) is retried one item per call: the poison item fails alone with
  // its own error, every other item gets its own result.
  it('isolates a poison item by retrying a failed batch one item at a time', async () => {
    const batches: string[][] = [];
    const apply = async (items: readonly ConsumeItem[]): Promise<ConsumeOutcome[]> => {
      batches.push(items.map((i) => i.key));
      if (items.some((i) => i.key === 'poison')) throw new Error('poison item');
      return items.map((i) => ({ response: { transaction: undefined, account: undefined, replayed: i.key === 'b' } }));
    };
    const b = new ConsumeBatcher(apply, { maxBatchItems: 10, maxInFlight: 1, maxQueuedItems: 100, lingerMs: 0 }, new CreditsMetrics(new Registry()), createLogger('credits-test', 'silent'), new TenantGate());
    const outcomes = await Promise.all([b.submit(item('a')), b.submit(item('poison')), b.submit(item('b'))]);
    expect(batches).to.deep.equal([['a', 'poison', 'b'], ['a'], ['poison'], ['b']]);
    expect(outcomes[0]).to.deep.equal({ response: { transaction: undefined, account: undefined, replayed: false } });
    expect(errorOf(outcomes[1]!)).to.deep.equal({ code: Code.INTERNAL, reason: 'INTERNAL' });
    expect(outcomes[2]).to.deep.equal({ response: { transaction: undefined, account: undefined, replayed: true } });
    await b.close();
  });

  // Closing an idle batcher resolves at once and refuses what comes after.
  // Writers of the same tenant (TopUp, Reserve, ... through the shared gate) arriving back to back do not
  // starve consumes: the batch queues behind the writers already waiting and goes before those that come later.
  it('gets consumes through a steady stream of writers on their tenant', async () => {
    const gate = new TenantGate();
    const apply = new GatedApply();
    apply.open();
    const b = batcher(apply, { maxBatchItems: 10 }, gate);
    let writes = 0;
    let running = true;
    /** A writer loop: takes the tenant, holds it for an event-loop turn, lets go, again. */
    const writerLoop = async () => {
      for (let i = 0; i < 30 && running; i++) {
        const release = await gate.acquire(['t']);
        await new Promise((resolve) => setImmediate(resolve));
        writes += 1;
        release();
      }
    };
    const loops = [writerLoop(), writerLoop()];
    await new Promise((resolve) => setImmediate(resolve));
    const outcome = await b.submit(item('c1'));
    const writesBeforeConsume = writes;
    running = false;
    await Promise.all(loops);
    expect(outcome).to.have.property('response');
    // Two writers were waiting at most when it queued; it must not have waited for the 60 the loops could make.
    expect(writesBeforeConsume).to.be.lessThan(5);
    await b.close();
  });

  it('closes at once when idle', async () => {
    const gated = new GatedApply();
    const b = batcher(gated);
    await b.close();
    expect(errorOf(await b.submit(item('a')))).to.deep.equal({ code: Code.UNAVAILABLE, reason: 'SERVER_SHUTTING_DOWN' });
    expect(gated.batches).to.have.length(0);
  });
});

describe('Consume under overload and shutdown (gRPC)', function () {
  this.timeout(60_000);

  /** Holds a tenant's account row lock in a test transaction until released. */
  async function lockAccount(tenantId: string): Promise<{ pid: number; release: () => Promise<void> }> {
    const client: pg.PoolClient = await db().connect();
    await client.query('BEGIN');
    await client.query('SELECT 1 FROM credit_accounts WHERE tenant_id = $1 FOR UPDATE', [tenantId]);
    const { rows } = await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
    let released = false;
    return {
      pid: rows[0]!.pid,
      release: async () => {
        if (released) return;
        released = true;
        await client.query('ROLLBACK');
        client.release();
      },
    };
  }

  /** Waits until some PostgreSQL backend is blocked by `pid` (the batch in flight is waiting on our lock). */
  function blockedBy(pid: number): Promise<true> {
    return waitFor('a consume batch to wait on the account lock', async () => {
      const { rows } = await db().query<{ n: number }>('SELECT count(*)::int AS n FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))', [pid]);
      return rows[0]!.n > 0 ? true : undefined;
    });
  }

  type Settled = { key: string; response?: ConsumeResponse; error?: ErrorDetails };

  function consumeTracked(credits: Credits, tenantId: string, k: string, settled: Settled[]): Promise<Settled> {
    return credits
      .call<object, ConsumeResponse>('consume', { tenantId, amount: 1n, idempotencyKey: k, reference: '', metadata: {} })
      .then(
        (response) => ({ key: k, response }),
        (error: unknown) => ({ key: k, error: errorDetails(error) ?? ({ code: -1, reason: String(error) } as ErrorDetails) }),
      )
      .then((s) => {
        settled.push(s);
        return s;
      });
  }

  interface HeldBatch {
    readonly service: RunningService;
    readonly credits: Credits;
    /** A tenant funded with 100 credits. */
    readonly t: string;
    /** Its ledger state before the first consume. */
    readonly before: Record<string, string>;
    readonly held: { release: () => Promise<void> };
    readonly settled: Settled[];
    /** The consume in flight, waiting on the tenant's row lock. */
    readonly first: Promise<Settled>;
  }

  /**
   * Runs `test` against a credits service whose first consume of a funded tenant is in flight and
   * held on the tenant's row lock; afterwards releases the lock and stops the service, whatever happened.
   */
  async function withHeldBatch(env: Record<string, string>, test: (h: HeldBatch) => Promise<void>): Promise<void> {
    const service: RunningService = await startCredits(env);
    const credits = new Credits(service);
    let held: { release: () => Promise<void> } | undefined;
    try {
      const t = tenant();
      await credits.call('topUp', { tenantId: t, amount: 100n, idempotencyKey: key(), reference: '', payment: payment(), metadata: {} });
      const before = JSON.parse(await ledgerState(t)) as Record<string, string>;
      const lock = await lockAccount(t);
      held = lock;
      const settled: Settled[] = [];
      const first = consumeTracked(credits, t, key(), settled);
      await blockedBy(lock.pid);
      await test({ service, credits, t, before, held: lock, settled, first });
    } finally {
      await held?.release();
      credits.close();
      await service.shutdown();
    }
  }

  // Queue of 1 and 1 batch in flight (held on the row lock): of five more calls one queues and four are refused with
  // RESOURCE_EXHAUSTED OVERLOADED; the refused write nothing (no record, their keys stay usable); exactly two debits land.
  it('refuses calls beyond the queue with OVERLOADED and writes nothing for them', () =>
    withHeldBatch({ CREDITS_BATCH_MAX_QUEUED: '1', CREDITS_BATCH_MAX_IN_FLIGHT: '1' }, async ({ credits, t, before, held, settled, first }) => {
      const more = Array.from({ length: 5 }, () => consumeTracked(credits, t, key(), settled));
      // The refusals come back while the lock is still held; the queued call cannot finish before we release it.
      await waitFor('four calls to be refused', async () => (settled.length >= 4 ? true : undefined));
      const refused = [...settled];
      expect(refused).to.have.length(4);
      for (const r of refused) {
        expect(r.error, r.key).to.include({ code: Code.RESOURCE_EXHAUSTED, reason: 'OVERLOADED' });
        expect(await keyStored(t, r.key)).to.equal(false);
      }
      await held.release();
      const done = await Promise.all([first, ...more]);
      const applied = done.filter((s) => s.response);
      expect(applied).to.have.length(2);
      const after = JSON.parse(await ledgerState(t));
      expect(after).to.include({ balance: '98', version: String(BigInt(before.version!) + 2n), transactions: String(Number(before.transactions) + 2) });
      expect(after.keys).to.equal(String(Number(before.keys) + 2));
      // A refused key was never stored: used again now, it applies (not a replay).
      const retry = await credits.call<object, ConsumeResponse>('consume', { tenantId: t, amount: 1n, idempotencyKey: refused[0]!.key, reference: '', metadata: {} });
      expect(retry.replayed).to.equal(false);
      expect(retry.account!.balance).to.equal(97n);
    }));

  // A call whose deadline passes while it waits behind a batch in flight is answered DEADLINE_EXCEEDED and then
  // dropped, never applied: its key stays unused, only the held call's debit lands.
  it('drops a queued call once its deadline has passed', () =>
    withHeldBatch({ CREDITS_BATCH_MAX_IN_FLIGHT: '1' }, async ({ service, credits, t, held, first }) => {
      const lateKey = key();
      const late = await credits
        .call<object, ConsumeResponse>('consume', { tenantId: t, amount: 1n, idempotencyKey: lateKey, reference: '', metadata: {} }, 300)
        .then(() => undefined, (error: unknown) => errorDetails(error));
      expect(late).to.include({ code: Code.DEADLINE_EXCEEDED });
      await held.release();
      expect((await first).response?.account?.balance).to.equal(99n);
      const abandoned = service.registry.getSingleMetric('credits_consume_abandoned_total')!;
      await waitFor('the late call to be dropped', async () => (((await abandoned.get()).values[0]?.value ?? 0) >= 1 ? true : undefined));
      expect(await keyStored(t, lateKey)).to.equal(false);
      expect(JSON.parse(await ledgerState(t))).to.include({ balance: '99' });
    }));

  // Calls that reached the server before shutdown began — one in flight on the row lock, three queued behind it — all
  // complete successfully during the drain and each debit lands exactly once: none is lost or failed by the shutdown.
  it('completes calls queued before shutdown', () =>
    withHeldBatch({ CREDITS_BATCH_MAX_IN_FLIGHT: '1' }, async ({ service, credits, t, held, settled, first }) => {
      const calls = [first, ...Array.from({ length: 3 }, () => consumeTracked(credits, t, key(), settled))];
      // All four requests have been received by the server (the metrics interceptor counted them).
      const metric = service.registry.getSingleMetric('grpc_server_msg_received_total')!;
      await waitFor('the server to receive four Consume requests', async () => {
        const { values } = await metric.get();
        const consumes = values.find((v) => v.labels.grpc_method === 'Consume')?.value ?? 0;
        return consumes >= 4 ? true : undefined;
      });
      expect(settled).to.have.length(0);
      const stopping = service.shutdown('test');
      await held.release();
      const done = await Promise.all(calls);
      for (const s of done) expect(s.error, s.key).to.equal(undefined);
      await stopping;
      const { rows } = await db().query<{ balance: string; n: number }>(
        `SELECT (SELECT balance::text FROM credit_accounts WHERE tenant_id = $1) AS balance,
                (SELECT count(*)::int FROM credit_transactions WHERE tenant_id = $1 AND type = 'CONSUME') AS n`,
        [t],
      );
      expect(rows[0]).to.deep.equal({ balance: '96', n: 4 });
      for (const s of done) expect(await keyStored(t, s.key)).to.equal(true);
    }));
});
