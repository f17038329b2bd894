import { expect } from 'chai';
import { browserRequest } from '../../../testing/camouflage-kit';
import { ThreatScorer } from './threat-scoring';
import type { WafOutcome } from './waf-signals';

describe('camouflage WAF signals', () => {
  // A WAF that did not finish (or failed) never makes a request benign: at least SUSPICIOUS, and explained.
  it('reads a WAF timeout or failure as SUSPICIOUS, never benign', () => {
    for (const outcome of [{ matches: [], timedOut: true, durationMicros: 5_000 }, { matches: [], timedOut: false, durationMicros: 0, error: 'context disposed' }] as WafOutcome[]) {
      const result = new ThreatScorer({ waf: () => outcome }).scoreStatic(browserRequest());
      expect(result.signals.map((s) => s.name)).to.deep.equal(['waf-timeout']);
      expect(result.tier).to.equal('suspicious');
    }
  });

  // Several rules of one class are one signal worth the strongest, listing every rule id.
  it('merges matches of one class into one signal worth the strongest', () => {
    const match = (ruleId: string, highConfidence: boolean) => ({ ruleId, ruleName: 'SQLi', type: 'sql_injection', category: 'attack_attempt', highConfidence, location: 'query.id', matched: "' or 1=1" });
    const result = new ThreatScorer({ waf: () => ({ matches: [match('crs-942-100', false), match('crs-942-160', true)], timedOut: false, durationMicros: 40 }) }).scoreStatic(browserRequest());
    expect(result.signals).to.have.length(1);
    expect(result.signals[0]).to.include({ name: 'waf-sql-injection', points: 9 });
    expect(result.signals[0]!.detail).to.contain('crs-942-100, crs-942-160').and.contain('query.id');
  });
});
