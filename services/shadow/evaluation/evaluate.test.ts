import { expect } from 'chai';
import { evaluateRule, type EvaluationResult } from './evaluate';
import { closeEvaluationWorkerPools } from './evaluation-workers';
import { SampleColumnsBuilder } from '../domain/sample-columns';
import { ServiceError } from '../../../platform/service-error';
import { generateTraffic } from '../domain/traffic-generator';
import type { RuleConfig } from '../domain/rules';
import type { TrafficSample } from '../domain/traffic-sample';

function sample(i: number, path: string, malicious: boolean, extra: Partial<TrafficSample> = {}): TrafficSample {
  return {
    timestampMs: 1_700_000_000_000 + i * 1000,
    clientKey: `10.0.0.${i % 200}`,
    clientIp: `10.0.0.${i % 200}`,
    method: 'GET',
    path,
    status: 200,
    userAgent: 'Mozilla/5.0',
    headers: {},
    requestBytes: 300,
    malicious,
    attackType: malicious ? 'scanner' : '',
    ...extra,
  };
}

/** 40 probes of /.env (malicious) of which the rule misses 4 (/.ENV), 2 benign /.env-docs pages it wrongly blocks, 958 benign pages. */
function handBuilt(): TrafficSample[] {
  const samples: TrafficSample[] = [];
  let i = 0;
  for (let k = 0; k < 36; k++) samples.push(sample(i++, '/.env', true));
  for (let k = 0; k < 4; k++) samples.push(sample(i++, '/.ENV', true));
  for (let k = 0; k < 2; k++) samples.push(sample(i++, '/.env-docs', false));
  for (let k = 0; k < 958; k++) samples.push(sample(i++, `/products/${k}`, false));
  return samples;
}

const envRule: RuleConfig = { type: 'path_pattern', patterns: ['^/\\.env'] };

/** Everything except wall-clock timings and the execution mode. */
function withoutExecution(r: EvaluationResult): unknown {
  return { ...r, execution: undefined };
}

describe('shadow evaluate: evaluateRule', function () {
  this.timeout(60000);
  after(closeEvaluationWorkerPools);

  // The hand-built set gives TP 36, FP 2, FN 4, TN 958 and the metrics follow by hand.
  it('computes the matrix and metrics of a hand-built set', async () => {
    const r = await evaluateRule({ samples: handBuilt(), rule: envRule, workers: 0 });
    expect(r.samplesEvaluated).to.equal(1000);
    expect(r.maliciousSamples).to.equal(40);
    expect(r.benignSamples).to.equal(960);
    expect(r.candidate.matrix).to.deep.equal({ tp: 36, fp: 2, fn: 4, tn: 958 });
    expect(r.candidate.metrics.precision.value).to.equal(36 / 38);
    expect(r.candidate.metrics.recall.value).to.equal(0.9);
    expect(r.candidate.metrics.falsePositiveRate.value).to.equal(2 / 960);
    expect(r.candidate.fired).to.equal(38);
    // A 0/1 rule: AUC equals balanced accuracy.
    expect(r.candidate.scoreKind).to.equal('binary');
    expect(r.candidate.aucRoc.value).to.be.closeTo(r.candidate.metrics.balancedAccuracy.value, 1e-15);
    expect(r.candidate.chiSquare.continuityCorrected).to.equal(true);
    expect(r.candidate.chiSquareUncorrected.continuityCorrected).to.equal(false);
    expect(r.candidate.significance.significant).to.equal(true);
    expect(r.execution.mode).to.equal('single_thread');
    expect(r.baseline).to.equal(null);
  });

  // Per-attack-type firing rates: benign ('') is the FPR, each attack type its own recall.
  it('breaks firing rates down by attack type', async () => {
    const r = await evaluateRule({ samples: handBuilt(), rule: envRule, workers: 0 });
    expect(r.candidate.byAttackType.map((b) => [b.attackType, b.samples, b.fired])).to.deep.equal([
      ['', 960, 2],
      ['scanner', 40, 36],
    ]);
  });

  // With a baseline, McNemar counts discordant samples: the case-insensitive candidate catches the 4 /.ENV probes.
  it('compares with a baseline using McNemar', async () => {
    const candidate: RuleConfig = { type: 'path_pattern', patterns: ['^/\\.env$'], caseInsensitive: true };
    const r = await evaluateRule({ samples: handBuilt(), rule: candidate, baseline: envRule, workers: 0 });
    expect(r.candidate.matrix).to.deep.equal({ tp: 40, fp: 0, fn: 0, tn: 960 });
    const comparison = r.baseline!.comparison;
    expect(comparison.candidateOnlyCorrect).to.equal(6); // 4 probes caught + 2 docs pages not blocked
    expect(comparison.baselineOnlyCorrect).to.equal(0);
    expect(comparison.mcnemar.method).to.equal('exact_binomial');
    expect(comparison.mcnemar.pValue).to.equal(2 / 64); // 2·P(X ≤ 0), X ~ Bin(6, ½)
    expect(comparison.verdict).to.equal('candidate_better');
    expect(comparison.malicious).to.include({ candidateOnlyCorrect: 4, baselineOnlyCorrect: 0 });
    expect(comparison.benign).to.include({ candidateOnlyCorrect: 2, baselineOnlyCorrect: 0 });
    expect(comparison.deltas.recall).to.be.closeTo(0.1, 1e-15);
  });

  // A score rule ranks by the samples' own scores: scikit-learn's roc_auc_score documentation example
  // (y = [0, 0, 1, 1], scores = [0.1, 0.4, 0.35, 0.8] → 0.75), while the rule at 0.38 fires on
  // [0, 1, 0, 1] with balanced accuracy 0.5 — AUC is no longer balanced accuracy.
  it('gives a ranking AUC from sample scores', async () => {
    const scores = [0.1, 0.4, 0.35, 0.8];
    const samples = scores.map((score, i) => sample(i, `/p/${i}`, i >= 2, { score }));
    const r = await evaluateRule({ samples, rule: { type: 'score', minScore: 0.38 }, workers: 0 });
    expect(r.candidate.scoreKind).to.equal('graded');
    expect(r.candidate.aucRoc).to.include({ value: 0.75, defined: true });
    expect(r.candidate.matrix).to.deep.equal({ tp: 1, fp: 1, fn: 1, tn: 1 });
    expect(r.candidate.metrics.balancedAccuracy.value).to.equal(0.5);
    // The same through worker threads.
    const parallel = await evaluateRule({ samples, rule: { type: 'score', minScore: 0.38 }, workers: 2 });
    expect(parallel.candidate.aucRoc.value).to.equal(0.75);
  });

  // Invalid rules are reported with the proto field path, prefixed rule / baseline_rule.
  it('names the invalid field of the rule or baseline', async () => {
    const bad = { type: 'rate_limit', maxRequests: 0, windowSeconds: 60, keyBy: 'client_ip' } as RuleConfig;
    let error: unknown;
    try {
      await evaluateRule({ samples: handBuilt(), rule: envRule, baseline: { type: 'any', rules: [envRule, bad] } });
    } catch (e) {
      error = e;
    }
    expect(error).to.be.instanceOf(ServiceError);
    expect((error as ServiceError).reason).to.equal('INVALID_RULE');
    expect((error as ServiceError).fieldViolations[0]!.field).to.equal('baseline_rule.any.rules[1].rate_limit.max_requests');
    try {
      await evaluateRule({ samples: [], rule: bad });
      expect.fail('should throw');
    } catch (e) {
      expect((e as ServiceError).fieldViolations[0]!.field).to.equal('rule.rate_limit.max_requests');
    }
  });

  // Invalid thresholds are reported before any work is done.
  it('validates thresholds', async () => {
    try {
      await evaluateRule({ samples: handBuilt(), rule: envRule, thresholds: { minRecall: 2 } });
      expect.fail('should throw');
    } catch (e) {
      expect(e).to.be.instanceOf(ServiceError);
      expect((e as ServiceError).reason).to.equal('INVALID_ARGUMENT');
      expect((e as ServiceError).fieldViolations[0]!.field).to.equal('thresholds.min_recall');
    }
  });

  // An empty sample set gives a fully defined, finite result asking for review.
  it('returns defined results for no samples', async () => {
    const r = await evaluateRule({ samples: [], rule: envRule, baseline: envRule });
    expect(r.samplesEvaluated).to.equal(0);
    expect(r.candidate.chiSquare.defined).to.equal(false);
    expect(r.candidate.aucRoc).to.include({ value: 0.5, defined: false });
    expect(r.recommendation.decision).to.equal('NEEDS_REVIEW');
    const numbers: number[] = [];
    const walk = (v: unknown): void => {
      if (typeof v === 'number') numbers.push(v);
      else if (v && typeof v === 'object') Object.values(v).forEach(walk);
    };
    walk(r);
    expect(numbers.length).to.be.above(50);
    expect(numbers.every(Number.isFinite)).to.equal(true);
  });

  // A rule that never fires is a defined, degenerate case: no NaN, precision undefined, review.
  it('handles a rule that never fires', async () => {
    const r = await evaluateRule({ samples: handBuilt(), rule: { type: 'path_pattern', patterns: ['^/never$'] }, workers: 0 });
    expect(r.candidate.matrix).to.deep.equal({ tp: 0, fp: 0, fn: 40, tn: 960 });
    expect(r.candidate.metrics.precision.defined).to.equal(false);
    expect(r.candidate.chiSquare).to.include({ defined: false, pValue: 1 });
    expect(r.recommendation.decision).to.equal('NEEDS_REVIEW');
  });

  // Small expected counts switch the significance test to Fisher's exact test.
  it("uses Fisher's exact test for small expected counts", async () => {
    const samples = handBuilt().slice(0, 40).concat(handBuilt().slice(42, 80));
    const r = await evaluateRule({ samples, rule: { type: 'path_pattern', patterns: ['^/\\.ENV$'] }, workers: 0 });
    expect(r.candidate.fisherExact).not.to.equal(null);
    expect(r.candidate.significance.test).to.equal('fisher_exact');
  });

  // Columns built by the streaming builder (as the DB layer will) evaluate the same as sample objects, custom headers included.
  it('accepts prebuilt columns', async () => {
    const samples = handBuilt().map((s, i) => (i % 3 === 0 ? { ...s, headers: { 'x-debug': '1' } } : s));
    const rule: RuleConfig = { type: 'any', rules: [envRule, { type: 'header_pattern', header: 'X-Debug', patterns: ['^1$'] }] };
    const builder = new SampleColumnsBuilder({ capacity: 4, headerNames: ['x-debug'] });
    for (const s of samples) builder.append(s);
    const fromColumns = await evaluateRule({ samples: builder.build(), rule, workers: 0 });
    const fromObjects = await evaluateRule({ samples, rule, workers: 0 });
    expect(withoutExecution(fromColumns)).to.deep.equal(withoutExecution(fromObjects));
    expect(fromColumns.execution.timingsMs.columns).to.equal(0);
  });

  // On generated traffic, 2 worker threads give exactly the single-threaded result (matrix, scores-derived AUC, tests, decision).
  it('gives identical results with and without workers', async () => {
    const samples = generateTraffic({ count: 30_000, seed: 5 });
    const rule: RuleConfig = {
      type: 'any',
      rules: [
        { type: 'rate_limit', maxRequests: 100, windowSeconds: 60, keyBy: 'client_ip' },
        { type: 'path_pattern', patterns: ['\\.env', '\\.\\./', '<script'], caseInsensitive: true },
        { type: 'header_pattern', header: 'user-agent', patterns: ['sqlmap', 'nikto'], caseInsensitive: true },
      ],
    };
    const baseline: RuleConfig = { type: 'rate_limit', maxRequests: 300, windowSeconds: 60, keyBy: 'client_key' };
    const single = await evaluateRule({ samples, rule, baseline, workers: 0 });
    const threaded = await evaluateRule({ samples, rule, baseline, workers: 2 });
    expect(threaded.execution).to.include({ workers: 2, mode: 'worker_threads' });
    expect(withoutExecution(threaded)).to.deep.equal(withoutExecution(single));
    expect(single.candidate.scoreKind).to.equal('graded');
    expect(single.candidate.fired).to.be.above(0);
  });
});
