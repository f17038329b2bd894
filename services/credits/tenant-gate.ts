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
 * decides; this only orders the writers of one process.
 *
 * Fairness: a writer that waits marks its tenants wanted, and the batcher
 * takes no wanted tenant, so a steady stream of consumes cannot starve a
 * top-up; waiting writers are served in arrival order. A writer takes all its
 * tenants at once or none, and nobody waits for the gate while holding it, so
 * there is no deadlock.
 */
export type Release = () => void;

interface Waiter {
  readonly tenants: readonly string[];
  readonly grant: () => void;
}

/** Bound on writers waiting at once; beyond it acquire() throws (the caller answers RESOURCE_EXHAUSTED). */
export const GATE_WAITERS_MAX = 10_000;

export class TenantGate {
  private readonly held = new Set<string>();
  /** Tenants a waiting writer needs, with how many waiters need each. */
  private readonly wanted = new Map<string, number>();
  private waiters: Waiter[] = [];
  private readonly releaseListeners: (() => void)[] = [];

  /** Whether the batcher may take `tenant` now: nobody holds it and no writer waits for it. */
  available(tenant: string): boolean {
    return !this.held.has(tenant) && !this.wanted.has(tenant);
  }

  /** Takes tenants the caller has just seen available() (the batcher, synchronously). */
  take(tenants: Iterable<string>): void {
    for (const t of tenants) {
      if (this.held.has(t)) throw new Error(`tenant gate: ${t} is already held`);
      this.held.add(t);
    }
  }

  /** Waits until every one of `tenants` is free, takes them all, and returns their release. */
  acquire(tenants: readonly string[]): Promise<Release> {
    const unique = [...new Set(tenants)];
    if (unique.every((t) => this.available(t))) {
      this.take(unique);
      return Promise.resolve(this.releaseOnce(unique));
    }
    if (this.waiters.length >= GATE_WAITERS_MAX) return Promise.reject(new Error('tenant gate: too many writers waiting'));
    return new Promise((resolve) => {
      for (const t of unique) this.wanted.set(t, (this.wanted.get(t) ?? 0) + 1);
      this.waiters.push({ tenants: unique, grant: () => resolve(this.releaseOnce(unique)) });
    });
  }

  /** Frees tenants taken with take() (the batcher, once its batch has committed). */
  release(tenants: Iterable<string>): void {
    for (const t of tenants) this.held.delete(t);
    this.grantWaiters();
    for (const listener of this.releaseListeners) listener();
  }

  /** Called after every release, e.g. for the batcher to cut batches for tenants freed by a writer. */
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

  /** Grants waiters in arrival order; a waiter never overtakes an earlier one that needs one of its tenants. */
  private grantWaiters(): void {
    const blocked = new Set<string>();
    const still: Waiter[] = [];
    for (const waiter of this.waiters) {
      if (waiter.tenants.some((t) => this.held.has(t) || blocked.has(t))) {
        for (const t of waiter.tenants) blocked.add(t);
        still.push(waiter);
        continue;
      }
      for (const t of waiter.tenants) {
        const n = this.wanted.get(t)! - 1;
        if (n === 0) this.wanted.delete(t);
        else this.wanted.set(t, n);
        this.held.add(t);
      }
      waiter.grant();
    }
    this.waiters = still;
  }
}
