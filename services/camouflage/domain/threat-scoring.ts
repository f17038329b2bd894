/**
 * Threat scoring: validates an Assess input, runs the detectors of threat-signals.ts and turns
 * their points into a level 0-10 and a tier.
 *
 * level = min(10, max(Σ static points + Σ behavioural points + 10 × honeytoken hits,
 *                    floor(0.8 × decayed earlier level))), and 10 whenever a honeytoken hit.
 * All points are integers, so the level is an integer without rounding.
 *
 * Scoring is split in two so the engine can do the CPU-only part before its Redis round trip:
 * {@link ThreatScorer.prepare} (validation + static signals) and {@link ThreatScorer.finish}
 * (behaviour + memory + honeytokens → level and tier). The Assess script computes the same
 * level in Lua from the same integer rules (threat-signals.ts `behaviourRulesLua`) so that it
 * can pick the decoy in the same round trip; the engine asserts that both agree.
 */
import { isIP } from 'node:net';
import { invariant } from '../../../platform/invariant';
import { ServiceError } from '../../../platform/service-error';
import { PROFILE_DEFAULTS, ProfileConfig, SessionSnapshot } from './session-profile';
import {
  AssessInput,
  BODY_CONTENT_TYPE_CHARS_MAX,
  BODY_EXCERPT_CHARS_MAX,
  BehaviourRules,
  compileBehaviourRules,
  DEFAULT_BAD_TLS_FINGERPRINTS,
  HEADER_COUNT_MAX,
  HEADER_NAME_CHARS_MAX,
  HEADER_VALUE_CHARS_MAX,
  HEADERS_TOTAL_CHARS_MAX,
  METHOD_CHARS_MAX,
  PATH_CHARS_MAX,
  PreparedRequest,
  QUERY_CHARS_MAX,
  SESSION_KEY_CHARS_MAX,
  SIGNAL_POINTS,
  TLS_FINGERPRINT_CHARS_MAX,
  ThreatSignal,
  TlsFingerprintList,
  USER_AGENT_CHARS_MAX,
  detectBehaviourSignals,
  detectHeaderSignals,
  detectInjectionSignals,
  detectPathSignals,
  detectTlsSignals,
  detectUserAgentSignals,
  earlierLevelSignal,
  prepareRequest,
} from './threat-signals';
import { detectWafSignals, type RequestWafRunner } from './waf-signals';
import { THREAT_LEVEL_MAX, THREAT_LEVEL_MIN, Tier, tierForLevel } from './tiers';

/** RFC 9110 §9.1: a method is a token (tchar), case-sensitive; bounded by METHOD_CHARS_MAX. */
const METHOD_PATTERN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const HEADER_NAME_PATTERN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const SESSION_KEY_PATTERN = /^[\x21-\x7e]+$/;
const TLS_FINGERPRINT_PATTERN = /^[A-Za-z0-9_,.\-]+$/;
/** 1970 .. 2286: rejects seconds-instead-of-milliseconds (too small) and garbage (too large). */
const TIMESTAMP_MS_MIN = 1_000_000_000_000;
const TIMESTAMP_MS_MAX = 9_999_999_999_999;

function requireString(value: unknown, field: string, maxChars: number, allowEmpty: boolean): string {
  if (typeof value !== 'string') throw ServiceError.invalidArgument(field, 'must be a string');
  if (!allowEmpty && value.length === 0) throw ServiceError.invalidArgument(field, 'is required');
  if (value.length > maxChars) throw ServiceError.invalidArgument(field, `must be at most ${maxChars} characters`);
  return value;
}

/**
 * Checks an Assess input against its bounds and returns a clean copy. Throws INVALID_ARGUMENT
 * naming the first bad field by its AssessRequest proto name (`client_ip`, `timestamp`, `headers.<name>`;
 * `body.content`), the name the caller sent it under. Limits mirror what HTTP servers accept (8 KiB request line,
 * 16 KiB header value); a request beyond them never reached the application anyway.
 */
export function validateAssessInput(raw: unknown): AssessInput {
  if (typeof raw !== 'object' || raw === null) throw ServiceError.invalidArgument('request', 'must be an object');
  const input = raw as Record<string, unknown>;
  const clientIp = requireString(input.clientIp, 'client_ip', 64, false);
  if (isIP(clientIp) === 0) throw ServiceError.invalidArgument('client_ip', 'must be an IPv4 or IPv6 address');
  const method = requireString(input.method, 'method', METHOD_CHARS_MAX, false);
  if (!METHOD_PATTERN.test(method)) throw ServiceError.invalidArgument('method', `must be an HTTP method token (RFC 9110) of 1-${METHOD_CHARS_MAX} characters`);
  const path = requireString(input.path, 'path', PATH_CHARS_MAX, false);
  const query = requireString(input.query ?? '', 'query', QUERY_CHARS_MAX, true);
  const userAgent = requireString(input.userAgent ?? '', 'user_agent', USER_AGENT_CHARS_MAX, true);
  const sessionKey = requireString(input.sessionKey, 'session_key', SESSION_KEY_CHARS_MAX, false);
  if (!SESSION_KEY_PATTERN.test(sessionKey)) {
    throw ServiceError.invalidArgument('session_key', 'must be printable ASCII without spaces');
  }
  const timestampMs = input.timestampMs;
  if (typeof timestampMs !== 'number' || !Number.isInteger(timestampMs) || timestampMs < TIMESTAMP_MS_MIN || timestampMs > TIMESTAMP_MS_MAX) {
    throw ServiceError.invalidArgument('timestamp', 'must be a time between 2001-09-09 and 2286-11-20, in whole milliseconds');
  }

  const rawHeaders = input.headers ?? {};
  if (typeof rawHeaders !== 'object' || rawHeaders === null || Array.isArray(rawHeaders)) {
    throw ServiceError.invalidArgument('headers', 'must be a map of strings');
  }
  const names = Object.keys(rawHeaders);
  if (names.length > HEADER_COUNT_MAX) throw ServiceError.invalidArgument('headers', `must hold at most ${HEADER_COUNT_MAX} headers`);
  const headers: Record<string, string> = {};
  let totalChars = 0;
  for (const name of names) {
    const value = (rawHeaders as Record<string, unknown>)[name];
    if (name.length === 0 || name.length > HEADER_NAME_CHARS_MAX || !HEADER_NAME_PATTERN.test(name)) {
      throw ServiceError.invalidArgument('headers', `must have names that are HTTP tokens of at most ${HEADER_NAME_CHARS_MAX} characters`);
    }
    if (typeof value !== 'string') throw ServiceError.invalidArgument(`headers.${name}`, 'must be a string');
    if (value.length > HEADER_VALUE_CHARS_MAX) {
      throw ServiceError.invalidArgument(`headers.${name}`, `must be at most ${HEADER_VALUE_CHARS_MAX} characters`);
    }
    totalChars += name.length + value.length;
    headers[name] = value;
  }
  if (totalChars > HEADERS_TOTAL_CHARS_MAX) {
    throw ServiceError.invalidArgument('headers', `must total at most ${HEADERS_TOTAL_CHARS_MAX} characters`);
  }

  const result: AssessInput = { clientIp, method, path, query, headers, userAgent, sessionKey, timestampMs };
  if (input.tlsFingerprint !== undefined && input.tlsFingerprint !== '') {
    const fingerprint = requireString(input.tlsFingerprint, 'tls_fingerprint', TLS_FINGERPRINT_CHARS_MAX, false);
    if (!TLS_FINGERPRINT_PATTERN.test(fingerprint)) {
      throw ServiceError.invalidArgument('tls_fingerprint', 'must be a JA3 hash/string or JA4 fingerprint');
    }
    result.tlsFingerprint = fingerprint;
  }
  if (input.previousStatus !== undefined && input.previousStatus !== 0) {
    const status = input.previousStatus;
    if (typeof status !== 'number' || !Number.isInteger(status) || status < 100 || status > 599) {
      throw ServiceError.invalidArgument('previous_status', 'must be an HTTP status code 100-599 (or 0: unknown)');
    }
    result.previousStatus = status;
  }
  if (input.bodyExcerpt !== undefined && input.bodyExcerpt !== '') {
    result.bodyExcerpt = requireString(input.bodyExcerpt, 'body.content', BODY_EXCERPT_CHARS_MAX, true);
    if (input.bodyContentType !== undefined && input.bodyContentType !== '') {
      result.bodyContentType = requireString(input.bodyContentType, 'body.content_type', BODY_CONTENT_TYPE_CHARS_MAX, false);
    }
    if (input.bodyLength !== undefined && input.bodyLength !== 0) {
      const length = input.bodyLength;
      if (typeof length !== 'number' || !Number.isSafeInteger(length) || length < 0) throw ServiceError.invalidArgument('body.length', 'must be a byte count (0: the length of content)');
      result.bodyLength = length;
    }
  }
  return result;
}

/** The CPU-only half of an assessment. */
export interface PreparedAssessment {
  readonly request: PreparedRequest;
  readonly staticSignals: readonly ThreatSignal[];
  /** Sum of static points (integers). */
  readonly staticPoints: number;
  /**
   * The lowest level the request can end at: behaviour, memory and honeytokens only add. The
   * engine prepares a candidate decoy for every tier from this level's tier up.
   */
  readonly levelFloor: number;
}

/** A honeytoken minted by this service that came back in a request. */
export interface HoneytokenHitSummary {
  readonly decisionId: string;
  readonly decoyId: string;
  readonly location: string;
}

export interface ThreatAssessment {
  /** Integer 0..10. */
  readonly threatLevel: number;
  readonly tier: Tier;
  /** Contributing signals, static first, then behavioural, then memory and honeytokens. */
  readonly signals: readonly ThreatSignal[];
  /** Sum of points before clamping (can exceed 10: shows how sure the verdict is). */
  readonly rawPoints: number;
}

export interface ThreatScorerOptions {
  /** Replaces the seed list of known-bad TLS fingerprints (keys are lower-cased). */
  readonly badTlsFingerprints?: ReadonlyMap<string, string> | Readonly<Record<string, string>>;
  /** Profile configuration the behavioural thresholds are compiled against. */
  readonly profile?: Pick<ProfileConfig, 'rateHalfLifeSeconds'>;
  /** A WAF run over the prepared request (libddwaf: services/camouflage/waf/); its matches become signals (waf-signals.ts). */
  readonly waf?: RequestWafRunner<PreparedRequest>;
}

/** Bound on the number of known-bad fingerprints held in memory. */
export const BAD_TLS_FINGERPRINTS_MAX = 100_000;

export class ThreatScorer {
  private readonly badTls: TlsFingerprintList;
  private readonly waf: RequestWafRunner<PreparedRequest> | undefined;
  /** Integer behavioural thresholds (shared with the Assess script's Lua). */
  readonly rules: BehaviourRules;

  constructor(options: ThreatScorerOptions = {}) {
    this.rules = compileBehaviourRules(options.profile ?? PROFILE_DEFAULTS);
    this.waf = options.waf;
    const source = options.badTlsFingerprints;
    if (source === undefined) {
      this.badTls = DEFAULT_BAD_TLS_FINGERPRINTS;
    } else {
      const entries = source instanceof Map ? [...source.entries()] : Object.entries(source);
      if (entries.length > BAD_TLS_FINGERPRINTS_MAX) {
        throw ServiceError.invalidArgument('badTlsFingerprints', `must hold at most ${BAD_TLS_FINGERPRINTS_MAX} fingerprints`);
      }
      this.badTls = new Map(entries.map(([fingerprint, label]) => [String(fingerprint).toLowerCase(), String(label)]));
    }
  }

  /** Validates and runs every detector that needs only the request. */
  prepare(raw: unknown): PreparedAssessment {
    const input = validateAssessInput(raw);
    const request = prepareRequest(input);
    const signals: ThreatSignal[] = [];
    detectUserAgentSignals(request, signals);
    detectPathSignals(request, signals);
    detectInjectionSignals(request, signals);
    detectHeaderSignals(request, signals);
    detectTlsSignals(request, this.badTls, signals);
    if (this.waf !== undefined) detectWafSignals(this.waf(request), signals);
    let staticPoints = 0;
    for (const signal of signals) staticPoints += signal.points;
    invariant(Number.isInteger(staticPoints), 'static points are an integer');
    invariant(staticPoints >= 0, 'static points are not negative');
    return { request, staticSignals: signals, staticPoints, levelFloor: Math.min(THREAT_LEVEL_MAX, staticPoints) };
  }

  /** Adds behaviour, memory and honeytoken evidence and maps the total to a level and tier. */
  finish(prepared: PreparedAssessment, snapshot: SessionSnapshot | undefined, honeytokenHits: readonly HoneytokenHitSummary[] = []): ThreatAssessment {
    const signals: ThreatSignal[] = [...prepared.staticSignals];
    if (snapshot !== undefined) detectBehaviourSignals(snapshot, this.rules, signals);
    for (const hit of honeytokenHits) {
      signals.push({
        name: 'honeytoken-replayed',
        points: SIGNAL_POINTS.honeytokenReplayed,
        detail: `honeytoken served by decision ${hit.decisionId} (decoy ${hit.decoyId}) came back in ${hit.location}`,
      });
    }
    let rawPoints = 0;
    for (const signal of signals) rawPoints += signal.points;
    if (snapshot !== undefined) {
      const memory = earlierLevelSignal(snapshot, this.rules, rawPoints);
      if (memory !== undefined) {
        signals.push(memory);
        rawPoints += memory.points;
      }
    }
    let threatLevel = Math.max(THREAT_LEVEL_MIN, Math.min(THREAT_LEVEL_MAX, rawPoints));
    if (honeytokenHits.length > 0) threatLevel = THREAT_LEVEL_MAX;
    return { threatLevel, tier: tierForLevel(threatLevel), signals, rawPoints };
  }

  /** Convenience for callers without a profile (e.g. offline replay): static signals only. */
  scoreStatic(raw: unknown): ThreatAssessment {
    return this.finish(this.prepare(raw), undefined);
  }
}
