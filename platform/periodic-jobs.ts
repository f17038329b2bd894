/**
 * Periodic background jobs of a service (credits: expiry sweeper, key pruning, audit and
 * invariant checks; shadow: key pruning). Each runs on its own timer (unref'd, one run at a time, never overlapping),
 * stops when `signal` aborts, and does bounded work per run.
 */
import type { Logger } from './logger';

export interface PeriodicJob {
  readonly name: string;
  readonly intervalMs: number;
  /** Delay before the first run; defaults to the interval. */
  readonly firstRunMs?: number;
  run(): Promise<void>;
}

/** Starts the jobs; the returned function resolves once none is running. */
export function startJobs(jobs: readonly PeriodicJob[], signal: AbortSignal, logger: Logger): () => Promise<void> {
  const running = new Set<Promise<void>>();
  const timers = new Set<NodeJS.Timeout>();
  for (const job of jobs) {
    const tick = () => {
      if (signal.aborted) return;
      const work = job
        .run()
        .catch((err: unknown) => logger.warn({ err, job: job.name }, 'background job failed'))
        .finally(() => {
          running.delete(work);
          if (!signal.aborted) arm(job.intervalMs);
        });
      running.add(work);
    };
    const arm = (ms: number) => {
      const timer = setTimeout(() => {
        timers.delete(timer);
        tick();
      }, ms);
      timer.unref();
      timers.add(timer);
    };
    arm(job.firstRunMs ?? job.intervalMs);
  }
  signal.addEventListener('abort', () => {
    for (const t of timers) clearTimeout(t);
    timers.clear();
  });
  return async () => {
    for (const t of timers) clearTimeout(t);
    timers.clear();
    await Promise.allSettled([...running]);
  };
}
