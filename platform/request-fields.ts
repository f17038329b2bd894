/**
 * The field rules every request meets before any handler or database sees it, whatever the
 * service or RPC: the handler adapters (platform/handlers.ts) walk each decoded request message,
 * so a new RPC gets them for free. Per-field limits (a tenant id's alphabet, a name's length)
 * stay with each service's rpc/ validation.
 *
 * - Text: no NUL (PostgreSQL text and jsonb cannot hold U+0000), no lone UTF-16 surrogate (not
 *   encodable as UTF-8), at most TEXT_LENGTH_MAX characters.
 * - Timestamps: within protobuf's range (0001-01-01T00:00:00Z .. 9999-12-31T23:59:59.999999999Z),
 *   which PostgreSQL's timestamptz also holds; ts-proto (useDate) turns a wire value outside what a
 *   Date can hold into an Invalid Date, refused here too.
 * - Durations ({seconds, nanos}): protobuf's range, ±315,576,000,000 s, nanos of the same sign.
 *
 * Failures are INVALID_ARGUMENT naming the proto field (snake_case path, `samples[3].client_key`).
 */
import { ServiceError } from './service-error';

export const TEXT_LENGTH_MAX = 1_048_576;
/** 0001-01-01T00:00:00Z and 10000-01-01T00:00:00Z in epoch milliseconds. */
const TIMESTAMP_MIN_MS = -62_135_596_800_000;
const TIMESTAMP_END_MS = 253_402_300_800_000;
const DURATION_SECONDS_MAX = 315_576_000_000n;
const WALK_DEPTH_MAX = 64;
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

const snake = (name: string) => name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

/** Why `value` is not acceptable text, or undefined. */
function textProblem(value: string, lengthMax = TEXT_LENGTH_MAX): string | undefined {
  if (value.length > lengthMax) return `must be at most ${lengthMax} characters`;
  if (value.includes('\u0000')) return 'must not contain NUL characters';
  if (LONE_SURROGATE.test(value)) return 'must be valid UTF-8 text';
  return undefined;
}

/** Why `value` is not an acceptable timestamp, or undefined. */
function timestampProblem(value: Date): string | undefined {
  const ms = value.getTime();
  if (Number.isNaN(ms) || ms < TIMESTAMP_MIN_MS || ms >= TIMESTAMP_END_MS) return 'must be a timestamp between 0001-01-01 and 9999-12-31';
  return undefined;
}

function isDuration(value: object): value is { seconds: bigint; nanos: number } {
  const keys = Object.keys(value);
  return keys.length === 2 && typeof (value as { seconds?: unknown }).seconds === 'bigint' && typeof (value as { nanos?: unknown }).nanos === 'number';
}

function durationProblem(value: { seconds: bigint; nanos: number }): string | undefined {
  const { seconds, nanos } = value;
  if (seconds > DURATION_SECONDS_MAX || seconds < -DURATION_SECONDS_MAX) return 'must be a duration within ±10,000 years';
  if (!Number.isInteger(nanos) || nanos > 999_999_999 || nanos < -999_999_999) return 'must have nanos within ±999,999,999';
  if ((seconds > 0n && nanos < 0) || (seconds < 0n && nanos > 0)) return 'must have seconds and nanos of the same sign';
  return undefined;
}

/**
 * Walks a decoded request message (ts-proto objects: strings, Dates, {seconds, nanos}, arrays,
 * maps as plain objects, oneofs as {$case, value}) and throws INVALID_ARGUMENT for the first
 * field that breaks a shared rule.
 */
export function checkRequestFields(message: unknown): void {
  walk(message, '', 0);
}

function join(path: string, name: string): string {
  return path === '' ? name : `${path}.${name}`;
}

function walk(value: unknown, path: string, depth: number): void {
  if (depth > WALK_DEPTH_MAX) return;
  if (typeof value === 'string') {
    const problem = textProblem(value);
    if (problem) throw ServiceError.invalidArgument(path || 'request', problem);
    return;
  }
  if (value === null || typeof value !== 'object') return;
  if (value instanceof Date) {
    const problem = timestampProblem(value);
    if (problem) throw ServiceError.invalidArgument(path, problem);
    return;
  }
  if (value instanceof Uint8Array) return;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) walk(value[i], `${path}[${i}]`, depth + 1);
    return;
  }
  if (isDuration(value)) {
    const problem = durationProblem(value);
    if (problem) throw ServiceError.invalidArgument(path, problem);
    return;
  }
  const record = value as Record<string, unknown>;
  if (typeof record.$case === 'string' && 'value' in record) {
    walk(record.value, join(path, snake(record.$case)), depth + 1);
    return;
  }
  for (const [key, child] of Object.entries(record)) {
    // Map keys are caller text too (proto maps decode to plain objects).
    const problem = textProblem(key, 4096);
    if (problem) throw ServiceError.invalidArgument(path || 'request', `key ${problem}`);
    walk(child, join(path, snake(key)), depth + 1);
  }
}
