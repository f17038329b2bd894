/**
 * Turns an evaluation into a deployment decision a security engineer can act on.
 *
 * Why bounds, not point estimates: a rule that blocked 0 of 40 benign requests
 * has a point FPR of 0 but could easily block 9% of real users (Wilson upper
 * bound 0.088). Every gate is therefore on the conservative end of the Wilson
 * interval: precision and recall on their LOWER bound, the false-positive rate
 * on its UPPER bound. On top of that the rule must be significantly associated
 * with maliciousness (chi-square with Yates, or Fisher's exact test when an
 * expected count is below 5), and, with a baseline, must not be significantly
 * worse than the rule in production (McNemar).
 *
 * Decision procedure, in order (first match wins):
 *  1. REJECT when the data shows harm at any sample size: FPR lower bound above
 *     the canary FPR limit; precision upper bound below the canary precision
 *     bar; firing significantly more on benign than malicious traffic; or
 *     significantly worse than the baseline.
 *  2. NEEDS_REVIEW when there are too few samples (total or per class).
 *  3. NEEDS_REVIEW when the association is not significant at `significanceLevel`.
 *  4. APPROVE_FULL_DEPLOYMENT when precision LB ≥ minPrecision, recall LB ≥
 *     minRecall and FPR UB ≤ maxFalsePositiveRate — downgraded to
 *     APPROVE_CANARY if it blocks significantly more benign requests than the
 *     baseline (McNemar on benign samples).
 *  5. APPROVE_CANARY when the (looser) canary bars hold.
 *  6. NEEDS_REVIEW otherwise (e.g. safe but catches too little).
 *
 * Confidence ∈ [0, 1]: for each gate "true rate ≥ T" the one-sided score-test
 * confidence Φ((p̂ − T) / √(T(1 − T)/n)) (the same statistic the Wilson bound
 * inverts: bound ≥ T ⇔ confidence ≥ 0.975 at 95%), and 1 − p for a
 * significance gate. APPROVE: the weakest gate of the tier; REJECT: the
 * strongest triggered reason; NEEDS_REVIEW: the confidence that the canary bar
 * is *not* met (max over its gates of 1 − confidence).
 *
 * Risk is the user impact of deploying the candidate, from the FPR interval:
 * CRITICAL if the FPR lower bound exceeds the canary limit, the rule
 * significantly targets benign traffic, or it is significantly worse than the
 * baseline; HIGH if the FPR upper bound exceeds the canary limit or there are
 * too few benign samples to tell; MEDIUM if it exceeds the full-deployment
 * limit; LOW otherwise.
 */
import { ServiceError } from '../../../platform/service-error';
import { normalCdf, type Association, type ConfusionMatrix, type DetectionMetrics, type McNemarTest, type Rate } from './statistics';
import { invariant } from '../../../platform/invariant';

export type Decision = 'APPROVE_FULL_DEPLOYMENT' | 'APPROVE_CANARY' | 'NEEDS_REVIEW' | 'REJECT';
export type RiskLevel = 'LOW' | 'MEDIUM' | 'HIGH' | 'CRITICAL';

/** Decision thresholds; field names follow the proto `Thresholds` message where it has them. */
export interface RecommendationThresholds {
  /** Full deployment needs the precision Wilson LOWER bound ≥ this. Default 0.95. */
  readonly minPrecision: number;
  /** Full deployment needs the recall Wilson LOWER bound ≥ this. Default 0.80. */
  readonly minRecall: number;
  /** Full deployment needs the false-positive-rate Wilson UPPER bound ≤ this. Default 0.01. */
  readonly maxFalsePositiveRate: number;
  /** Canary needs precision LB ≥ this; below it even at the UPPER bound is a REJECT. Default min(0.80, minPrecision). */
  readonly canaryMinPrecision: number;
  /** Canary needs recall LB ≥ this. Default min(0.50, minRecall). */
  readonly canaryMinRecall: number;
  /** Canary needs FPR UB ≤ this; a LOWER bound above it is a REJECT. Default max(0.05, maxFalsePositiveRate). */
  readonly canaryMaxFalsePositiveRate: number;
  /** α for the association test and McNemar. Default 0.05. */
  readonly significanceLevel: number;
  /** Fewer samples in total → NEEDS_REVIEW. Default 100. */
  readonly minSamples: number;
  /** Fewer malicious, or fewer benign, samples → NEEDS_REVIEW. Default 10. */
  readonly minSamplesPerClass: number;
  /** Confidence level of every interval. Default 0.95. */
  readonly confidenceLevel: number;
}

export const DEFAULT_THRESHOLDS: Readonly<RecommendationThresholds> = Object.freeze({
  minPrecision: 0.95,
  minRecall: 0.8,
  maxFalsePositiveRate: 0.01,
  canaryMinPrecision: 0.8,
  canaryMinRecall: 0.5,
  canaryMaxFalsePositiveRate: 0.05,
  significanceLevel: 0.05,
  minSamples: 100,
  minSamplesPerClass: 10,
  confidenceLevel: 0.95,
});

const PROTO_NAMES: Record<keyof RecommendationThresholds, string> = {
  minPrecision: 'thresholds.min_precision',
  minRecall: 'thresholds.min_recall',
  maxFalsePositiveRate: 'thresholds.max_false_positive_rate',
  canaryMinPrecision: 'thresholds.canary_min_precision',
  canaryMinRecall: 'thresholds.canary_min_recall',
  canaryMaxFalsePositiveRate: 'thresholds.canary_max_false_positive_rate',
  significanceLevel: 'thresholds.significance_level',
  minSamples: 'thresholds.min_samples',
  minSamplesPerClass: 'thresholds.min_samples_per_class',
  confidenceLevel: 'thresholds.confidence_level',
};

/**
 * Fills defaults (undefined = default; the proto handler should map proto3
 * zero values to undefined) and validates ranges.
 * @throws ServiceError INVALID_ARGUMENT naming the proto field.
 */
export function resolveThresholds(partial: Partial<RecommendationThresholds> = {}): RecommendationThresholds {
  const given = (key: keyof RecommendationThresholds): number | undefined => {
    const v = partial[key];
    if (v === undefined) return undefined;
    if (typeof v !== 'number' || !Number.isFinite(v)) throw ServiceError.invalidArgument(PROTO_NAMES[key], 'must be a finite number');
    return v;
  };
  const unit = (key: keyof RecommendationThresholds, fallback: number): number => {
    const v = given(key) ?? fallback;
    if (v < 0 || v > 1) throw ServiceError.invalidArgument(PROTO_NAMES[key], 'must be between 0 and 1');
    return v;
  };
  const minPrecision = unit('minPrecision', DEFAULT_THRESHOLDS.minPrecision);
  const minRecall = unit('minRecall', DEFAULT_THRESHOLDS.minRecall);
  const maxFalsePositiveRate = unit('maxFalsePositiveRate', DEFAULT_THRESHOLDS.maxFalsePositiveRate);
  const canaryMinPrecision = unit('canaryMinPrecision', Math.min(DEFAULT_THRESHOLDS.canaryMinPrecision, minPrecision));
  const canaryMinRecall = unit('canaryMinRecall', Math.min(DEFAULT_THRESHOLDS.canaryMinRecall, minRecall));
  const canaryMaxFalsePositiveRate = unit(
    'canaryMaxFalsePositiveRate',
    Math.max(DEFAULT_THRESHOLDS.canaryMaxFalsePositiveRate, maxFalsePositiveRate),
  );
  if (canaryMinPrecision > minPrecision) {
    throw ServiceError.invalidArgument(PROTO_NAMES.canaryMinPrecision, 'must not exceed min_precision');
  }
  if (canaryMinRecall > minRecall) throw ServiceError.invalidArgument(PROTO_NAMES.canaryMinRecall, 'must not exceed min_recall');
  if (canaryMaxFalsePositiveRate < maxFalsePositiveRate) {
    throw ServiceError.invalidArgument(PROTO_NAMES.canaryMaxFalsePositiveRate, 'must not be below max_false_positive_rate');
  }
  const significanceLevel = given('significanceLevel') ?? DEFAULT_THRESHOLDS.significanceLevel;
  if (!(significanceLevel > 0 && significanceLevel <= 0.5)) {
    throw ServiceError.invalidArgument(PROTO_NAMES.significanceLevel, 'must be in (0, 0.5]');
  }
  const confidenceLevel = given('confidenceLevel') ?? DEFAULT_THRESHOLDS.confidenceLevel;
  if (!(confidenceLevel >= 0.5 && confidenceLevel <= 0.9999)) {
    throw ServiceError.invalidArgument(PROTO_NAMES.confidenceLevel, 'must be in [0.5, 0.9999]');
  }
  const count = (key: 'minSamples' | 'minSamplesPerClass', fallback: number): number => {
    const v = given(key) ?? fallback;
    if (!Number.isInteger(v) || v < 1 || v > 1e9) throw ServiceError.invalidArgument(PROTO_NAMES[key], 'must be an integer 1..1000000000');
    return v;
  };
  return {
    minPrecision,
    minRecall,
    maxFalsePositiveRate,
    canaryMinPrecision,
    canaryMinRecall,
    canaryMaxFalsePositiveRate,
    significanceLevel,
    minSamples: count('minSamples', DEFAULT_THRESHOLDS.minSamples),
    minSamplesPerClass: count('minSamplesPerClass', DEFAULT_THRESHOLDS.minSamplesPerClass),
    confidenceLevel,
  };
}

/** The association test the decision used (chi-square with Yates, or Fisher when expected counts are small). */
export interface SignificanceSummary {
  readonly test: 'chi_square_independence' | 'fisher_exact';
  readonly pValue: number;
  readonly association: Association;
}

/** Paired comparison with the baseline, as computed by evaluate.ts. */
export interface BaselineSummary {
  readonly mcnemar: McNemarTest;
  readonly candidateOnlyCorrect: number;
  readonly baselineOnlyCorrect: number;
  /** McNemar on benign samples only: b = baseline right (did not block), c = candidate right. */
  readonly benignMcnemar: McNemarTest;
  readonly benignCandidateOnlyCorrect: number;
  readonly benignBaselineOnlyCorrect: number;
}

export interface RecommendationInput {
  readonly matrix: ConfusionMatrix;
  /** Metrics at `thresholds.confidenceLevel`. */
  readonly metrics: DetectionMetrics;
  readonly significance: SignificanceSummary;
  readonly baseline?: BaselineSummary;
}

/** One gate, evaluated; `message` is what appears in `reasons`. */
export interface RecommendationCheck {
  readonly name: string;
  readonly passed: boolean;
  readonly message: string;
}

export interface Recommendation {
  readonly decision: Decision;
  readonly confidence: number;
  readonly risk: RiskLevel;
  /** Human-readable, most important first, e.g. "precision lower bound 0.962 ≥ 0.95". */
  readonly reasons: readonly string[];
  readonly checks: readonly RecommendationCheck[];
}

const fmt = (x: number): string => x.toFixed(3);
/** "p=0.0123", "p=4.11e-5", or "p<1e-300" once the tail underflows double precision. */
const fmtP = (p: number): string =>
  p < 1e-300 ? 'p<1e-300' : `p=${p < 0.001 ? p.toExponential(2) : p.toFixed(4).replace(/0+$/, '').replace(/\.$/, '')}`;

/**
 * One-sided score-test confidence that the true proportion is ≥ T (or ≤ T when
 * `atMost`), Φ((p̂ − T)/√(T(1 − T)/n)); 0.5 with no data; 0/1 at T ∈ {0, 1}.
 */
export function gateConfidence(r: Rate, threshold: number, atMost = false): number {
  if (r.denominator === 0) return 0.5;
  const se = Math.sqrt((threshold * (1 - threshold)) / r.denominator);
  const diff = atMost ? threshold - r.value : r.value - threshold;
  if (se === 0) return diff >= 0 ? 1 : 0;
  return normalCdf(diff / se);
}

const clamp01 = (x: number): number => (x < 0 ? 0 : x > 1 ? 1 : x);

/** Decides; see the module comment for the procedure. `thresholds` must come from resolveThresholds. */
export function recommend(input: RecommendationInput, thresholds: RecommendationThresholds): Recommendation {
  const t = thresholds;
  const { matrix, metrics, significance, baseline } = input;
  const precision = metrics.precision;
  const recall = metrics.recall;
  const fpr = metrics.falsePositiveRate;
  const n = matrix.tp + matrix.fp + matrix.fn + matrix.tn;
  const malicious = matrix.tp + matrix.fn;
  const benign = matrix.fp + matrix.tn;
  const alpha = t.significanceLevel;
  const checks: RecommendationCheck[] = [];
  const add = (name: string, passed: boolean, message: string): void => {
    checks.push({ name, passed, message });
  };

  // --- 1. harm: REJECT -------------------------------------------------------------
  const rejectReasons: { message: string; confidence: number }[] = [];
  if (fpr.defined && fpr.lower > t.canaryMaxFalsePositiveRate) {
    rejectReasons.push({
      message: `false-positive rate lower bound ${fmt(fpr.lower)} > ${t.canaryMaxFalsePositiveRate}: blocks too many legitimate requests`,
      confidence: gateConfidence(fpr, t.canaryMaxFalsePositiveRate, false),
    });
  }
  if (precision.defined && precision.upper < t.canaryMinPrecision) {
    rejectReasons.push({
      message: `precision upper bound ${fmt(precision.upper)} < ${t.canaryMinPrecision}: too many of its blocks hit legitimate requests`,
      confidence: gateConfidence(precision, t.canaryMinPrecision, true),
    });
  }
  if (significance.association === 'negative' && significance.pValue < alpha) {
    rejectReasons.push({
      message: `fires significantly more on benign than on malicious traffic (${significance.test} ${fmtP(significance.pValue)})`,
      confidence: 1 - significance.pValue,
    });
  }
  const worseThanBaseline =
    baseline !== undefined &&
    baseline.mcnemar.defined &&
    baseline.mcnemar.pValue < alpha &&
    baseline.baselineOnlyCorrect > baseline.candidateOnlyCorrect;
  if (baseline && worseThanBaseline) {
    rejectReasons.push({
      message:
        `significantly worse than the baseline (${baseline.mcnemar.name} ${fmtP(baseline.mcnemar.pValue)}: ` +
        `baseline alone right on ${baseline.baselineOnlyCorrect} samples, candidate alone on ${baseline.candidateOnlyCorrect})`,
      confidence: 1 - baseline.mcnemar.pValue,
    });
  }

  // --- risk ------------------------------------------------------------------------
  const negativeSignificant = significance.association === 'negative' && significance.pValue < alpha;
  let risk: RiskLevel;
  if ((fpr.defined && fpr.lower > t.canaryMaxFalsePositiveRate) || negativeSignificant || worseThanBaseline) risk = 'CRITICAL';
  else if (fpr.upper > t.canaryMaxFalsePositiveRate || benign < t.minSamplesPerClass) risk = 'HIGH';
  else if (fpr.upper > t.maxFalsePositiveRate) risk = 'MEDIUM';
  else risk = 'LOW';

  // --- gates (always evaluated, so reasons show the full picture) -----------------
  const significant = significance.association === 'positive' && significance.pValue < alpha;
  const significanceConfidence = significance.association === 'positive' ? 1 - significance.pValue : 0;
  add(
    'significance',
    significant,
    significant
      ? `association with malicious traffic is significant (${significance.test} ${fmtP(significance.pValue)} < ${alpha})`
      : significance.association === 'positive'
        ? `association with malicious traffic is not significant (${significance.test} ${fmtP(significance.pValue)} ≥ ${alpha})`
        : `no positive association with malicious traffic (${significance.test} ${fmtP(significance.pValue)})`,
  );
  const lowerGate = (name: string, label: string, r: Rate, threshold: number, tier: string): number => {
    const passed = r.lower >= threshold;
    add(
      `${name}_${tier}`,
      passed,
      r.defined
        ? `${label} lower bound ${fmt(r.lower)} ${passed ? '≥' : '<'} ${threshold}${passed ? '' : ` (${tier} needs ≥ ${threshold})`}`
        : `${label} undefined (no ${name === 'precision' ? 'requests blocked' : 'malicious samples'}); ${tier} needs a lower bound ≥ ${threshold}`,
    );
    return gateConfidence(r, threshold, false);
  };
  const upperGate = (r: Rate, threshold: number, tier: string): number => {
    const passed = r.upper <= threshold;
    add(
      `false_positive_rate_${tier}`,
      passed,
      r.defined
        ? `false-positive rate upper bound ${fmt(r.upper)} ${passed ? '≤' : '>'} ${threshold}${passed ? '' : ` (${tier} needs ≤ ${threshold})`}`
        : `false-positive rate undefined (no benign samples); ${tier} needs an upper bound ≤ ${threshold}`,
    );
    return gateConfidence(r, threshold, true);
  };
  const fullConfidences = [
    significanceConfidence,
    lowerGate('precision', 'precision', precision, t.minPrecision, 'full'),
    lowerGate('recall', 'recall', recall, t.minRecall, 'full'),
    upperGate(fpr, t.maxFalsePositiveRate, 'full'),
  ];
  const fullPassed = checks.every((c) => c.passed);
  const checkCountBeforeCanary = checks.length;
  const canaryConfidences = [
    significanceConfidence,
    lowerGate('precision', 'precision', precision, t.canaryMinPrecision, 'canary'),
    lowerGate('recall', 'recall', recall, t.canaryMinRecall, 'canary'),
    upperGate(fpr, t.canaryMaxFalsePositiveRate, 'canary'),
  ];
  const canaryPassed = significant && checks.slice(checkCountBeforeCanary).every((c) => c.passed);
  const dataEnough = n >= t.minSamples && malicious >= t.minSamplesPerClass && benign >= t.minSamplesPerClass;
  add(
    'sample_size',
    dataEnough,
    dataEnough
      ? `${n} samples (${malicious} malicious, ${benign} benign) meet the minimum of ${t.minSamples} (${t.minSamplesPerClass} per class)`
      : `too few samples: ${n} (${malicious} malicious, ${benign} benign); need ${t.minSamples} in total and ${t.minSamplesPerClass} per class`,
  );
  let benignWorse = false;
  if (baseline) {
    benignWorse =
      baseline.benignMcnemar.defined &&
      baseline.benignMcnemar.pValue < alpha &&
      baseline.benignBaselineOnlyCorrect > baseline.benignCandidateOnlyCorrect;
    const m = baseline.mcnemar;
    const better = m.defined && m.pValue < alpha && baseline.candidateOnlyCorrect > baseline.baselineOnlyCorrect;
    add(
      'baseline',
      !worseThanBaseline,
      better
        ? `significantly better than the baseline (${m.name} ${fmtP(m.pValue)}: candidate alone right on ${baseline.candidateOnlyCorrect} samples, baseline alone on ${baseline.baselineOnlyCorrect})`
        : worseThanBaseline
          ? `significantly worse than the baseline (${m.name} ${fmtP(m.pValue)})`
          : `not significantly different from the baseline (${m.name} ${fmtP(m.pValue)}; ${baseline.candidateOnlyCorrect} vs ${baseline.baselineOnlyCorrect} discordant samples)`,
    );
    add(
      'baseline_benign',
      !benignWorse,
      benignWorse
        ? `blocks significantly more benign requests than the baseline (${baseline.benignMcnemar.name} ${fmtP(baseline.benignMcnemar.pValue)}: ${baseline.benignBaselineOnlyCorrect} vs ${baseline.benignCandidateOnlyCorrect})`
        : `does not block significantly more benign requests than the baseline (${baseline.benignBaselineOnlyCorrect} vs ${baseline.benignCandidateOnlyCorrect})`,
    );
  }

  const messagesOf = (names: (c: RecommendationCheck) => boolean): string[] => checks.filter(names).map((c) => c.message);
  let decision: Decision;
  let confidence: number;
  let reasons: string[];
  if (rejectReasons.length > 0) {
    decision = 'REJECT';
    confidence = Math.max(...rejectReasons.map((r) => r.confidence));
    reasons = rejectReasons.map((r) => r.message);
  } else if (!dataEnough) {
    decision = 'NEEDS_REVIEW';
    confidence = Math.max(...canaryConfidences.map((c) => 1 - c));
    reasons = messagesOf((c) => c.name === 'sample_size');
  } else if (!significant) {
    decision = 'NEEDS_REVIEW';
    confidence = Math.max(...canaryConfidences.map((c) => 1 - c));
    reasons = messagesOf((c) => c.name === 'significance');
  } else if (fullPassed && !benignWorse) {
    decision = 'APPROVE_FULL_DEPLOYMENT';
    confidence = Math.min(...fullConfidences);
    reasons = messagesOf((c) => c.name === 'significance' || c.name.endsWith('_full') || c.name.startsWith('baseline'));
  } else if (fullPassed || canaryPassed) {
    decision = 'APPROVE_CANARY';
    confidence = Math.min(...(fullPassed ? fullConfidences : canaryConfidences));
    reasons = messagesOf(
      (c) =>
        c.name === 'significance' ||
        (c.name.endsWith('_full') && !c.passed) ||
        c.name.endsWith('_canary') ||
        c.name.startsWith('baseline'),
    );
    if (fullPassed) reasons.unshift('meets every full-deployment bar but blocks more benign requests than the baseline');
  } else {
    decision = 'NEEDS_REVIEW';
    confidence = Math.max(...canaryConfidences.map((c) => 1 - c));
    reasons = messagesOf((c) => c.name.endsWith('_canary') || c.name === 'significance' || c.name.startsWith('baseline'));
  }
  // The sample-size note is useful context whenever it is not already the headline.
  if (!reasons.some((r) => r.startsWith('too few') || r.includes('meet the minimum'))) {
    reasons.push(...messagesOf((c) => c.name === 'sample_size'));
  }
  confidence = clamp01(confidence);
  invariant(Number.isFinite(confidence), 'recommend: confidence is finite');
  return { decision, confidence, risk, reasons, checks };
}
