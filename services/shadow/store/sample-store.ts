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
  const limit = selection.limit > 0 ? Math.min(selection.limit, EVALUATION_SAMPLES_MAX) : EVALUATION_SAMPLES_MAX;
  const headers = [...new Set([...headerNames].map((h) => h.toLowerCase()))].filter((h) => h !== 'user-agent');
  const builder = new SampleColumnsBuilder({ capacity: Math.min(limit, 1_000_000), headerNames: headers });
  // withTransaction: a connection that drops during the FETCH loop is destroyed, not handed on.
  await withTransaction(pool, async (client) => {
    await client.query('SET TRANSACTION READ ONLY');
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
  });
  return builder.build();
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

  async load(pool: pg.Pool, selection: SampleSelection, headerNames: Iterable<string>): Promise<{ columns: SampleColumns; cached: boolean }> {
    const headers = [...new Set([...headerNames].map((h) => h.toLowerCase()))].sort();
    const key = JSON.stringify([selection.dataset, selection.startTime?.toISOString(), selection.endTime?.toISOString(), selection.limit, headers]);
    const stamp = await pool.query<{ n: bigint; last: bigint | null }>(
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
    const columns = await loadSampleColumns(pool, selection, headers);
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
