import { expect } from 'chai';
import { randomUUID } from 'node:crypto';
import type { RunningService } from '../../../platform/server';
import { startTestService, waitFor } from '../../../testing/harness';
import pg from 'pg';
import { createPool } from '../../../platform/db';
import { runMigrations } from '../../../platform/migrate';
import { createDatabase, testInfrastructure } from '../../../testing/harness';
import { EvaluationRunner } from '../evaluation/evaluation-runner';
import { EvaluationJobs, JobNotifications, type EvaluationRow } from '../store/evaluation-jobs';
import { rolloutTestModule } from '../../../testing/rollout-kit';

describe('evaluation job leases', function () {
  this.timeout(30_000);
  let service: RunningService;
  const created: string[] = [];

  const newJob = async (jobs: EvaluationJobs) => {
    const row = await jobs.create({ name: 'lease test', rule: {}, baselineRule: null, selection: {}, thresholds: {}, idempotencyKey: `lease-${randomUUID()}` });
    created.push(row.id);
    return row;
  };
  const read = async (id: string) =>
    (await service.pool.query<{ state: string; attempts: number; decision: string | null }>('SELECT state, attempts, decision FROM shadow_evaluations WHERE id = $1', [id])).rows[0]!;

  before(async () => {
    // The rollout-only module: a migrated database without an evaluation runner of its own.
    service = await startTestService(rolloutTestModule, { ROLLOUT_CONTROLLER: 'off' });
  });

  after(async () => {
    await service?.pool.query('DELETE FROM shadow_evaluations WHERE id = ANY($1::uuid[])', [created]).catch(() => undefined);
    await service?.shutdown();
  });

  // A job that runs longer than its lease keeps it: another replica's claim does not take it over, and it completes on its first attempt.
  it('renews the lease while a job runs', async () => {
    const jobs = new EvaluationJobs(service.pool, 1);
    const job = await newJob(jobs);
    const ran: string[] = [];
    const takenByOther: string[] = [];
    const errors: unknown[] = [];
    const shutdown = new AbortController();
    const runner = new EvaluationRunner(
      jobs,
      async (claimed: EvaluationRow) => {
        ran.push(claimed.id);
        // Three leases long; another replica tries to claim all along.
        const other = new EvaluationJobs(service.pool, 1);
        for (let i = 0; i < 6; i++) {
          await new Promise((resolve) => setTimeout(resolve, 500));
          await other.requeueExpired();
          const taken = await other.claim();
          if (taken) takenByOther.push(taken.id);
        }
        return { result: {}, decision: 'DECISION_REJECT' };
      },
      (error) => errors.push(error),
      shutdown.signal,
    );
    runner.start();
    try {
      await waitFor(`job ${job.id} to finish`, async () => (['SUCCEEDED', 'FAILED'].includes((await read(job.id)).state) ? true : undefined), 15_000);
    } finally {
      shutdown.abort();
      await runner.stopped();
    }
    expect(errors).to.deep.equal([]);
    expect(ran).to.deep.equal([job.id]);
    expect(takenByOther, 'claims by another replica while the job ran').to.deep.equal([]);
    expect(await read(job.id)).to.deep.equal({ state: 'SUCCEEDED', attempts: 1, decision: 'DECISION_REJECT' });
  });

  // An attempt whose lease lapsed and was taken over can neither renew nor complete the job; the attempt that holds it can.
  it('lets only the current attempt renew and complete a job', async () => {
    const jobs = new EvaluationJobs(service.pool, 60);
    const job = await newJob(jobs);
    const first = await jobs.claim();
    expect(first?.id).to.equal(job.id);
    // The first replica stalls past its lease; a peer re-queues and claims the job.
    await service.pool.query(`UPDATE shadow_evaluations SET lease_expires_at = now() - interval '1 second' WHERE id = $1`, [job.id]);
    expect(await jobs.requeueExpired()).to.equal(1);
    const second = await jobs.claim();
    expect([second?.id, second?.attempts]).to.deep.equal([job.id, 2]);

    expect(await jobs.renewLease(first!)).to.equal(false);
    await jobs.succeed(first!, { result: {}, decision: 'DECISION_APPROVE_CANARY' });
    await jobs.fail(first!, 'stale attempt');
    expect(await read(job.id)).to.deep.equal({ state: 'RUNNING', attempts: 2, decision: null });

    expect(await jobs.renewLease(second!)).to.equal(true);
    await jobs.succeed(second!, { result: {}, decision: 'DECISION_REJECT' });
    expect(await read(job.id)).to.deep.equal({ state: 'SUCCEEDED', attempts: 2, decision: 'DECISION_REJECT' });
  });
});

/**
 * The runner while idle, on a private database (no other test's jobs, no other runner): it
 * writes nothing until there is work, and NOTIFY still brings a job enqueued elsewhere at once.
 */
describe('evaluation runner when idle', function () {
  this.timeout(30_000);
  let pool: pg.Pool;
  let databaseUrl: string;
  let drop: () => Promise<void>;
  const stops: (() => Promise<void>)[] = [];

  /** The pool, counting the statements sent through it by their first word (UPDATE, SELECT, ...). */
  const countingPool = () => {
    const counts = new Map<string, number>();
    const proxy = new Proxy(pool, {
      get(target, property, receiver) {
        if (property !== 'query') return Reflect.get(target, property, receiver) as unknown;
        return (text: string | { text: string }, ...rest: unknown[]) => {
          const verb = (typeof text === 'string' ? text : text.text).trim().split(/\s+/)[0]!.toUpperCase();
          counts.set(verb, (counts.get(verb) ?? 0) + 1);
          return (target.query as (...args: unknown[]) => unknown)(text, ...rest);
        };
      },
    });
    return { pool: proxy, counts };
  };
  /** Waits for a runner's first pass (at least one claim) and then for its statements to stop. */
  const untilIdle = async (counts: Map<string, number>) => {
    await waitFor('the first pass', async () => ((counts.get('UPDATE') ?? 0) >= 1 ? true : undefined));
    let before = -1;
    while (before !== [...counts.values()].reduce((a, b) => a + b, 0)) {
      before = [...counts.values()].reduce((a, b) => a + b, 0);
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  };
  const newJob = (jobs: EvaluationJobs) =>
    jobs.create({ name: 'idle test', rule: {}, baselineRule: null, selection: {}, thresholds: {}, idempotencyKey: `idle-${randomUUID()}` });
  const read = async (id: string) =>
    (await pool.query<{ state: string; attempts: number }>('SELECT state, attempts FROM shadow_evaluations WHERE id = $1', [id])).rows[0]!;
  /** Starts a runner that records the jobs it runs; stopped after the test. */
  const startRunner = (jobs: EvaluationJobs, options: ConstructorParameters<typeof EvaluationRunner>[4], listen: boolean) => {
    const ran: string[] = [];
    const errors: unknown[] = [];
    const shutdown = new AbortController();
    const runner = new EvaluationRunner(
      jobs,
      async (job) => {
        ran.push(job.id);
        return { result: {}, decision: 'DECISION_REJECT' };
      },
      (error) => errors.push(error),
      shutdown.signal,
      options,
    );
    const notifications = listen ? new JobNotifications(databaseUrl, () => runner.wake(), (error) => errors.push(error)) : undefined;
    stops.push(async () => {
      shutdown.abort();
      await notifications?.close();
      await runner.stopped();
    });
    return { runner, notifications, ran, errors };
  };

  before(async () => {
    const database = await createDatabase(testInfrastructure().serverUrl, 'shadow_runner');
    databaseUrl = database.url;
    drop = database.drop;
    await runMigrations(databaseUrl, 'shadow');
    pool = createPool(databaseUrl, { max: 4, statementTimeoutMs: 10_000, applicationName: 'shadow-runner-test' });
  });
  afterEach(async () => {
    for (const stop of stops.splice(0)) await stop();
  });
  after(async () => {
    await pool?.end();
    await drop?.();
  });

  // With nothing to do, a runner sends no UPDATE at all (before: a lease sweep and a claim every 250 ms):
  // each fallback poll is one SELECT, never a claim.
  it('writes nothing while idle', async () => {
    const counting = countingPool();
    const pollMs = 100;
    const windowMs = 1_500;
    const { runner, errors } = startRunner(new EvaluationJobs(counting.pool as pg.Pool), { pollIntervalMs: pollMs }, false);
    runner.start();
    // Its first pass (sweep + claim of anything left from before it started) is done.
    await waitFor('the first pass', async () => ((counting.counts.get('UPDATE') ?? 0) >= 2 ? true : undefined));
    await new Promise((resolve) => setTimeout(resolve, 200));
    counting.counts.clear();
    // A window of many fallback polls (the lease sweep, every 30 s by default, is not due in it).
    await new Promise((resolve) => setTimeout(resolve, windowMs));
    expect(counting.counts.get('UPDATE') ?? 0, 'UPDATE statements while idle').to.equal(0);
    expect([...counting.counts.keys()], 'statements while idle').to.deep.equal(['SELECT']);
    // At most one statement per poll: about windowMs / pollMs + 1 polls fit in the window (one spare for timer rounding).
    expect(counting.counts.get('SELECT'), 'SELECT statements while idle').to.be.at.most(windowMs / pollMs + 2);
    expect(errors).to.deep.equal([]);
  });

  // A job enqueued by another replica (no local wake) reaches an idle runner through NOTIFY, long before its fallback poll.
  it('picks up a job another replica enqueued, woken by NOTIFY', async () => {
    const counting = countingPool();
    const { runner, notifications, ran, errors } = startRunner(new EvaluationJobs(counting.pool as pg.Pool), { pollIntervalMs: 600_000, leaseSweepIntervalMs: 600_000 }, true);
    await notifications!.start();
    runner.start();
    // Idle first: its first pass (which claims without being woken) is over, so only a notification can wake it.
    await untilIdle(counting.counts);
    const job = await newJob(new EvaluationJobs(pool));
    await waitFor(`job ${job.id} to run`, async () => ((await read(job.id)).state === 'SUCCEEDED' ? true : undefined), 15_000);
    expect(ran).to.deep.equal([job.id]);
    expect(errors).to.deep.equal([]);
  });

  // A replica that died holding a job: once its lease lapses, an idle runner's sweep re-queues the job and runs it (attempt 2).
  it("recovers a dead replica's job when its lease lapses", async () => {
    const dead = new EvaluationJobs(pool, 1);
    const job = await newJob(dead);
    expect((await dead.claim())?.id).to.equal(job.id);
    // The replica dies here: it never renews. Another, idle, sweeps often in this test.
    const { runner, notifications, ran, errors } = startRunner(new EvaluationJobs(pool, 1), { pollIntervalMs: 600_000, leaseSweepIntervalMs: 200 }, true);
    await notifications!.start();
    runner.start();
    await waitFor(`job ${job.id} to be recovered`, async () => ((await read(job.id)).state === 'SUCCEEDED' ? true : undefined), 15_000);
    expect(ran).to.deep.equal([job.id]);
    expect(await read(job.id)).to.deep.equal({ state: 'SUCCEEDED', attempts: 2 });
    expect(errors).to.deep.equal([]);
  });

  // The listener survives its connection being killed: it reconnects, and a job enqueued afterwards still wakes the runner.
  it('reconnects its LISTEN connection after it drops', async () => {
    const counting = countingPool();
    const { runner, notifications, ran, errors } = startRunner(new EvaluationJobs(counting.pool as pg.Pool), { pollIntervalMs: 600_000, leaseSweepIntervalMs: 600_000 }, true);
    await notifications!.start();
    runner.start();
    await untilIdle(counting.counts);
    const killed = await pool.query<{ n: number }>(
      `SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'shieldx-shadow-listen'`,
    );
    expect(killed.rows[0]!.n).to.equal(1);
    await waitFor('the listener to reconnect', async () =>
      (
        await pool.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'shieldx-shadow-listen' AND query LIKE 'LISTEN%'`,
        )
      ).rows[0]!.n === 1
        ? true
        : undefined,
    );
    const job = await newJob(new EvaluationJobs(pool));
    await waitFor(`job ${job.id} to run`, async () => ((await read(job.id)).state === 'SUCCEEDED' ? true : undefined), 15_000);
    expect(ran).to.deep.equal([job.id]);
    expect(errors.length, 'the dropped connection is reported').to.be.greaterThan(0);
  });
});
