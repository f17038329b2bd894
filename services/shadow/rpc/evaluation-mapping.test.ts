/**
 * What the wire says about an evaluation (resultToProto, thresholds both ways), on hand-built
 * sample sets whose statistics are checked against cited reference values. Pure: no gRPC, no
 * database (the scenario test services/shadow/scenarios/evaluation-results.test.ts shows the same
 * fields over real gRPC).
 */
import { expect } from 'chai';
import { Association, AucRocMethod, BaselineVerdict, Thresholds } from '../../../gen/shieldx/shadow/v1/shadow';
import { ServiceError } from '../../../platform/service-error';
import { DEFAULT_THRESHOLDS, resolveThresholds } from '../domain/recommendation';
import type { RuleConfig } from '../domain/rules';
import { wilsonInterval } from '../domain/statistics';
import type { TrafficSample } from '../domain/traffic-sample';
import { evaluateRule } from '../evaluation/evaluate';
import { closeEvaluationWorkerPools } from '../evaluation/evaluation-workers';
import { resultToProto, thresholdsFromProto, thresholdsToProto } from './evaluation-mapping';

function sample(i: number, path: string, attackType: string): TrafficSample {
  return {
    timestampMs: 1_700_000_000_000 + i * 1000,
    clientKey: `k${i}`,
    clientIp: `10.0.${i >> 8}.${i & 255}`,
    method: 'GET',
    path,
    status: 200,
    userAgent: 'Mozilla/5.0',
    headers: {},
    requestBytes: 300,
    malicious: attackType !== '',
    attackType,
  };
}

/** A 2×2 table as samples: the rule `^/hit` fires on tp + fp of them; attacks split between two types. */
function table(tp: number, fp: number, fn: number, tn: number): TrafficSample[] {
  const out: TrafficSample[] = [];
  let i = 0;
  for (let k = 0; k < tp; k++) out.push(sample(i++, `/hit/${k}`, 'scanner'));
  for (let k = 0; k < fp; k++) out.push(sample(i++, `/hit-docs/${k}`, ''));
  for (let k = 0; k < fn; k++) out.push(sample(i++, `/miss/${k}`, k % 2 === 0 ? 'scanner' : 'sqli'));
  for (let k = 0; k < tn; k++) out.push(sample(i++, `/page/${k}`, ''));
  return out;
}

const hitRule: RuleConfig = { type: 'path_pattern', patterns: ['^/hit'] };

describe('shadow evaluation mapping: what the wire says', function () {
  this.timeout(30_000);
  after(closeEvaluationWorkerPools);

  // Issue 20's table (TP 2, FP 2, FN 8, TN 88): the smallest expected count is 4·10/100 = 0.4 < 5, so Fisher
  // decides. Yates' chi-square = 3.5012, p = 0.0613 (R chisq.test / SciPy chi2_contingency default); Fisher
  // two-sided p = 0.0488 (SciPy fisher_exact, as cross-checked in the issue); uncorrected chi-square by hand
  // N(ad − bc)²/(r1·r2·c1·c2) = 100·160²/(4·96·10·90) = 200/27, p = 0.0065.
  it('says which association test decided, with the uncorrected chi-square and Fisher beside it', async () => {
    const proto = resultToProto(await evaluateRule({ samples: table(2, 2, 8, 88), rule: hitRule, workers: 0 }));
    expect(proto.chiSquare).to.include({ name: 'chi_square_independence', continuityCorrected: true, significant: false });
    expect(proto.chiSquare!.statistic).to.be.closeTo(3.5012, 1e-4);
    expect(proto.chiSquare!.pValue).to.be.closeTo(0.0613, 1e-4);
    expect(proto.chiSquareUncorrected).to.include({ name: 'chi_square_independence', continuityCorrected: false, significant: true });
    expect(proto.chiSquareUncorrected!.statistic).to.be.closeTo(200 / 27, 1e-12);
    expect(proto.chiSquareUncorrected!.pValue).to.be.closeTo(0.0065, 1e-4);
    expect(proto.fisherExact).to.include({ name: 'fisher_exact', significant: true, defined: true, statistic: 0 });
    expect(proto.fisherExact!.pValue).to.be.closeTo(0.0488, 1e-4);
    expect(proto.association).to.include({ test: 'fisher_exact', significant: true, association: Association.ASSOCIATION_POSITIVE });
    expect(proto.association!.pValue).to.equal(proto.fisherExact!.pValue);
    expect(proto.association!.minExpected).to.be.closeTo(0.4, 1e-15);
    const significance = proto.recommendation!.checks.find((c) => c.name === 'significance')!;
    expect(significance).to.include({ passed: true });
    expect(significance.message).to.match(/fisher_exact p=0\.0488/);
    // Expected counts all ≥ 5 (smallest 65·80/1000 = 5.2): no Fisher, and Yates' chi-square decides.
    const large = resultToProto(await evaluateRule({ samples: table(60, 5, 20, 915), rule: hitRule, workers: 0 }));
    expect(large.fisherExact).to.equal(undefined);
    expect(large.association).to.include({ test: 'chi_square_independence', pValue: large.chiSquare!.pValue });
  });

  // A real 0.5 is not "undefined": a rule that never fires has balanced accuracy (0 + 1)/2 = 0.5, defined, and
  // MCC undefined (a zero margin); on benign samples only, balanced accuracy and AUC are undefined 0.5.
  it('flags F1, MCC, balanced accuracy and AUC as defined or not', async () => {
    const never = resultToProto(await evaluateRule({ samples: table(0, 0, 10, 90), rule: hitRule, workers: 0 })).metrics!;
    expect(never).to.include({ balancedAccuracy: 0.5, balancedAccuracyDefined: true, aucRoc: 0.5, aucRocDefined: true });
    expect(never).to.include({ f1: 0, f1Defined: true, mcc: 0, mccDefined: false });
    const benignOnly = resultToProto(await evaluateRule({ samples: table(0, 3, 0, 97), rule: hitRule, workers: 0 })).metrics!;
    expect(benignOnly).to.include({ balancedAccuracy: 0.5, balancedAccuracyDefined: false, aucRoc: 0.5, aucRocDefined: false });
    expect(benignOnly).to.include({ f1Defined: true, mccDefined: false });
    const none = resultToProto(await evaluateRule({ samples: table(0, 0, 0, 5), rule: hitRule, workers: 0 })).metrics!;
    expect(none).to.include({ f1: 0, f1Defined: false });
    const good = resultToProto(await evaluateRule({ samples: table(36, 2, 4, 958), rule: hitRule, workers: 0 })).metrics!;
    expect(good).to.include({ f1Defined: true, mccDefined: true, balancedAccuracyDefined: true, aucRocDefined: true });
    expect(good.aucRocMethod).to.equal(AucRocMethod.AUC_ROC_METHOD_BINARY);
  });

  // NPV = TN / (TN + FN) with its Wilson interval; the breakdown by attack type; sample counts by class.
  it('carries the negative predictive value, the per-attack-type breakdown and the class counts', async () => {
    const proto = resultToProto(await evaluateRule({ samples: table(36, 2, 4, 958), rule: hitRule, workers: 0 }));
    const npv = proto.metrics!.negativePredictiveValue!;
    expect(npv).to.include({ value: 958 / 962, numerator: 958n, denominator: 962n, defined: true });
    const { lower, upper } = wilsonInterval(958, 962);
    expect(npv).to.include({ lower, upper });
    expect(proto).to.include({ maliciousSamples: 40n, benignSamples: 960n });
    expect(proto.byAttackType.map((b) => [b.attackType, b.samples, b.fired, b.firingRate!.value])).to.deep.equal([
      ['', 960n, 2n, 2 / 960],
      ['scanner', 38n, 36n, 36 / 38],
      ['sqli', 2n, 0n, 0],
    ]);
  });

  // Against a baseline: the benign-only and malicious-only McNemar tests, the verdict and the deltas.
  it('carries the benign and malicious McNemar tests, the verdict and the deltas', async () => {
    // The candidate also blocks 30 benign /hit-docs pages the baseline (^/hit/) lets through: b = 30, c = 0,
    // b + c ≥ 25, so the corrected chi-square (30 − 1)²/30 = 28.033 decides, significant.
    const samples = table(36, 30, 4, 930);
    const baseline: RuleConfig = { type: 'path_pattern', patterns: ['^/hit/'] };
    const result = await evaluateRule({ samples, rule: hitRule, baseline, workers: 0 });
    const b = resultToProto(result).baseline!;
    expect(b).to.include({ benignBaselineOnlyCorrect: 30n, benignCandidateOnlyCorrect: 0n, maliciousBaselineOnlyCorrect: 0n, maliciousCandidateOnlyCorrect: 0n });
    expect(b.benignMcnemar).to.include({ name: 'mcnemar_chi_square', significant: true, continuityCorrected: true });
    expect(b.benignMcnemar!.statistic).to.be.closeTo(29 ** 2 / 30, 1e-12);
    expect(b.maliciousMcnemar).to.include({ name: 'mcnemar_exact', defined: false, pValue: 1 });
    expect(b.verdict).to.equal(BaselineVerdict.BASELINE_VERDICT_BASELINE_BETTER);
    expect(b.deltas!.falsePositiveRate).to.be.closeTo(30 / 960, 1e-15);
    expect(b.deltas!.recall).to.equal(0);
    expect(b.byAttackType.map((r) => [r.attackType, r.fired])).to.deep.equal([
      ['', 0n],
      ['scanner', 36n],
      ['sqli', 0n],
    ]);
  });

  // Evaluation.thresholds echoes the applied values: every field set, defaults filled in; the new fields map both ways.
  it('maps thresholds both ways and fills the defaults', () => {
    expect(thresholdsToProto(resolveThresholds(thresholdsFromProto(Thresholds.fromPartial({}))))).to.deep.equal({
      minPrecision: 0.95,
      minRecall: 0.8,
      maxFalsePositiveRate: 0.01,
      significanceLevel: 0.05,
      minSamples: 100n,
      canaryMinPrecision: 0.8,
      canaryMinRecall: 0.5,
      canaryMaxFalsePositiveRate: 0.05,
      minSamplesPerClass: 10n,
      confidenceLevel: 0.95,
    });
    const set = Thresholds.fromPartial({
      canaryMinPrecision: 0.7,
      canaryMinRecall: 0.4,
      canaryMaxFalsePositiveRate: 0.1,
      minSamplesPerClass: 25n,
      confidenceLevel: 0.99,
    });
    expect(resolveThresholds(thresholdsFromProto(set))).to.deep.equal({
      ...DEFAULT_THRESHOLDS,
      canaryMinPrecision: 0.7,
      canaryMinRecall: 0.4,
      canaryMaxFalsePositiveRate: 0.1,
      minSamplesPerClass: 25,
      confidenceLevel: 0.99,
    });
    const field = (t: Partial<Thresholds>): string | undefined => {
      try {
        resolveThresholds(thresholdsFromProto(Thresholds.fromPartial(t)));
        return undefined;
      } catch (e) {
        expect(e).to.be.instanceOf(ServiceError);
        expect((e as ServiceError).reason).to.equal('INVALID_ARGUMENT');
        return (e as ServiceError).fieldViolations[0]!.field;
      }
    };
    expect(field({ confidenceLevel: 0.3 })).to.equal('thresholds.confidence_level');
    expect(field({ confidenceLevel: 1 })).to.equal('thresholds.confidence_level');
    expect(field({ canaryMinPrecision: 0.99 })).to.equal('thresholds.canary_min_precision');
    expect(field({ canaryMinRecall: 1.5 })).to.equal('thresholds.canary_min_recall');
    expect(field({ canaryMaxFalsePositiveRate: 0.005 })).to.equal('thresholds.canary_max_false_positive_rate');
    expect(field({ minSamplesPerClass: -3n })).to.equal('thresholds.min_samples_per_class');
    expect(field({ minSamplesPerClass: 2n ** 62n })).to.equal('thresholds.min_samples_per_class');
    expect(field({ minSamples: 2n ** 62n })).to.equal('thresholds.min_samples');
  });

  // The confidence level applies to every interval on the wire: a 99% Wilson interval is wider than the 95% one.
  it('applies the confidence level to the intervals', async () => {
    const at95 = resultToProto(await evaluateRule({ samples: table(36, 2, 4, 958), rule: hitRule, workers: 0 }));
    const at99 = resultToProto(
      await evaluateRule({ samples: table(36, 2, 4, 958), rule: hitRule, workers: 0, thresholds: { confidenceLevel: 0.99 } }),
    );
    expect(at99.metrics!.precision!.lower).to.be.below(at95.metrics!.precision!.lower);
    // z = Φ⁻¹(0.995) = 2.5758293035489004 (scipy.stats.norm.ppf(0.995)).
    expect(at99.metrics!.precision!.lower).to.be.closeTo(wilsonInterval(36, 38, 2.5758293035489004).lower, 1e-12);
  });
});
