/**
 * The credits service's periodic jobs: reservation expiry, idempotency pruning, audit-chain
 * verification and the invariant check.
 */
import type pg from 'pg';
import type { Logger } from '../../platform/logger';
import { startJobs } from '../../platform/periodic-jobs';
import type { CreditsMetrics } from './credits-metrics';
import type { Ledger } from './ledger';
import { pruneExpired } from './store/idempotency';

export interface JobSettings {
  readonly CREDITS_RESERVATION_SWEEP_INTERVAL_MS: number;
  readonly CREDITS_IDEMPOTENCY_PRUNE_INTERVAL_SECONDS: number;
  readonly CREDITS_AUDIT_VERIFY_INTERVAL_SECONDS: number;
  readonly CREDITS_INVARIANT_CHECK_INTERVAL_SECONDS: number;
  readonly CREDITS_FULL_VERIFY_INTERVAL_SECONDS: number;
}

/** Starts the jobs; the returned function aborts them and waits for runs in progress. */
export function startCreditsJobs(
  deps: { ledger: Ledger; pool: pg.Pool; metrics: CreditsMetrics; logger: Logger; shutdownSignal: AbortSignal },
  config: JobSettings,
): { abort(): void; stopped(): Promise<void> } {
  const { ledger, metrics, logger } = deps;
  const jobsController = new AbortController();
  deps.shutdownSignal.addEventListener('abort', () => jobsController.abort(), { once: true });
  // The periodic checks are incremental (checkpoints per tenant, migrations/credits/0003);
  // every CREDITS_FULL_VERIFY_INTERVAL_SECONDS one of their runs re-scans everything instead.
  // A full run that fails (PostgreSQL away) is retried on the next tick, not a whole interval later.
  const fullRunEvery = (ms: number) => {
    let last = Date.now();
    return { due: () => Date.now() - last >= ms, done: () => (last = Date.now()) };
  };
  const auditFullRun = { ...fullRunEvery(config.CREDITS_FULL_VERIFY_INTERVAL_SECONDS * 1000), valid: true };
  const invariantFullRun = { ...fullRunEvery(config.CREDITS_FULL_VERIFY_INTERVAL_SECONDS * 1000), violations: 0 };
  const stopJobs = startJobs(
    [
      {
        name: 'reservation-expiry',
        intervalMs: config.CREDITS_RESERVATION_SWEEP_INTERVAL_MS,
        run: async () => {
          // Bounded: at most 10 rounds of 200 holds per tick.
          for (let round = 0; round < 10 && !jobsController.signal.aborted; round++) {
            if ((await ledger.expireDue(200)) < 200) break;
          }
        },
      },
      {
        name: 'idempotency-prune',
        intervalMs: config.CREDITS_IDEMPOTENCY_PRUNE_INTERVAL_SECONDS * 1000,
        run: async () => {
          const pruned = await pruneExpired(deps.pool, 1_000, 20);
          if (pruned > 0) logger.info({ pruned }, 'expired idempotency records pruned');
        },
      },
      {
        name: 'audit-verify',
        intervalMs: config.CREDITS_AUDIT_VERIFY_INTERVAL_SECONDS * 1000,
        firstRunMs: Math.min(5_000, config.CREDITS_AUDIT_VERIFY_INTERVAL_SECONDS * 1000),
        run: async () => {
          const full = auditFullRun.due();
          const result = full ? await ledger.verifyAuditChain(undefined) : await ledger.verifyNewAuditRows();
          // A full run's verdict stands until the next full run: rows it found broken may not move again.
          if (full) {
            auditFullRun.valid = result.valid;
            auditFullRun.done();
          }
          metrics.auditChainValid.set(result.valid && auditFullRun.valid ? 1 : 0);
          metrics.auditChainLastVerified.set(Date.now() / 1000);
          if (!result.valid) logger.error({ full, breaks: result.breaks.slice(0, 10) }, 'audit chain verification failed');
        },
      },
      {
        name: 'invariant-check',
        intervalMs: config.CREDITS_INVARIANT_CHECK_INTERVAL_SECONDS * 1000,
        firstRunMs: Math.min(5_000, config.CREDITS_INVARIANT_CHECK_INTERVAL_SECONDS * 1000),
        run: async () => {
          const full = invariantFullRun.due();
          const violations = full ? await ledger.invariantViolations() : (await ledger.invariantViolationsSinceCheckpoints()).violations;
          if (full) {
            invariantFullRun.violations = violations;
            invariantFullRun.done();
          }
          metrics.invariantViolations.set(Math.max(violations, invariantFullRun.violations));
          if (violations > 0) logger.error({ full, violations }, 'credit accounts violate the balance invariants');
        },
      },
    ],
    jobsController.signal,
    logger,
  );
  return { abort: () => jobsController.abort(), stopped: stopJobs };
}
