/**
 * Leader lease in PostgreSQL: one row per lease (`shadow_leases`), taken or
 * renewed by a single atomic upsert that succeeds only for the current holder
 * or once the lease has expired. No session state (no advisory locks, no
 * LISTEN), so it works through PgBouncer in transaction pooling mode.
 *
 * Expiry is judged by the database clock; the holder's own view of "still
 * mine" is kept on its monotonic clock from the moment it *sent* the renewal,
 * minus a safety margin, so a holder stops acting before anyone else can take
 * over even if its renewal answer came back late.
 *
 * That clock cannot stop a process frozen (SIGSTOP, a long GC, a VM pause) between
 * its check and its write. So the lease also has an epoch, one more each time it
 * changes hands: a write carries the epoch it was decided in, `isCurrent(epoch)`
 * asks the database, and the routers refuse a write whose epoch is no longer the
 * newest (traffic-router.ts).
 */
import { performance } from 'node:perf_hooks';
import type pg from 'pg';

export class PgLease {
  private validUntilMs = 0;
  private heldEpoch = 0;

  constructor(
    private readonly pool: pg.Pool,
    readonly name: string,
    readonly holder: string,
    readonly ttlSeconds: number,
  ) {
    if (!Number.isInteger(ttlSeconds) || ttlSeconds < 1) throw new RangeError('ttlSeconds must be a positive integer');
    if (holder.length === 0) throw new RangeError('holder must not be empty');
  }

  /** True while this holder may act (by its own conservative clock). */
  isHeld(): boolean {
    return performance.now() < this.validUntilMs;
  }

  /** The epoch of our tenure (0 when we do not hold the lease). */
  get epoch(): number {
    return this.isHeld() ? this.heldEpoch : 0;
  }

  /** Milliseconds we may still act (by our own clock); 0 when not held. */
  remainingMs(): number {
    return Math.max(0, this.validUntilMs - performance.now());
  }

  /**
   * Takes the lease if free or expired, renews it if ours. Returns whether we hold it. A new
   * holder gets a new, larger epoch (a renewal keeps it): the database clock in milliseconds, or
   * the previous epoch + 1 if that is larger, so epochs keep growing even if the row is deleted.
   */
  async acquireOrRenew(): Promise<boolean> {
    const sentAt = performance.now();
    const { rows } = await this.pool.query<{ holder: string; epoch: string }>(
      `INSERT INTO shadow_leases (name, holder, expires_at, acquired_at, epoch)
       VALUES ($1, $2, now() + $3 * interval '1 second', now(), floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint)
       ON CONFLICT (name) DO UPDATE
          SET holder = EXCLUDED.holder,
              expires_at = EXCLUDED.expires_at,
              acquired_at = CASE WHEN shadow_leases.holder = EXCLUDED.holder THEN shadow_leases.acquired_at ELSE now() END,
              epoch = CASE WHEN shadow_leases.holder = EXCLUDED.holder THEN shadow_leases.epoch ELSE greatest(shadow_leases.epoch + 1, EXCLUDED.epoch) END
        WHERE shadow_leases.holder = EXCLUDED.holder OR shadow_leases.expires_at < now()
       RETURNING holder, epoch`,
      [this.name, this.holder, this.ttlSeconds],
    );
    const held = rows.length === 1;
    // Act for at most 2/3 of the TTL after the renewal was sent.
    this.validUntilMs = held ? sentAt + (this.ttlSeconds * 1000 * 2) / 3 : 0;
    this.heldEpoch = held ? Number(rows[0]!.epoch) : 0;
    return held;
  }

  /**
   * Whether `epoch` is still the lease's current epoch, held by us and unexpired, by the
   * database (not our clock): what a router asks right before it writes.
   */
  async isCurrent(epoch: number): Promise<boolean> {
    if (epoch <= 0 || !this.isHeld()) return false;
    const { rows } = await this.pool.query(
      'SELECT 1 FROM shadow_leases WHERE name = $1 AND holder = $2 AND epoch = $3 AND expires_at > now()',
      [this.name, this.holder, epoch],
    );
    return rows.length === 1;
  }

  /**
   * Gives the lease up (on shutdown) so a peer takes over without waiting for expiry. The row is
   * expired rather than deleted: its epoch must keep growing, or a successor could get an epoch
   * a paused ex-holder already wrote with.
   */
  async release(): Promise<void> {
    this.validUntilMs = 0;
    this.heldEpoch = 0;
    await this.pool.query(`UPDATE shadow_leases SET expires_at = now() - interval '1 second' WHERE name = $1 AND holder = $2`, [this.name, this.holder]);
  }

  /** Who holds the lease now (expired leases count as nobody). */
  static async currentHolder(db: Pick<pg.Pool, 'query'>, name: string): Promise<string | undefined> {
    const { rows } = await db.query<{ holder: string }>('SELECT holder FROM shadow_leases WHERE name = $1 AND expires_at > now()', [name]);
    return rows[0]?.holder;
  }
}
