/**
 * The loop that runs persisted evaluation jobs (store/evaluation-jobs.ts) on this replica.
 *
 * An idle runner costs next to nothing: it sleeps until a job becomes PENDING
 * (a trigger NOTIFYs `shadow_evaluation_pending`, which `JobNotifications`
 * LISTENs for on a connection of its own), with a slow fallback poll — one
 * index-only SELECT — for notifications it missed or cannot receive (behind
 * PgBouncer transaction pooling). The lease sweep runs on its own, slower
 * interval: a dead replica's job waits at most lease + sweep interval.
 */
import type { CompletedEvaluation, EvaluationJobs, EvaluationRow } from '../store/evaluation-jobs';

/** Fallback poll of an idle runner (notifications wake it at once). */
export const POLL_INTERVAL_MS = 5_000;
/** How often a runner re-queues jobs whose lease ran out. */
export const LEASE_SWEEP_INTERVAL_MS = 30_000;

export interface RunnerOptions {
  /** Fallback poll while idle (a missed notification waits at most this). */
  readonly pollIntervalMs?: number;
  /** How often expired leases are re-queued. */
  readonly leaseSweepIntervalMs?: number;
}

/**
 * Runs jobs one at a time on this replica (an evaluation already uses every
 * core through worker threads). While idle it sleeps until `wake()` (a local
 * StartEvaluation, or a notification from any replica), the fallback poll, or
 * the next lease sweep, whichever comes first; it issues no write until there
 * is work or a sweep is due.
 */
export class EvaluationRunner {
  private wakeUp: (() => void) | undefined;
  /** A wake() that arrived while the loop was busy: the next wait returns at once. */
  private woken = false;
  private loop: Promise<void> | undefined;
  private readonly pollIntervalMs: number;
  private readonly leaseSweepIntervalMs: number;

  constructor(
    private readonly jobs: EvaluationJobs,
    private readonly execute: (job: EvaluationRow) => Promise<CompletedEvaluation>,
    private readonly onError: (error: unknown) => void,
    private readonly signal: AbortSignal,
    options: RunnerOptions = {},
  ) {
    this.pollIntervalMs = options.pollIntervalMs ?? POLL_INTERVAL_MS;
    this.leaseSweepIntervalMs = options.leaseSweepIntervalMs ?? LEASE_SWEEP_INTERVAL_MS;
  }

  start(): void {
    this.loop ??= this.run();
  }

  wake(): void {
    this.woken = true;
    this.wakeUp?.();
  }

  /** Resolves when the loop has stopped (after the shutdown signal). */
  async stopped(): Promise<void> {
    await this.loop;
  }

  private async run(): Promise<void> {
    this.signal.addEventListener('abort', () => this.wakeUp?.(), { once: true });
    let nextSweepAt = 0;
    // The first pass claims without probing: work may be waiting from before this replica started.
    let mayHaveWork = true;
    while (!this.signal.aborted) {
      // The one place a wake() is taken, whether it ended the wait or came while the loop was busy
      // (claiming, running a job): claim without probing. Taken before the statements below, so a
      // wake() that arrives during them is left set, and the wait further down is skipped.
      if (this.woken) {
        this.woken = false;
        mayHaveWork = true;
      }
      let job: EvaluationRow | undefined;
      try {
        if (Date.now() >= nextSweepAt) {
          nextSweepAt = Date.now() + this.leaseSweepIntervalMs;
          // A re-queued job is PENDING again: claim below.
          if ((await this.jobs.requeueExpired()) > 0) mayHaveWork = true;
        }
        // A poll with no reason to expect work only reads (one SELECT on the partial state index). claim()
        // alone is not cheaper: with nothing PENDING it changes no row, but it is still an UPDATE that
        // takes the table's RowExclusiveLock, and a read-only connection (a standby) would refuse it.
        if (mayHaveWork || (await this.jobs.hasPending())) job = await this.jobs.claim();
      } catch (error) {
        this.onError(error);
      }
      if (job) {
        const claimed = job;
        // Keep the lease while the job runs, however long it takes (a lapsed lease lets another replica re-claim it).
        const renewal = setInterval(() => {
          this.jobs.renewLease(claimed).catch(this.onError);
        }, (this.jobs.leaseSeconds * 1000) / 3);
        try {
          const completed = await this.execute(job);
          await this.jobs.succeed(job, completed);
        } catch (error) {
          this.onError(error);
          await this.jobs.fail(job, error instanceof Error ? error.message : String(error)).catch(this.onError);
        } finally {
          clearInterval(renewal);
        }
        // More may be queued behind it.
        mayHaveWork = true;
        continue;
      }
      mayHaveWork = false;
      // A wake() during this pass is taken at the top of the next one; abort ends the loop there.
      if (this.woken || this.signal.aborted) continue;
      const waitMs = Math.max(0, Math.min(this.pollIntervalMs, nextSweepAt - Date.now()));
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, waitMs);
        this.wakeUp = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wakeUp = undefined;
    }
  }
}
