import { expect } from 'chai';
import {
  DEFAULT_THRESHOLDS,
  gateConfidence,
  recommend,
  resolveThresholds,
  type BaselineSummary,
  type RecommendationThresholds,
} from './recommendation';
import { ServiceError } from '../../../platform/service-error';
import {
  chiSquareIndependence,
  detectionMetrics,
  fisherExact,
  mcnemarTest,
  rate,
  wilsonInterval,
  type ConfusionMatrix,
} from './statistics';

/** Builds the recommendation input the way evaluate.ts does. */
function decide(m: ConfusionMatrix, thresholds: Partial<RecommendationThresholds> = {}, baseline?: BaselineSummary) {
  const t = resolveThresholds(thresholds);
  const chi = chiSquareIndependence(m);
  const fisher = chi.defined && chi.minExpected < 5 ? fisherExact(m) : null;
  return recommend(
    {
      matrix: m,
      metrics: detectionMetrics(m, t.confidenceLevel),
      significance: {
        test: fisher ? 'fisher_exact' : 'chi_square_independence',
        pValue: fisher ? fisher.pValue : chi.pValue,
        association: chi.association,
      },
      baseline,
    },
    t,
  );
}

function baselineOf(candidateOnly: number, baselineOnly: number, benignCandidateOnly = 0, benignBaselineOnly = 0): BaselineSummary {
  return {
    mcnemar: mcnemarTest(baselineOnly, candidateOnly),
    candidateOnlyCorrect: candidateOnly,
    baselineOnlyCorrect: baselineOnly,
    benignMcnemar: mcnemarTest(benignBaselineOnly, benignCandidateOnly),
    benignCandidateOnlyCorrect: benignCandidateOnly,
    benignBaselineOnlyCorrect: benignBaselineOnly,
  };
}

const excellent: ConfusionMatrix = { tp: 950, fp: 5, fn: 50, tn: 9000 };

describe('shadow recommendation', () => {
  // All bounds clear the full-deployment bars (precision LB 0.988, recall LB 0.935, FPR UB 0.0013): approve fully, low risk.
  it('approves full deployment on lower/upper bounds', () => {
    const r = decide(excellent);
    expect(r.decision).to.equal('APPROVE_FULL_DEPLOYMENT');
    expect(r.risk).to.equal('LOW');
    expect(r.reasons).to.include('precision lower bound 0.988 ≥ 0.95');
    expect(r.reasons).to.include('recall lower bound 0.935 ≥ 0.8');
    expect(r.reasons).to.include('false-positive rate upper bound 0.001 ≤ 0.01');
    expect(r.reasons[0]).to.match(/^association with malicious traffic is significant \(chi_square_independence p<1e-300 < 0\.05\)$/);
    expect(r.confidence).to.be.within(0.975, 1);
  });

  // Safe and precise but recall LB 0.569 < 0.80: canary, with the failing full bar in the reasons.
  it('approves a canary when only the canary bars hold', () => {
    const r = decide({ tp: 600, fp: 10, fn: 400, tn: 8990 });
    expect(r.decision).to.equal('APPROVE_CANARY');
    expect(r.reasons).to.include('recall lower bound 0.569 < 0.8 (full needs ≥ 0.8)');
    expect(r.reasons).to.include('recall lower bound 0.569 ≥ 0.5');
    expect(r.risk).to.equal('LOW');
  });

  // A point estimate that meets the bar is not enough: 19/20 = 0.95 precision has LB 0.764, below even the canary bar.
  it('decides on bounds, not point estimates', () => {
    const r = decide({ tp: 19, fp: 1, fn: 1, tn: 179 });
    expect(r.checks.find((c) => c.name === 'precision_full')?.passed).to.equal(false);
    expect(r.checks.find((c) => c.name === 'precision_full')?.message).to.equal(
      'precision lower bound 0.764 < 0.95 (full needs ≥ 0.95)',
    );
    expect(r.decision).to.equal('NEEDS_REVIEW');
  });

  // An FPR whose LOWER bound (0.083) exceeds the canary limit 0.05 is rejected as critical.
  it('rejects a rule that certainly blocks too many users', () => {
    const r = decide({ tp: 900, fp: 800, fn: 100, tn: 8200 });
    expect(r.decision).to.equal('REJECT');
    expect(r.risk).to.equal('CRITICAL');
    expect(r.reasons[0]).to.equal('false-positive rate lower bound 0.083 > 0.05: blocks too many legitimate requests');
    expect(r.confidence).to.be.above(0.975);
  });

  // Precision whose UPPER bound (0.226) is below the canary bar 0.80 is rejected.
  it('rejects an imprecise rule', () => {
    const r = decide({ tp: 200, fp: 800, fn: 800, tn: 98200 });
    expect(r.decision).to.equal('REJECT');
    expect(r.reasons).to.include('precision upper bound 0.226 < 0.8: too many of its blocks hit legitimate requests');
  });

  // A rule firing significantly more on benign traffic (9% of benign vs 0.7% of malicious) is rejected, whatever the rate bars.
  it('rejects a significantly inverted rule', () => {
    const r = decide({ tp: 2, fp: 900, fn: 298, tn: 8800 }, { canaryMinPrecision: 0, canaryMaxFalsePositiveRate: 1, maxFalsePositiveRate: 1 });
    expect(r.decision).to.equal('REJECT');
    expect(r.risk).to.equal('CRITICAL');
    expect(r.reasons[0]).to.match(/^fires significantly more on benign than on malicious traffic/);
  });

  // Too few samples → NEEDS_REVIEW with the counts, risk HIGH when benign are too few to judge impact.
  it('asks for review when there are too few samples', () => {
    const r = decide({ tp: 5, fp: 0, fn: 0, tn: 4 });
    expect(r.decision).to.equal('NEEDS_REVIEW');
    expect(r.reasons[0]).to.equal('too few samples: 9 (5 malicious, 4 benign); need 100 in total and 10 per class');
    expect(r.risk).to.equal('HIGH');
  });

  // No significant association → NEEDS_REVIEW even with decent-looking rates.
  it('asks for review when the association is not significant', () => {
    const r = decide({ tp: 6, fp: 4, fn: 44, tn: 46 }, { canaryMinPrecision: 0.5, canaryMinRecall: 0, canaryMaxFalsePositiveRate: 1, maxFalsePositiveRate: 1 });
    expect(r.decision).to.equal('NEEDS_REVIEW');
    expect(r.reasons[0]).to.match(/^association with malicious traffic is not significant \(chi_square_independence p=0\.\d+ ≥ 0\.05\)$/);
  });

  // A harmless rule that catches little (recall 0.2) needs review rather than rejection.
  it('asks for review when a safe rule catches too little', () => {
    const r = decide({ tp: 200, fp: 2, fn: 800, tn: 8998 });
    expect(r.decision).to.equal('NEEDS_REVIEW');
    expect(r.risk).to.equal('LOW');
    expect(r.reasons.some((m) => m.startsWith('recall lower bound 0.176 < 0.5'))).to.equal(true);
  });

  // Significantly worse than the baseline (McNemar) → REJECT, critical, with the discordant counts.
  it('rejects a candidate significantly worse than the baseline', () => {
    const r = decide(excellent, {}, baselineOf(10, 60));
    expect(r.decision).to.equal('REJECT');
    expect(r.risk).to.equal('CRITICAL');
    expect(r.reasons[0]).to.match(
      /^significantly worse than the baseline \(mcnemar_chi_square p=\S+: baseline alone right on 60 samples, candidate alone on 10\)$/,
    );
  });

  // Significantly better than the baseline is stated in the reasons of an approval.
  it('reports a significantly better candidate', () => {
    const r = decide(excellent, {}, baselineOf(40, 2, 2, 0));
    expect(r.decision).to.equal('APPROVE_FULL_DEPLOYMENT');
    expect(r.reasons.some((m) => m.startsWith('significantly better than the baseline (mcnemar_chi_square p='))).to.equal(true);
  });

  // Meeting every full bar but blocking significantly more benign requests than the baseline downgrades to canary.
  it('downgrades to canary when the candidate blocks more benign traffic than the baseline', () => {
    const r = decide(excellent, {}, baselineOf(200, 30, 0, 30));
    expect(r.decision).to.equal('APPROVE_CANARY');
    expect(r.reasons[0]).to.equal('meets every full-deployment bar but blocks more benign requests than the baseline');
  });

  // Few discordant pairs use the exact McNemar test, named in the reasons.
  it('uses exact McNemar wording with few discordant pairs', () => {
    const r = decide(excellent, {}, baselineOf(3, 2));
    expect(r.reasons.some((m) => m.includes('not significantly different from the baseline (mcnemar_exact p=1;'))).to.equal(true);
  });

  // Thresholds are configurable per request: lowering the recall bar turns the canary case into a full approval.
  it('honours per-request thresholds', () => {
    const m = { tp: 600, fp: 10, fn: 400, tn: 8990 };
    expect(decide(m, { minRecall: 0.5 }).decision).to.equal('APPROVE_FULL_DEPLOYMENT');
    expect(decide(excellent, { minPrecision: 0.999 }).decision).to.equal('APPROVE_CANARY');
  });

  // Small tables switch the significance gate to Fisher's exact test.
  it("uses Fisher's exact test when expected counts are small", () => {
    const r = decide({ tp: 12, fp: 0, fn: 0, tn: 100 }, { minSamples: 10 });
    expect(r.checks[0].message).to.match(/fisher_exact p=/);
  });

  // Every degenerate matrix yields a finite confidence in [0, 1] and a decision.
  it('stays finite on degenerate matrices', () => {
    for (const m of [
      { tp: 0, fp: 0, fn: 0, tn: 0 },
      { tp: 0, fp: 0, fn: 50, tn: 500 },
      { tp: 0, fp: 5, fn: 0, tn: 500 },
      { tp: 500, fp: 0, fn: 0, tn: 0 },
      { tp: 1, fp: 0, fn: 0, tn: 0 },
    ]) {
      const r = decide(m);
      expect(Number.isFinite(r.confidence)).to.equal(true);
      expect(r.confidence).to.be.within(0, 1);
      expect(r.reasons.length).to.be.above(0);
    }
    expect(decide({ tp: 0, fp: 0, fn: 0, tn: 0 }).decision).to.equal('NEEDS_REVIEW');
  });

  // The gate confidence agrees with the Wilson bound: LB ≥ T exactly when the one-sided confidence ≥ 0.975.
  it('ties gate confidence to the Wilson bound', () => {
    for (const [x, n, t] of [
      [950, 955, 0.95],
      [19, 20, 0.95],
      [90, 100, 0.8],
      [85, 100, 0.8],
      [82, 100, 0.7],
    ]) {
      const lower = wilsonInterval(x, n).lower;
      const confidence = gateConfidence(rate(x, n), t);
      expect(lower >= t, `${x}/${n} vs ${t}`).to.equal(confidence >= 0.975);
    }
    expect(gateConfidence(rate(0, 0), 0.5)).to.equal(0.5);
    expect(gateConfidence(rate(3, 3), 1)).to.equal(1);
  });
});

describe('shadow recommendation: thresholds', () => {
  // Defaults are the documented ones.
  it('fills documented defaults', () => {
    expect(resolveThresholds()).to.deep.equal(DEFAULT_THRESHOLDS);
  });

  // Canary defaults follow a looser full bar so that they are never stricter than it.
  it('derives canary defaults from looser full thresholds', () => {
    const t = resolveThresholds({ minPrecision: 0.7, minRecall: 0.3, maxFalsePositiveRate: 0.1 });
    expect(t).to.include({ canaryMinPrecision: 0.7, canaryMinRecall: 0.3, canaryMaxFalsePositiveRate: 0.1 });
  });

  // Out-of-range or inconsistent thresholds throw with the proto field name.
  it('rejects invalid thresholds with the field', () => {
    const bad = (partial: Partial<RecommendationThresholds>, field: string, description: string): void => {
      try {
        resolveThresholds(partial);
        expect.fail('should throw');
      } catch (error) {
        expect(error).to.be.instanceOf(ServiceError);
        expect((error as ServiceError).reason).to.equal('INVALID_ARGUMENT');
        expect((error as ServiceError).fieldViolations).to.deep.equal([{ field, description }]);
      }
    };
    bad({ minPrecision: 1.5 }, 'thresholds.min_precision', 'must be between 0 and 1');
    bad({ maxFalsePositiveRate: Number.NaN }, 'thresholds.max_false_positive_rate', 'must be a finite number');
    bad({ significanceLevel: 0 }, 'thresholds.significance_level', 'must be in (0, 0.5]');
    bad({ minSamples: 0 }, 'thresholds.min_samples', 'must be an integer 1..1000000000');
    bad({ confidenceLevel: 1 }, 'thresholds.confidence_level', 'must be in [0.5, 0.9999]');
    bad({ canaryMinPrecision: 0.99 }, 'thresholds.canary_min_precision', 'must not exceed min_precision');
    bad({ canaryMaxFalsePositiveRate: 0.001 }, 'thresholds.canary_max_false_positive_rate', 'must not be below max_false_positive_rate');
  });
});
