/**
 * Group commit for Consume.
 *
 * Why: one PostgreSQL transaction per consume costs ~5 round trips and one WAL
 * flush; under load those dominate. Calls that arrive while a batch is in
 * flight wait (at most the length of that batch) and then go together in one
 * transaction — three statements regardless of how many items — so throughput
 * grows with load instead of latency. At low load a call is flushed on the next
 * event-loop turn (setImmediate), so it pays no timer wait.
 *
 * Limits: at most `maxBatchItems` per transaction, `maxInFlight` transactions
 * at once, `maxQueuedItems` waiting (beyond that: RESOURCE_EXHAUSTED, so
 * overload sheds instead of queueing without bound).
 *
 * Batches in flight never share a tenant, nor run beside another writer of
 * this replica on it (TopUp, Reserve, ...: tenant-gate.ts): an item whose tenant
 * is in a running batch or held by such a writer waits for the next one (natural group commit per tenant: the next
 * batch is cut the moment the previous one commits — its answers then wait for
 * the cache write-through — holding everything that arrived meanwhile), while tenants not in flight start at once in a batch of
 * their own. So the ledger's fast path always decides from the state the
 * previous batch committed. (Pipelining a second batch per tenant, decided
 * from the state the first will commit, was measured: the two race for the
 * row locks in PostgreSQL, and the ~40 % of batches that overtook their
 * predecessor fell back to the transactional path; half the throughput.)
 *
 * Per-item semantics are those of a lone Consume: each item has its own
 * idempotency key and its own result; a business failure of one item does not
 * touch the others. Two calls with the same (tenant, key) never share a batch
 * (the second waits for the next one and replays). If a whole batch fails for
 * an unexpected reason, its items are retried one per transaction so that a
 * poison item fails alone.
 *
 * A queued item whose caller has gone (cancelled, or its deadline passed: its
 * signal aborted) is dropped when the next batch is cut, never applied: the
 * caller already has its error, and under overload the queue then drains
 * instead of spending the database on answers nobody reads. Once in a batch,
 * an item is applied whatever happens to its caller (the idempotency key and
 * GetOperation tell a caller that gave up what became of it).
 */
import type { Logger } from '../../platform/logger';
import { Code, ServiceError } from '../../platform/service-error';
import type { CreditsMetrics } from './credits-metrics';
import { consumeQueueFull, hasReason, serverShuttingDown } from './errors';
import type { ConsumeItem, ConsumeOutcome } from './ledger';
import type { TenantGate } from './tenant-gate';

export interface BatcherOptions {
  readonly maxBatchItems: number;
  readonly maxInFlight: number;
  readonly maxQueuedItems: number;
  /** Extra time to collect items before flushing when a slot is free (0 = next event-loop turn). */
  readonly lingerMs: number;
}

interface Pending {
  readonly item: ConsumeItem;
  readonly resolve: (outcome: ConsumeOutcome) => void;
  /** The caller's: aborted once nobody waits for the outcome. */
  readonly signal: AbortSignal | undefined;
}

export class ConsumeBatcher {
  private queue: Pending[] = [];
  private inFlight = 0;
  /** Batches not yet answered (in flight, or committed and writing through the cache). */
  private unanswered = 0;
  private scheduled = false;
  private closed = false;
  private readonly idle: (() => void)[] = [];

  constructor(
    /**
     * Applies a batch. May call `committed` once the batch is durable and the states it
     * leaves are known (before the cache write-through that precedes the answers): the
     * batch's tenants and slot are then free for the next batch.
     */
    private readonly apply: (items: readonly ConsumeItem[], committed?: () => void) => Promise<ConsumeOutcome[]>,
    private readonly options: BatcherOptions,
    private readonly metrics: CreditsMetrics,
    private readonly logger: Logger,
    /** Tenants of the batches in flight are held here, shared with the replica's other writers (tenant-gate.ts). */
    private readonly gate: TenantGate,
  ) {
    // A tenant was released: the items queued for it can go, or the turn it gave the batcher passes on.
    gate.onRelease(() => {
      if (this.queue.length === 0) this.passUnusedTurns();
      else this.schedule();
    });
  }

  /** Gives up the batcher's turns on tenants it has no items queued for (writers waiting there go next). */
  private passUnusedTurns(): void {
    if (!this.gate.hasBatchTurns) return;
    const queued = new Set(this.queue.map((p) => p.item.tenantId));
    this.gate.passTurns((tenant) => queued.has(tenant));
  }

  /** Resolves with the item's own outcome; never rejects. `signal`: the caller's (see the class comment). */
  submit(item: ConsumeItem, signal?: AbortSignal): Promise<ConsumeOutcome> {
    if (this.closed) return Promise.resolve({ error: serverShuttingDown() });
    if (this.queue.length >= this.options.maxQueuedItems) {
      return Promise.resolve({ error: consumeQueueFull() });
    }
    return new Promise((resolve) => {
      this.queue.push({ item, resolve, signal });
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.scheduled || this.inFlight >= this.options.maxInFlight || this.queue.length === 0) return;
    this.scheduled = true;
    const run = () => {
      this.scheduled = false;
      this.flush();
    };
    if (this.options.lingerMs > 0) setTimeout(run, this.options.lingerMs);
    else setImmediate(run);
  }

  private flush(): void {
    while (this.inFlight < this.options.maxInFlight && this.queue.length > 0) {
      const batch: Pending[] = [];
      const rest: Pending[] = [];
      const keys = new Set<string>();
      const tenants = new Set<string>();
      for (let i = 0; i < this.queue.length; i++) {
        const pending = this.queue[i]!;
        if (batch.length >= this.options.maxBatchItems) {
          // Full: the rest of the queue waits as it is (no per-item work on a long queue).
          for (let j = i; j < this.queue.length; j++) rest.push(this.queue[j]!);
          break;
        }
        if (pending.signal?.aborted) {
          this.metrics.consumeAbandoned.inc();
          pending.resolve({ error: ServiceError.from(pending.signal.reason) });
          continue;
        }
        if (!this.gate.available(pending.item.tenantId)) {
          // Behind writers waiting for the tenant, if any: its turn comes after them.
          this.gate.wantBatch(pending.item.tenantId);
          rest.push(pending);
          continue;
        }
        const id = `${pending.item.tenantId}\u0000${pending.item.key}`;
        if (keys.has(id)) {
          rest.push(pending);
          continue;
        }
        keys.add(id);
        tenants.add(pending.item.tenantId);
        batch.push(pending);
      }
      this.queue = rest;
      // Everything queued waits on a batch in flight: it is flushed when that one ends.
      if (batch.length === 0) break;
      this.gate.take(tenants);
      this.inFlight += 1;
      this.unanswered += 1;
      let released = false;
      const release = () => {
        if (released) return;
        released = true;
        this.inFlight -= 1;
        // Schedules the next batch (the gate's release listener).
        this.gate.release(tenants);
      };
      void this.run(batch, release).finally(() => {
        release();
        this.unanswered -= 1;
        this.notifyIfIdle();
      });
    }
    // Turns on tenants whose items were all cut or dropped must not keep writers waiting.
    this.passUnusedTurns();
    // Dropping abandoned items can leave nothing queued and nothing in flight.
    this.notifyIfIdle();
  }

  private notifyIfIdle(): void {
    if (this.unanswered === 0 && this.queue.length === 0) for (const done of this.idle.splice(0)) done();
  }

  private async run(batch: Pending[], release: () => void): Promise<void> {
    this.metrics.consumeBatchSize.observe(batch.length);
    try {
      const outcomes = await this.apply(batch.map((p) => p.item), release);
      batch.forEach((p, i) => p.resolve(outcomes[i]!));
    } catch (error) {
      const failure = ServiceError.from(error);
      if (batch.length === 1 || hasReason(failure, 'DATABASE_UNAVAILABLE')) {
        for (const p of batch) p.resolve({ error: failure });
        return;
      }
      this.logger.warn({ err: error, items: batch.length }, 'consume batch failed: retrying its items one by one');
      for (const p of batch) {
        try {
          const [outcome] = await this.apply([p.item]);
          p.resolve(outcome!);
        } catch (single) {
          p.resolve({ error: ServiceError.from(single) });
        }
      }
    }
  }

  /** Stops accepting items and waits for queued and in-flight ones to finish. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.unanswered === 0 && this.queue.length === 0) return;
    await new Promise<void>((resolve) => this.idle.push(resolve));
  }
}
