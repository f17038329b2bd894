/**
 * Every statistic against values computed independently: published worked
 * examples (Newcombe 1998, Wikipedia, Agresti, Fisher's tea tasting) and
 * SciPy 1.17 (`scipy.stats.chi2.sf`, `chi2_contingency`, `fisher_exact`,
 * `binomtest`, `norm.ppf`, `scipy.special.gammainc`), printed to 17 digits.
 */
import { expect } from 'chai';
import {
  aucFromMatrix,
  aucRoc,
  binomialCdf,
  chiSquareCdf,
  chiSquareIndependence,
  chiSquareSurvival,
  confusionMatrix,
  detectionMetrics,
  fisherExact,
  lnGamma,
  mcnemarTest,
  normalCdf,
  normalQuantile,
  pairedDisagreements,
  rate,
  regularizedGammaP,
  regularizedGammaQ,
  wilsonInterval,
  zForConfidence,
  Z_95,
  type ConfusionMatrix,
} from './statistics';

/** Relative-or-absolute closeness for values spanning many magnitudes (p-values down to 1e-142). */
function expectClose(actual: number, expected: number, relative = 1e-9, absolute = 1e-15): void {
  const tolerance = Math.max(absolute, Math.abs(expected) * relative);
  expect(Math.abs(actual - expected), `${actual} vs ${expected}`).to.be.at.most(tolerance);
}

/** Walks a result and fails on any NaN or ±Infinity. */
function expectAllFinite(value: unknown, path = 'result'): void {
  if (typeof value === 'number') {
    expect(Number.isFinite(value), `${path} = ${value}`).to.equal(true);
  } else if (value && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) expectAllFinite(v, `${path}.${k}`);
  }
}

describe('shadow statistics: special functions', () => {
  // lnΓ matches known values: Γ(1/2) = √π, Γ(10) = 9!, and SciPy/math.lgamma at 1000.5 and 0.001.
  it('lnGamma matches exact and reference values', () => {
    expectClose(lnGamma(0.5), Math.log(Math.sqrt(Math.PI)), 1e-14);
    expectClose(lnGamma(10), Math.log(362880), 1e-14);
    expectClose(lnGamma(1000.5), 5908.674175848678, 1e-14);
    expectClose(lnGamma(1e-3), 6.907178885383854, 1e-12);
    expectClose(lnGamma(1), 0, 0, 1e-14);
  });

  // The regularized incomplete gamma P and Q (series and continued-fraction branches) match scipy.special.gammainc/gammaincc.
  it('regularized incomplete gamma matches SciPy on both branches', () => {
    const cases: [number, number, number, number][] = [
      [0.5, 0.2, 0.47291074313446196, 0.5270892568655381],
      [3, 2.5, 0.45618688411667035, 0.5438131158833297],
      [10, 3, 0.0011024881301154815, 0.9988975118698845],
      [10, 30, 0.9999928782491372, 7.121750862815593e-6],
      [100, 90, 0.15822098918643007, 0.84177901081357],
      [1000, 1050, 0.9413288886226819, 0.05867111137731806],
    ];
    for (const [a, x, p, q] of cases) {
      expectClose(regularizedGammaP(a, x), p, 1e-10);
      expectClose(regularizedGammaQ(a, x), q, 1e-10);
    }
  });

  // Chi-square upper tails match the printed critical values (0.05, 0.01) and SciPy to 1e-9 relative, deep tails included.
  it('chi-square survival matches critical-value tables and SciPy', () => {
    expectClose(chiSquareSurvival(3.841458820694124, 1), 0.05, 1e-12);
    expectClose(chiSquareSurvival(6.634896601021214, 1), 0.01, 1e-12);
    expectClose(chiSquareSurvival(5.991464547107979, 2), 0.05, 1e-12);
    expectClose(chiSquareSurvival(7.814727903251178, 3), 0.05, 1e-12);
    expectClose(chiSquareSurvival(18.307038053275146, 10), 0.05, 1e-12);
    expectClose(chiSquareSurvival(0.5, 1), 0.47950012218695337, 1e-12);
    expectClose(chiSquareSurvival(1e-3, 1), 0.9747728793699604, 1e-12);
    expectClose(chiSquareSurvival(100, 1), 1.5239706048320995e-23, 1e-9);
    expectClose(chiSquareSurvival(300, 1), 3.2943623833139784e-67, 1e-9);
    expectClose(chiSquareSurvival(50, 10), 2.669083424904495e-7, 1e-9);
    expectClose(chiSquareSurvival(0.1, 4), 0.9987908957257497, 1e-12);
    expectClose(chiSquareCdf(2.5, 10), 0.009124279218395273, 1e-10);
    expectClose(chiSquareSurvival(1.5, 0.5), 0.10006348671550179, 1e-10);
  });

  // For df = 2 the chi-square tail is exactly exp(−x/2): an identity independent of any table.
  it('chi-square survival with df 2 equals exp(-x/2)', () => {
    for (const x of [0.01, 0.7, 3, 12.5, 60]) expectClose(chiSquareSurvival(x, 2), Math.exp(-x / 2), 1e-12);
  });

  // Zero and negative statistics give p = 1 (CDF 0), never NaN.
  it('chi-square tails at x ≤ 0 are 1', () => {
    expect(chiSquareSurvival(0, 1)).to.equal(1);
    expect(chiSquareSurvival(-3, 1)).to.equal(1);
    expect(chiSquareCdf(0, 1)).to.equal(0);
  });

  // Φ⁻¹ matches scipy.stats.norm.ppf from the centre to 1e-10, and Φ inverts it.
  it('normal quantile matches SciPy and round-trips through the CDF', () => {
    const cases: [number, number][] = [
      [0.975, 1.959963984540054],
      [0.995, 2.5758293035489004],
      [0.9, 1.2815515655446004],
      [0.999999, 4.753424308817087],
      [1e-10, -6.361340902404056],
      [0.0001, -3.7190164854556804],
    ];
    for (const [p, z] of cases) {
      expectClose(normalQuantile(p), z, 1e-12);
      expectClose(normalCdf(z), p, 1e-11);
    }
    expect(normalQuantile(0.5)).to.equal(0);
    expect(zForConfidence(0.95)).to.equal(Z_95);
    expectClose(zForConfidence(0.99), 2.5758293035489004, 1e-12);
  });

  // Binomial tails equal exact fractions for n = 12 (79/4096) and are 0/1 at the edges.
  it('binomial CDF matches exact fractions', () => {
    expectClose(binomialCdf(2, 12, 0.5), 79 / 4096, 1e-13);
    expectClose(binomialCdf(0, 5, 0.5), 1 / 32, 1e-13);
    expect(binomialCdf(-1, 5, 0.5)).to.equal(0);
    expect(binomialCdf(5, 5, 0.5)).to.equal(1);
    // large n in log space (C(10000, 4950) overflows a double): SciPy binom.cdf values
    expectClose(binomialCdf(4950, 10000, 0.5), 0.16108709989765543, 1e-9);
    expectClose(binomialCdf(30, 1000, 0.05), 0.0012770679174797827, 1e-9);
  });
});

describe('shadow statistics: Wilson intervals', () => {
  // Newcombe (1998) Table I, method 3 (Wilson score, no continuity correction): 81/263, 15/148, 0/20, 1/29.
  it('reproduces Newcombe 1998 worked values to 4 decimals', () => {
    const table: [number, number, number, number][] = [
      [81, 263, 0.2553, 0.3662],
      [15, 148, 0.0624, 0.1605],
      [0, 20, 0, 0.1611],
      [1, 29, 0.0061, 0.1718],
    ];
    for (const [x, n, lo, hi] of table) {
      const { lower, upper } = wilsonInterval(x, n);
      expect(lower).to.be.closeTo(lo, 5e-5);
      expect(upper).to.be.closeTo(hi, 5e-5);
    }
  });

  // Full-precision values from the closed form evaluated independently in Python.
  it('matches an independent evaluation of the closed form to 1e-12', () => {
    const cases: [number, number, number, number][] = [
      [81, 263, 0.2552885198782742, 0.36620957698280004],
      [1, 1, 0.20654931437723745, 1],
      [0, 1, 0, 0.7934506856227626],
      [5, 10, 0.236593090512564, 0.7634069094874361],
      [999, 1000, 0.9943574414020421, 0.9998234536293739],
    ];
    for (const [x, n, lo, hi] of cases) {
      const { lower, upper } = wilsonInterval(x, n);
      expectClose(lower, lo, 1e-12, 1e-15);
      expectClose(upper, hi, 1e-12, 1e-15);
    }
  });

  // n = 0 is total ignorance [0, 1]; the rate is flagged undefined with value 0.
  it('gives [0, 1] and defined=false for an empty denominator', () => {
    expect(wilsonInterval(0, 0)).to.deep.equal({ lower: 0, upper: 1 });
    expect(rate(0, 0)).to.deep.equal({ value: 0, numerator: 0, denominator: 0, lower: 0, upper: 1, defined: false });
  });

  // Bad counts are programming errors and throw instead of returning garbage.
  it('rejects impossible counts', () => {
    expect(() => wilsonInterval(3, 2)).to.throw(RangeError);
    expect(() => wilsonInterval(-1, 2)).to.throw(RangeError);
    expect(() => wilsonInterval(0.5, 2)).to.throw(RangeError);
  });
});

describe('shadow statistics: confusion matrix and metrics', () => {
  // Wikipedia "Precision and recall" dog-photo example: 8 identified, 5 dogs (TP), 3 cats (FP), 7 dogs missed, 7 cats excluded.
  it('reproduces the Wikipedia precision/recall worked example', () => {
    const metrics = detectionMetrics({ tp: 5, fp: 3, fn: 7, tn: 7 });
    expect(metrics.precision.value).to.equal(5 / 8);
    expect(metrics.recall.value).to.equal(5 / 12);
    expect(metrics.f1.value).to.equal(0.5); // 2·5 / (10 + 3 + 7)
    expectClose(metrics.mcc.value, 0.12076147288491199, 1e-14); // 14 / √13440
  });

  // Hand-computed: TP 6, FP 1, FN 2, TN 3 (12 items) gives precision 6/7, recall 3/4, F1 0.8, MCC 16/√1120.
  it('reproduces a hand-computed 12-item example', () => {
    const m: ConfusionMatrix = { tp: 6, fp: 1, fn: 2, tn: 3 };
    const metrics = detectionMetrics(m);
    expect(metrics.precision.value).to.equal(6 / 7);
    expect(metrics.recall.value).to.equal(0.75);
    expect(metrics.specificity.value).to.equal(0.75);
    expect(metrics.falsePositiveRate.value).to.equal(0.25);
    expect(metrics.accuracy.value).to.equal(9 / 12);
    expect(metrics.negativePredictiveValue.value).to.equal(3 / 5);
    expectClose(metrics.f1.value, 0.8, 1e-15);
    // MCC = (6·3 − 1·2)/√(7·8·4·5) = 16/√1120 = 0.478091...
    expectClose(metrics.mcc.value, 16 / Math.sqrt(1120), 1e-14);
    expect(metrics.mcc.value).to.be.closeTo(0.478, 5e-4);
    expect(metrics.balancedAccuracy.value).to.equal(0.75);
  });

  // Counting from arrays agrees with the definition, for booleans and 0/1 numbers alike.
  it('counts a confusion matrix from predictions and labels', () => {
    const predictions = [1, 1, 0, 0, 1, 0, true, false];
    const labels = [1, 0, 1, 0, 1, 0, false, true];
    expect(confusionMatrix(predictions, labels)).to.deep.equal({ tp: 2, fp: 2, fn: 2, tn: 2 });
    expect(confusionMatrix([], [])).to.deep.equal({ tp: 0, fp: 0, fn: 0, tn: 0 });
  });

  // A perfect classifier gives MCC 1, F1 1, and an inverted one MCC −1.
  it('gives MCC ±1 at the extremes', () => {
    expect(detectionMetrics({ tp: 5, fp: 0, fn: 0, tn: 7 }).mcc.value).to.equal(1);
    expect(detectionMetrics({ tp: 0, fp: 7, fn: 5, tn: 0 }).mcc.value).to.equal(-1);
    expect(detectionMetrics({ tp: 5, fp: 0, fn: 0, tn: 7 }).f1.value).to.equal(1);
  });

  // Degenerate tables (empty, no positives, rule never fires, n = 1) give documented values and flags, never NaN/Infinity.
  it('handles degenerate tables with defined values and flags', () => {
    const empty = detectionMetrics({ tp: 0, fp: 0, fn: 0, tn: 0 });
    expectAllFinite(empty);
    expect(empty.precision.defined).to.equal(false);
    expect(empty.accuracy).to.include({ value: 0, lower: 0, upper: 1, defined: false });
    expect(empty.mcc).to.deep.equal({ value: 0, defined: false });
    expect(empty.f1).to.deep.equal({ value: 0, defined: false });
    expect(empty.balancedAccuracy).to.deep.equal({ value: 0.5, defined: false });

    const neverFires = detectionMetrics({ tp: 0, fp: 0, fn: 10, tn: 90 });
    expectAllFinite(neverFires);
    expect(neverFires.precision.defined).to.equal(false);
    expect(neverFires.recall).to.include({ value: 0, defined: true });
    expect(neverFires.falsePositiveRate).to.include({ value: 0, lower: 0, defined: true });
    expect(neverFires.mcc).to.deep.equal({ value: 0, defined: false });
    expect(neverFires.f1).to.deep.equal({ value: 0, defined: true });
    expect(neverFires.balancedAccuracy).to.deep.equal({ value: 0.5, defined: true });

    const noPositives = detectionMetrics({ tp: 0, fp: 3, fn: 0, tn: 97 });
    expectAllFinite(noPositives);
    expect(noPositives.recall.defined).to.equal(false);
    expect(noPositives.precision).to.include({ value: 0, defined: true });
    expect(noPositives.balancedAccuracy.defined).to.equal(false);

    const single = detectionMetrics({ tp: 1, fp: 0, fn: 0, tn: 0 });
    expectAllFinite(single);
    expect(single.precision).to.include({ value: 1, upper: 1, defined: true });
    expectClose(single.precision.lower, 0.20654931437723745, 1e-12);
    expect(single.specificity.defined).to.equal(false);
  });

  // A confidence level other than 95% changes the interval width (99% is wider).
  it('honours the confidence level', () => {
    const m: ConfusionMatrix = { tp: 40, fp: 10, fn: 5, tn: 45 };
    const p95 = detectionMetrics(m, 0.95).precision;
    const p99 = detectionMetrics(m, 0.99).precision;
    expect(p99.lower).to.be.below(p95.lower);
    expect(p99.upper).to.be.above(p95.upper);
  });
});

describe('shadow statistics: AUC-ROC', () => {
  /** O(P·N) pairwise count: the definition itself, independent of the sort-based implementation. */
  function bruteForceAuc(scores: number[], labels: number[]): number {
    let u = 0;
    let pairs = 0;
    for (let i = 0; i < scores.length; i++) {
      if (!labels[i]) continue;
      for (let j = 0; j < scores.length; j++) {
        if (labels[j]) continue;
        pairs++;
        u += scores[i] > scores[j] ? 1 : scores[i] === scores[j] ? 0.5 : 0;
      }
    }
    return u / pairs;
  }

  // A hand-computed case with ties: positives {0.9, 0.5, 0.5}, negatives {0.5, 0.1}: U = 2 + (0.5+1)·2 = 5, AUC = 5/6.
  it('counts ties as halves (hand-computed)', () => {
    const r = aucRoc([0.9, 0.5, 0.5, 0.5, 0.1], [1, 1, 1, 0, 0]);
    expect(r.value).to.equal(5 / 6);
    expect(r).to.include({ positives: 3, negatives: 2, defined: true });
  });

  // scikit-learn's roc_auc_score documentation example: y = [0, 0, 1, 1], scores = [0.1, 0.4, 0.35, 0.8] → 0.75.
  it("reproduces scikit-learn's roc_auc_score documentation example", () => {
    expect(aucRoc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]).value).to.equal(0.75);
  });

  // All scores equal → every pair tied → 0.5; perfect separation → 1; inverted → 0.
  it('gives 0.5 for all ties, 1 for perfect and 0 for inverted ranking', () => {
    expect(aucRoc([1, 1, 1, 1], [1, 0, 1, 0]).value).to.equal(0.5);
    expect(aucRoc([3, 2, 1, 0], [1, 1, 0, 0]).value).to.equal(1);
    expect(aucRoc([0, 1, 2, 3], [1, 1, 0, 0]).value).to.equal(0);
  });

  // Matches the pairwise definition on random tied scores (a seeded LCG, so the case is fixed).
  it('matches brute-force pairwise counting on random tied scores', () => {
    let state = 12345;
    const next = (): number => (state = (state * 1103515245 + 12345) % 2147483648) / 2147483648;
    for (let round = 0; round < 5; round++) {
      const scores: number[] = [];
      const labels: number[] = [];
      for (let i = 0; i < 300; i++) {
        scores.push(Math.floor(next() * 12) / 4); // 12 distinct values: many ties
        labels.push(next() < 0.3 ? 1 : 0);
      }
      expectClose(aucRoc(scores, labels).value, bruteForceAuc(scores, labels), 1e-14);
    }
  });

  // For a hard yes/no rule (0/1 score) AUC equals balanced accuracy exactly.
  it('equals balanced accuracy for 0/1 scores', () => {
    const predictions = [1, 1, 0, 0, 1, 0, 0, 1, 1, 0, 0, 0];
    const labels = [1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 0, 0];
    const auc = aucRoc(predictions, labels).value;
    const ba = detectionMetrics(confusionMatrix(predictions, labels)).balancedAccuracy.value;
    expectClose(auc, ba, 1e-15);
  });

  // The O(1) matrix formula for hard rules gives exactly the sort-based Mann–Whitney value on the same 0/1 scores.
  it('computes the hard-rule AUC from the matrix', () => {
    const predictions = [1, 1, 0, 0, 1, 0, 0, 1, 1, 0, 0, 0, 1];
    const labels = [1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0];
    expect(aucFromMatrix(confusionMatrix(predictions, labels))).to.deep.equal(aucRoc(predictions, labels));
    expect(aucFromMatrix({ tp: 0, fp: 0, fn: 0, tn: 5 })).to.deep.equal({ value: 0.5, defined: false, positives: 0, negatives: 5 });
  });

  // One class absent or no samples: 0.5 flagged undefined, not NaN.
  it('is 0.5 and undefined without both classes', () => {
    expect(aucRoc([0.3, 0.9], [1, 1])).to.deep.equal({ value: 0.5, defined: false, positives: 2, negatives: 0 });
    expect(aucRoc([], [])).to.deep.equal({ value: 0.5, defined: false, positives: 0, negatives: 0 });
    expect(aucRoc([0.2], [0])).to.include({ value: 0.5, defined: false });
  });
});

describe('shadow statistics: chi-square test of independence', () => {
  // SciPy chi2_contingency on six tables, with (default) and without Yates' correction, statistic and p-value.
  it('matches SciPy chi2_contingency with and without Yates', () => {
    const cases: [ConfusionMatrix, number, number, number, number][] = [
      [{ tp: 3, fp: 1, fn: 1, tn: 3 }, 0.5, 0.47950012218695337, 2.0, 0.15729920705028105],
      [{ tp: 12, fp: 5, fn: 7, tn: 20 }, 6.758472652218781, 0.00933035874515043, 8.481137484233457, 0.0035884765704548983],
      [{ tp: 45, fp: 5, fn: 15, tn: 935 }, 642.8704740574842, 7.936986520018046e-142, 658.4546472564389, 3.238993703520605e-145],
      [{ tp: 1, fp: 9, fn: 11, tn: 3 }, 8.4, 0.00375221010087385, 10.971428571428572, 0.000925274037119762],
      [{ tp: 90, fp: 10, fn: 30, tn: 870 }, 631.9707491582491, 1.86295567471066e-139, 640.1515151515151, 3.097330657521483e-141],
      [{ tp: 2, fp: 0, fn: 0, tn: 2 }, 1.0, 0.31731050786291115, 4.0, 0.04550026389635857],
    ];
    for (const [m, yStat, yP, stat, p] of cases) {
      const corrected = chiSquareIndependence(m);
      expect(corrected.continuityCorrected).to.equal(true);
      expectClose(corrected.statistic, yStat, 1e-12);
      expectClose(corrected.pValue, yP, 1e-8);
      const plain = chiSquareIndependence(m, { yates: false });
      expect(plain.continuityCorrected).to.equal(false);
      expectClose(plain.statistic, stat, 1e-12);
      expectClose(plain.pValue, p, 1e-8);
    }
  });

  // The p-values are right to 1e-6 absolute against the df = 1 identity p = erfc(√(x/2)) evaluated by SciPy.
  it('gives p-values within 1e-6 of the reference', () => {
    const r = chiSquareIndependence({ tp: 12, fp: 5, fn: 7, tn: 20 }, { yates: false });
    expect(Math.abs(r.pValue - 0.0035884765704548983)).to.be.below(1e-6);
  });

  // The sign of TP·TN − FP·FN says whether firing goes with malicious (positive) or benign (negative).
  it('reports the direction of association', () => {
    expect(chiSquareIndependence({ tp: 45, fp: 5, fn: 15, tn: 935 }).association).to.equal('positive');
    expect(chiSquareIndependence({ tp: 1, fp: 9, fn: 11, tn: 3 }).association).to.equal('negative');
    expect(chiSquareIndependence({ tp: 5, fp: 5, fn: 5, tn: 5 }).association).to.equal('none');
  });

  // Yates never overshoots: |ad − bc| < N/2 gives statistic 0 and p = 1, as in R and SciPy.
  it('clamps the Yates bracket at zero', () => {
    const r = chiSquareIndependence({ tp: 5, fp: 5, fn: 5, tn: 6 });
    expect(r.statistic).to.equal(0);
    expect(r.pValue).to.equal(1);
  });

  // Zero margins (rule never fires, no positives, empty) are flagged undefined with statistic 0 and p 1.
  it('handles degenerate tables', () => {
    for (const m of [
      { tp: 0, fp: 0, fn: 10, tn: 90 },
      { tp: 0, fp: 4, fn: 0, tn: 96 },
      { tp: 0, fp: 0, fn: 0, tn: 0 },
      { tp: 1, fp: 0, fn: 0, tn: 0 },
    ]) {
      const r = chiSquareIndependence(m);
      expect(r).to.include({ statistic: 0, pValue: 1, defined: false });
      expectAllFinite(r);
    }
  });

  // The expected-count check flags small tables where Fisher's test should be read instead.
  it('reports the minimum expected count', () => {
    expect(chiSquareIndependence({ tp: 3, fp: 1, fn: 1, tn: 3 }).minExpected).to.equal(2);
    expect(chiSquareIndependence({ tp: 45, fp: 5, fn: 15, tn: 935 }).minExpected).to.equal(3);
  });
});

describe("shadow statistics: Fisher's exact test", () => {
  // SciPy's fisher_exact documentation example: fisher_exact([[6, 2], [1, 4]]) → pvalue 0.10256410256410257
  // (two-sided); by hand 176/1716 (tables with x = 2, 6, 7 of C(8,x)·C(5,7−x)/C(13,7)).
  it("reproduces SciPy's fisher_exact documentation example", () => {
    expectClose(fisherExact({ tp: 6, fp: 2, fn: 1, tn: 4 }).pValue, 0.10256410256410257, 1e-12);
    expectClose(fisherExact({ tp: 6, fp: 2, fn: 1, tn: 4 }).pValue, 176 / 1716, 1e-12);
  });

  // Fisher's lady tasting tea, [[3,1],[1,3]]: two-sided p = 34/70 = 0.4857, and SciPy's fisher_exact on the other tables.
  it('matches the tea-tasting example and SciPy', () => {
    expectClose(fisherExact({ tp: 3, fp: 1, fn: 1, tn: 3 }).pValue, 34 / 70, 1e-12);
    expectClose(fisherExact({ tp: 12, fp: 5, fn: 7, tn: 20 }).pValue, 0.005313763698481829, 1e-9);
    expectClose(fisherExact({ tp: 1, fp: 9, fn: 11, tn: 3 }).pValue, 0.0027594561852200836, 1e-9);
    expectClose(fisherExact({ tp: 2, fp: 0, fn: 0, tn: 2 }).pValue, 1 / 3, 1e-12);
    expectClose(fisherExact({ tp: 45, fp: 5, fn: 15, tn: 935 }).pValue, 3.4083043011938552e-59, 1e-7);
  });

  // A zero margin is undefined with p = 1.
  it('is undefined on a zero margin', () => {
    expect(fisherExact({ tp: 0, fp: 0, fn: 3, tn: 4 })).to.deep.equal({ name: 'fisher_exact', pValue: 1, defined: false });
  });
});

describe("shadow statistics: McNemar's test", () => {
  // Wikipedia's McNemar example (b = 121, c = 59): corrected χ² = 61²/180 = 20.672, p = 5.45e-6 (SciPy chi2.sf).
  it('reproduces the Wikipedia example with continuity correction', () => {
    const r = mcnemarTest(121, 59);
    expect(r.method).to.equal('chi_square_continuity_corrected');
    expect(r.name).to.equal('mcnemar_chi_square');
    expectClose(r.statistic, 20.67222222222222, 1e-12);
    expectClose(r.pValue, 5.450094825427117e-6, 1e-8);
  });

  // Agresti's presidential-approval example (b = 150, c = 86): corrected χ² = 63²/236 = 16.818, p = 4.11e-5.
  it("reproduces Agresti's approval-rating example", () => {
    const r = mcnemarTest(150, 86);
    expectClose(r.statistic, 16.81779661016949, 1e-12);
    expectClose(r.pValue, 4.114562281345944e-5, 1e-8);
  });

  // Fewer than 25 discordant pairs use the exact binomial: b=2, c=10 → 2·79/4096; b=0, c=5 → 2/32 (SciPy binomtest).
  it('uses the exact binomial test below 25 discordant pairs', () => {
    const r = mcnemarTest(2, 10);
    expect(r.method).to.equal('exact_binomial');
    expect(r.name).to.equal('mcnemar_exact');
    expectClose(r.pValue, 0.03857421875, 1e-13);
    expectClose(mcnemarTest(0, 5).pValue, 0.0625, 1e-13);
    expectClose(mcnemarTest(10, 14).pValue, 0.5412561893463135, 1e-12);
    expect(mcnemarTest(5, 5).pValue).to.equal(1);
    expect(mcnemarTest(12, 12).pValue).to.equal(1);
  });

  // The cut-over is exactly at b + c = 25 and is configurable.
  it('switches method at b + c = 25', () => {
    expect(mcnemarTest(12, 12).method).to.equal('exact_binomial'); // 24
    expect(mcnemarTest(13, 12).method).to.equal('chi_square_continuity_corrected'); // 25
    expectClose(mcnemarTest(30, 10).pValue, 0.002663119259138558, 1e-9);
    expectClose(mcnemarTest(30, 10, { exactBelow: 1000 }).pValue, 0.0022214337732293643, 1e-10);
  });

  // b = c: the bracket is NOT clamped, as in R's mcnemar.test (STATISTIC <- (abs(x[1,2] - x[2,1]) - YATES)^2 /
  // (x[1,2] + x[2,1])) and statsmodels' mcnemar(exact=False, correction=True): b = c = 26 → 1/52 = 0.01923,
  // p = 0.8897 (issue 20's reference); b = c = 100 → 1/200 = 0.005, p = 0.9436.
  it('does not clamp the continuity bracket when b = c (R, statsmodels)', () => {
    const r = mcnemarTest(26, 26);
    expect(r.method).to.equal('chi_square_continuity_corrected');
    expectClose(r.statistic, 1 / 52, 1e-15);
    expectClose(r.pValue, 0.8897, 1e-4);
    expectClose(mcnemarTest(100, 100).statistic, 0.005, 1e-15);
    expectClose(mcnemarTest(100, 100).pValue, 0.9436, 1e-4);
    // The exact method still answers p = 1 for b = c; its statistic is the corrected chi-square, for reference.
    expect(mcnemarTest(5, 5)).to.include({ method: 'exact_binomial', pValue: 1, statistic: 0.1 });
  });

  // R's own help-page example (Agresti 1990, p. 350): mcnemar.test(matrix(c(794, 86, 150, 570), nrow = 2))
  // prints "McNemar's chi-squared = 16.818, df = 1, p-value = 4.115e-05" (b = x[1,2] = 150, c = x[2,1] = 86).
  it("reproduces R's mcnemar.test help-page example to its printed digits", () => {
    const r = mcnemarTest(150, 86);
    expect(r.statistic.toFixed(3)).to.equal('16.818');
    expect(r.pValue.toExponential(3)).to.equal('4.115e-5');
  });

  // No discordant pairs: defined=false, p = 1, statistic 0.
  it('is undefined without discordant pairs', () => {
    expect(mcnemarTest(0, 0)).to.include({ statistic: 0, pValue: 1, defined: false });
  });

  // Paired disagreements count only samples where the two rules differ, split by class.
  it('counts paired disagreements by who is right', () => {
    const candidate = [1, 1, 0, 0, 1, 0];
    const baseline = [1, 0, 1, 0, 0, 1];
    const labels = [1, 1, 1, 0, 0, 0];
    expect(pairedDisagreements(candidate, baseline, labels)).to.deep.equal({
      candidateOnlyCorrect: 2, // sample 1 (caught), sample 5 (not blocked)
      baselineOnlyCorrect: 2, // sample 2 (caught), sample 4 (not blocked)
      benign: { candidateOnlyCorrect: 1, baselineOnlyCorrect: 1 },
      malicious: { candidateOnlyCorrect: 1, baselineOnlyCorrect: 1 },
    });
  });
});
