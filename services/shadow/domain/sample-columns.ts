/**
 * Columnar, interned form of a sample set: what the replay actually reads.
 *
 * Why columns: the old evaluator walked an array of objects and ran every
 * regex on every request (10,000 samples in 45 s). Real traffic repeats itself
 * — a few hundred user agents, a few thousand paths, a few thousand client IPs
 * per million requests — so each string column is interned once into a table
 * of distinct values plus an Int32Array of ids. Rules then run once per
 * *distinct* value (a Uint8Array "match table") and the per-request pass is a
 * tight loop over typed arrays with no allocation.
 *
 * Why SharedArrayBuffer: worker threads read the same columns without copying
 * (postMessage of a typed array over a SharedArrayBuffer shares the memory).
 *
 * The builder can be fed row by row (e.g. from a PostgreSQL cursor) so the DB
 * layer never has to materialise a million `TrafficSample` objects.
 */
import { ServiceError } from '../../../platform/service-error';
import type { TrafficSample } from './traffic-sample';
import { invariant } from '../../../platform/invariant';

/** A string column: `ids[i]` indexes `values`; -1 means "absent" (only for optional headers). */
export interface InternedColumn {
  readonly ids: Int32Array;
  readonly values: readonly string[];
}

/** The columns the replay and the statistics need; index i is the i-th sample in input order. */
export interface SampleColumns {
  readonly length: number;
  readonly timestampMs: Float64Array;
  /** Ground truth, 1 = malicious. */
  readonly malicious: Uint8Array;
  /** The sample's own score (TrafficSample.score), 0 when it carries none. */
  readonly score: Float64Array;
  readonly attackType: InternedColumn;
  readonly clientKey: InternedColumn;
  readonly clientIp: InternedColumn;
  readonly path: InternedColumn;
  readonly userAgent: InternedColumn;
  /** Only the headers requested when building (lower-case names). */
  readonly headers: ReadonlyMap<string, InternedColumn>;
}

/** Upper bound on rows in one evaluation: Int32 ids and 4-byte columns stay well inside memory. */
export const COLUMNS_LENGTH_MAX = 50_000_000;

function sharedInt32(length: number): Int32Array {
  return new Int32Array(new SharedArrayBuffer(Math.max(1, length) * 4), 0, length);
}
function sharedFloat64(length: number): Float64Array {
  return new Float64Array(new SharedArrayBuffer(Math.max(1, length) * 8), 0, length);
}
function sharedUint8(length: number): Uint8Array {
  return new Uint8Array(new SharedArrayBuffer(Math.max(1, length)), 0, length);
}

/** Interns strings to dense ids in first-seen order. */
class Interner {
  readonly values: string[] = [];
  private readonly index = new Map<string, number>();

  id(value: string): number {
    let id = this.index.get(value);
    if (id === undefined) {
      id = this.values.length;
      this.values.push(value);
      this.index.set(value, id);
    }
    return id;
  }
}

/**
 * Accumulates samples into columns. `capacity` is a hint; the builder grows by
 * doubling (bounded by COLUMNS_LENGTH_MAX).
 */
export class SampleColumnsBuilder {
  private length = 0;
  private capacity: number;
  private timestampMs: Float64Array;
  private malicious: Uint8Array;
  private score: Float64Array;
  private attackTypeIds: Int32Array;
  private clientKeyIds: Int32Array;
  private clientIpIds: Int32Array;
  private pathIds: Int32Array;
  private userAgentIds: Int32Array;
  private readonly headerIds: Int32Array[];
  private readonly headerNames: readonly string[];
  private readonly attackTypes = new Interner();
  private readonly clientKeys = new Interner();
  private readonly clientIps = new Interner();
  private readonly paths = new Interner();
  private readonly userAgents = new Interner();
  private readonly headerValues: Interner[];
  private built = false;

  /** @param headerNames lower-case header names to keep (see `ruleHeaderNames`). */
  constructor(options: { capacity?: number; headerNames?: Iterable<string> } = {}) {
    this.capacity = Math.max(16, Math.min(options.capacity ?? 1024, COLUMNS_LENGTH_MAX));
    this.headerNames = [...new Set([...(options.headerNames ?? [])].map((h) => h.toLowerCase()))].filter(
      (h) => h !== 'user-agent',
    );
    this.timestampMs = sharedFloat64(this.capacity);
    this.malicious = sharedUint8(this.capacity);
    this.score = sharedFloat64(this.capacity);
    this.attackTypeIds = sharedInt32(this.capacity);
    this.clientKeyIds = sharedInt32(this.capacity);
    this.clientIpIds = sharedInt32(this.capacity);
    this.pathIds = sharedInt32(this.capacity);
    this.userAgentIds = sharedInt32(this.capacity);
    this.headerIds = this.headerNames.map(() => sharedInt32(this.capacity));
    this.headerValues = this.headerNames.map(() => new Interner());
  }

  get size(): number {
    return this.length;
  }

  private grow(): void {
    if (this.capacity >= COLUMNS_LENGTH_MAX) {
      throw ServiceError.invalidArgument('samples', `more than ${COLUMNS_LENGTH_MAX} samples in one evaluation`);
    }
    const next = Math.min(this.capacity * 2, COLUMNS_LENGTH_MAX);
    const copyF64 = (a: Float64Array): Float64Array => {
      const b = sharedFloat64(next);
      b.set(a);
      return b;
    };
    const copyI32 = (a: Int32Array): Int32Array => {
      const b = sharedInt32(next);
      b.set(a);
      return b;
    };
    const m = sharedUint8(next);
    m.set(this.malicious);
    this.malicious = m;
    this.timestampMs = copyF64(this.timestampMs);
    this.score = copyF64(this.score);
    this.attackTypeIds = copyI32(this.attackTypeIds);
    this.clientKeyIds = copyI32(this.clientKeyIds);
    this.clientIpIds = copyI32(this.clientIpIds);
    this.pathIds = copyI32(this.pathIds);
    this.userAgentIds = copyI32(this.userAgentIds);
    for (let h = 0; h < this.headerIds.length; h++) this.headerIds[h] = copyI32(this.headerIds[h]);
    this.capacity = next;
  }

  /**
   * Appends one sample. Assumes it passed `validateSample` at ingest; only the
   * invariant the replay cannot survive (a non-finite timestamp breaks time
   * ordering) is re-checked here.
   */
  append(sample: TrafficSample): void {
    invariant(!this.built, 'SampleColumnsBuilder: no append after build');
    const i = this.length;
    if (i === this.capacity) this.grow();
    const ts = sample.timestampMs;
    if (!Number.isFinite(ts)) {
      throw ServiceError.invalidArgument(`samples[${i}].timestamp`, 'must be a finite number of epoch milliseconds');
    }
    this.timestampMs[i] = ts;
    this.malicious[i] = sample.malicious ? 1 : 0;
    this.score[i] = sample.score ?? 0;
    this.attackTypeIds[i] = this.attackTypes.id(sample.attackType);
    this.clientKeyIds[i] = this.clientKeys.id(sample.clientKey);
    this.clientIpIds[i] = this.clientIps.id(sample.clientIp);
    this.pathIds[i] = this.paths.id(sample.path);
    this.userAgentIds[i] = this.userAgents.id(sample.userAgent);
    for (let h = 0; h < this.headerNames.length; h++) {
      const value = sample.headers[this.headerNames[h]];
      this.headerIds[h][i] = value === undefined ? -1 : this.headerValues[h].id(value);
    }
    this.length = i + 1;
  }

  /** Finishes the columns; the builder cannot be used afterwards. */
  build(): SampleColumns {
    this.built = true;
    const n = this.length;
    const headers = new Map<string, InternedColumn>();
    this.headerNames.forEach((name, h) => {
      headers.set(name, { ids: this.headerIds[h].subarray(0, n), values: this.headerValues[h].values });
    });
    return {
      length: n,
      timestampMs: this.timestampMs.subarray(0, n),
      malicious: this.malicious.subarray(0, n),
      score: this.score.subarray(0, n),
      attackType: { ids: this.attackTypeIds.subarray(0, n), values: this.attackTypes.values },
      clientKey: { ids: this.clientKeyIds.subarray(0, n), values: this.clientKeys.values },
      clientIp: { ids: this.clientIpIds.subarray(0, n), values: this.clientIps.values },
      path: { ids: this.pathIds.subarray(0, n), values: this.paths.values },
      userAgent: { ids: this.userAgentIds.subarray(0, n), values: this.userAgents.values },
      headers,
    };
  }
}

/** Builds columns from an array of samples, keeping only `headerNames` among the optional headers. */
export function toSampleColumns(samples: readonly TrafficSample[], headerNames: Iterable<string> = []): SampleColumns {
  if (samples.length > COLUMNS_LENGTH_MAX) {
    throw ServiceError.invalidArgument('samples', `more than ${COLUMNS_LENGTH_MAX} samples in one evaluation`);
  }
  const builder = new SampleColumnsBuilder({ capacity: samples.length, headerNames });
  for (let i = 0; i < samples.length; i++) builder.append(samples[i]);
  return builder.build();
}

/** True when the value is a SampleColumns rather than an array of samples. */
export function isSampleColumns(value: unknown): value is SampleColumns {
  return (
    value !== null &&
    typeof value === 'object' &&
    !Array.isArray(value) &&
    (value as SampleColumns).timestampMs instanceof Float64Array &&
    (value as SampleColumns).malicious instanceof Uint8Array
  );
}
