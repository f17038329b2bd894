/**
 * Runs a replay plan across worker threads — and is itself the worker script.
 *
 * Partitioning (why the split cannot change a result):
 *  - match tables: the distinct values of a column are cut into contiguous
 *    slices; each worker writes its slice of the shared Uint8Array table.
 *  - rate limits: *keys* are cut into contiguous key-id ranges balanced by
 *    request count, so every request of one key is replayed by one worker, in
 *    the key's time order (the CSR order built on the main thread); each worker
 *    writes the window counts of its own requests only.
 *  - fold: samples are cut into contiguous index ranges.
 * The main thread replays one partition of each phase itself.
 * Every slot of every output is written by exactly one thread with the same
 * arithmetic as the single-threaded path (same kernel functions from
 * replay.ts), so results are identical for any worker count — the tests check
 * 1, 2 and 4 workers against the single-threaded replay.
 *
 * Data moves through SharedArrayBuffers (no copy); only the distinct string
 * values sent to match tasks are cloned.
 *
 * Loading: detected from the extension of __filename. Compiled JS (`.js`)
 * starts the worker on this file directly; tsx source (`.ts`) starts it through
 * a bootstrap that installs tsx's CommonJS hook first (see `startWorker`).
 *
 * The pool is persistent and lazily created (starting a thread — and, under
 * tsx, compiling the modules in it — costs tens to hundreds of milliseconds,
 * more than replaying 100k samples), workers are unref'd while idle so they
 * never keep the process alive, and the task queue is bounded.
 *
 * When it pays (see chooseWorkerCount): only the replay is parallel; interning
 * the columns and the statistics stay on the main thread.
 */
import { availableParallelism } from 'node:os';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { compileRule, type CompiledMatchRule, type RuleConfig } from '../domain/rules';
import {
  computeMatchTable,
  computeWindowCounts,
  executePlan,
  foldContextOf,
  foldRange,
  type FoldNode,
  type KeyIndex,
  type ReplayOutput,
  type ReplayPlan,
} from '../domain/replay';
import type { SampleColumns } from '../domain/sample-columns';

const WORKER_ROLE = 'shieldx-shadow-evaluation-worker';

/** Below this many samples the thread hand-off costs more than it saves (measured by bench/shadow-evaluate.ts). */
export const WORKERS_AUTO_MIN_SAMPLES = 500_000;
/** 'auto' uses threads only from this many cores up (see chooseWorkerCount). */
export const WORKERS_AUTO_MIN_CORES = 4;
/** Match jobs with fewer distinct values than this run inline on the main thread. */
const MATCH_INLINE_MAX_VALUES = 8192;
/** Pool sizes beyond this give nothing on the machines we run on and multiply memory. */
export const WORKERS_MAX = 16;
/** Bound on queued tasks per pool (TIGER_STYLE: every queue has a limit). */
const TASK_QUEUE_MAX = 4096;
/** Compiled leaves cached per worker. */
const LEAF_CACHE_MAX = 256;

type MatchTask = {
  kind: 'match';
  leaf: RuleConfig;
  values: string[];
  out: Uint8Array;
  offset: number;
};
type WindowTask = {
  kind: 'window';
  ts: Float64Array;
  index: KeyIndex;
  keyFrom: number;
  keyTo: number;
  windowMs: number;
  out: Int32Array;
};
type FoldTask = {
  kind: 'fold';
  programs: readonly FoldNode[];
  columnIds: Readonly<Record<string, Int32Array>>;
  tables: Uint8Array[];
  counts: Int32Array[];
  sampleScores: Float64Array;
  from: number;
  to: number;
  outputs: readonly { scores: Float64Array; predictions: Uint8Array }[];
};
type Task = MatchTask | WindowTask | FoldTask;
type Reply = { id: number; ok: true; fired?: number[] } | { id: number; ok: false; error: string };

// ---------------------------------------------------------------- worker side

function runWorker(): void {
  const port = parentPort;
  if (!port) throw new Error('evaluation worker started without a parent port');
  const leaves = new Map<string, CompiledMatchRule>();
  port.on('message', (message: { id: number; task: Task }) => {
    const { id, task } = message;
    try {
      if (task.kind === 'match') {
        const cacheKey = JSON.stringify(task.leaf);
        let leaf = leaves.get(cacheKey);
        if (!leaf) {
          if (leaves.size >= LEAF_CACHE_MAX) leaves.clear();
          leaf = compileRule(task.leaf) as CompiledMatchRule;
          leaves.set(cacheKey, leaf);
        }
        computeMatchTable(leaf, task.values, 0, task.values.length, task.out, task.offset);
        port.postMessage({ id, ok: true } satisfies Reply);
      } else if (task.kind === 'window') {
        computeWindowCounts(task.ts, task.index, task.keyFrom, task.keyTo, task.windowMs, task.out);
        port.postMessage({ id, ok: true } satisfies Reply);
      } else {
        const ctx = { columnIds: task.columnIds, tables: task.tables, counts: task.counts, sampleScores: task.sampleScores };
        const fired = foldRange(task.programs, ctx, task.from, task.to, task.outputs);
        port.postMessage({ id, ok: true, fired } satisfies Reply);
      }
    } catch (error) {
      port.postMessage({ id, ok: false, error: (error as Error)?.message ?? String(error) } satisfies Reply);
    }
  });
}

if (!isMainThread && (workerData as { role?: string } | null)?.role === WORKER_ROLE) runWorker();

// ---------------------------------------------------------------- pool

interface Slot {
  worker: Worker;
  current: { id: number; resolve: (r: Reply) => void; reject: (e: Error) => void } | null;
}

/**
 * How to start a worker on this file. Compiled JS: the file itself. tsx source:
 * Node 20 does not apply loader hooks registered with `--import` to worker
 * threads, so the worker is a two-line CommonJS bootstrap that installs tsx's
 * require hook (`tsx/cjs`, resolved to an absolute path so any cwd works) and
 * then requires this file.
 */
function startWorker(): Worker {
  const options = { workerData: { role: WORKER_ROLE } };
  if (__filename.endsWith('.ts')) {
    const bootstrap = `require(${JSON.stringify(require.resolve('tsx/cjs'))});\nrequire(${JSON.stringify(__filename)});`;
    return new Worker(bootstrap, { ...options, eval: true });
  }
  return new Worker(__filename, options);
}

/** A fixed-size pool of evaluation worker threads with a bounded FIFO task queue. */
export class EvaluationWorkerPool {
  readonly size: number;
  private readonly slots: Slot[] = [];
  private readonly queue: { id: number; task: Task; resolve: (r: Reply) => void; reject: (e: Error) => void }[] = [];
  private nextId = 1;
  private closed = false;

  constructor(size: number) {
    if (!Number.isInteger(size) || size < 1 || size > WORKERS_MAX) {
      throw new RangeError(`worker pool size must be an integer 1..${WORKERS_MAX}`);
    }
    this.size = size;
    for (let i = 0; i < size; i++) this.slots.push(this.spawn());
  }

  private spawn(): Slot {
    const worker = startWorker();
    worker.unref();
    const slot: Slot = { worker, current: null };
    worker.on('message', (reply: Reply) => {
      const current = slot.current;
      slot.current = null;
      worker.unref();
      if (current && current.id === reply.id) current.resolve(reply);
      this.pump();
    });
    const fail = (error: Error): void => {
      const current = slot.current;
      slot.current = null;
      if (current) current.reject(error);
      if (this.closed) return;
      const index = this.slots.indexOf(slot);
      if (index !== -1) this.slots[index] = this.spawn();
      this.pump();
    };
    worker.on('error', (error) => fail(error));
    worker.on('exit', (code) => {
      if (!this.closed) fail(new Error(`evaluation worker exited with code ${code}`));
    });
    return slot;
  }

  private pump(): void {
    for (const slot of this.slots) {
      if (this.queue.length === 0) return;
      if (slot.current) continue;
      const next = this.queue.shift()!;
      slot.current = { id: next.id, resolve: next.resolve, reject: next.reject };
      slot.worker.ref(); // keep the process alive while work is in flight
      slot.worker.postMessage({ id: next.id, task: next.task });
    }
  }

  /** Queues a task; resolves with the worker's reply, rejects on a worker error. */
  run(task: Task): Promise<Reply> {
    if (this.closed) return Promise.reject(new Error('evaluation worker pool is closed'));
    if (this.queue.length >= TASK_QUEUE_MAX) return Promise.reject(new Error('evaluation worker queue is full'));
    return new Promise<Reply>((resolve, reject) => {
      this.queue.push({ id: this.nextId++, task, resolve, reject });
      this.pump();
    }).then((reply) => {
      if (!reply.ok) throw new Error(`evaluation worker failed: ${reply.error}`);
      return reply;
    });
  }

  /** Terminates every worker; queued tasks are rejected. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const item of this.queue.splice(0)) item.reject(new Error('evaluation worker pool closed'));
    await Promise.all(
      this.slots.map(async (slot) => {
        slot.current?.reject(new Error('evaluation worker pool closed'));
        slot.current = null;
        await slot.worker.terminate();
      }),
    );
  }
}

const pools = new Map<number, EvaluationWorkerPool>();

/** The process-wide pool of `size` workers, created on first use. */
export function getEvaluationWorkerPool(size: number): EvaluationWorkerPool {
  let pool = pools.get(size);
  if (!pool) pools.set(size, (pool = new EvaluationWorkerPool(size)));
  return pool;
}

/** Closes every shared pool (service shutdown, end of a test run or a bench). */
export async function closeEvaluationWorkerPools(): Promise<void> {
  const all = [...pools.values()];
  pools.clear();
  await Promise.all(all.map((p) => p.close()));
}

/**
 * How many worker threads to use: an explicit number is honoured (0 =
 * single-threaded, capped at WORKERS_MAX). 'auto' uses cores − 1 workers (at
 * most 3; the main thread replays a share too, see executePlanParallel), but
 * only with at least WORKERS_AUTO_MIN_CORES cores and WORKERS_AUTO_MIN_SAMPLES
 * samples. Why so conservative (bench/shadow-evaluate.ts): the parallel part —
 * match tables, windows, fold — is only ~25% of an evaluation's wall time at
 * 1M samples (interning the columns and the statistics stay on the main
 * thread), and on the 2-core target 1 worker + main measured no gain over the
 * single thread, so 'auto' stays single-threaded there.
 */
export function chooseWorkerCount(sampleCount: number, requested: number | 'auto' | undefined): number {
  if (typeof requested === 'number') {
    if (!Number.isInteger(requested) || requested < 0) throw new RangeError('workers must be a non-negative integer');
    return Math.min(requested, WORKERS_MAX);
  }
  const cores = availableParallelism();
  if (cores < WORKERS_AUTO_MIN_CORES || sampleCount < WORKERS_AUTO_MIN_SAMPLES) return 0;
  return Math.min(cores - 1, 3);
}

/**
 * Key-id boundaries cutting the keys into `parts` contiguous ranges with about
 * n/parts requests each; a key is never split (one key = one range).
 */
export function partitionKeys(index: KeyIndex, parts: number): number[] {
  const n = index.start[index.keyCount];
  const bounds = [0];
  for (let p = 1; p < parts; p++) {
    const target = Math.round((n * p) / parts);
    let lo = bounds[bounds.length - 1];
    let hi = index.keyCount;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (index.start[mid] < target) lo = mid + 1;
      else hi = mid;
    }
    bounds.push(lo);
  }
  bounds.push(index.keyCount);
  return bounds;
}

/**
 * Runs a plan split into `parts` partitions per phase (default: one per worker
 * plus one). The main thread is not idle while it waits: it replays the last
 * partition of every phase itself (and the small match jobs), so on a 2-core
 * machine 1 worker + the main thread use both cores without oversubscribing.
 * Same outputs as `executePlan` (see the module comment for why).
 */
export async function executePlanParallel(
  plan: ReplayPlan,
  columns: SampleColumns,
  pool: EvaluationWorkerPool,
  parts: number = pool.size + 1,
): Promise<ReplayOutput[]> {
  if (!Number.isInteger(parts) || parts < 1) throw new RangeError('parts must be a positive integer');
  const mainPart = parts - 1; // the partition the main thread replays itself
  const pending: Promise<Reply>[] = [];
  const local: (() => void)[] = [];
  for (const job of plan.matchJobs) {
    const m = job.values.length;
    if (m < MATCH_INLINE_MAX_VALUES) {
      local.push(() => computeMatchTable(job.leaf, job.values, 0, m, job.table, 0));
      continue;
    }
    for (let p = 0; p < parts; p++) {
      const from = Math.floor((m * p) / parts);
      const to = Math.floor((m * (p + 1)) / parts);
      if (to <= from) continue;
      if (p === mainPart) {
        local.push(() => computeMatchTable(job.leaf, job.values, from, to, job.table, from));
        continue;
      }
      pending.push(
        pool.run({ kind: 'match', leaf: job.leaf.config, values: job.values.slice(from, to), out: job.table, offset: from }),
      );
    }
  }
  for (const job of plan.windowJobs) {
    const index = plan.keyIndexes.get(job.keyBy)!;
    const bounds = partitionKeys(index, parts);
    for (let p = 0; p < parts; p++) {
      const keyFrom = bounds[p];
      const keyTo = bounds[p + 1];
      if (keyTo <= keyFrom) continue;
      if (p === mainPart) {
        local.push(() => computeWindowCounts(columns.timestampMs, index, keyFrom, keyTo, job.windowMs, job.counts));
        continue;
      }
      pending.push(
        pool.run({ kind: 'window', ts: columns.timestampMs, index, keyFrom, keyTo, windowMs: job.windowMs, out: job.counts }),
      );
    }
  }
  for (const work of local) work();
  await Promise.all(pending);

  const ctx = foldContextOf(plan);
  const folds: Promise<Reply>[] = [];
  const n = plan.length;
  const fired = plan.programs.map(() => 0);
  let mainRange: [number, number] | null = null;
  for (let p = 0; p < parts; p++) {
    const from = Math.floor((n * p) / parts);
    const to = Math.floor((n * (p + 1)) / parts);
    if (to <= from) continue;
    if (p === mainPart) {
      mainRange = [from, to];
      continue;
    }
    folds.push(
      pool.run({
        kind: 'fold',
        programs: plan.programs,
        columnIds: ctx.columnIds,
        tables: [...ctx.tables],
        counts: [...ctx.counts],
        sampleScores: ctx.sampleScores,
        from,
        to,
        outputs: plan.outputs,
      }),
    );
  }
  if (mainRange) foldRange(plan.programs, ctx, mainRange[0], mainRange[1], plan.outputs).forEach((f, i) => (fired[i] += f));
  for (const reply of await Promise.all(folds)) {
    if (reply.ok && reply.fired) reply.fired.forEach((f, i) => (fired[i] += f));
  }
  return plan.outputs.map((o, p) => ({ predictions: o.predictions, scores: o.scores, fired: fired[p] }));
}

/** Runs a plan single-threaded (workers = 0) or on the shared pool of that many workers. */
export async function runPlan(plan: ReplayPlan, columns: SampleColumns, workers: number): Promise<ReplayOutput[]> {
  if (workers <= 0) return executePlan(plan, columns);
  return executePlanParallel(plan, columns, getEvaluationWorkerPool(workers));
}
