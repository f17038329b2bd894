/**
 * Domain evaluation results → the proto's EvaluationResult (stored as its
 * canonical JSON). Every number is finite by construction (evaluate.ts asserts
 * it), so nothing NaN reaches the wire.
 */
import {
  Decision,
  EvaluationResult as ProtoEvaluationResult,
  RiskLevel,
  type DetectionMetrics as ProtoMetrics,
  type Rate as ProtoRate,
  type SignificanceTest,
  type Thresholds,
} from '../../../gen/shieldx/shadow/v1/shadow';
import type { EvaluationResult, RuleEvaluation } from '../evaluation/evaluate';
import type { RecommendationThresholds } from '../domain/recommendation';
import type { ConfusionMatrix, McNemarTest, Rate } from '../domain/statistics';

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

/** Proto thresholds (0 = default) → the domain's partial overrides. */
export function thresholdsFromProto(thresholds: Thresholds | undefined): Partial<RecommendationThresholds> {
  const partial: { -readonly [K in keyof RecommendationThresholds]?: number } = {};
  if (!thresholds) return partial;
  if (thresholds.minPrecision !== 0) partial.minPrecision = thresholds.minPrecision;
  if (thresholds.minRecall !== 0) partial.minRecall = thresholds.minRecall;
  if (thresholds.maxFalsePositiveRate !== 0) partial.maxFalsePositiveRate = thresholds.maxFalsePositiveRate;
  if (thresholds.significanceLevel !== 0) partial.significanceLevel = thresholds.significanceLevel;
  if (thresholds.minSamples !== 0n) partial.minSamples = Number(thresholds.minSamples);
  return partial;
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
  };
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
    chiSquare: {
      name: chi.name,
      statistic: chi.statistic,
      pValue: chi.pValue,
      significant: chi.defined && chi.pValue < alpha,
      continuityCorrected: chi.continuityCorrected,
      defined: chi.defined,
      degreesOfFreedom: 1n,
    },
    baseline: result.baseline
      ? {
          matrix: matrix(result.baseline.matrix),
          metrics: metrics(result.baseline),
          candidateOnlyCorrect: BigInt(result.baseline.comparison.candidateOnlyCorrect),
          baselineOnlyCorrect: BigInt(result.baseline.comparison.baselineOnlyCorrect),
          mcnemar: mcnemar(result.baseline.comparison.mcnemar, alpha),
        }
      : undefined,
    recommendation: {
      decision: DECISIONS[result.recommendation.decision] ?? Decision.DECISION_NEEDS_REVIEW,
      confidence: result.recommendation.confidence,
      risk: RISKS[result.recommendation.risk] ?? RiskLevel.RISK_LEVEL_HIGH,
      reasons: [...result.recommendation.reasons],
    },
    duration: { seconds: BigInt(Math.floor(totalMs / 1000)), nanos: Math.round((totalMs % 1000) * 1e6) },
  };
}

/** `DECISION_APPROVE_CANARY` etc.: what `shadow_evaluations.decision` stores (the rollout gate reads it). */
export function decisionName(result: EvaluationResult): string {
  return `DECISION_${result.recommendation.decision}`;
}
