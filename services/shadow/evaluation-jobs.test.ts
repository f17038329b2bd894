import { expect } from 'chai';
import { randomUUID } from 'node:crypto';
import type { RunningService } from '../../platform/server';
import { startTestService, waitFor } from '../../test/harness';
import { EvaluationJobs, EvaluationRunner, type EvaluationRow } from './evaluation-jobs';
import { rolloutTestModule } from './rollout-test-support';

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
