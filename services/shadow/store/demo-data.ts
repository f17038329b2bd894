/**
 * The `npm start` demo dataset ("demo"): generated, labelled traffic to try
 * evaluations on. It loads in the background once the service is serving (a
 * large SHADOW_DEMO_SAMPLES must not delay start or readiness), in one
 * transaction: a load cut short by shutdown or an error leaves no half
 * dataset behind, and the next start simply loads it again.
 */
import type pg from 'pg';
import { withTransaction } from '../../../platform/db';
import type { Logger } from '../../../platform/logger';
import { SampleIngestor } from './sample-store';
import { streamTraffic } from '../domain/traffic-generator';

export const DEMO_DATASET = 'demo';
const DEMO_SEED = 42;
/** Serialises loaders (two replicas on one dev database): transaction-scoped, so PgBouncer-safe. */
const DEMO_LOCK_KEY = 'shieldx-shadow-demo-data';

async function demoRows(db: Pick<pg.Pool | pg.PoolClient, 'query'>): Promise<boolean> {
  const { rows } = await db.query('SELECT 1 FROM shadow_samples WHERE dataset = $1 LIMIT 1', [DEMO_DATASET]);
  return rows.length > 0;
}

/**
 * Loads `samples` demo samples unless the dataset has rows. Rejects with the
 * signal's reason when `signal` fires first (nothing is committed then).
 * Returns the number of samples loaded (0: already there).
 */
export async function loadDemoData(pool: pg.Pool, samples: number, signal: AbortSignal): Promise<number> {
  signal.throwIfAborted();
  if (await demoRows(pool)) return 0;
  return withTransaction(pool, async (client) => {
    await client.query('SELECT pg_advisory_xact_lock(hashtext($1))', [DEMO_LOCK_KEY]);
    if (await demoRows(client)) return 0;
    const ingestor = new SampleIngestor(client, DEMO_DATASET);
    for (const sample of streamTraffic({ count: samples, seed: DEMO_SEED })) {
      signal.throwIfAborted();
      await ingestor.add(sample);
    }
    signal.throwIfAborted();
    await ingestor.flush();
    return ingestor.summary.accepted;
  });
}

/**
 * Runs `loadDemoData` in the background: resolves when it is done, failed or
 * cancelled, never rejects (a failure is logged; the service keeps serving
 * without demo data). Shutdown awaits the returned promise after firing `signal`.
 */
export function loadDemoDataInBackground(pool: pg.Pool, samples: number, signal: AbortSignal, logger: Logger): Promise<void> {
  logger.info({ dataset: DEMO_DATASET, samples }, 'loading demo traffic in the background');
  return loadDemoData(pool, samples, signal).then(
    (loaded) => {
      if (loaded > 0) logger.info({ dataset: DEMO_DATASET, samples: loaded }, 'demo traffic loaded');
      else logger.info({ dataset: DEMO_DATASET }, 'demo traffic already present');
    },
    (err: unknown) => {
      if (signal.aborted) logger.info({ dataset: DEMO_DATASET }, 'demo traffic load cancelled by shutdown; nothing kept');
      else logger.error({ err, dataset: DEMO_DATASET }, 'could not load demo traffic; serving without it');
    },
  );
}
