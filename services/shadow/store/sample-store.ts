/**
 * Recorded traffic in PostgreSQL: bulk ingest (validated per row, one
 * multi-row INSERT over unnest() arrays per batch — one round trip per 1,000
 * rows) and loading a selection straight into the replay's columnar form
 * (keyset-paginated, so memory holds columns, not row objects).
 */
import type pg from 'pg';
import { withTransaction } from '../../../platform/db';
import { SampleColumnsBuilder, type SampleColumns } from '../domain/sample-columns';
import { validateSample, type TrafficSample } from '../domain/traffic-sample';

/** Rows per INSERT statement. */
export const INSERT_BATCH_ROWS = 1000;
/** Rows per SELECT page when loading. */
const LOAD_PAGE_ROWS = 50_000;
/** Rejected rows reported back with their reasons (the rest are only counted). */
export const REJECTED_REPORT_MAX = 1000;
/** Samples one evaluation may load. */
export const EVALUATION_SAMPLES_MAX = 5_000_000;

export const DATASET_PATTERN = /^[a-z0-9_-]{1,64}$/;

export interface IngestSummary {
  received: number;
  accepted: number;
  rejected: number;
  rejectedSamples: { index: number; reason: string }[];
}

export interface SampleSelection {
  dataset: string;
  startTime?: Date;
  endTime?: Date;
  /** 0 = all (bounded by EVALUATION_SAMPLES_MAX). */
  limit: number;
}

/** Accumulates validated rows and writes them in batches. */
export class SampleIngestor {
  private pending: TrafficSample[] = [];
  readonly summary: IngestSummary = { received: 0, accepted: 0, rejected: 0, rejectedSamples: [] };

  constructor(
    /** A pool, or a client inside a transaction (rows appear all at once, or not at all). */
    private readonly pool: Pick<pg.Pool | pg.PoolClient, 'query'>,
    private readonly dataset: string,
  ) {}

  /** Validates one row; a bad row is reported, a good one queued (flushed every INSERT_BATCH_ROWS). */
  async add(sample: unknown): Promise<void> {
    const index = this.summary.received++;
    const reason = validateSample(sample);
    if (reason !== null) {
      this.summary.rejected++;
      if (this.summary.rejectedSamples.length < REJECTED_REPORT_MAX) this.summary.rejectedSamples.push({ index, reason });
      return;
    }
    this.pending.push(sample as TrafficSample);
    if (this.pending.length >= INSERT_BATCH_ROWS) await this.flush();
  }

  async flush(): Promise<void> {
    if (this.pending.length === 0) return;
    const rows = this.pending;
    this.pending = [];
    await insertSamples(this.pool, this.dataset, rows);
    this.summary.accepted += rows.length;
  }
}

async function insertSamples(pool: Pick<pg.Pool | pg.PoolClient, 'query'>, dataset: string, rows: readonly TrafficSample[]): Promise<void> {
  const columns = {
    observedAt: [] as string[],
    clientKey: [] as string[],
    clientIp: [] as string[],
    method: [] as string[],
    path: [] as string[],
    status: [] as number[],
    userAgent: [] as string[],
    headers: [] as string[],
    requestBytes: [] as string[],
    malicious: [] as boolean[],
    attackType: [] as string[],
    score: [] as (number | null)[],
  };
  for (const row of rows) {
    columns.observedAt.push(new Date(row.timestampMs).toISOString());
    columns.clientKey.push(row.clientKey);
    columns.clientIp.push(row.clientIp);
    columns.method.push(row.method);
    columns.path.push(row.path);
    columns.status.push(row.status);
    columns.userAgent.push(row.userAgent);
    columns.headers.push(JSON.stringify(row.headers));
    columns.requestBytes.push(String(row.requestBytes));
    columns.malicious.push(row.malicious);
    columns.attackType.push(row.attackType);
    columns.score.push(row.score ?? null);
  }
  await pool.query(
    `INSERT INTO shadow_samples
       (dataset, observed_at, client_key, client_ip, method, path, status, user_agent, headers, request_bytes, malicious, attack_type, score)
     SELECT $1, * FROM unnest($2::timestamptz[], $3::text[], $4::inet[], $5::text[], $6::text[], $7::smallint[],
                              $8::text[], $9::jsonb[], $10::bigint[], $11::boolean[], $12::text[], $13::float8[])`,
    [
      dataset,
      columns.observedAt,
      columns.clientKey,
      columns.clientIp,
      columns.method,
      columns.path,
      columns.status,
      columns.userAgent,
      columns.headers,
      columns.requestBytes,
      columns.malicious,
      columns.attackType,
      columns.score,
    ],
  );
}

/**
 * Samples of a dataset (in a time range) in time order, as replay columns.
 * One server-side cursor in one transaction (PgBouncer-safe), fetched in
 * pages; only the columns replay reads, and of the headers only those the
 * rules name, so PostgreSQL does not ship and Node does not parse whole rows.
 */
export async function loadSampleColumns(
  pool: pg.Pool,
  selection: SampleSelection,
  headerNames: Iterable<string>,
): Promise<SampleColumns> {
  // withTransaction: a connection that drops during the FETCH loop is destroyed, not handed on.
  return withTransaction(pool, async (client) => {
    await client.query('SET TRANSACTION READ ONLY');
    return loadColumnsOn(client, selection, headerNames);
  });
}

/** loadSampleColumns on `client`, inside a transaction the caller opened (the cursor lives until its end). */
async function loadColumnsOn(client: pg.PoolClient, selection: SampleSelection, headerNames: Iterable<string>): Promise<SampleColumns> {
  const limit = selection.limit > 0 ? Math.min(selection.limit, EVALUATION_SAMPLES_MAX) : EVALUATION_SAMPLES_MAX;
  const headers = [...new Set([...headerNames].map((h) => h.toLowerCase()))].filter((h) => h !== 'user-agent');
  const builder = new SampleColumnsBuilder({ capacity: Math.min(limit, 1_000_000), headerNames: headers });
  await client.query(
    `DECLARE shadow_samples_cursor NO SCROLL CURSOR FOR
     SELECT (extract(epoch FROM observed_at) * 1000)::float8, client_key, host(client_ip), path, user_agent,
            malicious, attack_type, ARRAY(SELECT headers ->> h FROM unnest($5::text[]) AS h), score
     FROM shadow_samples
     WHERE dataset = $1
       AND ($2::timestamptz IS NULL OR observed_at >= $2)
       AND ($3::timestamptz IS NULL OR observed_at < $3)
     ORDER BY observed_at, id
     LIMIT $4`,
    [selection.dataset, selection.startTime ?? null, selection.endTime ?? null, limit, headers],
  );
  const sampleHeaders: Record<string, string> = {};
  // Bounded: at most limit / LOAD_PAGE_ROWS + 1 fetches.
  for (let loaded = 0; loaded < limit; ) {
    const page = await client.query({ text: `FETCH ${LOAD_PAGE_ROWS} FROM shadow_samples_cursor`, rowMode: 'array' });
    for (const row of page.rows as unknown[][]) {
      const values = row[7] as (string | null)[];
      for (let h = 0; h < headers.length; h++) {
        const value = values[h];
        if (value === null || value === undefined) delete sampleHeaders[headers[h]!];
        else sampleHeaders[headers[h]!] = value;
      }
      builder.append({
        timestampMs: row[0] as number,
        clientKey: row[1] as string,
        clientIp: row[2] as string,
        method: '',
        path: row[3] as string,
        status: 0,
        userAgent: row[4] as string,
        headers: sampleHeaders,
        requestBytes: 0,
        malicious: row[5] as boolean,
        attackType: row[6] as string,
        ...(row[8] === null ? {} : { score: row[8] as number }),
      });
    }
    loaded += page.rows.length;
    if (page.rows.length < LOAD_PAGE_ROWS) break;
  }
  return builder.build();
}

/**
 * Where a sample load read from, and why:
 * - `replica`, `replica_caught_up`: the read replica had replayed past the job's WAL position;
 * - `primary`, `no_replica`: no DATABASE_READ_URL;
 * - `primary`, `replica_outside_lag_bound`: the replica is configured but the database watch sends
 *   reads that may lag to the primary (unreachable, or measured beyond DB_READ_MAX_LAG_MS);
 * - `primary`, `no_job_position`: the job carries no WAL position (created before migration 0007);
 * - `primary`, `replica_behind`: the replica had not replayed the job's position within the wait;
 * - `primary`, `replica_not_standby`: DATABASE_READ_URL answers as a primary (e.g. promoted): its
 *   replay position says nothing about this primary's writes;
 * - `primary`, `replica_failed`: the load on the replica failed (a query cancelled by a conflict
 *   with recovery, a dropped connection) and ran again on the primary.
 */
export type SampleSource = 'replica' | 'primary';
export type SampleSourceReason =
  | 'replica_caught_up'
  | 'no_replica'
  | 'replica_outside_lag_bound'
  | 'no_job_position'
  | 'replica_behind'
  | 'replica_not_standby'
  | 'replica_failed';

/** Where a job's samples may be read. */
export interface SampleReadTarget {
  /** DATABASE_URL's pool: always has every acknowledged write. */
  readonly primary: pg.Pool;
  /** The pool reads that may lag use now (ServiceContext.readPool); absent: no read replica. */
  readonly reads?: () => pg.Pool;
  /** The WAL position the replica must have replayed before the load (job.created_wal_lsn). */
  readonly minLsn: string | null;
  /** How long the load waits for the replica to reach minLsn before it reads the primary (0: one check). */
  readonly waitMs: number;
}

export interface LoadedSamples {
  readonly columns: SampleColumns;
  readonly cached: boolean;
  readonly source: SampleSource;
  readonly reason: SampleSourceReason;
  /** The replica's replay position at the last check (when one was made). */
  readonly replayLsn?: string;
  /** Why the load on the replica failed (reason `replica_failed`). */
  readonly replicaError?: unknown;
}

/** Pause between two checks of the replica's replay position while waiting for it. */
const REPLAY_POLL_MS = 50;

/**
 * Waits (bounded: waitMs, polled every REPLAY_POLL_MS) until the server `client` is connected to has
 * replayed past `minLsn`. Run inside the load's own transaction, so the check and the load are on one
 * server connection even behind a transaction pooler or a balancer over several replicas. In READ
 * COMMITTED (the default, kept on purpose) each later statement takes a snapshot after this check,
 * so it sees everything replayed up to the position checked. (REPEATABLE READ would take the
 * snapshot at the check's own start, possibly before the position it then reads.)
 */
async function awaitReplay(
  client: pg.PoolClient,
  minLsn: string,
  waitMs: number,
): Promise<{ outcome: 'caught_up' | 'behind' | 'not_standby'; replay: string | undefined }> {
  const deadline = Date.now() + waitMs;
  const checksMax = Math.ceil(waitMs / REPLAY_POLL_MS) + 1;
  let replay: string | undefined;
  for (let check = 0; check < checksMax; check++) {
    const { rows } = await client.query<{ standby: boolean; replay: string | null; caught_up: boolean | null }>(
      `SELECT pg_is_in_recovery() AS standby, pg_last_wal_replay_lsn()::text AS replay,
              pg_last_wal_replay_lsn() >= $1::pg_lsn AS caught_up`,
      [minLsn],
    );
    const row = rows[0]!;
    replay = row.replay ?? undefined;
    if (!row.standby) return { outcome: 'not_standby', replay };
    if (row.caught_up === true) return { outcome: 'caught_up', replay };
    if (Date.now() + REPLAY_POLL_MS > deadline) break;
    await new Promise((resolve) => setTimeout(resolve, REPLAY_POLL_MS));
  }
  return { outcome: 'behind', replay };
}

/** Whether the dataset has any sample (an index probe, not a count of the whole dataset). */
export async function hasSamples(pool: pg.Pool, dataset: string): Promise<boolean> {
  const result = await pool.query('SELECT 1 FROM shadow_samples WHERE dataset = $1 LIMIT 1', [dataset]);
  return result.rows.length > 0;
}

/**
 * Loaded columns of recent selections, so evaluating another rule on the same
 * samples (the usual loop while tuning a rule) skips reloading them: loading
 * dominates an evaluation (1M rows: ~6 s to load, ~0.5 s to replay and judge).
 * Datasets only grow, so an entry is fresh while the dataset's row count and
 * highest id are unchanged — one index-only query checks that. Bounded by
 * total samples held.
 */
export class SampleColumnsCache {
  private readonly entries = new Map<string, { version: string; columns: SampleColumns }>();

  constructor(private readonly samplesMax = 5_000_000) {}

  /**
   * The selection's columns, from the read replica when it has replayed past the job's WAL
   * position (checked on the replica connection, in the load's transaction), else from the primary:
   * a caller's own samples are never missing. `source` as a pool: that pool, no replica.
   */
  async load(source: pg.Pool | SampleReadTarget, selection: SampleSelection, headerNames: Iterable<string>): Promise<LoadedSamples> {
    const target: SampleReadTarget = 'primary' in source ? source : { primary: source, minLsn: null, waitMs: 0 };
    const headers = [...new Set([...headerNames].map((h) => h.toLowerCase()))].sort();
    let reason: SampleSourceReason;
    let replayLsn: string | undefined;
    let replicaError: unknown;
    const replica = target.reads?.();
    if (!target.reads || !replica) reason = 'no_replica';
    else if (replica === target.primary) reason = 'replica_outside_lag_bound';
    else if (target.minLsn === null) reason = 'no_job_position';
    else {
      const minLsn = target.minLsn;
      try {
        const onReplica = await withTransaction(replica, async (client) => {
          await client.query('SET TRANSACTION READ ONLY');
          const gate = await awaitReplay(client, minLsn, target.waitMs);
          replayLsn = gate.replay;
          if (gate.outcome !== 'caught_up') return gate.outcome;
          return this.loadOn(client, selection, headers);
        });
        if (typeof onReplica !== 'string') return { ...onReplica, source: 'replica', reason: 'replica_caught_up', replayLsn };
        reason = onReplica === 'not_standby' ? 'replica_not_standby' : 'replica_behind';
      } catch (error) {
        reason = 'replica_failed';
        replicaError = error;
      }
    }
    const loaded = await withTransaction(target.primary, async (client) => {
      await client.query('SET TRANSACTION READ ONLY');
      return this.loadOn(client, selection, headers);
    });
    return { ...loaded, source: 'primary', reason, ...(replayLsn === undefined ? {} : { replayLsn }), ...(replicaError === undefined ? {} : { replicaError }) };
  }

  /** The cache lookup (stamped on `client`) and, on a miss, the load, in the caller's transaction. */
  private async loadOn(client: pg.PoolClient, selection: SampleSelection, headers: readonly string[]): Promise<{ columns: SampleColumns; cached: boolean }> {
    const key = JSON.stringify([selection.dataset, selection.startTime?.toISOString(), selection.endTime?.toISOString(), selection.limit, headers]);
    const stamp = await client.query<{ n: bigint; last: bigint | null }>(
      'SELECT count(*) AS n, max(id) AS last FROM shadow_samples WHERE dataset = $1',
      [selection.dataset],
    );
    const version = `${stamp.rows[0]!.n}:${stamp.rows[0]!.last ?? ''}`;
    const hit = this.entries.get(key);
    if (hit && hit.version === version) {
      // Most recently used last.
      this.entries.delete(key);
      this.entries.set(key, hit);
      return { columns: hit.columns, cached: true };
    }
    const columns = await loadColumnsOn(client, selection, headers);
    this.entries.delete(key);
    if (columns.length <= this.samplesMax) {
      this.entries.set(key, { version, columns });
      let held = 0;
      for (const entry of this.entries.values()) held += entry.columns.length;
      for (const [oldest, entry] of this.entries) {
        if (held <= this.samplesMax) break;
        held -= entry.columns.length;
        this.entries.delete(oldest);
      }
    }
    return { columns, cached: false };
  }
}
