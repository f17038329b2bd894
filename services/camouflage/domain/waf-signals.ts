/**
 * WAF matches as explainable threat signals. The WAF itself (libddwaf, services/camouflage/waf/)
 * runs outside domain/; this file only says what its answer is worth, so the points live next to
 * the project's own signals (threat-signals.ts) and add up with them.
 *
 * One signal per attack class (`waf-sql-injection`, `waf-xss`, ...), worth the strongest of its
 * matches; its detail names every rule id that matched, and where the first match was (address,
 * key path) with the matched text. A rule marked `confidence: 1` by its ruleset (few false
 * positives) is an attack on its own (9 points), one without it a strong hint (5); scanners and
 * attack tools 6; HTTP protocol violations 3. A run that timed out is `waf-timeout` (3 points:
 * SUSPICIOUS), never benign: what the WAF did not finish looking at was not shown to be harmless.
 */
import type { ThreatSignal } from './threat-signals';

export interface WafMatch {
  readonly ruleId: string;
  readonly ruleName: string;
  /** The ruleset's attack class, e.g. `sql_injection`, `xss`, `attack_tool`. */
  readonly type: string;
  readonly category: string;
  /** True when the ruleset marks the rule as high confidence. */
  readonly highConfidence: boolean;
  /** Where it matched, as the request names it: `query.q`, `header:user-agent`, `cookie.session`, `body.user.name`, `path`. */
  readonly location: string;
  /** The matched text (the highlight), clipped. */
  readonly matched: string;
}

export interface WafOutcome {
  readonly matches: readonly WafMatch[];
  readonly timedOut: boolean;
  /** The WAF's own run time, in microseconds. */
  readonly durationMicros: number;
  /** Set when the WAF failed (it is then treated like a timeout). */
  readonly error?: string;
}

/** Runs the WAF over a request (implemented in services/camouflage/waf/). */
export type RequestWafRunner<R> = (request: R) => WafOutcome;

export const WAF_POINTS = Object.freeze({
  highConfidenceAttack: 9,
  attack: 5,
  tool: 6,
  protocolViolation: 3,
  timeout: 3,
});

const TOOL_TYPES: ReadonlySet<string> = new Set(['attack_tool', 'security_scanner', 'commercial_scanner']);
const IGNORED_TYPES: ReadonlySet<string> = new Set(['block_ip', 'block_user']);

function pointsOf(match: WafMatch): number {
  if (TOOL_TYPES.has(match.type)) return WAF_POINTS.tool;
  if (match.type === 'http_protocol_violation') return WAF_POINTS.protocolViolation;
  return match.highConfidence ? WAF_POINTS.highConfidenceAttack : WAF_POINTS.attack;
}

function clip(text: string, chars = 48): string {
  const oneLine = text.replace(/[\r\n\t]+/g, ' ');
  return oneLine.length > chars ? `${oneLine.slice(0, chars)}…` : oneLine;
}

export function detectWafSignals(outcome: WafOutcome, out: ThreatSignal[]): void {
  if (outcome.timedOut || outcome.error !== undefined) {
    out.push({
      name: 'waf-timeout',
      points: WAF_POINTS.timeout,
      detail: outcome.error !== undefined ? `WAF failed (${clip(outcome.error)}): not read as benign` : `WAF did not finish within its budget (${outcome.durationMicros} µs): not read as benign`,
    });
  }
  const byType = new Map<string, WafMatch[]>();
  for (const match of outcome.matches) {
    if (IGNORED_TYPES.has(match.type)) continue;
    const list = byType.get(match.type);
    if (list === undefined) byType.set(match.type, [match]);
    else list.push(match);
  }
  for (const type of [...byType.keys()].sort()) {
    const matches = byType.get(type)!;
    let best = matches[0]!;
    for (const match of matches) if (pointsOf(match) > pointsOf(best)) best = match;
    const ids = [...new Set(matches.map((m) => m.ruleId))].sort();
    out.push({
      name: `waf-${type.replace(/_/g, '-')}`,
      points: pointsOf(best),
      detail: `WAF rule ${ids.slice(0, 6).join(', ')}${ids.length > 6 ? ` (+${ids.length - 6})` : ''} (${best.ruleName}) in ${best.location}: "${clip(best.matched)}"`,
    });
  }
}
