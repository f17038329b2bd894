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
 */
import { performance } from 'node:perf_hooks';
import type pg from 'pg';

export class PgLease {
  private validUntilMs = 0;

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

  /** Takes the lease if free or expired, renews it if ours. Returns whether we hold it. */
  async acquireOrRenew(): Promise<boolean> {
    const sentAt = performance.now();
    const { rows } = await this.pool.query<{ holder: string }>(
      `INSERT INTO shadow_leases (name, holder, expires_at, acquired_at)
       VALUES ($1, $2, now() + $3 * interval '1 second', now())
       ON CONFLICT (name) DO UPDATE
          SET holder = EXCLUDED.holder,
              expires_at = EXCLUDED.expires_at,
              acquired_at = CASE WHEN shadow_leases.holder = EXCLUDED.holder THEN shadow_leases.acquired_at ELSE now() END
        WHERE shadow_leases.holder = EXCLUDED.holder OR shadow_leases.expires_at < now()
       RETURNING holder`,
      [this.name, this.holder, this.ttlSeconds],
    );
    const held = rows.length === 1;
    // Act for at most 2/3 of the TTL after the renewal was sent.
    this.validUntilMs = held ? sentAt + (this.ttlSeconds * 1000 * 2) / 3 : 0;
    return held;
  }

  /** Gives the lease up (on shutdown) so a peer takes over without waiting for expiry. */
  async release(): Promise<void> {
    this.validUntilMs = 0;
    await this.pool.query('DELETE FROM shadow_leases WHERE name = $1 AND holder = $2', [this.name, this.holder]);
  }

  /** Who holds the lease now (expired leases count as nobody). */
  static async currentHolder(db: Pick<pg.Pool, 'query'>, name: string): Promise<string | undefined> {
    const { rows } = await db.query<{ holder: string }>('SELECT holder FROM shadow_leases WHERE name = $1 AND expires_at > now()', [name]);
    return rows[0]?.holder;
  }
}
