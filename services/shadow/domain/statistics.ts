/**
 * Detection statistics and significance tests, by their textbook definitions.
 *
 * Why hand-written: the few npm statistics packages either lack Wilson
 * intervals / McNemar / exact tails or compute the chi-square CDF in single
 * precision; these functions are small, and every one is checked in
 * statistics.test.ts against published worked examples and against SciPy.
 *
 * Conventions (so nothing is ever NaN or Infinity on the wire):
 *  - A rate whose denominator is 0 has `defined: false`, value 0 and the
 *    interval [0, 1] (total ignorance). [0, 1] rather than [0, 0] so that a
 *    decision on a bound is conservative: "FPR upper bound ≤ 1%" must fail,
 *    not pass vacuously, when there are no benign samples.
 *  - Scores with no defined value take their "no-skill" value and
 *    `defined: false`: MCC 0, F1 0, balanced accuracy 0.5, AUC 0.5.
 *  - A test on a degenerate table (a zero margin) has statistic 0, p-value 1
 *    and `defined: false`.
 *
 * Chi-square test of independence: **Yates' continuity correction is applied**
 * by `chiSquareIndependence` by default (the result says so in
 * `continuityCorrected`), matching R's `chisq.test` and SciPy's
 * `chi2_contingency` defaults for 2×2 tables, so an engineer re-checking a
 * figure gets the same number; it errs on the conservative side, which is the
 * right side before blocking users. The uncorrected statistic is available
 * with `{ yates: false }`; evaluate.ts reports both. When an expected count is
 * below 5 the chi-square approximation is poor and Fisher's exact test is
 * reported too (`fisherExact`).
 *
 * McNemar's test: exact two-sided binomial test on the discordant pairs when
 * b + c < 25, otherwise the chi-square statistic with continuity correction
 * (|b − c| − 1)² / (b + c), unclamped as in R's mcnemar.test and statsmodels
 * (b = c = 26 gives 1/52, p = 0.8897); `method` says which.
 */

/** 2×2 confusion matrix of a rule's predictions against ground truth. */
export interface ConfusionMatrix {
  /** Predicted malicious, is malicious. */
  readonly tp: number;
  /** Predicted malicious, is benign (a user who would be blocked). */
  readonly fp: number;
  /** Predicted benign, is malicious (a missed attack). */
  readonly fn: number;
  /** Predicted benign, is benign. */
  readonly tn: number;
}

/** A proportion numerator/denominator with its Wilson score interval. */
export interface Rate {
  readonly value: number;
  readonly numerator: number;
  readonly denominator: number;
  readonly lower: number;
  readonly upper: number;
  /** False when the denominator is 0 (value 0, interval [0, 1]). */
  readonly defined: boolean;
}

/** A score that is not a binomial proportion (so no Wilson interval). */
export interface Score {
  readonly value: number;
  readonly defined: boolean;
}

export interface DetectionMetrics {
  /** TP / (TP + FP): of the requests the rule blocks, the share that are attacks. */
  readonly precision: Rate;
  /** TP / (TP + FN), a.k.a. true-positive rate, sensitivity. */
  readonly recall: Rate;
  /** TN / (TN + FP), true-negative rate. */
  readonly specificity: Rate;
  /** FP / (FP + TN): share of benign requests blocked. */
  readonly falsePositiveRate: Rate;
  /** TN / (TN + FN). */
  readonly negativePredictiveValue: Rate;
  /** (TP + TN) / N. */
  readonly accuracy: Rate;
  /** 2TP / (2TP + FP + FN), the harmonic mean of precision and recall. */
  readonly f1: Score;
  /** Matthews correlation (TP·TN − FP·FN) / √((TP+FP)(TP+FN)(TN+FP)(TN+FN)). */
  readonly mcc: Score;
  /** (recall + specificity) / 2. */
  readonly balancedAccuracy: Score;
}

/** Two-sided z for a 95% interval, Φ⁻¹(0.975), to full double precision. */
export const Z_95 = 1.959963984540054;

const MAX_ITERATIONS = 100_000;
const EPSILON = 1e-15;
const FPMIN = 1e-300;

// ----------------------------------------------------------------- special functions

const LANCZOS_G = 7;
const LANCZOS = [
  0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059,
  12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7,
];

/** ln Γ(x) for x > 0 (Lanczos, g = 7, n = 9; relative error ~1e-15). */
export function lnGamma(x: number): number {
  if (!(x > 0) || !Number.isFinite(x)) throw new RangeError('lnGamma: x must be a finite number > 0');
  if (x < 0.5) return Math.log(Math.PI / Math.sin(Math.PI * x)) - lnGamma(1 - x); // reflection
  const z = x - 1;
  let sum = LANCZOS[0];
  for (let i = 1; i < LANCZOS_G + 2; i++) sum += LANCZOS[i] / (z + i);
  const t = z + LANCZOS_G + 0.5;
  return 0.5 * Math.log(2 * Math.PI) + (z + 0.5) * Math.log(t) - t + Math.log(sum);
}

/** Series for P(a, x), converges fast for x < a + 1 (Numerical Recipes `gser`). */
function gammaSeries(a: number, x: number): number {
  let ap = a;
  let del = 1 / a;
  let sum = del;
  for (let n = 0; n < MAX_ITERATIONS; n++) {
    ap += 1;
    del *= x / ap;
    sum += del;
    if (Math.abs(del) < Math.abs(sum) * EPSILON) {
      return sum * Math.exp(-x + a * Math.log(x) - lnGamma(a));
    }
  }
  throw new Error('gammaSeries did not converge');
}

/** Continued fraction for Q(a, x), converges fast for x ≥ a + 1 (NR `gcf`, modified Lentz). */
function gammaContinuedFraction(a: number, x: number): number {
  let b = x + 1 - a;
  let c = 1 / FPMIN;
  let d = 1 / b;
  let h = d;
  for (let i = 1; i < MAX_ITERATIONS; i++) {
    const an = -i * (i - a);
    b += 2;
    d = an * d + b;
    if (Math.abs(d) < FPMIN) d = FPMIN;
    c = b + an / c;
    if (Math.abs(c) < FPMIN) c = FPMIN;
    d = 1 / d;
    const del = d * c;
    h *= del;
    if (Math.abs(del - 1) < EPSILON) return Math.exp(-x + a * Math.log(x) - lnGamma(a)) * h;
  }
  throw new Error('gammaContinuedFraction did not converge');
}

/** Regularized lower incomplete gamma P(a, x) = γ(a, x) / Γ(a). */
export function regularizedGammaP(a: number, x: number): number {
  if (!(a > 0) || !(x >= 0) || !Number.isFinite(a)) throw new RangeError('regularizedGammaP: need a > 0, x ≥ 0');
  if (x === 0) return 0;
  if (x === Infinity) return 1;
  return x < a + 1 ? gammaSeries(a, x) : 1 - gammaContinuedFraction(a, x);
}

/** Regularized upper incomplete gamma Q(a, x) = 1 − P(a, x), computed directly in the tail (no cancellation). */
export function regularizedGammaQ(a: number, x: number): number {
  if (!(a > 0) || !(x >= 0) || !Number.isFinite(a)) throw new RangeError('regularizedGammaQ: need a > 0, x ≥ 0');
  if (x === 0) return 1;
  if (x === Infinity) return 0;
  return x < a + 1 ? 1 - gammaSeries(a, x) : gammaContinuedFraction(a, x);
}

/** Chi-square CDF with `df` degrees of freedom: P(df/2, x/2). */
export function chiSquareCdf(x: number, df: number): number {
  if (!(df > 0)) throw new RangeError('chiSquareCdf: df must be > 0');
  return x <= 0 ? 0 : regularizedGammaP(df / 2, x / 2);
}

/** Chi-square upper tail (the p-value of a statistic x): Q(df/2, x/2). */
export function chiSquareSurvival(x: number, df: number): number {
  if (!(df > 0)) throw new RangeError('chiSquareSurvival: df must be > 0');
  return x <= 0 ? 1 : regularizedGammaQ(df / 2, x / 2);
}

/** Standard normal CDF Φ(z), via erfc(t) = Q(1/2, t²). */
export function normalCdf(z: number): number {
  if (Number.isNaN(z)) throw new RangeError('normalCdf: z is NaN');
  const half = 0.5 * regularizedGammaQ(0.5, (z * z) / 2); // = P(Z > |z|)
  return z >= 0 ? 1 - half : half;
}

/**
 * Standard normal quantile Φ⁻¹(p): Abramowitz–Stegun 26.2.23 start, then
 * Newton steps on the accurate tail above (|error| < 1e-12 for p in [1e-300, 1 − 1e-16]).
 */
export function normalQuantile(p: number): number {
  if (!(p > 0 && p < 1)) throw new RangeError('normalQuantile: p must be in (0, 1)');
  if (p === 0.5) return 0;
  const q = p < 0.5 ? p : 1 - p; // lower tail probability of |z|
  const t = Math.sqrt(-2 * Math.log(q));
  let z = t - (2.515517 + 0.802853 * t + 0.010328 * t * t) / (1 + 1.432788 * t + 0.189269 * t * t + 0.001308 * t * t * t);
  for (let i = 0; i < 50; i++) {
    const tail = 0.5 * regularizedGammaQ(0.5, (z * z) / 2); // P(Z > z), z > 0
    const density = Math.exp(-0.5 * z * z) / Math.sqrt(2 * Math.PI);
    const step = (tail - q) / density;
    z += step;
    if (Math.abs(step) < 1e-14 * Math.max(1, z)) break;
  }
  return p < 0.5 ? -z : z;
}

/** Two-sided z for a confidence level (0.95 → 1.959963984540054). */
export function zForConfidence(confidenceLevel: number): number {
  if (!(confidenceLevel > 0 && confidenceLevel < 1)) throw new RangeError('confidence level must be in (0, 1)');
  if (confidenceLevel === 0.95) return Z_95;
  return normalQuantile(1 - (1 - confidenceLevel) / 2);
}

/** ln C(n, k). */
export function lnChoose(n: number, k: number): number {
  if (k < 0 || k > n) return -Infinity;
  if (k === 0 || k === n) return 0;
  return lnGamma(n + 1) - lnGamma(k + 1) - lnGamma(n - k + 1);
}

/**
 * Binomial CDF P(X ≤ k) for X ~ Bin(n, p). For p = ½ and n ≤ 50 (every exact
 * McNemar test) it is computed exactly in integers; otherwise summed in log
 * space (log-sum-exp) so it stays accurate for large n where C(n, k) overflows.
 */
export function binomialCdf(k: number, n: number, p: number): number {
  if (!Number.isInteger(n) || n < 0) throw new RangeError('binomialCdf: n must be a non-negative integer');
  if (!(p >= 0 && p <= 1)) throw new RangeError('binomialCdf: p must be in [0, 1]');
  if (k < 0) return 0;
  if (k >= n) return 1;
  if (p === 0) return 1;
  if (p === 1) return 0;
  if (p === 0.5 && n <= 50) {
    // Exact: integer binomial coefficients (C(50, 25) < 2^53) over an exact power of two.
    let coefficient = 1;
    let sum = 1;
    for (let i = 1; i <= k; i++) {
      coefficient = (coefficient * (n - i + 1)) / i; // stays an exact integer at every step
      sum += coefficient;
    }
    return sum / 2 ** n;
  }
  const lp = Math.log(p);
  const lq = Math.log1p(-p);
  const terms: number[] = [];
  let max = -Infinity;
  for (let i = 0; i <= k; i++) {
    const t = lnChoose(n, i) + i * lp + (n - i) * lq;
    terms.push(t);
    if (t > max) max = t;
  }
  let sum = 0;
  for (const t of terms) sum += Math.exp(t - max);
  return Math.min(1, Math.exp(max + Math.log(sum)));
}

// ----------------------------------------------------------------- rates and intervals

/**
 * Wilson score interval for `successes` out of `trials` (Wilson 1927; Newcombe
 * 1998 method 3, no continuity correction):
 *   (p̂ + z²/2n ± z·√(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n).
 * Preferred over the Wald interval because it stays inside [0, 1] and keeps
 * near-nominal coverage at p̂ = 0 or 1 and small n — exactly the regime of a
 * precise rule with few false positives. n = 0 gives [0, 1].
 */
export function wilsonInterval(successes: number, trials: number, z: number = Z_95): { lower: number; upper: number } {
  if (!Number.isInteger(successes) || !Number.isInteger(trials) || successes < 0 || trials < 0 || successes > trials) {
    throw new RangeError('wilsonInterval: need integers 0 ≤ successes ≤ trials');
  }
  if (!(z > 0) || !Number.isFinite(z)) throw new RangeError('wilsonInterval: z must be a finite number > 0');
  if (trials === 0) return { lower: 0, upper: 1 };
  const n = trials;
  const p = successes / n;
  const z2 = z * z;
  const denominator = 1 + z2 / n;
  const center = (p + z2 / (2 * n)) / denominator;
  const half = (z / denominator) * Math.sqrt((p * (1 - p)) / n + z2 / (4 * n * n));
  return {
    lower: successes === 0 ? 0 : Math.max(0, center - half),
    upper: successes === trials ? 1 : Math.min(1, center + half),
  };
}

/** numerator / denominator with its Wilson interval; see the module comment for denominator 0. */
export function rate(numerator: number, denominator: number, z: number = Z_95): Rate {
  const { lower, upper } = wilsonInterval(numerator, denominator, z);
  if (denominator === 0) return { value: 0, numerator, denominator, lower, upper, defined: false };
  return { value: numerator / denominator, numerator, denominator, lower, upper, defined: true };
}

function assertMatrix(m: ConfusionMatrix): void {
  for (const key of ['tp', 'fp', 'fn', 'tn'] as const) {
    const v = m[key];
    if (!Number.isInteger(v) || v < 0 || v > Number.MAX_SAFE_INTEGER) {
      throw new RangeError(`confusion matrix ${key} must be a non-negative integer`);
    }
  }
}

/** Counts the confusion matrix of 0/1 predictions against 0/1 labels. */
export function confusionMatrix(
  predictions: ArrayLike<number | boolean>,
  labels: ArrayLike<number | boolean>,
): ConfusionMatrix {
  if (predictions.length !== labels.length) throw new RangeError('predictions and labels differ in length');
  let tp = 0;
  let fp = 0;
  let fn = 0;
  let tn = 0;
  for (let i = 0; i < predictions.length; i++) {
    const predicted = predictions[i] ? 1 : 0;
    const actual = labels[i] ? 1 : 0;
    if (predicted) {
      if (actual) tp++;
      else fp++;
    } else if (actual) fn++;
    else tn++;
  }
  return { tp, fp, fn, tn };
}

/** Every metric of a confusion matrix; rates carry intervals at `confidenceLevel` (default 0.95). */
export function detectionMetrics(m: ConfusionMatrix, confidenceLevel = 0.95): DetectionMetrics {
  assertMatrix(m);
  const z = zForConfidence(confidenceLevel);
  const { tp, fp, fn, tn } = m;
  const n = tp + fp + fn + tn;
  const precision = rate(tp, tp + fp, z);
  const recall = rate(tp, tp + fn, z);
  const specificity = rate(tn, tn + fp, z);
  const f1Denominator = 2 * tp + fp + fn;
  // Two square roots of two-margin products: exact for perfect tables (√25·√49 = 35), no overflow below 2^53.
  const marginsProduct = Math.sqrt((tp + fp) * (tp + fn)) * Math.sqrt((tn + fp) * (tn + fn));
  const mccDefined = marginsProduct > 0;
  return {
    precision,
    recall,
    specificity,
    falsePositiveRate: rate(fp, fp + tn, z),
    negativePredictiveValue: rate(tn, tn + fn, z),
    accuracy: rate(tp + tn, n, z),
    f1: f1Denominator === 0 ? { value: 0, defined: false } : { value: (2 * tp) / f1Denominator, defined: true },
    mcc: mccDefined ? { value: (tp * tn - fp * fn) / marginsProduct, defined: true } : { value: 0, defined: false },
    balancedAccuracy:
      recall.defined && specificity.defined
        ? { value: (recall.value + specificity.value) / 2, defined: true }
        : { value: 0.5, defined: false },
  };
}

// ----------------------------------------------------------------- AUC-ROC

export interface AucResult {
  /** Probability that a random malicious sample scores above a random benign one, ties counting ½. */
  readonly value: number;
  readonly defined: boolean;
  readonly positives: number;
  readonly negatives: number;
}

/**
 * AUC-ROC by the Mann–Whitney U statistic: U / (P·N) with
 * U = Σ over positives of (#negatives scoring lower + ½ · #negatives scoring equal).
 * Exact (U is a multiple of ½ far below 2^53), O(n log n) via two native
 * Float64Array sorts and a merge walk. For 0/1 scores this reduces to
 * (TPR + TNR) / 2, the balanced accuracy. No positives or no negatives:
 * 0.5, `defined: false`.
 */
export function aucRoc(scores: ArrayLike<number>, labels: ArrayLike<number | boolean>): AucResult {
  if (scores.length !== labels.length) throw new RangeError('scores and labels differ in length');
  let positives = 0;
  for (let i = 0; i < labels.length; i++) if (labels[i]) positives++;
  const negatives = labels.length - positives;
  if (positives === 0 || negatives === 0) return { value: 0.5, defined: false, positives, negatives };
  const pos = new Float64Array(positives);
  const neg = new Float64Array(negatives);
  let pi = 0;
  let ni = 0;
  for (let i = 0; i < scores.length; i++) {
    const s = scores[i];
    if (Number.isNaN(s)) throw new RangeError(`score ${i} is NaN`);
    if (labels[i]) pos[pi++] = s;
    else neg[ni++] = s;
  }
  pos.sort();
  neg.sort();
  let u = 0;
  let below = 0; // negatives strictly below the current positive score
  for (let i = 0; i < positives; ) {
    const s = pos[i];
    let j = i;
    while (j < positives && pos[j] === s) j++;
    while (below < negatives && neg[below] < s) below++;
    let equal = below;
    while (equal < negatives && neg[equal] === s) equal++;
    u += (j - i) * (below + 0.5 * (equal - below));
    i = j;
  }
  return { value: u / (positives * negatives), defined: true, positives, negatives };
}

/**
 * AUC-ROC of a hard yes/no rule straight from its matrix — the Mann–Whitney
 * formula with 0/1 scores: (TP·TN + ½·TP·FP + ½·FN·TN) / (P·N), which equals
 * (TPR + TNR)/2. O(1) instead of a sort.
 */
export function aucFromMatrix(m: ConfusionMatrix): AucResult {
  assertMatrix(m);
  const positives = m.tp + m.fn;
  const negatives = m.fp + m.tn;
  if (positives === 0 || negatives === 0) return { value: 0.5, defined: false, positives, negatives };
  const u = m.tp * m.tn + 0.5 * (m.tp * m.fp + m.fn * m.tn);
  return { value: u / (positives * negatives), defined: true, positives, negatives };
}

// ----------------------------------------------------------------- significance tests

export type Association = 'positive' | 'negative' | 'none';

export interface ChiSquareTest {
  readonly name: 'chi_square_independence';
  readonly statistic: number;
  readonly degreesOfFreedom: 1;
  readonly pValue: number;
  readonly continuityCorrected: boolean;
  /** False when a margin is 0 (rule never/always fires, or one class absent): statistic 0, p 1. */
  readonly defined: boolean;
  /** Sign of TP·TN − FP·FN: 'positive' means firing goes with being malicious. */
  readonly association: Association;
  /** Smallest expected cell count; below 5 the chi-square approximation is unreliable. */
  readonly minExpected: number;
}

/**
 * Pearson's chi-square test of independence on the 2×2 table
 * [[TP, FP], [FN, TN]] (prediction × label), 1 degree of freedom:
 *   χ² = N (|ad − bc| − c)² / ((a+b)(c+d)(a+c)(b+d)),
 * c = N/2 with Yates' correction (clamped so the bracket is never negative,
 * as R and SciPy do), 0 without.
 */
export function chiSquareIndependence(m: ConfusionMatrix, options: { yates?: boolean } = {}): ChiSquareTest {
  assertMatrix(m);
  const yates = options.yates ?? true;
  const { tp: a, fp: b, fn: c, tn: d } = m;
  const n = a + b + c + d;
  const row1 = a + b;
  const row2 = c + d;
  const col1 = a + c;
  const col2 = b + d;
  const cross = a * d - b * c;
  const association: Association = cross > 0 ? 'positive' : cross < 0 ? 'negative' : 'none';
  if (row1 === 0 || row2 === 0 || col1 === 0 || col2 === 0) {
    return {
      name: 'chi_square_independence',
      statistic: 0,
      degreesOfFreedom: 1,
      pValue: 1,
      continuityCorrected: yates,
      defined: false,
      association,
      minExpected: 0,
    };
  }
  const minExpected = Math.min(row1, row2) * (Math.min(col1, col2) / n);
  const deviation = Math.max(0, Math.abs(cross) - (yates ? n / 2 : 0));
  // N·dev²/(r1·r2·c1·c2), arranged to avoid overflow for counts up to 2^53.
  const statistic = (((n * (deviation / row1)) / row2) * (deviation / col1)) / col2;
  return {
    name: 'chi_square_independence',
    statistic,
    degreesOfFreedom: 1,
    pValue: chiSquareSurvival(statistic, 1),
    continuityCorrected: yates,
    defined: true,
    association,
    minExpected,
  };
}

export interface FisherExactTest {
  readonly name: 'fisher_exact';
  /** Two-sided: sum of the probabilities of all tables with these margins no more likely than the observed one. */
  readonly pValue: number;
  readonly defined: boolean;
}

/** Support sizes above this are not summed (the chi-square approximation is fine there anyway). */
const FISHER_SUPPORT_MAX = 1_000_000;

/**
 * Fisher's exact test, two-sided, on the 2×2 table (hypergeometric with the
 * margins fixed), summing tables with probability ≤ observed·(1 + 1e-7) as R
 * does. Used when an expected count is < 5. Undefined (p = 1) on a zero margin
 * or a support larger than FISHER_SUPPORT_MAX.
 */
export function fisherExact(m: ConfusionMatrix): FisherExactTest {
  assertMatrix(m);
  const { tp: a, fp: b, fn: c, tn: d } = m;
  const n = a + b + c + d;
  const row1 = a + b;
  const col1 = a + c;
  const row2 = c + d;
  const col2 = b + d;
  if (row1 === 0 || row2 === 0 || col1 === 0 || col2 === 0) return { name: 'fisher_exact', pValue: 1, defined: false };
  const low = Math.max(0, col1 - row2);
  const high = Math.min(row1, col1);
  if (high - low + 1 > FISHER_SUPPORT_MAX) return { name: 'fisher_exact', pValue: 1, defined: false };
  const lnDenominator = lnChoose(n, col1);
  const lnProb = (x: number): number => lnChoose(row1, x) + lnChoose(row2, col1 - x) - lnDenominator;
  const observed = lnProb(a);
  const threshold = observed + Math.log1p(1e-7);
  let p = 0;
  for (let x = low; x <= high; x++) {
    const lp = lnProb(x);
    if (lp <= threshold) p += Math.exp(lp);
  }
  return { name: 'fisher_exact', pValue: Math.min(1, p), defined: true };
}

export type McNemarMethod = 'exact_binomial' | 'chi_square_continuity_corrected';

export interface McNemarTest {
  /** Matches the proto's SignificanceTest.name. */
  readonly name: 'mcnemar_exact' | 'mcnemar_chi_square';
  readonly method: McNemarMethod;
  /** Discordant pairs of one kind, e.g. baseline right and candidate wrong. */
  readonly b: number;
  /** Discordant pairs of the other kind, e.g. candidate right and baseline wrong. */
  readonly c: number;
  /**
   * (|b − c| − 1)² / (b + c), the continuity-corrected chi-square, reported whichever method gives
   * the p-value (for the exact method it is for reference only); 0 when b + c = 0.
   */
  readonly statistic: number;
  readonly degreesOfFreedom: 1;
  readonly pValue: number;
  readonly continuityCorrected: boolean;
  /** False when there are no discordant pairs (p = 1). */
  readonly defined: boolean;
}

/** Below this many discordant pairs McNemar uses the exact binomial test. */
export const MCNEMAR_EXACT_BELOW = 25;

/**
 * McNemar's test for paired classifiers on the same samples. Only discordant
 * pairs carry information: under H0 each is b-type or c-type with probability
 * ½. b + c < 25 (`exactBelow`): exact two-sided binomial,
 * p = min(1, 2·P(X ≤ min(b, c))), X ~ Bin(b + c, ½). Otherwise the chi-square
 * with Edwards' continuity correction, (|b − c| − 1)² / (b + c), df 1, as R's
 * mcnemar.test and statsmodels' mcnemar(exact=False) compute it: not clamped, so
 * b = c gives 1/(2b) (p just below 1), not 0.
 */
export function mcnemarTest(b: number, c: number, options: { exactBelow?: number } = {}): McNemarTest {
  if (!Number.isInteger(b) || !Number.isInteger(c) || b < 0 || c < 0) {
    throw new RangeError('mcnemarTest: b and c must be non-negative integers');
  }
  const exactBelow = options.exactBelow ?? MCNEMAR_EXACT_BELOW;
  const n = b + c;
  const deviation = Math.abs(b - c) - 1;
  const statistic = n === 0 ? 0 : (deviation * deviation) / n;
  if (n < exactBelow) {
    const pValue = n === 0 ? 1 : Math.min(1, 2 * binomialCdf(Math.min(b, c), n, 0.5));
    return {
      name: 'mcnemar_exact',
      method: 'exact_binomial',
      b,
      c,
      statistic,
      degreesOfFreedom: 1,
      pValue,
      continuityCorrected: false,
      defined: n > 0,
    };
  }
  return {
    name: 'mcnemar_chi_square',
    method: 'chi_square_continuity_corrected',
    b,
    c,
    statistic,
    degreesOfFreedom: 1,
    pValue: chiSquareSurvival(statistic, 1),
    continuityCorrected: true,
    defined: true,
  };
}

/**
 * Paired disagreement counts between a candidate and a baseline on the same
 * labelled samples. A sample where their predictions differ is right for
 * exactly one of them, so these are also the discordant-correctness pairs.
 */
export function pairedDisagreements(
  candidate: ArrayLike<number>,
  baseline: ArrayLike<number>,
  labels: ArrayLike<number>,
): { candidateOnlyCorrect: number; baselineOnlyCorrect: number; benign: { candidateOnlyCorrect: number; baselineOnlyCorrect: number }; malicious: { candidateOnlyCorrect: number; baselineOnlyCorrect: number } } {
  if (candidate.length !== baseline.length || candidate.length !== labels.length) {
    throw new RangeError('candidate, baseline and labels differ in length');
  }
  // [label][candidate right?] for discordant samples
  let benignCandidate = 0;
  let benignBaseline = 0;
  let maliciousCandidate = 0;
  let maliciousBaseline = 0;
  for (let i = 0; i < labels.length; i++) {
    const p = candidate[i] ? 1 : 0;
    const q = baseline[i] ? 1 : 0;
    if (p === q) continue;
    const y = labels[i] ? 1 : 0;
    if (y === 1) {
      if (p === 1) maliciousCandidate++;
      else maliciousBaseline++;
    } else if (p === 0) benignCandidate++;
    else benignBaseline++;
  }
  return {
    candidateOnlyCorrect: benignCandidate + maliciousCandidate,
    baselineOnlyCorrect: benignBaseline + maliciousBaseline,
    benign: { candidateOnlyCorrect: benignCandidate, baselineOnlyCorrect: benignBaseline },
    malicious: { candidateOnlyCorrect: maliciousCandidate, baselineOnlyCorrect: maliciousBaseline },
  };
}
