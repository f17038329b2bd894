/**
 * Idempotency keys of the rollout RPCs are kept for
 * ROLLOUT_IDEMPOTENCY_RETENTION_HOURS (168 by default) and then pruned by every
 * replica (controller or not), against real PostgreSQL: never a key younger than the
 * retention, never the key of a rollout the controller still needs (live, or
 * finished with its weight not yet applied by the router).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { RolloutState, type CreateRolloutRequest, type ShadowServiceClient } from '../../../gen/shieldx/shadow/v1/shadow';
import type { RunningService } from '../../../platform/server';
import { startTestService, waitFor } from '../../../testing/harness';
import { clientFor, insertEvaluation, rolloutTestModule, rpc } from '../../../testing/rollout-kit';

const NAMESPACE = 'retention';

describe('rollout idempotency retention', function () {
  this.timeout(60_000);
  let service: RunningService;
  let client: ShadowServiceClient;
  let api: ReturnType<typeof rpc>;
  let dir: string;
  let evaluationId: string;
  const prefix = `retention-${Date.now().toString(36)}-`;

  const request = (virtualService: string, idempotencyKey: string): CreateRolloutRequest => ({
    evaluationId,
    target: { namespace: NAMESPACE, virtualService, host: `${virtualService}.example`, stableSubset: 'stable', canarySubset: 'canary', routeName: '' },
    steps: [],
    // Long steps: no analysis (no Prometheus query) while the test runs.
    stepDuration: { seconds: 3600n, nanos: 0 },
    analysis: undefined,
    autoRollback: true,
    disableAutoRollback: false,
    manualPromotion: false,
    idempotencyKey,
    webhooks: [],
  });
  const keys = async (): Promise<string[]> =>
    (await service.pool.query<{ k: string }>('SELECT idempotency_key AS k FROM shadow_rollout_requests WHERE idempotency_key LIKE $1 ORDER BY 1', [`${prefix}%`])).rows.map(
      (r) => r.k,
    );
  const age = (key: string, hours: number) =>
    service.pool.query(`UPDATE shadow_rollout_requests SET created_at = now() - make_interval(hours => $2) WHERE idempotency_key = $1`, [key, hours]);
  const rolloutState = async (id: string) => (await api.get({ id })).rollout!;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'shieldx-rollout-retention-'));
    // Not a VirtualService: the router can never apply this target's weights.
    writeFileSync(join(dir, `${NAMESPACE}.unapplied.yaml`), 'kind: ConfigMap\nmetadata:\n  name: unapplied\n');
    service = await startTestService(rolloutTestModule, {
      ROLLOUT_FILE_ROUTER_DIR: dir,
      ROLLOUT_TICK_MS: '100',
      ROLLOUT_LEADER_LEASE_SECONDS: '2',
      ROLLOUT_IDEMPOTENCY_PRUNE_INTERVAL_SECONDS: '1',
    });
    client = clientFor(service);
    api = rpc(client);
    evaluationId = await insertEvaluation(service.pool, 'approved');
  });

  after(async () => {
    client?.close();
    if (service) {
      await service.pool.query('DELETE FROM shadow_rollouts WHERE namespace = $1', [NAMESPACE]).catch(() => undefined);
      await service.pool.query('DELETE FROM shadow_rollout_requests WHERE idempotency_key LIKE $1', [`${prefix}%`]).catch(() => undefined);
      await service.shutdown();
    }
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  // Keys past the retention of a finished, applied rollout go; a live rollout's and a younger key stay. A finished rollout
  // whose route cannot take the split (no canary destination) has nothing left to write: settled, its keys go too.
  it('prunes only old keys of rollouts the controller no longer needs', async () => {
    // finished: created and aborted by key, weight 0 applied → both keys prunable once old.
    const finished = (await api.create(request('finished', `${prefix}finished-create`))).rollout!;
    await api.abort({ id: finished.id, reason: '', idempotencyKey: `${prefix}finished-abort` });
    // live: PROGRESSING for an hour-long step.
    const live = (await api.create(request('live', `${prefix}live-create`))).rollout!;
    // unapplied: the router fails it (FAILED at weight 0) and can never write that weight: the controller settles it.
    const unapplied = (await api.create(request('unapplied', `${prefix}unapplied-create`))).rollout!;
    // young: finished and applied, but its key is younger than the retention.
    const young = (await api.create(request('young', `${prefix}young-create`))).rollout!;
    await api.abort({ id: young.id, reason: '', idempotencyKey: '' });

    await waitFor('the controller to settle the rollouts', async () => {
      const { rows } = await service.pool.query<{ id: string; state: string; applied: boolean }>(
        'SELECT id, state, applied_weight IS NOT DISTINCT FROM canary_weight AS applied FROM shadow_rollouts WHERE namespace = $1',
        [NAMESPACE],
      );
      const by = new Map(rows.map((r) => [r.id, r]));
      const settled =
        by.get(finished.id)?.applied === true &&
        by.get(young.id)?.applied === true &&
        by.get(live.id)?.state === 'PROGRESSING' &&
        by.get(live.id)?.applied === true &&
        by.get(unapplied.id)?.state === 'FAILED' &&
        by.get(unapplied.id)?.applied === true;
      return settled ? true : undefined;
    });
    expect((await rolloutState(unapplied.id)).state).to.equal(RolloutState.ROLLOUT_STATE_FAILED);

    // Past the default 168 h, except the young key (just under it).
    for (const key of ['finished-create', 'finished-abort', 'live-create', 'unapplied-create']) await age(`${prefix}${key}`, 169);
    await age(`${prefix}young-create`, 167);

    await waitFor('the old keys of the finished rollout to be pruned', async () => {
      const left = await keys();
      return left.includes(`${prefix}finished-create`) || left.includes(`${prefix}finished-abort`) || left.includes(`${prefix}unapplied-create`) ? undefined : left;
    });
    // A later run (every second here) still keeps them.
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    expect(await keys()).to.deep.equal([`${prefix}live-create`, `${prefix}young-create`].sort());
    // A kept key still replays the first response.
    const replay = await api.create(request('live', `${prefix}live-create`));
    expect(replay.rollout!.id).to.equal(live.id);
  });

  // Responses stored by key name the rollout they are about (what pruning checks).
  it('records the rollout of each stored response', async () => {
    const { rows } = await service.pool.query<{ k: string; rollout_id: string | null }>(
      'SELECT idempotency_key AS k, rollout_id FROM shadow_rollout_requests WHERE idempotency_key LIKE $1',
      [`${prefix}%`],
    );
    expect(rows.length).to.be.greaterThan(0);
    expect(rows.every((r) => r.rollout_id !== null)).to.equal(true);
  });

  // A retention below 24 h would break retries within a day: refused at start, naming the variable.
  it('refuses a retention shorter than 24 hours', async () => {
    let error: unknown;
    await startTestService(rolloutTestModule, { ROLLOUT_IDEMPOTENCY_RETENTION_HOURS: '23' }).then(
      (s) => s.shutdown(),
      (e: unknown) => (error = e),
    );
    expect(String(error)).to.match(/ROLLOUT_IDEMPOTENCY_RETENTION_HOURS.*at least 24/);
  });
});

// The table also holds IngestSamples keys, which need no controller: a replica with the
// controller off still prunes (here the only replica running).
describe('idempotency pruning without the rollout controller', function () {
  this.timeout(30_000);
  const prefix = `retention-off-${Date.now().toString(36)}-`;
  let service: RunningService;

  before(async () => {
    service = await startTestService(rolloutTestModule, { ROLLOUT_CONTROLLER: 'off', ROLLOUT_IDEMPOTENCY_PRUNE_INTERVAL_SECONDS: '1' });
  });
  after(async () => {
    await service?.pool.query('DELETE FROM shadow_rollout_requests WHERE idempotency_key LIKE $1', [`${prefix}%`]).catch(() => undefined);
    await service?.shutdown();
  });

  it('prunes old keys on a replica that runs no controller', async () => {
    for (const [key, hours] of [['old', 169], ['young', 1]] as const) {
      await service.pool.query(
        `INSERT INTO shadow_rollout_requests (idempotency_key, method, request_hash, created_at)
         VALUES ($1, 'IngestSamples', 'h', now() - make_interval(hours => $2))`,
        [`${prefix}${key}`, hours],
      );
    }
    const left = await waitFor('the old key to be pruned', async () => {
      const { rows } = await service.pool.query<{ k: string }>('SELECT idempotency_key AS k FROM shadow_rollout_requests WHERE idempotency_key LIKE $1', [`${prefix}%`]);
      return rows.some((r) => r.k === `${prefix}old`) ? undefined : rows.map((r) => r.k);
    });
    expect(left).to.deep.equal([`${prefix}young`]);
  });
});
