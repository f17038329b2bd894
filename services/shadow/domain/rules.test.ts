import { expect } from 'chai';
import {
  RULE_LIMITS,
  compileRule,
  describeRule,
  hasGradedScore,
  hasNestedQuantifier,
  hasRateLimit,
  ruleHeaderNames,
  validateRule,
  type RuleConfig,
} from './rules';
import { ServiceError } from '../../../platform/service-error';

/** Asserts that validating `cfg` fails on exactly `field` with exactly `description`. */
function expectRuleError(cfg: unknown, field: string, description: string | RegExp, prefix = 'rule'): void {
  let caught: unknown;
  try {
    compileRule(cfg, prefix);
  } catch (error) {
    caught = error;
  }
  expect(caught, 'expected an INVALID_RULE ServiceError').to.be.instanceOf(ServiceError);
  const error = caught as ServiceError;
  expect(error.reason).to.equal('INVALID_RULE');
  expect(error.fieldViolations).to.have.length(1);
  const violation = error.fieldViolations[0]!;
  expect(violation.field).to.equal(field);
  if (typeof description === 'string') expect(violation.description).to.equal(description);
  else expect(violation.description).to.match(description);
  expect(error.message).to.equal(`${field}: ${violation.description}`);
}

const rate = (maxRequests: unknown, windowSeconds: unknown = 60, keyBy: unknown = 'client_ip'): unknown => ({
  type: 'rate_limit',
  maxRequests,
  windowSeconds,
  keyBy,
});

describe('shadow rules: validation', () => {
  // A realistic composite compiles, and validateRule accepts it without throwing.
  it('accepts a valid composite rule', () => {
    const rule: RuleConfig = {
      type: 'any',
      rules: [
        { type: 'rate_limit', maxRequests: 100, windowSeconds: 60, keyBy: 'client_key' },
        { type: 'ip_blocklist', cidrs: ['203.0.113.0/24', '2001:db8:bad::/48', '192.0.2.7'] },
        { type: 'path_pattern', patterns: ['^/\\.env', '(?:%27|\')\\s*or\\s'], caseInsensitive: true },
        { type: 'all', rules: [{ type: 'header_pattern', header: 'User-Agent', patterns: ['sqlmap'] }] },
      ],
    };
    expect(() => validateRule(rule)).not.to.throw();
    const compiled = compileRule(rule);
    expect(compiled.type).to.equal('any');
    expect(hasRateLimit(compiled)).to.equal(true);
  });

  // The error is a ServiceError with reason INVALID_RULE, so the gRPC layer can map it without knowing the module.
  it('throws a ServiceError with reason INVALID_RULE', () => {
    try {
      compileRule(rate(0));
      expect.fail('should throw');
    } catch (error) {
      expect(error).to.be.instanceOf(ServiceError);
      expect((error as ServiceError).reason).to.equal('INVALID_RULE');
    }
  });

  // Non-objects and unknown types are reported on the rule itself.
  it('names the rule for a missing or unknown type', () => {
    expectRuleError(null, 'rule', 'must be a rule object');
    expectRuleError([], 'rule', 'must be a rule object');
    expectRuleError({ type: 'geo_block' }, 'rule', 'rule type must be one of: rate_limit, ip_blocklist, path_pattern, header_pattern, score, all, any');
  });

  // Threshold ≤ 0, fractional, non-numeric and oversized max_requests each give the exact field and message.
  it('rejects bad rate-limit thresholds', () => {
    expectRuleError(rate(0), 'rule.rate_limit.max_requests', 'must be a positive integer');
    expectRuleError(rate(-5), 'rule.rate_limit.max_requests', 'must be a positive integer');
    expectRuleError(rate(1.5), 'rule.rate_limit.max_requests', 'must be a positive integer');
    expectRuleError(rate('10'), 'rule.rate_limit.max_requests', 'must be a positive integer');
    expectRuleError(rate(2e9), 'rule.rate_limit.max_requests', 'must be at most 1000000000');
  });

  // Zero, NaN, sub-millisecond and over-a-day windows are rejected on rule.rate_limit.window.
  it('rejects bad rate-limit windows', () => {
    expectRuleError(rate(10, 0), 'rule.rate_limit.window', 'must be a positive duration');
    expectRuleError(rate(10, -1), 'rule.rate_limit.window', 'must be a positive duration');
    expectRuleError(rate(10, Number.NaN), 'rule.rate_limit.window', 'must be a positive duration');
    expectRuleError(rate(10, Infinity), 'rule.rate_limit.window', 'must be a positive duration');
    expectRuleError(rate(10, 0.0005), 'rule.rate_limit.window', 'must be at least 1 millisecond');
    expectRuleError(rate(10, 86401), 'rule.rate_limit.window', 'must be at most 86400 seconds (1 day)');
  });

  // An unknown key kind is rejected on key_by.
  it('rejects a bad key_by', () => {
    expectRuleError(rate(10, 60, 'user'), 'rule.rate_limit.key_by', 'must be one of: client_ip, client_key');
    expectRuleError(
      { type: 'rate_limit', maxRequests: 10, windowSeconds: 60 },
      'rule.rate_limit.key_by',
      'must be one of: client_ip, client_key',
    );
  });

  // Bad CIDRs inside a composite are reported with the full path down to the list index.
  it('names the exact CIDR inside a composite', () => {
    const cfg = {
      type: 'any',
      rules: [rate(5), { type: 'ip_blocklist', cidrs: ['10.0.0.0/33'] }],
    };
    expectRuleError(cfg, 'rule.any.rules[1].ip_blocklist.cidrs[0]', "'10.0.0.0/33' has prefix length 33 which exceeds 32");
  });

  // Each kind of bad CIDR gets its own exact message; host bits suggest the network meant.
  it('rejects bad CIDRs with exact messages', () => {
    const bad = (cidr: string, message: string, index = 0): void => {
      const cidrs = ['198.51.100.0/24'];
      cidrs[index] = cidr;
      expectRuleError({ type: 'ip_blocklist', cidrs }, `rule.ip_blocklist.cidrs[${index}]`, message);
    };
    bad('10.0.0.1/8', "'10.0.0.1/8' has host bits set (did you mean 10.0.0.0/8?)");
    bad('2001:db8::/129', "'2001:db8::/129' has prefix length 129 which exceeds 128");
    bad('2001:db8::1/32', "'2001:db8::1/32' has host bits set (did you mean 2001:db8::/32?)");
    bad('not-an-ip', "'not-an-ip' is not a valid IPv4 or IPv6 CIDR");
    bad('1.2.3.4/', "'1.2.3.4/' has an invalid prefix length ''");
    bad('1.2.3.4/08', "'1.2.3.4/08' has an invalid prefix length '08'");
    bad('01.2.3.4/32', "'01.2.3.4/32' is not a valid IPv4 or IPv6 CIDR");
    bad('2001:db8:::1/64', "'2001:db8:::1/64' is not a valid IPv6 CIDR");
    bad('fe80::1%eth0', "'fe80::1%eth0' is not a valid IPv6 CIDR", 1);
    bad('', 'must be a non-empty CIDR such as 203.0.113.0/24');
  });

  // Empty and oversized CIDR lists are rejected on the list field.
  it('rejects empty and oversized CIDR lists', () => {
    expectRuleError({ type: 'ip_blocklist', cidrs: [] }, 'rule.ip_blocklist.cidrs', 'must contain at least one CIDR');
    expectRuleError({ type: 'ip_blocklist' }, 'rule.ip_blocklist.cidrs', 'must contain at least one CIDR');
    const many = Array.from({ length: RULE_LIMITS.cidrsPerRuleMax + 1 }, (_, i) => `10.${i >> 8}.${i & 255}.0/24`);
    expectRuleError({ type: 'ip_blocklist', cidrs: many }, 'rule.ip_blocklist.cidrs', 'must contain at most 10000 CIDRs');
  });

  // Invalid regex, empty, overlong and non-string patterns are each named by index.
  it('rejects bad patterns with the index', () => {
    expectRuleError(
      { type: 'path_pattern', patterns: ['^/ok$', '('] },
      'rule.path_pattern.patterns[1]',
      'invalid regular expression: error parsing regexp: missing closing ): `(`',
    );
    expectRuleError({ type: 'path_pattern', patterns: [''] }, 'rule.path_pattern.patterns[0]', 'must be a non-empty regular expression');
    expectRuleError({ type: 'path_pattern', patterns: [42] }, 'rule.path_pattern.patterns[0]', 'must be a non-empty regular expression');
    expectRuleError(
      { type: 'path_pattern', patterns: ['a'.repeat(513)] },
      'rule.path_pattern.patterns[0]',
      'is 513 characters long; the limit is 512',
    );
    expectRuleError({ type: 'path_pattern', patterns: [] }, 'rule.path_pattern.patterns', 'must contain at least one pattern');
    expectRuleError(
      { type: 'header_pattern', header: 'user-agent', patterns: ['x', '[a-'] },
      'rule.header_pattern.patterns[1]',
      /^invalid regular expression: /,
    );
  });

  // Nested unbounded repetition (the classic ReDoS shapes) is refused with an explanation.
  it('refuses catastrophic-backtracking patterns', () => {
    const message =
      'repeats a group that contains an unbounded quantifier (catastrophic backtracking risk); rewrite without nesting, e.g. (?:ab)+ instead of (a+b)+';
    for (const pattern of ['(a+)+$', '(\\w+\\s?)*$', '^(a|aa)*(b+)+c', '(.*a){20}', '((ab)*c)+']) {
      expectRuleError({ type: 'path_pattern', patterns: [pattern] }, 'rule.path_pattern.patterns[0]', message);
    }
  });

  // The ReDoS screen lets ordinary WAF patterns through (bounded inner repeats, escaped parentheses, classes).
  it('lets ordinary patterns through the ReDoS screen', () => {
    for (const pattern of [
      '(?:ab)+',
      '(\\d{1,3}\\.){3}\\d{1,3}',
      '(?:%[0-9a-f]{2})+',
      '\\(.*\\)+',
      '[(+*]+',
      'union\\s+select',
      '(\\.\\./)+',
      '(?<word>x)\\k<word>',
    ]) {
      expect(hasNestedQuantifier(pattern), pattern).to.equal(false);
    }
    expect(hasNestedQuantifier('(a*)*')).to.equal(true);
    expect(hasNestedQuantifier('(?:x+y)+')).to.equal(true);
  });

  // Header names must be HTTP tokens; case_insensitive must be boolean.
  it('rejects bad header names and flags', () => {
    expectRuleError(
      { type: 'header_pattern', header: '', patterns: ['x'] },
      'rule.header_pattern.header',
      'must be an HTTP header name such as user-agent',
    );
    expectRuleError(
      { type: 'header_pattern', header: 'bad header', patterns: ['x'] },
      'rule.header_pattern.header',
      "'bad header' is not a valid HTTP header name",
    );
    expectRuleError(
      { type: 'path_pattern', patterns: ['x'], caseInsensitive: 'yes' },
      'rule.path_pattern.case_insensitive',
      'must be a boolean',
    );
  });

  // Empty and oversized composites are rejected on their rules list.
  it('rejects empty and oversized composites', () => {
    expectRuleError({ type: 'any', rules: [] }, 'rule.any.rules', 'must contain at least one rule');
    expectRuleError({ type: 'all' }, 'rule.all.rules', 'must contain at least one rule');
    const leaf = { type: 'path_pattern', patterns: ['x'] };
    expectRuleError({ type: 'all', rules: Array(65).fill(leaf) }, 'rule.all.rules', 'must contain at most 64 rules');
  });

  // Nesting deeper than 8 is reported at the first node beyond the limit.
  it('rejects nesting deeper than 8 levels', () => {
    let cfg: unknown = { type: 'path_pattern', patterns: ['x'] };
    for (let i = 0; i < 8; i++) cfg = { type: 'any', rules: [cfg] };
    // 9 levels: 8 composites + the leaf
    expectRuleError(cfg, `rule${'.any.rules[0]'.repeat(8)}`, 'nesting depth exceeds 8');
    let ok: unknown = { type: 'path_pattern', patterns: ['x'] };
    for (let i = 0; i < 7; i++) ok = { type: 'any', rules: [ok] };
    expect(() => compileRule(ok)).not.to.throw();
  });

  // More than 256 nodes in total is reported at the 257th node in depth-first order.
  it('rejects rules with more than 256 nodes', () => {
    const leaf = { type: 'path_pattern', patterns: ['x'] };
    const block = { type: 'any', rules: [leaf, leaf, leaf, leaf] }; // 5 nodes
    // root + 51 blocks = 256 nodes; block 51 is node 257.
    expectRuleError({ type: 'any', rules: Array(64).fill(block) }, 'rule.any.rules[51]', 'rule has more than 256 nodes');
  });

  // More than 2048 patterns across the whole rule is a catastrophic size, named at the list that crosses it.
  it('rejects more than 2048 patterns in total', () => {
    const big = { type: 'path_pattern', patterns: Array(256).fill('x') };
    expectRuleError(
      { type: 'any', rules: Array(9).fill(big) },
      'rule.any.rules[8].path_pattern.patterns',
      'rule has more than 2048 patterns in total',
    );
  });

  // The field prefix distinguishes the baseline from the candidate in errors.
  it('uses the given prefix for the baseline rule', () => {
    expectRuleError(rate(0), 'baseline_rule.rate_limit.max_requests', 'must be a positive integer', 'baseline_rule');
  });
});

describe('shadow rules: score rules and graded scores', () => {
  // min_score must be a finite number > 0, named by its proto field.
  it('validates a score rule', () => {
    expect(compileRule({ type: 'score', minScore: 0.5 })).to.include({ type: 'score', minScore: 0.5 });
    for (const minScore of [0, -1, Number.NaN, Number.POSITIVE_INFINITY, '0.5']) {
      try {
        compileRule({ type: 'score', minScore });
        expect.fail(`accepted ${String(minScore)}`);
      } catch (e) {
        expect((e as ServiceError).fieldViolations[0]!.field).to.equal('rule.score.min_score');
      }
    }
  });

  // Which rules give a graded score (and so a ranking AUC): the proto's Rule comment lists the same.
  it('says which rules are graded', () => {
    const graded = (cfg: RuleConfig): boolean => hasGradedScore(compileRule(cfg));
    expect(graded({ type: 'score', minScore: 1 })).to.equal(true);
    expect(graded({ type: 'rate_limit', maxRequests: 5, windowSeconds: 1, keyBy: 'client_ip' })).to.equal(true);
    expect(graded({ type: 'path_pattern', patterns: ['a', 'b'] })).to.equal(true);
    expect(graded({ type: 'header_pattern', header: 'user-agent', patterns: ['a', 'b'] })).to.equal(true);
    expect(graded({ type: 'path_pattern', patterns: ['a'] })).to.equal(false);
    expect(graded({ type: 'ip_blocklist', cidrs: ['10.0.0.0/8'] })).to.equal(false);
    expect(graded({ type: 'any', rules: [{ type: 'ip_blocklist', cidrs: ['10.0.0.0/8'] }, { type: 'path_pattern', patterns: ['a'] }] })).to.equal(false);
    expect(graded({ type: 'all', rules: [{ type: 'ip_blocklist', cidrs: ['10.0.0.0/8'] }, { type: 'score', minScore: 1 }] })).to.equal(true);
  });
});

describe('shadow rules: helpers', () => {
  // Header names are collected lower-cased, without user-agent (a sample field, not a header column).
  it('collects the header names a rule reads', () => {
    const rule: RuleConfig = {
      type: 'all',
      rules: [
        { type: 'header_pattern', header: 'X-Forwarded-For', patterns: ['x'] },
        { type: 'any', rules: [{ type: 'header_pattern', header: 'user-agent', patterns: ['y'] }] },
        { type: 'header_pattern', header: 'accept', patterns: ['z'] },
      ],
    };
    expect(ruleHeaderNames(rule)).to.deep.equal(['accept', 'x-forwarded-for']);
  });

  // describeRule gives a short readable summary for reasons and logs.
  it('describes a rule in one line', () => {
    const rule: RuleConfig = {
      type: 'any',
      rules: [
        { type: 'rate_limit', maxRequests: 100, windowSeconds: 60, keyBy: 'client_ip' },
        { type: 'ip_blocklist', cidrs: ['203.0.113.0/24'] },
      ],
    };
    expect(describeRule(rule)).to.equal('any(rate_limit(100/60s by client_ip), ip_blocklist(1 CIDRs))');
  });

  // Equal leaves compile to the same key (so the replay shares their work); a different flag changes it.
  it('gives equal leaves equal keys', () => {
    const a = compileRule({ type: 'ip_blocklist', cidrs: ['203.0.113.0/24', '198.51.100.0/24'] });
    const b = compileRule({ type: 'ip_blocklist', cidrs: ['198.51.100.0/24', '203.0.113.0/24'] });
    const c = compileRule({ type: 'path_pattern', patterns: ['x'], caseInsensitive: true });
    const d = compileRule({ type: 'path_pattern', patterns: ['x'] });
    expect((a as { key: string }).key).to.equal((b as { key: string }).key);
    expect((c as { key: string }).key).not.to.equal((d as { key: string }).key);
  });
});

// Issue 21 (1): a pattern the screen lets through, e.g. `(a|a)*$`, must still match in time linear
// in the subject: one StartEvaluation must not block the event loop for exponential time.
describe('rule patterns on hostile subjects', () => {
  it('matches (a|a)*$ against long non-matching paths in linear time', () => {
    const rule = compileRule({ type: 'path_pattern', patterns: ['(a|a)*$'] });
    if (rule.type !== 'path_pattern') throw new Error('expected a path_pattern rule');
    const started = process.hrtime.bigint();
    // 27 characters: about a second of backtracking for a JavaScript RegExp, exponential beyond.
    for (const length of [20, 24, 27, 8192]) {
      if (length > 27 && rule.regexes[0] instanceof RegExp) break; // a backtracking engine would never return
      rule.regexes[0]!.test(`${'a'.repeat(length)}!`);
    }
    const elapsedMs = Number(process.hrtime.bigint() - started) / 1e6;
    expect(elapsedMs, 'time to match the four subjects').to.be.below(200);
  });

  it('keeps RE2 semantics: case-insensitivity, anchors, and refuses what RE2 cannot run', () => {
    const rule = compileRule({ type: 'header_pattern', header: 'user-agent', patterns: ['^(nikto|sqlmap)'], caseInsensitive: true });
    if (rule.type !== 'header_pattern') throw new Error('expected a header_pattern rule');
    expect(rule.regexes[0]!.test('SQLMap/1.7')).to.equal(true);
    expect(rule.regexes[0]!.test('x sqlmap')).to.equal(false);
    expectRuleError({ type: 'path_pattern', patterns: ['(a)\\1'] }, 'rule.path_pattern.patterns[0]', /^invalid regular expression: /);
  });
});
