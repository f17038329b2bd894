/**
 * Proto ↔ domain for rules, and domain input errors → ServiceError. The proto
 * Rule is a oneof tree; the domain's RuleConfig is a tagged union with the
 * same shape, so the mapping is structural and field paths stay proto names.
 */
import { RateLimitKey, type Rule } from '../../../gen/shieldx/shadow/v1/shadow';
import { compileRule, RULE_LIMITS, type RuleConfig } from '../domain/rules';
import { invalidRule } from '../errors';

const KIND_NAMES = 'rate_limit, ip_blocklist, path_pattern, header_pattern, score, all, any';
const KEY_BY_VALUES: readonly RateLimitKey[] = [
  RateLimitKey.RATE_LIMIT_KEY_UNSPECIFIED,
  RateLimitKey.RATE_LIMIT_KEY_CLIENT_IP,
  RateLimitKey.RATE_LIMIT_KEY_CLIENT_KEY,
];

/** Maps a proto Rule to the domain config (structure only; `compileRule` validates values). */
export function ruleFromProto(rule: Rule | undefined, field = 'rule', depth = 0): RuleConfig {
  if (depth > RULE_LIMITS.depthMax) throw invalidRule(field, `nesting deeper than ${RULE_LIMITS.depthMax}`);
  const kind = rule?.kind;
  if (!kind) throw invalidRule(field, `must set one of ${KIND_NAMES}`);
  switch (kind.$case) {
    case 'rateLimit': {
      const { maxRequests, window, keyBy } = kind.value;
      if (maxRequests > BigInt(Number.MAX_SAFE_INTEGER) || maxRequests < BigInt(Number.MIN_SAFE_INTEGER)) {
        throw invalidRule(`${field}.rate_limit.max_requests`, 'out of range');
      }
      // ts-proto keeps an unknown enum number as it is (not UNRECOGNIZED): accept only the known keys (0 = client_ip).
      if (!KEY_BY_VALUES.includes(keyBy)) {
        throw invalidRule(`${field}.rate_limit.key_by`, 'must be RATE_LIMIT_KEY_CLIENT_IP or RATE_LIMIT_KEY_CLIENT_KEY');
      }
      return {
        type: 'rate_limit',
        maxRequests: Number(maxRequests),
        windowSeconds: window ? Number(window.seconds) + window.nanos / 1e9 : 0,
        keyBy: keyBy === RateLimitKey.RATE_LIMIT_KEY_CLIENT_KEY ? 'client_key' : 'client_ip',
      };
    }
    case 'ipBlocklist':
      return { type: 'ip_blocklist', cidrs: kind.value.cidrs };
    case 'pathPattern':
      return { type: 'path_pattern', patterns: kind.value.patterns, caseInsensitive: kind.value.caseInsensitive };
    case 'headerPattern':
      return {
        type: 'header_pattern',
        header: kind.value.header,
        patterns: kind.value.patterns,
        caseInsensitive: kind.value.caseInsensitive,
      };
    case 'score':
      return { type: 'score', minScore: kind.value.minScore };
    case 'all':
    case 'any':
      return {
        type: kind.$case,
        rules: kind.value.rules.map((sub, i) => ruleFromProto(sub, `${field}.${kind.$case}.rules[${i}]`, depth + 1)),
      };
  }
}

/** Maps and validates (compiles) a proto rule; bad input → INVALID_ARGUMENT naming the field. */
export function validatedRule(rule: Rule | undefined, field: string): RuleConfig {
  const config = ruleFromProto(rule, field);
  compileRule(config, field);
  return config;
}

