/**
 * Watches a service's PostgreSQL: whether the primary answers (readiness: a pod whose database is
 * unreachable must not be SERVING), and, with a read replica, how stale the replica may be, so the
 * reads that may lag go to it only within a bound.
 *
 * The staleness bound is measured, not estimated from replay timestamps: every check reads the
 * primary's WAL position L at a time t taken before asking (every commit acknowledged before t
 * ends at or below L), and the replica's replay position R. A replica with R >= L has every write
 * acknowledged before t; so its staleness is at most now - t for the latest such sample. A read is
 * routed to the replica only while that bound, plus the time since it was measured, is within
 * DB_READ_MAX_LAG_MS: no read is ever staler than that. (One replica per URL: behind a load
 * balancer over several replicas, positions need not grow monotonically, and the bound is void.)
 */
import type pg from 'pg';
import { Gauge, type Registry } from 'prom-client';
import type { Logger } from './logger';

/** Primary WAL positions remembered (one per check): older samples cannot bound a replica that far behind. */
const SAMPLES_MAX = 600;

/** "16/B374D848" as a number. */
export function parseLsn(text: string): bigint {
  const [high, low] = text.split('/');
  return (BigInt(`0x${high}`) << 32n) | BigInt(`0x${low}`);
}

/** node-postgres's message when no pooled connection became free within connectionTimeoutMillis. */
const POOL_BUSY = /timeout exceeded when trying to connect/;

export interface DatabaseWatchOptions {
  readonly primary: pg.Pool;
  readonly replica?: pg.Pool;
  readonly intervalMs: number;
  readonly maxLagMs: number;
  readonly logger: Logger;
  readonly registry?: Registry;
  /** Told every change of the primary's reachability (and the first check's result). */
  readonly onPrimary?: (reachable: boolean) => void;
  readonly now?: () => number;
}

export class DatabaseWatch {
  private readonly samples: { at: number; lsn: bigint }[] = [];
  private primaryUp: boolean | undefined;
  private replicaUp: boolean | undefined;
  /** Staleness bound (ms) of the replica at `measuredAt`, or undefined: not known to be within any bound. */
  private staleness: number | undefined;
  private measuredAt = 0;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private readonly now: () => number;
  private readonly stalenessGauge?: Gauge;
  private readonly upGauge?: Gauge;
  /** Reads that may lag: the replica while within the bound, else the primary. */
  readonly reads: Pick<pg.Pool, 'query'>;

  constructor(private readonly options: DatabaseWatchOptions) {
    this.now = options.now ?? Date.now;
    if (options.registry) {
      this.upGauge = new Gauge({
        name: 'shieldx_db_up',
        help: 'Whether the last probe of the database answered (role: primary, or replica for DATABASE_READ_URL).',
        labelNames: ['role'],
        registers: [options.registry],
      });
      if (options.replica) {
        this.stalenessGauge = new Gauge({
          name: 'shieldx_db_read_replica_staleness_seconds',
          help: 'Measured bound on how far the read replica is behind the primary (NaN: unknown, reads on the primary).',
          registers: [options.registry],
        });
      }
    }
    this.reads = { query: ((...args: Parameters<pg.Pool['query']>) => (this.readPool().query as (...a: unknown[]) => unknown)(...args)) as pg.Pool['query'] };
  }

  /** Which pool a read that may lag uses now. */
  readPool(): pg.Pool {
    const replica = this.options.replica;
    if (!replica || !this.replicaUp || this.staleness === undefined) return this.options.primary;
    return this.staleness + (this.now() - this.measuredAt) <= this.options.maxLagMs ? replica : this.options.primary;
  }

  /** The replica's staleness bound now (ms), or undefined when not known (reads then use the primary). */
  replicaStalenessMs(): number | undefined {
    return this.staleness === undefined ? undefined : this.staleness + (this.now() - this.measuredAt);
  }

  get primaryReachable(): boolean | undefined {
    return this.primaryUp;
  }

  /** One check now (also what the timer runs); never rejects. */
  check(): Promise<void> {
    return (this.running ??= this.checkOnce().finally(() => (this.running = undefined)));
  }

  /** Checks once, then every intervalMs (0: only that first check). */
  async start(): Promise<void> {
    await this.check();
    if (this.options.intervalMs <= 0) return;
    const tick = () => {
      this.timer = setTimeout(() => void this.check().then(() => this.timer && tick()), this.options.intervalMs);
      this.timer.unref();
    };
    tick();
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private async checkOnce(): Promise<void> {
    const { primary, replica, logger } = this.options;
    const at = this.now();
    try {
      const { rows } = await primary.query<{ lsn: string | null }>(
        'SELECT CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END AS lsn',
      );
      if (rows[0]?.lsn) {
        this.samples.push({ at, lsn: parseLsn(rows[0].lsn) });
        if (this.samples.length > SAMPLES_MAX) this.samples.shift();
      }
      this.setPrimary(true);
    } catch (error) {
      const busy = error instanceof Error && POOL_BUSY.test(error.message) && primary.totalCount >= (primary.options.max ?? 10);
      // Every connection checked out and busy: reachable, only saturated (the pool alert's concern).
      if (busy) this.setPrimary(true);
      else this.setPrimary(false, error);
    }
    if (!replica) return;
    try {
      const { rows } = await replica.query<{ standby: boolean; replay: string | null }>(
        'SELECT pg_is_in_recovery() AS standby, pg_last_wal_replay_lsn()::text AS replay',
      );
      const { standby, replay } = rows[0]!;
      const measuredAt = this.now();
      let staleness: number | undefined;
      if (!standby) staleness = 0; // a primary (e.g. promoted): nothing to wait for
      else if (replay) {
        const position = parseLsn(replay);
        for (let i = this.samples.length - 1; i >= 0; i--) {
          if (this.samples[i]!.lsn <= position) {
            staleness = measuredAt - this.samples[i]!.at;
            break;
          }
        }
      }
      this.staleness = staleness;
      this.measuredAt = measuredAt;
      this.stalenessGauge?.set(staleness === undefined ? Number.NaN : staleness / 1000);
      if (this.replicaUp === false) logger.info('read replica (DATABASE_READ_URL) answers again');
      this.replicaUp = true;
      this.upGauge?.set({ role: 'replica' }, 1);
    } catch (error) {
      if (this.replicaUp !== false) {
        logger.warn(
          { err: error instanceof Error ? error.message : String(error) },
          'read replica (DATABASE_READ_URL) unreachable: reads that may lag go to the primary until it answers',
        );
      }
      this.replicaUp = false;
      this.staleness = undefined;
      this.stalenessGauge?.set(Number.NaN);
      this.upGauge?.set({ role: 'replica' }, 0);
    }
  }

  private setPrimary(reachable: boolean, error?: unknown): void {
    this.upGauge?.set({ role: 'primary' }, reachable ? 1 : 0);
    if (this.primaryUp === reachable) return;
    const first = this.primaryUp === undefined;
    this.primaryUp = reachable;
    if (!reachable) {
      this.options.logger.error(
        { err: error instanceof Error ? error.message : String(error) },
        `database unreachable (DATABASE_URL): health NOT_SERVING until it answers: ${error instanceof Error ? error.message : String(error)}`,
      );
    } else if (!first) {
      this.options.logger.info('database reachable again: health SERVING');
    }
    this.options.onPrimary?.(reachable);
  }
}
