/**
 * A generic, bounded gRPC load generator for the ShieldX benches.
 *
 *  - closed loop: `concurrency` workers, each issuing its next call when the
 *    previous one returns (measures capacity);
 *  - open loop: calls started at a fixed `ratePerSecond` whatever the server
 *    does, latency measured from the *intended* start time so a stalled server
 *    shows up in the tail instead of being hidden (no coordinated omission);
 *    calls beyond `maxInFlight` are counted as `dropped`, never queued forever.
 *    The generator ticks on a ~1 ms timer, so a call can start up to ~1 ms
 *    after its due time and that shows in its latency; with `startEarlyMs`
 *    (e.g. 0.5) calls due within that much of a tick start at the tick, their
 *    latency counted from that actual start, which halves the timer's share of
 *    each latency while a late tick (a stalled client or server) still counts in full.
 *
 * Both run a warm-up (not measured), then `durationMs` measured, and stop by
 * themselves: every loop has a time bound, and the sample store is bounded.
 *
 * Usage:
 *   const result = await runLoad({ name: 'consume', durationMs: 10_000, warmupMs: 2_000,
 *     mode: { kind: 'closed', concurrency: 32 }, call: (i) => promisifiedCall(i) });
 *   console.log(formatResult(result));
 */
import { status as grpcStatus } from '@grpc/grpc-js';

export type LoadMode =
  | { readonly kind: 'closed'; readonly concurrency: number }
  | { readonly kind: 'open'; readonly ratePerSecond: number; readonly maxInFlight?: number };

export interface LoadOptions {
  readonly name: string;
  readonly mode: LoadMode;
  readonly durationMs: number;
  readonly warmupMs?: number;
  /** Issues call number `i`; resolves on success, rejects with a gRPC error on failure. */
  readonly call: (i: number) => Promise<unknown>;
  /** Open loop: start calls due within this many ms at the current tick (default 0). */
  readonly startEarlyMs?: number;
  /** Bound on stored latency samples (default 2,000,000). */
  readonly maxSamples?: number;
  /** A mixed load: the kind of call `i` (e.g. from `weightedMix`), for a per-kind breakdown in `byKind`. */
  readonly kindOf?: (i: number) => string;
}

export interface LatencySummary {
  readonly p50: number;
  readonly p95: number;
  readonly p99: number;
  readonly max: number;
  readonly mean: number;
}

export interface LoadResult {
  readonly name: string;
  readonly mode: LoadMode;
  readonly durationMs: number;
  readonly completed: number;
  readonly succeeded: number;
  /** Failed calls by gRPC status name (e.g. RESOURCE_EXHAUSTED). */
  readonly errors: Readonly<Record<string, number>>;
  /** Open loop only: calls not started because maxInFlight were outstanding. */
  readonly dropped: number;
  /** Completed calls (successes and failures) per second of measured time. */
  readonly throughputPerSecond: number;
  /** Milliseconds, over every completed call. */
  readonly latencyMs: LatencySummary;
  /** With `kindOf`: the same figures for each kind of call. */
  readonly byKind?: Readonly<Record<string, KindResult>>;
}

export interface KindResult {
  readonly completed: number;
  readonly succeeded: number;
  readonly errors: Readonly<Record<string, number>>;
  readonly throughputPerSecond: number;
  readonly latencyMs: LatencySummary;
}

const STATUS_NAMES = new Map<number, string>(Object.entries(grpcStatus).filter(([, v]) => typeof v === 'number').map(([k, v]) => [v as number, k]));

function errorName(error: unknown): string {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'number' ? (STATUS_NAMES.get(code) ?? `CODE_${code}`) : 'CLIENT_ERROR';
}

class Recorder {
  private readonly samples: Float64Array;
  private count = 0;
  succeeded = 0;
  completed = 0;
  readonly errors: Record<string, number> = {};

  constructor(maxSamples: number) {
    this.samples = new Float64Array(maxSamples);
  }

  record(latencyMs: number, error: unknown): void {
    this.completed += 1;
    if (error === undefined) this.succeeded += 1;
    else {
      const name = errorName(error);
      this.errors[name] = (this.errors[name] ?? 0) + 1;
    }
    if (this.count < this.samples.length) this.samples[this.count++] = latencyMs;
  }

  summary(): LatencySummary {
    const sorted = this.samples.slice(0, this.count).sort();
    const at = (q: number) => percentile(sorted, q);
    let sum = 0;
    for (const v of sorted) sum += v;
    return { p50: at(0.5), p95: at(0.95), p99: at(0.99), max: sorted.length ? sorted[sorted.length - 1]! : 0, mean: sorted.length ? sum / sorted.length : 0 };
  }
}

const nowMs = () => performance.now();

export async function runLoad(options: LoadOptions): Promise<LoadResult> {
  const warmupMs = options.warmupMs ?? 0;
  const maxSamples = options.maxSamples ?? 2_000_000;
  const recorder = new Recorder(maxSamples);
  const kinds = new Map<string, Recorder>();
  const recorderOf = (i: number): Recorder | undefined => {
    if (!options.kindOf) return undefined;
    const kind = options.kindOf(i);
    let r = kinds.get(kind);
    if (!r) kinds.set(kind, (r = new Recorder(Math.ceil(maxSamples / 8))));
    return r;
  };
  const start = nowMs();
  const measureFrom = start + warmupMs;
  const end = measureFrom + options.durationMs;
  let next = 0;
  let dropped = 0;

  const issue = async (intendedStart: number): Promise<void> => {
    const i = next++;
    const startedAt = nowMs();
    // Started early (within half a tick of its due time): count from the actual start.
    const from = Math.max(intendedStart, startedAt);
    let error: unknown;
    try {
      await options.call(i);
    } catch (e) {
      error = e ?? new Error('call failed');
    }
    if (intendedStart >= measureFrom && intendedStart < end) {
      const latencyMs = nowMs() - from;
      recorder.record(latencyMs, error);
      recorderOf(i)?.record(latencyMs, error);
    }
  };

  if (options.mode.kind === 'closed') {
    const workers = Array.from({ length: options.mode.concurrency }, async () => {
      while (nowMs() < end) await issue(nowMs());
    });
    await Promise.all(workers);
  } else {
    const { ratePerSecond } = options.mode;
    const maxInFlight = options.mode.maxInFlight ?? 10_000;
    const intervalMs = 1000 / ratePerSecond;
    const startEarlyMs = Math.max(0, options.startEarlyMs ?? 0);
    let inFlight = 0;
    const pending = new Set<Promise<void>>();
    let due = start;
    while (nowMs() < end) {
      const now = nowMs();
      // Start every call whose intended time has come (catching up after a slow tick).
      while (due <= now + startEarlyMs && due < end) {
        if (inFlight >= maxInFlight) {
          if (due >= measureFrom) dropped += 1;
        } else {
          inFlight += 1;
          const p = issue(due).finally(() => {
            inFlight -= 1;
            pending.delete(p);
          });
          pending.add(p);
        }
        due += intervalMs;
      }
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
    await Promise.all(pending);
  }

  return {
    name: options.name,
    mode: options.mode,
    durationMs: options.durationMs,
    completed: recorder.completed,
    succeeded: recorder.succeeded,
    errors: recorder.errors,
    dropped,
    throughputPerSecond: recorder.completed / (options.durationMs / 1000),
    latencyMs: recorder.summary(),
    ...(options.kindOf && {
      byKind: Object.fromEntries(
        [...kinds].map(([kind, r]) => [
          kind,
          { completed: r.completed, succeeded: r.succeeded, errors: r.errors, throughputPerSecond: r.completed / (options.durationMs / 1000), latencyMs: r.summary() },
        ]),
      ),
    }),
  };
}

/**
 * A mix of call kinds by weight, e.g. `parseMix('consume=60,balance=40', ['consume', 'balance'])`.
 * Throws, naming `what`, on an unknown kind, a weight that is not a positive integer, or a kind given twice.
 */
export function parseMix(raw: string, kinds: readonly string[], what = '--mix'): Map<string, number> {
  const mix = new Map<string, number>();
  for (const part of raw.split(',').map((p) => p.trim()).filter(Boolean)) {
    const match = /^([a-z_-]+)=(\d+)$/.exec(part);
    if (!match) throw new Error(`${what}: "${part}" is not kind=weight (kinds: ${kinds.join(', ')})`);
    const [, kind, weight] = match as unknown as [string, string, string];
    if (!kinds.includes(kind)) throw new Error(`${what}: unknown kind "${kind}" (kinds: ${kinds.join(', ')})`);
    if (mix.has(kind)) throw new Error(`${what}: "${kind}" given twice`);
    if (Number(weight) < 1 || Number(weight) > 1_000) throw new Error(`${what}: the weight of "${kind}" must be 1..1000, not ${weight}`);
    mix.set(kind, Number(weight));
  }
  if (mix.size === 0) throw new Error(`${what} must name at least one kind`);
  return mix;
}

/**
 * The kind of call `i` in a weighted mix: a fixed, interleaved schedule of one
 * cycle of sum(weights) slots (smooth weighted round-robin, as nginx balances
 * upstreams), so every window of calls holds the kinds in proportion and a
 * rare kind is not bunched up. Deterministic: the same mix gives the same calls.
 */
export function weightedMix(mix: ReadonlyMap<string, number>): (i: number) => string {
  const entries = [...mix];
  const total = entries.reduce((sum, [, w]) => sum + w, 0);
  const current = entries.map(() => 0);
  const cycle: string[] = [];
  for (let slot = 0; slot < total; slot++) {
    let best = 0;
    entries.forEach(([, w], k) => {
      current[k]! += w;
      if (current[k]! > current[best]!) best = k;
    });
    current[best]! -= total;
    cycle.push(entries[best]![0]);
  }
  return (i) => cycle[i % cycle.length]!;
}

const f = (ms: number) => (ms < 10 ? ms.toFixed(2) : ms.toFixed(1));

/** The q-quantile (nearest rank) of ascending `sorted`; 0 when empty. Every figure the benches print uses this. */
export function percentile(sorted: ArrayLike<number>, q: number): number {
  return sorted.length === 0 ? 0 : sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]!;
}

export function formatResult(r: LoadResult): string {
  const mode = r.mode.kind === 'closed' ? `closed c=${r.mode.concurrency}` : `open ${r.mode.ratePerSecond}/s`;
  const errors = Object.entries(r.errors)
    .map(([k, v]) => `${k}=${v}`)
    .join(' ');
  return (
    `${r.name.padEnd(22)} ${mode.padEnd(16)} ${r.throughputPerSecond.toFixed(0).padStart(7)} req/s  ` +
    `p50 ${f(r.latencyMs.p50)} p95 ${f(r.latencyMs.p95)} p99 ${f(r.latencyMs.p99)} max ${f(r.latencyMs.max)} mean ${f(r.latencyMs.mean)} ms` +
    `${errors ? `  errors: ${errors}` : ''}${r.dropped ? `  dropped: ${r.dropped}` : ''}`
  );
}

/** A bidirectional call of a multiplexed …Stream RPC (AssessStream, ConsumeStream), as the generated client returns it. */
interface MultiplexedCall<Item> {
  write(item: Item): boolean;
  end(): void;
  on(event: 'data', fn: (answer: { requestId: string; result?: { $case: string; value: unknown } }) => void): unknown;
  on(event: 'error', fn: (error: Error) => void): unknown;
}

/**
 * Turns multiplexed streams into a `call` for runLoad: call `i` goes out as one
 * message on stream `streamOf(i)` (default `i % streams.length`) under a fresh request_id and settles
 * when its answer comes back (an item error rejects with its gRPC code, so
 * runLoad counts it by status name). `close` half-closes every stream.
 */
export function streamCaller<Item>(
  streams: readonly MultiplexedCall<Item>[],
  itemFor: (requestId: string, i: number) => Item,
  /** Which stream call `i` goes out on (default round-robin). */
  streamOf: (i: number) => number = (i) => i % streams.length,
): { call: (i: number) => Promise<void>; close: () => void } {
  const waiting = streams.map(() => new Map<string, { resolve: () => void; reject: (e: unknown) => void }>());
  streams.forEach((stream, s) => {
    stream.on('data', (answer) => {
      const w = waiting[s]!.get(answer.requestId);
      waiting[s]!.delete(answer.requestId);
      if (answer.result?.$case === 'error') {
        const status = answer.result.value as { code: number; message: string };
        w?.reject(Object.assign(new Error(status.message), { code: status.code }));
      } else w?.resolve();
    });
    stream.on('error', (error) => {
      for (const w of waiting[s]!.values()) w.reject(error);
      waiting[s]!.clear();
    });
  });
  let sequence = 0;
  return {
    call: (i) =>
      new Promise<void>((resolve, reject) => {
        const s = streamOf(i) % streams.length;
        const requestId = String(sequence++);
        waiting[s]!.set(requestId, { resolve, reject });
        streams[s]!.write(itemFor(requestId, i));
      }),
    close: () => {
      for (const stream of streams) stream.end();
    },
  };
}
