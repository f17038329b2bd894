/**
 * Candidate security rules: typed configs, validation with exact field paths,
 * and compilation to the form the replay executes.
 *
 * Why validation is strict and bounded: a rule comes from an API caller and is
 * then run over millions of samples (and, once approved, over live traffic).
 * Every size is capped so that one request cannot make the evaluator allocate
 * or loop without bound. Patterns run on RE2 (re2js: linear time in the subject,
 * no backreferences or lookaround), so no pattern can block the event loop; the
 * screen for nested quantifiers is kept as a hint to the rule's author.
 *
 * Field paths use the proto field names (`rule.any.rules[1].ip_blocklist.cidrs[0]`,
 * `rule.rate_limit.window`) since the caller wrote the proto, not this TS shape.
 *
 * Rate-limit semantics (what "replayed exactly as it would act live" means) are
 * documented on {@link RateLimitRuleConfig}.
 */
import { RE2JS } from 're2js';
import { CidrMatcher, parseCidr, type ParsedCidr } from './ip-address';
import { invalidRule } from '../errors';

/**
 * A compiled user pattern: RE2 semantics (re2js, a pure JavaScript port of RE2), so matching
 * takes time linear in the subject whatever the pattern — `(a|a)*$` over an 8,192-character path
 * costs microseconds, where a backtracking RegExp takes longer than the age of the universe.
 * `test` searches (unanchored), as RegExp.test does.
 */
export interface RulePattern {
  test(subject: string): boolean;
}


/** Which sample field identifies the client for a rate limit. */
export type RateLimitKey = 'client_ip' | 'client_key';

/**
 * At most `maxRequests` requests per `windowSeconds` per key.
 *
 * Window type: **sliding log that records every attempt** — a request at time t
 * is blocked iff more than `maxRequests` requests of the same key (this one
 * included, blocked ones included, equal timestamps counted in input order)
 * have timestamps in the half-open window (t − window, t]. This is what the
 * common Redis sorted-set limiter (ZREMRANGEBYSCORE, ZADD, ZCARD) does: a
 * client that keeps hammering stays blocked until it slows down, and there is
 * no fixed-window edge where 2× the limit passes in a short span. A request
 * exactly `windowSeconds` older than t is outside the window.
 *
 * Score: requests-in-window / (maxRequests + 1), so the score reaches 1 exactly
 * at the first blocked request; see replay.ts for why every rule fires iff its
 * score ≥ 1.
 */
export interface RateLimitRuleConfig {
  readonly type: 'rate_limit';
  /** Integer ≥ 1. */
  readonly maxRequests: number;
  /** Window length, 0.001 .. 86400 seconds; replayed at millisecond resolution. */
  readonly windowSeconds: number;
  readonly keyBy: RateLimitKey;
}

/** Fires when the client IP is inside any CIDR (IPv4 or IPv6; a bare address is /32 or /128). */
export interface IpBlocklistRuleConfig {
  readonly type: 'ip_blocklist';
  readonly cidrs: readonly string[];
}

/** Fires when any regex matches the path (with query string). */
export interface PathPatternRuleConfig {
  readonly type: 'path_pattern';
  readonly patterns: readonly string[];
  readonly caseInsensitive?: boolean;
}

/**
 * Fires when any regex matches the named header's value. `user-agent` reads the
 * sample's `userAgent` field ('' when absent, so `^$` matches a missing UA);
 * any other header that the sample does not carry never matches.
 */
export interface HeaderPatternRuleConfig {
  readonly type: 'header_pattern';
  /** Header name; compared lower-cased. */
  readonly header: string;
  readonly patterns: readonly string[];
  readonly caseInsensitive?: boolean;
}

/**
 * Fires when the sample's own score (TrafficSample.score, e.g. a model's) is ≥ `minScore`; its
 * rule score is sampleScore / minScore, graded, so AUC ranks by the sample's score. A sample
 * without a score scores 0.
 */
export interface ScoreRuleConfig {
  readonly type: 'score';
  /** Finite, > 0. */
  readonly minScore: number;
}

/** `all` fires when every sub-rule fires; `any` when at least one does. */
export interface CompositeRuleConfig {
  readonly type: 'all' | 'any';
  readonly rules: readonly RuleConfig[];
}

export type RuleConfig =
  | RateLimitRuleConfig
  | IpBlocklistRuleConfig
  | PathPatternRuleConfig
  | HeaderPatternRuleConfig
  | ScoreRuleConfig
  | CompositeRuleConfig;

export type RuleType = RuleConfig['type'];

/**
 * Hard caps on a rule. Each exists so that a single API request has a bounded
 * cost: depth bounds recursion, node/pattern/CIDR totals bound compile time and
 * memory, pattern length bounds regex compile and (with the sample field
 * limits) match time.
 */
export const RULE_LIMITS = Object.freeze({
  depthMax: 8,
  nodesMax: 256,
  childrenMax: 64,
  patternsPerRuleMax: 256,
  patternsTotalMax: 2048,
  patternLengthMax: 512,
  cidrsPerRuleMax: 10_000,
  cidrsTotalMax: 100_000,
  maxRequestsMax: 1_000_000_000,
  windowSecondsMin: 0.001,
  windowSecondsMax: 86_400,
  headerNameLengthMax: 128,
});

const RULE_TYPES: readonly RuleType[] = ['rate_limit', 'ip_blocklist', 'path_pattern', 'header_pattern', 'score', 'all', 'any'];
const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9a-z]+$/;

/** A compiled leaf or composite, ready for replay. `key` identifies equal leaves so their work is shared. */
export type CompiledRule =
  | {
      readonly type: 'rate_limit';
      readonly key: string;
      readonly keyBy: RateLimitKey;
      readonly maxRequests: number;
      readonly windowMs: number;
    }
  | CompiledMatchRule
  | { readonly type: 'score'; readonly key: string; readonly minScore: number }
  | { readonly type: 'all' | 'any'; readonly children: readonly CompiledRule[] };

/**
 * A stateless leaf: its verdict depends on one string field only, so the replay
 * evaluates it once per distinct value. `config` is the validated source, sent
 * to worker threads (RegExp and matcher objects cannot cross threads).
 */
export type CompiledMatchRule =
  | { readonly type: 'ip_blocklist'; readonly key: string; readonly config: IpBlocklistRuleConfig; readonly matcher: CidrMatcher }
  | { readonly type: 'path_pattern'; readonly key: string; readonly config: PathPatternRuleConfig; readonly regexes: readonly RulePattern[] }
  | {
      readonly type: 'header_pattern';
      readonly key: string;
      readonly config: HeaderPatternRuleConfig;
      readonly header: string;
      readonly regexes: readonly RulePattern[];
    };

interface WalkState {
  nodes: number;
  patterns: number;
  cidrs: number;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

/**
 * Screens a regex source for nested repetition such as `(a+)+`, `(\w+\s?)*`
 * or `(.*,){20}`: a group containing an unbounded quantifier that is itself
 * repeated. With a backtracking engine those take exponential (or high
 * polynomial) time on a non-matching input — a ReDoS. This is a heuristic, not
 * a proof: overlapping alternations like `(a|a)*` still pass, so the pattern
 * and subject length caps remain the second line of defence.
 * Returns true when the pattern has such nesting.
 */
export function hasNestedQuantifier(source: string): boolean {
  type Frame = { unbounded: boolean };
  const stack: Frame[] = [{ unbounded: false }];
  let i = 0;
  const n = source.length;

  /** Reads a quantifier at `at`; returns its end and whether it repeats unboundedly / more than once. */
  const quantifier = (at: number): { end: number; unbounded: boolean; repeats: boolean } => {
    const ch = source[at];
    let end = at;
    let unbounded = false;
    let repeats = false;
    if (ch === '*' || ch === '+') {
      end = at + 1;
      unbounded = true;
      repeats = true;
    } else if (ch === '?') {
      end = at + 1;
    } else if (ch === '{') {
      const m = /^\{(\d+)(,(\d*))?\}/.exec(source.slice(at, at + 24));
      if (m) {
        end = at + m[0].length;
        const min = Number(m[1]);
        const max = m[2] === undefined ? min : m[3] === '' ? Infinity : Number(m[3]);
        unbounded = max === Infinity || max > 16;
        repeats = max > 1;
      }
    }
    if (end > at && source[end] === '?') end++; // lazy modifier
    return { end, unbounded, repeats };
  };

  while (i < n) {
    const ch = source[i];
    if (ch === '(') {
      stack.push({ unbounded: false });
      i++;
      continue;
    }
    if (ch === ')') {
      const group = stack.length > 1 ? stack.pop()! : { unbounded: false };
      const q = quantifier(i + 1);
      if (group.unbounded && q.repeats) return true;
      stack[stack.length - 1].unbounded ||= group.unbounded || q.unbounded;
      i = Math.max(i + 1, q.end);
      continue;
    }
    if (ch === '|') {
      i++;
      continue;
    }
    // An atom: escape, character class or single character.
    if (ch === '\\') {
      i += 2;
    } else if (ch === '[') {
      let j = i + 1;
      if (source[j] === '^') j++;
      if (source[j] === ']') j++;
      while (j < n && source[j] !== ']') j += source[j] === '\\' ? 2 : 1;
      i = j + 1;
    } else {
      i++;
    }
    const q = quantifier(i);
    if (q.unbounded) stack[stack.length - 1].unbounded = true;
    i = Math.max(i, q.end);
  }
  return false;
}

function compilePatterns(
  raw: unknown,
  field: string,
  caseInsensitive: boolean,
  state: WalkState,
): RulePattern[] {
  if (!Array.isArray(raw) || raw.length === 0) throw invalidRule(field, 'must contain at least one pattern');
  if (raw.length > RULE_LIMITS.patternsPerRuleMax) {
    throw invalidRule(field, `must contain at most ${RULE_LIMITS.patternsPerRuleMax} patterns`);
  }
  state.patterns += raw.length;
  if (state.patterns > RULE_LIMITS.patternsTotalMax) {
    throw invalidRule(field, `rule has more than ${RULE_LIMITS.patternsTotalMax} patterns in total`);
  }
  const regexes: RulePattern[] = [];
  for (let i = 0; i < raw.length; i++) {
    const pattern: unknown = raw[i];
    const at = `${field}[${i}]`;
    if (typeof pattern !== 'string' || pattern.length === 0) {
      throw invalidRule(at, 'must be a non-empty regular expression');
    }
    if (pattern.length > RULE_LIMITS.patternLengthMax) {
      throw invalidRule(
        at,
        `is ${pattern.length} characters long; the limit is ${RULE_LIMITS.patternLengthMax}`,
      );
    }
    let regex: RulePattern;
    try {
      regex = RE2JS.compile(pattern, caseInsensitive ? RE2JS.CASE_INSENSITIVE : 0);
    } catch (error) {
      throw invalidRule(at, `invalid regular expression: ${(error as Error).message}`);
    }
    if (hasNestedQuantifier(pattern)) {
      throw invalidRule(
        at,
        'repeats a group that contains an unbounded quantifier (catastrophic backtracking risk); ' +
          'rewrite without nesting, e.g. (?:ab)+ instead of (a+b)+',
      );
    }
    regexes.push(regex);
  }
  return regexes;
}

function compileNode(cfg: unknown, field: string, depth: number, state: WalkState): CompiledRule {
  if (depth > RULE_LIMITS.depthMax) {
    throw invalidRule(field, `nesting depth exceeds ${RULE_LIMITS.depthMax}`);
  }
  state.nodes++;
  if (state.nodes > RULE_LIMITS.nodesMax) {
    throw invalidRule(field, `rule has more than ${RULE_LIMITS.nodesMax} nodes`);
  }
  if (!isPlainObject(cfg)) throw invalidRule(field, 'must be a rule object');
  const type = cfg.type;
  if (typeof type !== 'string' || !(RULE_TYPES as readonly string[]).includes(type)) {
    throw invalidRule(field, `rule type must be one of: ${RULE_TYPES.join(', ')}`);
  }
  const at = `${field}.${type}`;
  switch (type as RuleType) {
    case 'rate_limit': {
      const max = cfg.maxRequests;
      if (typeof max !== 'number' || !Number.isInteger(max) || max <= 0) {
        throw invalidRule(`${at}.max_requests`, 'must be a positive integer');
      }
      if (max > RULE_LIMITS.maxRequestsMax) {
        throw invalidRule(`${at}.max_requests`, `must be at most ${RULE_LIMITS.maxRequestsMax}`);
      }
      const window = cfg.windowSeconds;
      if (typeof window !== 'number' || !Number.isFinite(window) || window <= 0) {
        throw invalidRule(`${at}.window`, 'must be a positive duration');
      }
      if (window < RULE_LIMITS.windowSecondsMin) {
        throw invalidRule(`${at}.window`, 'must be at least 1 millisecond');
      }
      if (window > RULE_LIMITS.windowSecondsMax) {
        throw invalidRule(`${at}.window`, `must be at most ${RULE_LIMITS.windowSecondsMax} seconds (1 day)`);
      }
      const keyBy = cfg.keyBy;
      if (keyBy !== 'client_ip' && keyBy !== 'client_key') {
        throw invalidRule(`${at}.key_by`, 'must be one of: client_ip, client_key');
      }
      const windowMs = Math.round(window * 1000);
      return {
        type: 'rate_limit',
        key: JSON.stringify(['rate_limit', keyBy, max, windowMs]),
        keyBy,
        maxRequests: max,
        windowMs,
      };
    }
    case 'ip_blocklist': {
      const cidrs = cfg.cidrs;
      if (!Array.isArray(cidrs) || cidrs.length === 0) {
        throw invalidRule(`${at}.cidrs`, 'must contain at least one CIDR');
      }
      if (cidrs.length > RULE_LIMITS.cidrsPerRuleMax) {
        throw invalidRule(`${at}.cidrs`, `must contain at most ${RULE_LIMITS.cidrsPerRuleMax} CIDRs`);
      }
      state.cidrs += cidrs.length;
      if (state.cidrs > RULE_LIMITS.cidrsTotalMax) {
        throw invalidRule(`${at}.cidrs`, `rule has more than ${RULE_LIMITS.cidrsTotalMax} CIDRs in total`);
      }
      const parsed: ParsedCidr[] = [];
      for (let i = 0; i < cidrs.length; i++) {
        const result = parseCidr(cidrs[i] as string);
        if (typeof result === 'string') throw invalidRule(`${at}.cidrs[${i}]`, result);
        parsed.push(result);
      }
      const canonical = parsed.map((c) => `${c.version}:${c.network.toString(16)}/${c.prefix}`).sort();
      return {
        type: 'ip_blocklist',
        key: JSON.stringify(['ip_blocklist', canonical]),
        config: { type: 'ip_blocklist', cidrs: [...(cidrs as string[])] },
        matcher: new CidrMatcher(parsed),
      };
    }
    case 'path_pattern': {
      const ci = cfg.caseInsensitive === undefined ? false : cfg.caseInsensitive;
      if (typeof ci !== 'boolean') throw invalidRule(`${at}.case_insensitive`, 'must be a boolean');
      const regexes = compilePatterns(cfg.patterns, `${at}.patterns`, ci, state);
      return {
        type: 'path_pattern',
        key: JSON.stringify(['path_pattern', ci, cfg.patterns]),
        config: { type: 'path_pattern', patterns: [...(cfg.patterns as string[])], caseInsensitive: ci },
        regexes,
      };
    }
    case 'header_pattern': {
      const header = cfg.header;
      if (typeof header !== 'string' || header.length === 0 || header.length > RULE_LIMITS.headerNameLengthMax) {
        throw invalidRule(`${at}.header`, 'must be an HTTP header name such as user-agent');
      }
      const name = header.toLowerCase();
      if (!HEADER_NAME.test(name)) {
        throw invalidRule(`${at}.header`, `'${header.slice(0, 64)}' is not a valid HTTP header name`);
      }
      const ci = cfg.caseInsensitive === undefined ? false : cfg.caseInsensitive;
      if (typeof ci !== 'boolean') throw invalidRule(`${at}.case_insensitive`, 'must be a boolean');
      const regexes = compilePatterns(cfg.patterns, `${at}.patterns`, ci, state);
      return {
        type: 'header_pattern',
        key: JSON.stringify(['header_pattern', name, ci, cfg.patterns]),
        config: { type: 'header_pattern', header: name, patterns: [...(cfg.patterns as string[])], caseInsensitive: ci },
        header: name,
        regexes,
      };
    }
    case 'score': {
      const min = cfg.minScore;
      if (typeof min !== 'number' || !Number.isFinite(min) || min <= 0) {
        throw invalidRule(`${at}.min_score`, 'must be a finite number > 0');
      }
      return { type: 'score', key: JSON.stringify(['score', min]), minScore: min };
    }
    case 'all':
    case 'any': {
      const rules = cfg.rules;
      if (!Array.isArray(rules) || rules.length === 0) {
        throw invalidRule(`${at}.rules`, 'must contain at least one rule');
      }
      if (rules.length > RULE_LIMITS.childrenMax) {
        throw invalidRule(`${at}.rules`, `must contain at most ${RULE_LIMITS.childrenMax} rules`);
      }
      const children = rules.map((child, i) => compileNode(child, `${at}.rules[${i}]`, depth + 1, state));
      return { type: type as 'all' | 'any', children };
    }
  }
}

/**
 * Validates and compiles a rule config. `field` is the path prefix used in
 * errors (`rule` for the candidate, `baseline_rule` for the baseline).
 * @throws ServiceError INVALID_RULE naming the first offending field.
 */
export function compileRule(cfg: unknown, field = 'rule'): CompiledRule {
  return compileNode(cfg, field, 1, { nodes: 0, patterns: 0, cidrs: 0 });
}

/**
 * Throws INVALID_RULE (errors.ts: the field in its BadRequest, an exact message) when `cfg` is
 * not a valid rule; narrows the type otherwise.
 */
export function validateRule(cfg: unknown, field = 'rule'): asserts cfg is RuleConfig {
  compileRule(cfg, field);
}

/** Lower-cased names of the headers (other than user-agent) the rule reads; the column builder keeps only these. */
export function ruleHeaderNames(cfg: RuleConfig): string[] {
  const names = new Set<string>();
  const visit = (node: RuleConfig, depth: number): void => {
    if (depth > RULE_LIMITS.depthMax) return;
    if (node.type === 'header_pattern') {
      const name = node.header.toLowerCase();
      if (name !== 'user-agent') names.add(name);
    } else if (node.type === 'all' || node.type === 'any') {
      for (const child of node.rules) visit(child, depth + 1);
    }
  };
  visit(cfg, 1);
  return [...names].sort();
}

/** True when the rule contains a rate limit. */
export function hasRateLimit(rule: CompiledRule): boolean {
  if (rule.type === 'rate_limit') return true;
  if (rule.type === 'all' || rule.type === 'any') return rule.children.some(hasRateLimit);
  return false;
}

/**
 * True when the rule's score is graded rather than 0/1, so AUC-ROC ranks by it: a rate limit
 * (window count), a score rule (the sample's score), a pattern rule with two or more patterns (the
 * number that match), or a composite of which any rule is graded. An IP blocklist and a
 * single-pattern rule score 0 or 1.
 */
export function hasGradedScore(rule: CompiledRule): boolean {
  switch (rule.type) {
    case 'rate_limit':
    case 'score':
      return true;
    case 'path_pattern':
    case 'header_pattern':
      return rule.regexes.length > 1;
    case 'ip_blocklist':
      return false;
    case 'all':
    case 'any':
      return rule.children.some(hasGradedScore);
  }
}

/** One-line human summary of a rule, for logs and recommendation reasons. */
export function describeRule(cfg: RuleConfig): string {
  switch (cfg.type) {
    case 'rate_limit':
      return `rate_limit(${cfg.maxRequests}/${cfg.windowSeconds}s by ${cfg.keyBy})`;
    case 'ip_blocklist':
      return `ip_blocklist(${cfg.cidrs.length} CIDRs)`;
    case 'path_pattern':
      return `path_pattern(${cfg.patterns.length} patterns${cfg.caseInsensitive ? ', i' : ''})`;
    case 'header_pattern':
      return `header_pattern(${cfg.header}: ${cfg.patterns.length} patterns${cfg.caseInsensitive ? ', i' : ''})`;
    case 'score':
      return `score(≥ ${cfg.minScore})`;
    case 'all':
    case 'any':
      return `${cfg.type}(${cfg.rules.map(describeRule).join(', ')})`;
  }
}
