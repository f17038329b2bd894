/**
 * One recorded, labelled request: the unit the shadow service replays rules on.
 *
 * Why a validator returning a reason instead of throwing: IngestSamples is a
 * client stream of possibly millions of rows; a bad row must be reported with
 * its own reason while the good rows still land, so validation is a cheap pure
 * function called per row, and the first failing check wins (one reason per row
 * keeps the summary readable).
 *
 * Field reasons name the proto field (`client_ip`, `request_bytes`, ...), since
 * that is what the client sent.
 */
import { parseIp } from './ip-address';

export interface TrafficSample {
  /** Request time, Unix epoch milliseconds (fractions allowed). */
  timestampMs: number;
  /** Rate-limit identity other than the IP, e.g. an API key id; the IP text when the client has none. */
  clientKey: string;
  /** IPv4 or IPv6 address text. */
  clientIp: string;
  method: string;
  /** Path with query string, as logged. */
  path: string;
  /** HTTP status the origin returned. */
  status: number;
  /** User-Agent header value ('' when absent); header rules on 'user-agent' read this field. */
  userAgent: string;
  /** Selected other request headers, names lower case. */
  headers: Record<string, string>;
  /** Request size in bytes (headers + body). */
  requestBytes: number;
  /** Ground truth: was this request an attack? */
  malicious: boolean;
  /** e.g. 'scanner', 'credential_stuffing'; '' for benign samples. */
  attackType: string;
  /** A detector's score (higher = more suspicious), finite and ≥ 0; absent when the sample carries none. */
  score?: number;
}

/**
 * Bounds on every field. A row beyond them is rejected rather than truncated:
 * truncating a path could change what a regex rule matches, and unbounded
 * fields would let one row blow up memory or regex time during replay.
 */
export const SAMPLE_LIMITS = Object.freeze({
  clientKeyLengthMax: 256,
  methodLengthMax: 32,
  pathLengthMax: 8192,
  userAgentLengthMax: 2048,
  headersCountMax: 64,
  headerNameLengthMax: 128,
  headerValueLengthMax: 8192,
  attackTypeLengthMax: 64,
  /** 1 TiB: larger than any real request, small enough to stay an exact integer everywhere. */
  requestBytesMax: 2 ** 40,
  /** 0001-01-01 .. 9999-12-31T23:59:59.999Z is protobuf Timestamp's valid range. */
  timestampMsMin: -62135596800000,
  timestampMsMax: 253402300799999,
});

/** RFC 9110 token characters: what an HTTP method or header name may contain. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const LOWERCASE_TOKEN = /^[!#$%&'*+\-.^_`|~0-9a-z]+$/;

function isString(value: unknown): value is string {
  return typeof value === 'string';
}

/** PostgreSQL text and jsonb cannot hold U+0000: such a row would fail the whole insert, so it is rejected as a row. */
function hasNul(value: string): boolean {
  return value.includes('\u0000');
}

/**
 * Checks one sample. Returns null when it is valid, otherwise the reason for the
 * first problem found (e.g. "client_ip: '300.1.2.3' is not a valid IPv4 or IPv6
 * address"). Accepts `unknown` because it guards data from the wire.
 */
export function validateSample(sample: unknown): string | null {
  if (sample === null || typeof sample !== 'object') return 'sample must be an object';
  const s = sample as Record<string, unknown>;

  const ts = s.timestampMs;
  if (typeof ts !== 'number' || !Number.isFinite(ts)) return 'timestamp: must be a finite number of epoch milliseconds';
  if (ts < SAMPLE_LIMITS.timestampMsMin || ts > SAMPLE_LIMITS.timestampMsMax) {
    return 'timestamp: must be between 0001-01-01 and 9999-12-31';
  }

  if (!isString(s.clientKey) || s.clientKey.length === 0) return 'client_key: must not be empty';
  if (s.clientKey.length > SAMPLE_LIMITS.clientKeyLengthMax) {
    return `client_key: longer than ${SAMPLE_LIMITS.clientKeyLengthMax} characters`;
  }
  if (hasNul(s.clientKey)) return 'client_key: must not contain a NUL character';

  if (!isString(s.clientIp) || s.clientIp.length === 0) return 'client_ip: must not be empty';
  if (parseIp(s.clientIp) === null) {
    return `client_ip: '${s.clientIp.slice(0, 64)}' is not a valid IPv4 or IPv6 address`;
  }

  if (!isString(s.method) || s.method.length === 0) return 'method: must not be empty';
  if (s.method.length > SAMPLE_LIMITS.methodLengthMax) return `method: longer than ${SAMPLE_LIMITS.methodLengthMax} characters`;
  if (!TOKEN.test(s.method)) return `method: '${s.method}' is not an HTTP token`;

  if (!isString(s.path) || s.path.length === 0) return 'path: must not be empty';
  if (s.path.length > SAMPLE_LIMITS.pathLengthMax) return `path: longer than ${SAMPLE_LIMITS.pathLengthMax} characters`;
  if (hasNul(s.path)) return 'path: must not contain a NUL character';

  if (typeof s.status !== 'number' || !Number.isInteger(s.status) || s.status < 100 || s.status > 599) {
    return `status: ${String(s.status)} is not an HTTP status code (100..599)`;
  }

  if (!isString(s.userAgent)) return 'user_agent: must be a string';
  if (s.userAgent.length > SAMPLE_LIMITS.userAgentLengthMax) {
    return `user_agent: longer than ${SAMPLE_LIMITS.userAgentLengthMax} characters`;
  }
  if (hasNul(s.userAgent)) return 'user_agent: must not contain a NUL character';

  const headers = s.headers;
  if (headers === null || typeof headers !== 'object' || Array.isArray(headers)) return 'headers: must be an object';
  let headerCount = 0;
  for (const name in headers) {
    if (!Object.prototype.hasOwnProperty.call(headers, name)) continue;
    headerCount++;
    if (headerCount > SAMPLE_LIMITS.headersCountMax) return `headers: more than ${SAMPLE_LIMITS.headersCountMax} entries`;
    if (name.length === 0 || name.length > SAMPLE_LIMITS.headerNameLengthMax) {
      return `headers: name must be 1..${SAMPLE_LIMITS.headerNameLengthMax} characters`;
    }
    if (!LOWERCASE_TOKEN.test(name)) return `headers: name '${name.slice(0, 64)}' must be a lower-case HTTP token`;
    const value = (headers as Record<string, unknown>)[name];
    if (!isString(value)) return `headers[${name}]: value must be a string`;
    if (value.length > SAMPLE_LIMITS.headerValueLengthMax) {
      return `headers[${name}]: value longer than ${SAMPLE_LIMITS.headerValueLengthMax} characters`;
    }
    if (hasNul(value)) return `headers[${name}]: value must not contain a NUL character`;
  }

  const bytes = s.requestBytes;
  if (typeof bytes !== 'number' || !Number.isInteger(bytes) || bytes < 0) {
    return `request_bytes: ${String(bytes)} must be a non-negative integer`;
  }
  if (bytes > SAMPLE_LIMITS.requestBytesMax) return `request_bytes: larger than ${SAMPLE_LIMITS.requestBytesMax}`;

  if (typeof s.malicious !== 'boolean') return 'malicious: must be a boolean';
  if (!isString(s.attackType)) return 'attack_type: must be a string';
  if (s.attackType.length > SAMPLE_LIMITS.attackTypeLengthMax) {
    return `attack_type: longer than ${SAMPLE_LIMITS.attackTypeLengthMax} characters`;
  }
  if (hasNul(s.attackType)) return 'attack_type: must not contain a NUL character';
  if (s.malicious && s.attackType.length === 0) return 'attack_type: must be set when malicious is true';
  if (!s.malicious && s.attackType.length !== 0) return 'attack_type: must be empty when malicious is false';
  if (s.score !== undefined && (typeof s.score !== 'number' || !Number.isFinite(s.score) || s.score < 0)) {
    return `score: ${String(s.score)} must be a finite number ≥ 0`;
  }
  return null;
}
