/**
 * Migrations with node-pg-migrate (well kept, plain SQL files, a lock so two
 * replicas starting at once do not race). Each service has its own folder
 * `migrations/<service>/` and its own bookkeeping table, so services deploy
 * independently against one database.
 *
 * The lock is a session-level advisory lock: run migrations over a direct
 * connection, not through PgBouncer in transaction mode.
 */
import { existsSync } from 'node:fs';
import { runner } from 'node-pg-migrate';
import type { Logger } from './logger';
import { projectPath } from './paths';

/** node-pg-migrate takes its lock with a try-lock and fails at once when another runner holds it. */
const LOCK_BUSY = /Another migration is already running/;
const LOCK_ATTEMPTS_MAX = 120;
const LOCK_RETRY_MS = 500;

/**
 * Applies `migrations/<service>/` (idempotent). Replicas and sibling services
 * starting together share one lock: a busy lock is retried (bounded, 60 s)
 * instead of failing the start.
 */
export async function runMigrations(databaseUrl: string, service: string, logger?: Logger): Promise<string[]> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await runOnce(databaseUrl, service, logger);
    } catch (error) {
      if (!(error instanceof Error) || !LOCK_BUSY.test(error.message) || attempt >= LOCK_ATTEMPTS_MAX) throw error;
      logger?.debug({ service, attempt }, 'migration lock busy, retrying');
      await new Promise((resolve) => setTimeout(resolve, LOCK_RETRY_MS));
    }
  }
}

async function runOnce(databaseUrl: string, service: string, logger?: Logger): Promise<string[]> {
  // A service without migrations yet (git keeps no empty folder) has nothing to apply.
  if (!existsSync(projectPath('migrations', service))) return [];
  const applied = await runner({
    databaseUrl,
    dir: projectPath('migrations', service),
    migrationsTable: `pgmigrations_${service}`,
    direction: 'up',
    count: Infinity,
    checkOrder: true,
    singleTransaction: true,
    log: (message: string) => logger?.debug({ migration: message }, 'migration'),
  });
  const names = applied.map((m) => m.name);
  if (names.length > 0) logger?.info({ service, applied: names }, 'migrations applied');
  return names;
}
