/**
 * The one entry point of the shadow evaluation domain: replay a candidate rule
 * (and optionally the baseline in production) over labelled samples, compute
 * every statistic, and recommend a decision.
 *
 * Used by the gRPC StartEvaluation job (which loads the samples from
 * PostgreSQL — ideally straight into a SampleColumnsBuilder) and by
 * bench/shadow-evaluate.ts. No gRPC, no database here: input errors are thrown
 * as ServiceErrors (errors.ts: INVALID_RULE; INVALID_ARGUMENT for thresholds) with a
 * proto field path, which reach the caller as they are.
 *
 * Invariants asserted before returning: every number in the result is finite
 * (nothing NaN/Infinity reaches the wire) and the matrix adds up to the sample
 * count.
 */
import { chooseWorkerCount, runPlan } from './evaluation-workers';
import {
  recommend,
  resolveThresholds,
  type BaselineSummary,
  type Recommendation,
  type RecommendationThresholds,
  type SignificanceSummary,
} from '../domain/recommendation';
import { planReplay, type ReplayOutput } from '../domain/replay';
import { compileRule, describeRule, hasGradedScore, ruleHeaderNames, type RuleConfig } from '../domain/rules';
import { isSampleColumns, toSampleColumns, type SampleColumns } from '../domain/sample-columns';
import {
  aucFromMatrix,
  aucRoc,
  chiSquareIndependence,
  confusionMatrix,
  detectionMetrics,
  fisherExact,
  mcnemarTest,
  pairedDisagreements,
  rate,
  zForConfidence,
  type AucResult,
  type ChiSquareTest,
  type ConfusionMatrix,
  type DetectionMetrics,
  type FisherExactTest,
  type McNemarTest,
  type Rate,
} from '../domain/statistics';
import type { TrafficSample } from '../domain/traffic-sample';
import { invariant } from '../../../platform/invariant';

export interface EvaluateRuleInput {
  /** Labelled samples, as objects or already columnar (see SampleColumnsBuilder). */
  readonly samples: readonly TrafficSample[] | SampleColumns;
  /** The candidate rule; validated here (errors name `rule.…`). */
  readonly rule: RuleConfig;
  /** The rule in production, compared pairwise (errors name `baseline_rule.…`). */
  readonly baseline?: RuleConfig;
  /** Overrides of DEFAULT_THRESHOLDS. */
  readonly thresholds?: Partial<RecommendationThresholds>;
  /** Worker threads: a number (0 = single-threaded) or 'auto' (default; see chooseWorkerCount). */
  readonly workers?: number | 'auto';
}

/** How often a rule fires on one attack type ('' = benign, where the rate is the false-positive rate). */
export interface AttackTypeBreakdown {
  readonly attackType: string;
  readonly samples: number;
  readonly fired: number;
  readonly firingRate: Rate;
}

/** Everything measured about one rule on the samples. */
export interface RuleEvaluation {
  readonly description: string;
  readonly fired: number;
  readonly matrix: ConfusionMatrix;
  readonly metrics: DetectionMetrics;
  readonly aucRoc: AucResult;
  /** 'graded' when the rule's score is graded (rules.ts hasGradedScore: AUC ranks by it), 'binary' when AUC = balanced accuracy. */
  readonly scoreKind: 'graded' | 'binary';
  /** Pearson chi-square with Yates' continuity correction (the one decisions use unless expected counts < 5). */
  readonly chiSquare: ChiSquareTest;
  /** The same test without Yates' correction, for reference. */
  readonly chiSquareUncorrected: ChiSquareTest;
  /** Fisher's exact test, computed when an expected count is below 5. */
  readonly fisherExact: FisherExactTest | null;
  /** The association test the recommendation used and whether it is significant at the significance level. */
  readonly significance: SignificanceSummary & { readonly significant: boolean };
  readonly byAttackType: readonly AttackTypeBreakdown[];
}

export type BaselineVerdict = 'candidate_better' | 'baseline_better' | 'no_significant_difference';

/** Candidate vs baseline on the same samples. */
export interface BaselineComparison {
  /** Samples the candidate gets right and the baseline wrong. */
  readonly candidateOnlyCorrect: number;
  /** Samples the baseline gets right and the candidate wrong. */
  readonly baselineOnlyCorrect: number;
  /** McNemar on all discordant samples (b = baselineOnlyCorrect, c = candidateOnlyCorrect). */
  readonly mcnemar: McNemarTest;
  readonly verdict: BaselineVerdict;
  /** Discordant benign samples: who did not block a legitimate request. */
  readonly benign: { readonly candidateOnlyCorrect: number; readonly baselineOnlyCorrect: number; readonly mcnemar: McNemarTest };
  /** Discordant malicious samples: who caught an attack. */
  readonly malicious: { readonly candidateOnlyCorrect: number; readonly baselineOnlyCorrect: number; readonly mcnemar: McNemarTest };
  /** Candidate minus baseline point estimates. */
  readonly deltas: {
    readonly precision: number;
    readonly recall: number;
    readonly falsePositiveRate: number;
    readonly f1: number;
    readonly mcc: number;
  };
}

export interface EvaluationResult {
  readonly samplesEvaluated: number;
  readonly maliciousSamples: number;
  readonly benignSamples: number;
  readonly candidate: RuleEvaluation;
  /** Present when a baseline rule was given. */
  readonly baseline: (RuleEvaluation & { readonly comparison: BaselineComparison }) | null;
  readonly recommendation: Recommendation;
  /** The thresholds actually applied (defaults filled in). */
  readonly thresholds: RecommendationThresholds;
  readonly execution: {
    readonly workers: number;
    readonly mode: 'single_thread' | 'worker_threads';
    readonly timingsMs: {
      /** Building interned columns from sample objects (0 when given columns). */
      readonly columns: number;
      /** Planning and replaying both rules. */
      readonly replay: number;
      readonly statistics: number;
      readonly total: number;
    };
  };
}

function assertFinite(value: unknown, path: string): void {
  if (typeof value === 'number') {
    invariant(Number.isFinite(value), `evaluation result ${path} is finite (it is ${value})`);
  } else if (Array.isArray(value)) {
    value.forEach((v, i) => assertFinite(v, `${path}[${i}]`));
  } else if (value !== null && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) assertFinite(v, `${path}.${k}`);
  }
}

function breakdown(columns: SampleColumns, predictions: Uint8Array, z: number): AttackTypeBreakdown[] {
  const types = columns.attackType.values;
  const totals = new Float64Array(types.length);
  const fired = new Float64Array(types.length);
  const ids = columns.attackType.ids;
  for (let i = 0; i < columns.length; i++) {
    totals[ids[i]]++;
    fired[ids[i]] += predictions[i];
  }
  return types
    .map((attackType, id) => ({
      attackType,
      samples: totals[id],
      fired: fired[id],
      firingRate: rate(fired[id], totals[id], z),
    }))
    .sort((a, b) => (a.attackType < b.attackType ? -1 : a.attackType > b.attackType ? 1 : 0));
}

function evaluateOne(
  description: string,
  output: ReplayOutput,
  columns: SampleColumns,
  graded: boolean,
  thresholds: RecommendationThresholds,
): RuleEvaluation {
  const labels = columns.malicious;
  const matrix = confusionMatrix(output.predictions, labels);
  const metrics = detectionMetrics(matrix, thresholds.confidenceLevel);
  // A 0/1 score gives AUC = balanced accuracy; skip the sort and take the same Mann–Whitney formula on the matrix.
  const auc: AucResult = graded ? aucRoc(output.scores, labels) : aucFromMatrix(matrix);
  const chiSquare = chiSquareIndependence(matrix, { yates: true });
  const chiSquareUncorrected = chiSquareIndependence(matrix, { yates: false });
  const useFisher = chiSquare.defined && chiSquare.minExpected < 5;
  const fisher = useFisher ? fisherExact(matrix) : null;
  const pValue = fisher ? fisher.pValue : chiSquare.pValue;
  return {
    description,
    fired: output.fired,
    matrix,
    metrics,
    aucRoc: auc,
    scoreKind: graded ? 'graded' : 'binary',
    chiSquare,
    chiSquareUncorrected,
    fisherExact: fisher,
    significance: {
      test: fisher ? 'fisher_exact' : 'chi_square_independence',
      pValue,
      association: chiSquare.association,
      significant: chiSquare.association === 'positive' && pValue < thresholds.significanceLevel,
    },
    byAttackType: breakdown(columns, output.predictions, zForConfidence(thresholds.confidenceLevel)),
  };
}

/**
 * Replays `rule` (and `baseline`) over the samples and judges it.
 * @throws ServiceError INVALID_RULE / INVALID_ARGUMENT on invalid input (field paths in proto names).
 */
export async function evaluateRule(input: EvaluateRuleInput): Promise<EvaluationResult> {
  const started = performance.now();
  const thresholds = resolveThresholds(input.thresholds);
  const candidateRule = compileRule(input.rule, 'rule');
  const baselineRule = input.baseline === undefined ? null : compileRule(input.baseline, 'baseline_rule');

  const columnsStarted = performance.now();
  let columns: SampleColumns;
  if (isSampleColumns(input.samples)) {
    columns = input.samples;
  } else {
    const headerNames = new Set(ruleHeaderNames(input.rule));
    if (input.baseline) for (const h of ruleHeaderNames(input.baseline)) headerNames.add(h);
    columns = toSampleColumns(input.samples as readonly TrafficSample[], headerNames);
  }
  const columnsMs = isSampleColumns(input.samples) ? 0 : performance.now() - columnsStarted;

  const replayStarted = performance.now();
  const workers = chooseWorkerCount(columns.length, input.workers ?? 'auto');
  const plan = planReplay(baselineRule ? [candidateRule, baselineRule] : [candidateRule], columns);
  const outputs = await runPlan(plan, columns, workers);
  const replayMs = performance.now() - replayStarted;

  const statisticsStarted = performance.now();
  const candidate = evaluateOne(describeRule(input.rule), outputs[0], columns, hasGradedScore(candidateRule), thresholds);
  let baseline: EvaluationResult['baseline'] = null;
  let baselineSummary: BaselineSummary | undefined;
  if (baselineRule && input.baseline) {
    const base = evaluateOne(describeRule(input.baseline), outputs[1], columns, hasGradedScore(baselineRule), thresholds);
    const pairs = pairedDisagreements(outputs[0].predictions, outputs[1].predictions, columns.malicious);
    const mcnemar = mcnemarTest(pairs.baselineOnlyCorrect, pairs.candidateOnlyCorrect);
    const benignMcnemar = mcnemarTest(pairs.benign.baselineOnlyCorrect, pairs.benign.candidateOnlyCorrect);
    const maliciousMcnemar = mcnemarTest(pairs.malicious.baselineOnlyCorrect, pairs.malicious.candidateOnlyCorrect);
    const significant = mcnemar.defined && mcnemar.pValue < thresholds.significanceLevel;
    const verdict: BaselineVerdict = !significant
      ? 'no_significant_difference'
      : pairs.candidateOnlyCorrect > pairs.baselineOnlyCorrect
        ? 'candidate_better'
        : 'baseline_better';
    const c = candidate.metrics;
    const b = base.metrics;
    baseline = {
      ...base,
      comparison: {
        candidateOnlyCorrect: pairs.candidateOnlyCorrect,
        baselineOnlyCorrect: pairs.baselineOnlyCorrect,
        mcnemar,
        verdict,
        benign: { ...pairs.benign, mcnemar: benignMcnemar },
        malicious: { ...pairs.malicious, mcnemar: maliciousMcnemar },
        deltas: {
          precision: c.precision.value - b.precision.value,
          recall: c.recall.value - b.recall.value,
          falsePositiveRate: c.falsePositiveRate.value - b.falsePositiveRate.value,
          f1: c.f1.value - b.f1.value,
          mcc: c.mcc.value - b.mcc.value,
        },
      },
    };
    baselineSummary = {
      mcnemar,
      candidateOnlyCorrect: pairs.candidateOnlyCorrect,
      baselineOnlyCorrect: pairs.baselineOnlyCorrect,
      benignMcnemar,
      benignCandidateOnlyCorrect: pairs.benign.candidateOnlyCorrect,
      benignBaselineOnlyCorrect: pairs.benign.baselineOnlyCorrect,
    };
  }
  const recommendation = recommend(
    { matrix: candidate.matrix, metrics: candidate.metrics, significance: candidate.significance, baseline: baselineSummary },
    thresholds,
  );
  const statisticsMs = performance.now() - statisticsStarted;

  const m = candidate.matrix;
  const malicious = m.tp + m.fn;
  const result: EvaluationResult = {
    samplesEvaluated: columns.length,
    maliciousSamples: malicious,
    benignSamples: columns.length - malicious,
    candidate,
    baseline,
    recommendation,
    thresholds,
    execution: {
      workers,
      mode: workers > 0 ? 'worker_threads' : 'single_thread',
      timingsMs: { columns: columnsMs, replay: replayMs, statistics: statisticsMs, total: performance.now() - started },
    },
  };
  invariant(m.tp + m.fp + m.fn + m.tn === columns.length, 'the confusion matrix adds up to the sample count');
  assertFinite(result, 'result');
  return result;
}
