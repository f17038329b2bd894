import { expect } from 'chai';
import type { RunningService } from '../../../platform/server';
import { startTestService } from '../../../testing/harness';
import { PgLease } from './rollout-lease';
import { getRollout, listEvents, markApplied, transition, type Transition } from './rollout-store';
import { clientFor, insertEvaluation, rolloutTestModule, rpc } from '../../../testing/rollout-kit';

describe('rollout store and lease (PostgreSQL)', function () {
  this.timeout(30_000);
  let service: RunningService;
  let evaluationId: string;
  let counter = 0;

  const createRollout = async () => {
    const { rollout } = await rpc(clientFor(service)).create({
      evaluationId,
      target: { namespace: 'store', virtualService: `vs-${++counter}`, host: 'vs.store.svc', stableSubset: 'stable', canarySubset: 'canary', routeName: '' },
      steps: [10, 100],
      stepDuration: undefined,
      analysis: undefined,
      autoRollback: true,
      disableAutoRollback: false,
      manualPromotion: false,
      idempotencyKey: '',
    });
    return rollout!.id;
  };

  const advance: Transition = { to: 'PROGRESSING', step: 0, canaryWeight: 10, reason: 'STARTED', inconclusiveCount: 0, restartStepClock: true };

  before(async () => {
    service = await startTestService(rolloutTestModule, { ROLLOUT_CONTROLLER: 'off' });
    evaluationId = await insertEvaluation(service.pool, 'approved');
  });

  after(async () => {
    await service?.pool.query(`DELETE FROM shadow_rollouts WHERE namespace = 'store'`).catch(() => undefined);
    await service?.pool.query(`DELETE FROM shadow_leases WHERE name LIKE 'test-%'`).catch(() => undefined);
    await service?.shutdown();
  });

  // Two transitions from the same read version race: exactly one commits, with exactly one event.
  it('applies a transition once under concurrency (compare-and-set)', async () => {
    const id = await createRollout();
    const read = (await getRollout(service.pool, id))!;
    const results = await Promise.all(Array.from({ length: 5 }, () => transition(service.pool, read, advance)));
    expect(results.filter((r) => r !== undefined)).to.have.length(1);
    const events = await listEvents(service.pool, id);
    expect(events.map((e) => [e.sequence, e.reason])).to.deep.equal([
      [1n, 'CREATED'],
      [2n, 'STARTED'],
    ]);
    // A stale reader loses too, and writes nothing.
    expect(await transition(service.pool, read, { ...advance, step: 1, canaryWeight: 100, to: 'SUCCEEDED' })).to.equal(undefined);
    expect((await getRollout(service.pool, id))!.state).to.equal('PROGRESSING');
  });

  // markApplied records the router's write only for the version it was derived from.
  it('records applied weights only for the current version', async () => {
    const id = await createRollout();
    const read = (await getRollout(service.pool, id))!;
    const moved = (await transition(service.pool, read, advance))!;
    expect(await markApplied(service.pool, read, 10)).to.equal(false);
    expect(await markApplied(service.pool, moved, 50)).to.equal(false);
    expect(await markApplied(service.pool, moved, 10)).to.equal(true);
    expect((await getRollout(service.pool, id))!.appliedWeight).to.equal(10);
  });

  // One holder at a time: renewals by the holder succeed, others fail until it releases or its lease expires.
  it('grants the lease to one holder at a time', async () => {
    const a = new PgLease(service.pool, 'test-lease', 'a', 30);
    const b = new PgLease(service.pool, 'test-lease', 'b', 30);
    expect(await a.acquireOrRenew()).to.equal(true);
    expect(a.isHeld()).to.equal(true);
    expect(await b.acquireOrRenew()).to.equal(false);
    expect(b.isHeld()).to.equal(false);
    expect(await a.acquireOrRenew()).to.equal(true);
    await a.release();
    expect(a.isHeld()).to.equal(false);
    expect(await b.acquireOrRenew()).to.equal(true);
    // b's lease runs out (moved into the past here rather than waited for): a takes over, b no longer can.
    await service.pool.query(`UPDATE shadow_leases SET expires_at = now() - interval '1 second' WHERE name = 'test-lease'`);
    expect(await a.acquireOrRenew()).to.equal(true);
    expect(await b.acquireOrRenew()).to.equal(false);
    expect(await PgLease.currentHolder(service.pool, 'test-lease')).to.equal('a');
  });

  // Concurrent acquisitions of a free lease elect exactly one holder.
  it('elects one holder among concurrent candidates', async () => {
    const leases = Array.from({ length: 6 }, (_, i) => new PgLease(service.pool, 'test-election', `candidate-${i}`, 30));
    const won = await Promise.all(leases.map((lease) => lease.acquireOrRenew()));
    expect(won.filter(Boolean)).to.have.length(1);
  });
});
