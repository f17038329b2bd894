/**
 * Domain evaluation results → the proto's EvaluationResult (stored as its
 * canonical JSON). Every number is finite by construction (evaluate.ts asserts
 * it), so nothing NaN reaches the wire.
 */
import {
  Association,
  AucRocMethod,
  BaselineVerdict,
  Decision,
  EvaluationResult as ProtoEvaluationResult,
  RiskLevel,
  type AttackTypeBreakdown as ProtoBreakdown,
  type DetectionMetrics as ProtoMetrics,
  type Rate as ProtoRate,
  type SignificanceTest,
  type Thresholds,
} from '../../../gen/shieldx/shadow/v1/shadow';
import type { AttackTypeBreakdown, BaselineVerdict as DomainVerdict, EvaluationResult, RuleEvaluation } from '../evaluation/evaluate';
import type { RecommendationThresholds } from '../domain/recommendation';
import type { Association as DomainAssociation, ChiSquareTest, ConfusionMatrix, FisherExactTest, McNemarTest, Rate } from '../domain/statistics';

const DECISIONS: Record<string, Decision> = {
  APPROVE_FULL_DEPLOYMENT: Decision.DECISION_APPROVE_FULL_DEPLOYMENT,
  APPROVE_CANARY: Decision.DECISION_APPROVE_CANARY,
  NEEDS_REVIEW: Decision.DECISION_NEEDS_REVIEW,
  REJECT: Decision.DECISION_REJECT,
};
const RISKS: Record<string, RiskLevel> = {
  LOW: RiskLevel.RISK_LEVEL_LOW,
  MEDIUM: RiskLevel.RISK_LEVEL_MEDIUM,
  HIGH: RiskLevel.RISK_LEVEL_HIGH,
  CRITICAL: RiskLevel.RISK_LEVEL_CRITICAL,
};

const ASSOCIATIONS: Record<DomainAssociation, Association> = {
  positive: Association.ASSOCIATION_POSITIVE,
  negative: Association.ASSOCIATION_NEGATIVE,
  none: Association.ASSOCIATION_NONE,
};
const VERDICTS: Record<DomainVerdict, BaselineVerdict> = {
  candidate_better: BaselineVerdict.BASELINE_VERDICT_CANDIDATE_BETTER,
  baseline_better: BaselineVerdict.BASELINE_VERDICT_BASELINE_BETTER,
  no_significant_difference: BaselineVerdict.BASELINE_VERDICT_NO_SIGNIFICANT_DIFFERENCE,
};

/** An int64 count threshold as a number; beyond the safe range it is passed on as NaN, which resolveThresholds refuses. */
function count(value: bigint): number {
  return value > BigInt(Number.MAX_SAFE_INTEGER) || value < BigInt(Number.MIN_SAFE_INTEGER) ? Number.NaN : Number(value);
}

/** Proto thresholds (0 = default) → the domain's partial overrides; resolveThresholds validates them. */
export function thresholdsFromProto(thresholds: Thresholds | undefined): Partial<RecommendationThresholds> {
  const partial: { -readonly [K in keyof RecommendationThresholds]?: number } = {};
  if (!thresholds) return partial;
  if (thresholds.minPrecision !== 0) partial.minPrecision = thresholds.minPrecision;
  if (thresholds.minRecall !== 0) partial.minRecall = thresholds.minRecall;
  if (thresholds.maxFalsePositiveRate !== 0) partial.maxFalsePositiveRate = thresholds.maxFalsePositiveRate;
  if (thresholds.significanceLevel !== 0) partial.significanceLevel = thresholds.significanceLevel;
  if (thresholds.minSamples !== 0n) partial.minSamples = count(thresholds.minSamples);
  // Older stored rows and clients lack these fields: ts-proto's fromJSON gives 0, i.e. the default.
  if (thresholds.canaryMinPrecision) partial.canaryMinPrecision = thresholds.canaryMinPrecision;
  if (thresholds.canaryMinRecall) partial.canaryMinRecall = thresholds.canaryMinRecall;
  if (thresholds.canaryMaxFalsePositiveRate) partial.canaryMaxFalsePositiveRate = thresholds.canaryMaxFalsePositiveRate;
  if (thresholds.minSamplesPerClass) partial.minSamplesPerClass = count(thresholds.minSamplesPerClass);
  if (thresholds.confidenceLevel) partial.confidenceLevel = thresholds.confidenceLevel;
  return partial;
}

/** The thresholds applied (from resolveThresholds), every field set: what Evaluation.thresholds answers. */
export function thresholdsToProto(t: RecommendationThresholds): Thresholds {
  return {
    minPrecision: t.minPrecision,
    minRecall: t.minRecall,
    maxFalsePositiveRate: t.maxFalsePositiveRate,
    significanceLevel: t.significanceLevel,
    minSamples: BigInt(t.minSamples),
    canaryMinPrecision: t.canaryMinPrecision,
    canaryMinRecall: t.canaryMinRecall,
    canaryMaxFalsePositiveRate: t.canaryMaxFalsePositiveRate,
    minSamplesPerClass: BigInt(t.minSamplesPerClass),
    confidenceLevel: t.confidenceLevel,
  };
}

function matrix(m: ConfusionMatrix) {
  return { truePositives: BigInt(m.tp), falsePositives: BigInt(m.fp), trueNegatives: BigInt(m.tn), falseNegatives: BigInt(m.fn) };
}

function rate(r: Rate): ProtoRate {
  return {
    value: r.value,
    lower: r.defined ? r.lower : 0,
    upper: r.defined ? r.upper : 0,
    numerator: BigInt(r.numerator),
    denominator: BigInt(r.denominator),
    defined: r.defined,
  };
}

function metrics(evaluation: RuleEvaluation): ProtoMetrics {
  const m = evaluation.metrics;
  return {
    precision: rate(m.precision),
    recall: rate(m.recall),
    specificity: rate(m.specificity),
    falsePositiveRate: rate(m.falsePositiveRate),
    accuracy: rate(m.accuracy),
    f1: m.f1.value,
    mcc: m.mcc.value,
    balancedAccuracy: m.balancedAccuracy.value,
    aucRoc: evaluation.aucRoc.value,
    f1Defined: m.f1.defined,
    mccDefined: m.mcc.defined,
    balancedAccuracyDefined: m.balancedAccuracy.defined,
    aucRocDefined: evaluation.aucRoc.defined,
    negativePredictiveValue: rate(m.negativePredictiveValue),
    aucRocMethod: evaluation.scoreKind === 'graded' ? AucRocMethod.AUC_ROC_METHOD_RANKED : AucRocMethod.AUC_ROC_METHOD_BINARY,
  };
}

function chiSquare(chi: ChiSquareTest, alpha: number): SignificanceTest {
  return {
    name: chi.name,
    statistic: chi.statistic,
    pValue: chi.pValue,
    significant: chi.defined && chi.pValue < alpha,
    continuityCorrected: chi.continuityCorrected,
    defined: chi.defined,
    degreesOfFreedom: 1n,
  };
}

function fisher(test: FisherExactTest, alpha: number): SignificanceTest {
  return {
    name: test.name,
    statistic: 0,
    pValue: test.pValue,
    significant: test.defined && test.pValue < alpha,
    continuityCorrected: false,
    defined: test.defined,
    degreesOfFreedom: 0n,
  };
}

function breakdown(rows: readonly AttackTypeBreakdown[]): ProtoBreakdown[] {
  return rows.map((r) => ({ attackType: r.attackType, samples: BigInt(r.samples), fired: BigInt(r.fired), firingRate: rate(r.firingRate) }));
}

function mcnemar(test: McNemarTest, alpha: number): SignificanceTest {
  return {
    name: test.name,
    statistic: test.statistic,
    pValue: test.pValue,
    significant: test.defined && test.pValue < alpha,
    continuityCorrected: test.continuityCorrected,
    defined: test.defined,
    degreesOfFreedom: 1n,
  };
}

export function resultToProto(result: EvaluationResult): ProtoEvaluationResult {
  const alpha = result.thresholds.significanceLevel;
  const candidate = result.candidate;
  const chi = candidate.chiSquare;
  const totalMs = result.execution.timingsMs.total;
  return {
    samplesEvaluated: BigInt(result.samplesEvaluated),
    matrix: matrix(candidate.matrix),
    metrics: metrics(candidate),
    chiSquare: chiSquare(chi, alpha),
    chiSquareUncorrected: chiSquare(candidate.chiSquareUncorrected, alpha),
    fisherExact: candidate.fisherExact ? fisher(candidate.fisherExact, alpha) : undefined,
    association: {
      test: candidate.significance.test,
      pValue: candidate.significance.pValue,
      significant: candidate.significance.significant,
      association: ASSOCIATIONS[candidate.significance.association],
      minExpected: chi.minExpected,
    },
    byAttackType: breakdown(candidate.byAttackType),
    maliciousSamples: BigInt(result.maliciousSamples),
    benignSamples: BigInt(result.benignSamples),
    baseline: result.baseline
      ? (() => {
          const comparison = result.baseline.comparison;
          return {
            matrix: matrix(result.baseline.matrix),
            metrics: metrics(result.baseline),
            candidateOnlyCorrect: BigInt(comparison.candidateOnlyCorrect),
            baselineOnlyCorrect: BigInt(comparison.baselineOnlyCorrect),
            mcnemar: mcnemar(comparison.mcnemar, alpha),
            benignMcnemar: mcnemar(comparison.benign.mcnemar, alpha),
            benignCandidateOnlyCorrect: BigInt(comparison.benign.candidateOnlyCorrect),
            benignBaselineOnlyCorrect: BigInt(comparison.benign.baselineOnlyCorrect),
            maliciousMcnemar: mcnemar(comparison.malicious.mcnemar, alpha),
            maliciousCandidateOnlyCorrect: BigInt(comparison.malicious.candidateOnlyCorrect),
            maliciousBaselineOnlyCorrect: BigInt(comparison.malicious.baselineOnlyCorrect),
            verdict: VERDICTS[comparison.verdict],
            deltas: { ...comparison.deltas },
            byAttackType: breakdown(result.baseline.byAttackType),
          };
        })()
      : undefined,
    recommendation: {
      decision: DECISIONS[result.recommendation.decision] ?? Decision.DECISION_NEEDS_REVIEW,
      confidence: result.recommendation.confidence,
      risk: RISKS[result.recommendation.risk] ?? RiskLevel.RISK_LEVEL_HIGH,
      reasons: [...result.recommendation.reasons],
      checks: result.recommendation.checks.map((c) => ({ name: c.name, passed: c.passed, message: c.message })),
    },
    duration: { seconds: BigInt(Math.floor(totalMs / 1000)), nanos: Math.round((totalMs % 1000) * 1e6) },
  };
}

/** `DECISION_APPROVE_CANARY` etc.: what `shadow_evaluations.decision` stores (the rollout gate reads it). */
export function decisionName(result: EvaluationResult): string {
  return `DECISION_${result.recommendation.decision}`;
}
