/**
 * Persisted evaluation jobs. A job is a row in `shadow_evaluations`; any
 * replica claims PENDING work with FOR UPDATE SKIP LOCKED and holds a lease
 * while it runs, renewing it until the job ends. A replica that dies leaves a
 * RUNNING row whose lease expires: the next claim re-queues it (up to
 * MAX_ATTEMPTS, then FAILED) — a job is never stuck RUNNING. Renewal and
 * completion are guarded by the attempt, so a replica whose lease was lost
 * cannot overwrite the attempt that took the job over. PgBouncer-safe: every
 * step is one statement.
 *
 * A trigger NOTIFYs `shadow_evaluation_pending` when a job becomes PENDING;
 * `JobNotifications` LISTENs for it on a connection of its own. The loop that
 * claims and runs jobs is evaluation/evaluation-runner.ts.
 */
import { createHash, randomUUID } from 'node:crypto';
import pg from 'pg';
import { connectedThroughPooler } from '../../../platform/db';
import { ServiceError } from '../../../platform/service-error';
import { evaluationNotFound } from '../errors';
import { isUuid } from '../domain/rollout-spec';

export const MAX_ATTEMPTS = 3;
export const LEASE_SECONDS = 120;
/** The channel the migration's trigger notifies when a job becomes PENDING. */
export const PENDING_CHANNEL = 'shadow_evaluation_pending';

export type EvaluationState = 'PENDING' | 'RUNNING' | 'SUCCEEDED' | 'FAILED';

/** The JSON forms of the proto messages, as stored. */
export interface EvaluationRow {
  id: string;
  name: string;
  state: EvaluationState;
  rule: unknown;
  baseline_rule: unknown | null;
  selection: unknown;
  thresholds: unknown;
  result: unknown | null;
  decision: string | null;
  error: string;
  attempts: number;
  created_at: Date;
  started_at: Date | null;
  completed_at: Date | null;
  /**
   * The primary's WAL insert position when the job was created (`pg_lsn` as text), or null for a
   * job created before migration 0007: the sample load reads the replica only once it has replayed
   * past it (store/sample-store.ts SampleColumnsCache.load).
   */
  created_wal_lsn: string | null;
}

export interface NewEvaluation {
  name: string;
  rule: unknown;
  baselineRule: unknown | null;
  selection: unknown;
  thresholds: unknown;
  idempotencyKey: string;
}

export interface CompletedEvaluation {
  result: unknown;
  decision: string;
}

function requestHash(request: NewEvaluation): string {
  const { idempotencyKey: _, ...rest } = request;
  return createHash('sha256').update(JSON.stringify(rest)).digest('hex');
}

const COLUMNS = `id, name, state, rule, baseline_rule, selection, thresholds, result, decision, error, attempts,
                 created_at, started_at, completed_at, created_wal_lsn::text AS created_wal_lsn`;

/** The attempt of a claimed job: `attempts` as `claim` returned it. */
export type ClaimedJob = Pick<EvaluationRow, 'id' | 'attempts'>;

export class EvaluationJobs {
  constructor(
    private readonly pool: pg.Pool,
    /** How long a claim holds a job without renewal (the runner renews at a third of it). */
    readonly leaseSeconds: number = LEASE_SECONDS,
  ) {}

  /**
   * Inserts a PENDING job; the same idempotency key with the same request returns the first job.
   * Records the primary's WAL insert position with it: every write the caller had acknowledged
   * before this call (its IngestSamples) ends at or below that position. The insert position rather
   * than pg_current_wal_lsn() (the write position), because under synchronous_commit = off a commit
   * is acknowledged before its record is written, and the write position may still be short of it.
   */
  async create(request: NewEvaluation): Promise<EvaluationRow> {
    const hash = requestHash(request);
    const key = request.idempotencyKey === '' ? null : request.idempotencyKey;
    const inserted = await this.pool.query<EvaluationRow>(
      `INSERT INTO shadow_evaluations (id, name, rule, baseline_rule, selection, thresholds, idempotency_key, request_hash, created_wal_lsn)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, pg_current_wal_insert_lsn())
       ON CONFLICT (idempotency_key) DO NOTHING
       RETURNING ${COLUMNS}`,
      [randomUUID(), request.name, request.rule, request.baselineRule, request.selection, request.thresholds, key, hash],
    );
    if (inserted.rows[0]) return inserted.rows[0];
    const existing = await this.pool.query<EvaluationRow & { request_hash: string }>(
      `SELECT ${COLUMNS}, request_hash FROM shadow_evaluations WHERE idempotency_key = $1`,
      [key],
    );
    const row = existing.rows[0]!;
    if (row.request_hash !== hash) {
      throw ServiceError.idempotencyKeyReused(request.idempotencyKey);
    }
    const { request_hash: _, ...job } = row;
    return job;
  }

  async get(id: string): Promise<EvaluationRow> {
    if (!isUuid(id)) throw ServiceError.invalidArgument('id', 'must be a UUID');
    const result = await this.pool.query<EvaluationRow>(`SELECT ${COLUMNS} FROM shadow_evaluations WHERE id = $1`, [id]);
    if (!result.rows[0]) throw evaluationNotFound(id);
    return result.rows[0];
  }

  /** Newest first, keyset-paginated on (created_at, id). */
  async list(pageSize: number, after: { createdAt: string; id: string } | undefined, state: EvaluationState | undefined) {
    const result = await this.pool.query<EvaluationRow & { cursor_at: string }>(
      `SELECT ${COLUMNS}, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS cursor_at
       FROM shadow_evaluations
       WHERE ($1::shadow_evaluation_state IS NULL OR state = $1)
         AND ($2::timestamptz IS NULL OR (created_at, id) < ($2::timestamptz, $3::uuid))
       ORDER BY created_at DESC, id DESC
       LIMIT $4`,
      [state ?? null, after?.createdAt ?? null, after?.id ?? null, pageSize + 1],
    );
    const rows = result.rows.slice(0, pageSize);
    const last = rows[rows.length - 1];
    const next = result.rows.length > pageSize && last ? { createdAt: last.cursor_at, id: last.id } : undefined;
    return { rows: rows.map(({ cursor_at: _, ...row }) => row as EvaluationRow), next };
  }

  /**
   * Re-queues (or, after MAX_ATTEMPTS, fails) RUNNING jobs whose lease ran out:
   * their replica stopped. Returns how many.
   */
  async requeueExpired(): Promise<number> {
    const result = await this.pool.query(
      `UPDATE shadow_evaluations
       SET state = CASE WHEN attempts >= $1 THEN 'FAILED'::shadow_evaluation_state ELSE 'PENDING' END,
           error = CASE WHEN attempts >= $1 THEN 'abandoned ' || attempts || ' times by a stopped worker' ELSE error END,
           completed_at = CASE WHEN attempts >= $1 THEN now() ELSE NULL END,
           lease_expires_at = NULL
       WHERE state = 'RUNNING' AND lease_expires_at < now()`,
      [MAX_ATTEMPTS],
    );
    return result.rowCount ?? 0;
  }

  /** Whether any job is PENDING: a read of the partial state index, for an idle runner's poll. */
  async hasPending(): Promise<boolean> {
    const result = await this.pool.query(`SELECT 1 FROM shadow_evaluations WHERE state = 'PENDING' LIMIT 1`);
    return result.rows.length > 0;
  }

  /** Claims the oldest PENDING job. */
  async claim(): Promise<EvaluationRow | undefined> {
    const claimed = await this.pool.query<EvaluationRow>(
      `UPDATE shadow_evaluations
       SET state = 'RUNNING', attempts = attempts + 1, started_at = now(),
           lease_expires_at = now() + make_interval(secs => $1)
       WHERE id = (SELECT id FROM shadow_evaluations WHERE state = 'PENDING'
                   ORDER BY created_at, id FOR UPDATE SKIP LOCKED LIMIT 1)
       RETURNING ${COLUMNS}`,
      [this.leaseSeconds],
    );
    return claimed.rows[0];
  }

  /** Extends the lease of this attempt; false when the job is no longer ours (re-claimed or finished). */
  async renewLease(job: ClaimedJob): Promise<boolean> {
    const result = await this.pool.query(
      `UPDATE shadow_evaluations SET lease_expires_at = now() + make_interval(secs => $3)
       WHERE id = $1 AND state = 'RUNNING' AND attempts = $2`,
      [job.id, job.attempts, this.leaseSeconds],
    );
    return result.rowCount === 1;
  }

  /** Completes this attempt (a no-op when another attempt has taken the job over). */
  async succeed(job: ClaimedJob, completed: CompletedEvaluation): Promise<void> {
    await this.pool.query(
      `UPDATE shadow_evaluations SET state = 'SUCCEEDED', result = $3, decision = $4, completed_at = now(), lease_expires_at = NULL
       WHERE id = $1 AND state = 'RUNNING' AND attempts = $2`,
      [job.id, job.attempts, completed.result, completed.decision],
    );
  }

  /** Fails this attempt (a no-op when another attempt has taken the job over). */
  async fail(job: ClaimedJob, error: string): Promise<void> {
    await this.pool.query(
      `UPDATE shadow_evaluations SET state = 'FAILED', error = $3, completed_at = now(), lease_expires_at = NULL
       WHERE id = $1 AND state = 'RUNNING' AND attempts = $2`,
      [job.id, job.attempts, error.slice(0, 2000)],
    );
  }
}

/** The LISTEN URL goes through a connection pooler (see JobNotifications.start). */
export class ListenThroughPoolerError extends Error {
  override readonly name = 'ListenThroughPoolerError';
  constructor() {
    super(
      'SHADOW_LISTEN_DATABASE_URL (default DATABASE_URL) reaches PostgreSQL through a connection pooler, where LISTEN is not kept: ' +
        'set SHADOW_LISTEN_DATABASE_URL to a direct connection to the primary, or to "off" (poll only)',
    );
  }
}

/**
 * A dedicated connection LISTENing on PENDING_CHANNEL (LISTEN is session
 * state: it needs a direct or session-pooled connection, not PgBouncer in
 * transaction mode). Calls `onNotify` for every notification, and once after
 * each (re)connect, since notifications sent while it was away are lost. A
 * broken connection is re-opened with backoff (1 s doubling to 30 s).
 */
export class JobNotifications {
  private client: pg.Client | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private retryMs = 1_000;
  private closed = false;

  constructor(
    private readonly databaseUrl: string,
    private readonly onNotify: () => void,
    private readonly onError: (error: unknown) => void,
  ) {}

  /**
   * Resolves once listening (or after the first failure, which is retried in the background).
   * Rejects with ListenThroughPoolerError when the URL reaches PostgreSQL through a connection
   * pooler: behind a transaction pooler LISTEN lands on a server connection the next transaction
   * may not use, and the runner would go deaf without a word.
   */
  async start(): Promise<void> {
    await this.connect();
    if (this.refused) throw this.refused;
  }

  private refused: ListenThroughPoolerError | undefined;

  private async connect(): Promise<void> {
    if (this.closed) return;
    const client = new pg.Client({ connectionString: this.databaseUrl, application_name: 'shieldx-shadow-listen', connectionTimeoutMillis: 5_000 });
    this.client = client;
    let failed = false;
    const fail = (error: unknown) => {
      if (failed) return;
      failed = true;
      if (!this.closed) this.onError(error);
      client.removeAllListeners('notification');
      client.end().catch(() => undefined);
      if (this.client === client) this.client = undefined;
      // A pooler stays a pooler: no retries (the runner polls), and start() reports it.
      if (!(error instanceof ListenThroughPoolerError)) this.scheduleReconnect();
    };
    client.on('error', fail);
    client.on('end', () => fail(new Error('LISTEN connection closed')));
    client.on('notification', () => this.onNotify());
    try {
      await client.connect();
      if (await connectedThroughPooler(client)) {
        this.refused = new ListenThroughPoolerError();
        throw this.refused;
      }
      await client.query(`LISTEN ${PENDING_CHANNEL}`);
      this.retryMs = 1_000;
      // Whatever became PENDING before the LISTEN took effect.
      this.onNotify();
    } catch (error) {
      fail(error);
    }
  }

  private scheduleReconnect(): void {
    if (this.closed || this.retryTimer) return;
    const delay = this.retryMs;
    this.retryMs = Math.min(this.retryMs * 2, 30_000);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      void this.connect();
    }, delay);
    this.retryTimer.unref();
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.retryTimer);
    const client = this.client;
    this.client = undefined;
    if (client) {
      client.removeAllListeners('end');
      await client.end().catch(() => undefined);
    }
  }
}
