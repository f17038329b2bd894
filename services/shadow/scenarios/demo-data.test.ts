/**
 * The `npm start` demo dataset loads in the background once the service is
 * serving: start never waits for it, shutdown cancels it (nothing half-loaded
 * is kept), and a failed load is logged while the service keeps serving.
 * A test connection holding an EXCLUSIVE lock on shadow_samples (reads pass,
 * inserts wait) keeps the load in progress for as long as a test needs.
 */
import { expect } from 'chai';
import pg from 'pg';
import { EvaluationState, ShadowServiceClient } from '../../../gen/shieldx/shadow/v1/shadow';
import { runMigrations } from '../../../platform/migrate';
import type { RunningService } from '../../../platform/server';
import { address, bearer, insecure, startTestService, testInfrastructure, waitFor } from '../../../testing/harness';
import { DEMO_DATASET } from '../store/demo-data';
import { shadowService } from '..';

const SAMPLES = 3000;

describe('shadow demo data', function () {
  this.timeout(30_000);
  let locker: pg.Client | undefined;
  let service: RunningService | undefined;
  let client: ShadowServiceClient | undefined;
  let db: pg.Client;

  const demoCount = async () => Number((await db.query('SELECT count(*) AS n FROM shadow_samples WHERE dataset = $1', [DEMO_DATASET])).rows[0].n);
  /** Holds inserts into shadow_samples until `release`. */
  const lockSamples = async () => {
    locker = new pg.Client({ connectionString: testInfrastructure().databaseUrl });
    await locker.connect();
    await locker.query('BEGIN');
    await locker.query('LOCK TABLE shadow_samples IN EXCLUSIVE MODE');
  };
  const release = async () => {
    const l = locker;
    locker = undefined;
    await l?.query('COMMIT');
    await l?.end();
  };
  /** The demo load's INSERT, waiting for the lock. */
  const blockedInsert = () =>
    waitFor('the demo load to wait on the lock', async () => {
      const { rows } = await db.query<{ pid: number }>(
        `SELECT pid FROM pg_stat_activity
          WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO shadow_samples%'`,
      );
      return rows[0]?.pid;
    });
  const start = async () => {
    service = await startTestService(shadowService, { ROLLOUT_CONTROLLER: 'off', SHADOW_DEMO_DATA: 'true', SHADOW_DEMO_SAMPLES: String(SAMPLES) });
    client = new ShadowServiceClient(address(service), insecure);
  };
  const listEvaluations = () =>
    new Promise<unknown>((resolve, reject) =>
      client!.listEvaluations({ pageSize: 1, pageToken: '', state: EvaluationState.EVALUATION_STATE_UNSPECIFIED }, bearer(), (e, r) => (e ? reject(e) : resolve(r))),
    );

  before(async () => {
    // The table must exist before it can be locked (the service would create it on start).
    await runMigrations(testInfrastructure().databaseUrl, 'shadow');
    db = new pg.Client({ connectionString: testInfrastructure().databaseUrl });
    await db.connect();
  });
  beforeEach(async () => {
    await db.query('DELETE FROM shadow_samples WHERE dataset = $1', [DEMO_DATASET]);
  });
  afterEach(async () => {
    await release();
    client?.close();
    client = undefined;
    await service?.shutdown();
    service = undefined;
  });
  after(async () => {
    await db.query('DELETE FROM shadow_samples WHERE dataset = $1', [DEMO_DATASET]);
    await db.end();
  });

  // Start returns and calls are answered while the demo load cannot make progress; the dataset appears, whole, once it can.
  it('serves before the demo data is loaded, then loads it', async () => {
    await lockSamples();
    await start();
    await blockedInsert();
    await listEvaluations();
    expect(await demoCount()).to.equal(0);
    await release();
    await waitFor('the demo dataset', async () => ((await demoCount()) === SAMPLES ? true : undefined));
  });

  // Shutdown during the load stops it at its next sample and rolls it back: no half dataset is left for the next start to mistake for a whole one.
  it('cancels a load in progress on shutdown and keeps nothing', async () => {
    await lockSamples();
    await start();
    await blockedInsert();
    const stopping = service!.shutdown();
    // The insert in flight can only finish once the lock is gone; shutdown must then still cancel the rest.
    await new Promise((resolve) => setTimeout(resolve, 200));
    await release();
    await stopping;
    service = undefined;
    expect(await demoCount()).to.equal(0);
  });

  // A load that fails (its connection killed) is logged and dropped: the process neither crashes nor stops serving.
  it('keeps serving when the load fails', async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      await lockSamples();
      await start();
      const pid = await blockedInsert();
      await db.query('SELECT pg_terminate_backend($1)', [pid]);
      await release();
      await new Promise((resolve) => setTimeout(resolve, 300));
      await listEvaluations();
      expect(await demoCount()).to.equal(0);
      expect(unhandled).to.deep.equal([]);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });
});
