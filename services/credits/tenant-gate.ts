/**
 * One writer per tenant at a time inside this replica: the consume batcher and
 * the other writers (TopUp, Reserve, Commit/ReleaseReservation, BatchConsume).
 *
 * Why: the consume fast path decides a batch from the account state this
 * replica committed last (ledger.ts). A TopUp that commits while such a batch
 * is on its way makes it stale, so the batch falls back to the locked
 * transaction: measured with `bench/credits.ts --phases mix --mix
 * consume=90,topup=10`, one batch in eight. Both would wait on the account's
 * row lock anyway; waiting here instead, before either touches PostgreSQL,
 * lets every batch decide from the state the writer before it left.
 *
 * Across replicas the row lock (and the fast path's check under it) still
 * decides; this only orders the writers of one process. The reservation
 * expiry sweeper does not take the gate: a batch it overlaps falls back, as
 * one overlapping another replica's write does.
 *
 * Order: each tenant has a first-come queue. A writer waits in the queue of
 * every tenant it writes (it joins them all at once, so two writers are in
 * the same order everywhere and cannot deadlock) and goes when it heads them
 * all and none is held. The batcher joins a queue only when writers wait
 * there and it has items for the tenant (`wantBatch`); when its entry comes
 * to the head the tenant is the batcher's to take (`available`), so a steady
 * stream of writers cannot starve consumes, nor consume batches a writer.
 * Without waiting writers the batcher takes a free tenant at once, as before.
 */
export type Release = () => void;

interface Writer {
  readonly tenants: readonly string[];
  readonly grant: () => void;
}

/** The batcher's place in a tenant's queue. */
const BATCH = Symbol('batch');
type Entry = Writer | typeof BATCH;

/** Bound on writers waiting at once; beyond it acquire() rejects with GateFullError. */
export const GATE_WAITERS_MAX = 10_000;

export class GateFullError extends Error {
  constructor() {
    super(`tenant gate: ${GATE_WAITERS_MAX} writers are waiting already`);
    this.name = 'GateFullError';
  }
}

export class TenantGate {
  private readonly held = new Set<string>();
  /** Only tenants someone waits for have a queue (never an empty one). */
  private readonly queues = new Map<string, Entry[]>();
  /** Tenants free with the batcher's entry at the head of their queue: its to take. */
  private readonly batchTurns = new Set<string>();
  private writersWaiting = 0;
  private readonly releaseListeners: (() => void)[] = [];

  /** Whether the batcher may take `tenant` now. */
  available(tenant: string): boolean {
    return !this.held.has(tenant) && (!this.queues.has(tenant) || this.batchTurns.has(tenant));
  }

  /** Takes tenants the batcher has just seen available() (synchronously), using up its turn on each. */
  take(tenants: Iterable<string>): void {
    for (const t of tenants) {
      if (this.held.has(t)) throw new Error(`tenant gate: ${t} is already held`);
      this.held.add(t);
      if (this.batchTurns.delete(t)) this.shift(t);
    }
  }

  /** The batcher has items for `tenant` that could not go: it takes a place behind the writers waiting (once). */
  wantBatch(tenant: string): void {
    const queue = this.queues.get(tenant);
    // No writer waiting: the tenant comes back to the batcher when it is released.
    if (!queue || queue.includes(BATCH)) return;
    queue.push(BATCH);
  }

  /** Whether the batcher has turns it must use or give up (see passTurns). */
  get hasBatchTurns(): boolean {
    return this.batchTurns.size > 0;
  }

  /** The batcher gives up its turns on tenants it no longer has items for: the next in line goes. */
  passTurns(stillWanted: (tenant: string) => boolean): void {
    for (const t of [...this.batchTurns]) {
      if (stillWanted(t)) continue;
      this.batchTurns.delete(t);
      this.shift(t);
      this.advance(t);
    }
  }

  /** Waits until every one of `tenants` is free and this writer's turn, takes them all, and returns their release. */
  acquire(tenants: readonly string[]): Promise<Release> {
    const unique = [...new Set(tenants)];
    if (unique.every((t) => !this.held.has(t) && !this.queues.has(t))) {
      for (const t of unique) this.held.add(t);
      return Promise.resolve(this.releaseOnce(unique));
    }
    if (this.writersWaiting >= GATE_WAITERS_MAX) return Promise.reject(new GateFullError());
    return new Promise((resolve) => {
      const writer: Writer = { tenants: unique, grant: () => resolve(this.releaseOnce(unique)) };
      this.writersWaiting += 1;
      for (const t of unique) {
        const queue = this.queues.get(t);
        if (queue) queue.push(writer);
        else this.queues.set(t, [writer]);
      }
      // Free tenants whose queue this writer opened: it may head them all already.
      for (const t of unique) this.advance(t);
    });
  }

  /** Frees tenants taken with take() (the batcher, once its batch has committed). */
  release(tenants: Iterable<string>): void {
    const freed = [...tenants];
    for (const t of freed) this.held.delete(t);
    for (const t of freed) this.advance(t);
    for (const listener of this.releaseListeners) listener();
  }

  /** Called after every release (the batcher cuts the batches that waited for the tenant). */
  onRelease(listener: () => void): void {
    this.releaseListeners.push(listener);
  }

  private releaseOnce(tenants: readonly string[]): Release {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.release(tenants);
    };
  }

  /** Lets the head of a free tenant's queue go: the batcher's turn, or a writer heading all its queues. */
  private advance(tenant: string): void {
    if (this.held.has(tenant)) return;
    const head = this.queues.get(tenant)?.[0];
    if (head === undefined) return;
    if (head === BATCH) {
      this.batchTurns.add(tenant);
      return;
    }
    if (!head.tenants.every((t) => !this.held.has(t) && this.queues.get(t)?.[0] === head)) return;
    this.writersWaiting -= 1;
    for (const t of head.tenants) {
      this.shift(t);
      this.held.add(t);
    }
    head.grant();
  }

  /** Removes the head of a tenant's queue (dropping the queue once empty). */
  private shift(tenant: string): void {
    const queue = this.queues.get(tenant)!;
    queue.shift();
    if (queue.length === 0) this.queues.delete(tenant);
  }
}
