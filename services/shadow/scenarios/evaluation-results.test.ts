/**
 * Issue 20 over real gRPC: what a reviewer reads to approve a rule is on the wire — the association
 * test that decided (Fisher beside Yates' and the uncorrected chi-square), defined flags, NPV, the
 * per-attack-type breakdown, the benign-only McNemar, the verdict and deltas, every gate, the
 * thresholds applied, and a ranking AUC from the samples' own scores.
 */
import { expect } from 'chai';
import { randomUUID } from 'node:crypto';
import { status as grpcStatus } from '@grpc/grpc-js';
import {
  Association,
  AucRocMethod,
  BaselineVerdict,
  Decision,
  EvaluationState,
  ShadowServiceClient,
  Thresholds,
  type Evaluation,
  type IngestSamplesResponse,
  type Rule,
  type StartEvaluationRequest,
  type TrafficSample as ProtoSample,
} from '../../../gen/shieldx/shadow/v1/shadow';
import { errorDetails } from '../../../platform/grpc-errors';
import type { RunningService } from '../../../platform/server';
import { address, bearer, insecure, startTestService, testKeys, waitFor } from '../../../testing/harness';
import { shadowService } from '..';

let seq = 0;
function sample(path: string, attackType: string, score?: number): ProtoSample {
  const i = seq++;
  return {
    timestamp: new Date(Date.UTC(2024, 5, 1) + i * 1000),
    clientKey: `k${i}`,
    clientIp: `198.51.${i >> 8}.${i & 255}`,
    method: 'GET',
    path,
    status: 200,
    userAgent: 'Mozilla/5.0',
    headers: {},
    requestBytes: 300n,
    malicious: attackType !== '',
    attackType,
    score,
  };
}

/** Issue 20's table for the rule ^/hit: TP 2, FP 2, FN 8 (scanner/sqli alternating), TN 88. */
function issueTable(): ProtoSample[] {
  const out: ProtoSample[] = [];
  for (let k = 0; k < 2; k++) out.push(sample(`/hit/${k}`, 'scanner'));
  for (let k = 0; k < 2; k++) out.push(sample(`/hit-docs/${k}`, ''));
  for (let k = 0; k < 8; k++) out.push(sample(`/miss/${k}`, k % 2 === 0 ? 'scanner' : 'sqli'));
  for (let k = 0; k < 88; k++) out.push(sample(`/page/${k}`, ''));
  return out;
}

const hitRule: Rule = { kind: { $case: 'pathPattern', value: { patterns: ['^/hit'], caseInsensitive: false } } };
const hitOnlyRule: Rule = { kind: { $case: 'pathPattern', value: { patterns: ['^/hit/'], caseInsensitive: false } } };

describe('shadow evaluation results over gRPC (issue 20)', function () {
  this.timeout(60_000);
  let service: RunningService;
  let client: ShadowServiceClient;
  const table = `i20-${randomUUID().slice(0, 8)}`;
  const scored = `i20s-${randomUUID().slice(0, 8)}`;

  const ingest = (dataset: string, samples: ProtoSample[]) =>
    new Promise<{ error: unknown; response?: IngestSamplesResponse }>((resolve) => {
      const stream = client.ingestSamples(bearer(testKeys.shadowWriter), (error, response) => resolve({ error, response }));
      stream.write({ dataset, samples, idempotencyKey: '' });
      stream.end();
    });
  const start = (request: Partial<StartEvaluationRequest>) =>
    new Promise<{ error: unknown; evaluation?: Evaluation }>((resolve) =>
      client.startEvaluation(
        { name: '', rule: undefined, baselineRule: undefined, selection: undefined, thresholds: undefined, idempotencyKey: '', ...request },
        bearer(testKeys.shadowWriter),
        (error, response) => resolve({ error, evaluation: response?.evaluation }),
      ),
    );
  const done = (id: string): Promise<Evaluation> =>
    waitFor(`evaluation ${id} to finish`, async () => {
      const evaluation = await new Promise<Evaluation | undefined>((resolve) =>
        client.getEvaluation({ id }, bearer(testKeys.shadowWriter), (_error, response) => resolve(response?.evaluation)),
      );
      const finished = evaluation && (evaluation.state === EvaluationState.EVALUATION_STATE_SUCCEEDED || evaluation.state === EvaluationState.EVALUATION_STATE_FAILED);
      return finished ? evaluation : undefined;
    });

  before(async () => {
    service = await startTestService(shadowService, { ROLLOUT_CONTROLLER: 'off' });
    client = new ShadowServiceClient(address(service), insecure);
    expect((await ingest(table, issueTable())).response).to.deep.include({ accepted: 100n, rejected: 0n });
    // scikit-learn's roc_auc_score documentation example: y = [0, 0, 1, 1], scores = [0.1, 0.4, 0.35, 0.8] → 0.75.
    const sk = [sample('/a', '', 0.1), sample('/b', '', 0.4), sample('/c', 'scanner', 0.35), sample('/d', 'scanner', 0.8)];
    const bad = { ...sample('/e', ''), score: -1 };
    const { response } = await ingest(scored, [...sk, bad]);
    expect(response).to.deep.include({ accepted: 4n, rejected: 1n });
    expect(response!.rejectedSamples[0]!.reason).to.match(/^score:/);
  });
  after(async () => {
    client.close();
    await service.shutdown();
  });

  // Item 2, 3, 5, 6 on issue 20's table (2, 2, 8, 88) against a baseline that does not block the /hit-docs pages.
  it('answers the deciding test, defined flags, NPV, breakdown, benign McNemar, deltas and the thresholds applied', async () => {
    const thresholds = Thresholds.fromPartial({ confidenceLevel: 0.9, minSamplesPerClass: 5n, canaryMinPrecision: 0.6 });
    const started = await start({ name: 'hit', rule: hitRule, baselineRule: hitOnlyRule, selection: { dataset: table, limit: 0n }, thresholds });
    expect(started.error).to.equal(null);
    const applied = {
      minPrecision: 0.95,
      minRecall: 0.8,
      maxFalsePositiveRate: 0.01,
      significanceLevel: 0.05,
      minSamples: 100n,
      canaryMinPrecision: 0.6,
      canaryMinRecall: 0.5,
      canaryMaxFalsePositiveRate: 0.05,
      minSamplesPerClass: 5n,
      confidenceLevel: 0.9,
    };
    // Item 6: the applied values, defaults filled in, already on the PENDING job and on the finished one.
    expect(started.evaluation!.thresholds).to.deep.equal(applied);
    const evaluation = await done(started.evaluation!.id);
    expect(evaluation.state, evaluation.error).to.equal(EvaluationState.EVALUATION_STATE_SUCCEEDED);
    expect(evaluation.thresholds).to.deep.equal(applied);
    const r = evaluation.result!;
    expect(r).to.include({ samplesEvaluated: 100n, maliciousSamples: 10n, benignSamples: 90n });
    // Item 2: Yates says not significant (p = 0.0613), Fisher (p = 0.0488) decided, and the wire says so.
    expect(r.chiSquare).to.include({ significant: false, continuityCorrected: true });
    expect(r.chiSquare!.pValue).to.be.closeTo(0.0613, 1e-4);
    expect(r.chiSquareUncorrected!.statistic).to.be.closeTo(200 / 27, 1e-12);
    expect(r.fisherExact!.pValue).to.be.closeTo(0.0488, 1e-4);
    expect(r.association).to.include({ test: 'fisher_exact', significant: true, association: Association.ASSOCIATION_POSITIVE });
    expect(r.association!.minExpected).to.be.closeTo(0.4, 1e-12);
    // Item 3 and 5: defined flags and NPV = 88/96 with its 90% Wilson interval.
    expect(r.metrics).to.include({ f1Defined: true, mccDefined: true, balancedAccuracyDefined: true, aucRocDefined: true });
    expect(r.metrics!.aucRocMethod).to.equal(AucRocMethod.AUC_ROC_METHOD_BINARY);
    expect(r.metrics!.negativePredictiveValue).to.include({ numerator: 88n, denominator: 96n, defined: true });
    // Item 6: the confidence level reaches the intervals: 2/4 at z = Φ⁻¹(0.95) = 1.6448536269514722 (scipy norm.ppf).
    const z = 1.6448536269514722;
    const center = (0.5 + (z * z) / 8) / (1 + (z * z) / 4);
    const half = (z / (1 + (z * z) / 4)) * Math.sqrt(0.25 / 4 + (z * z) / 64);
    expect(r.metrics!.precision!.lower).to.be.closeTo(center - half, 1e-12);
    expect(r.byAttackType.map((b) => [b.attackType, b.samples, b.fired])).to.deep.equal([
      ['', 90n, 2n],
      ['scanner', 6n, 2n],
      ['sqli', 4n, 0n],
    ]);
    // Item 5: the baseline comparison. The candidate alone blocks the 2 /hit-docs pages: benign b = 2, c = 0.
    const b = r.baseline!;
    expect(b).to.include({ benignBaselineOnlyCorrect: 2n, benignCandidateOnlyCorrect: 0n, baselineOnlyCorrect: 2n, candidateOnlyCorrect: 0n });
    expect(b.benignMcnemar).to.include({ name: 'mcnemar_exact', pValue: 0.5, significant: false }); // 2·P(X ≤ 0), X ~ Bin(2, ½)
    expect(b.verdict).to.equal(BaselineVerdict.BASELINE_VERDICT_NO_SIGNIFICANT_DIFFERENCE);
    expect(b.deltas!.falsePositiveRate).to.be.closeTo(2 / 90, 1e-15);
    expect(b.byAttackType.map((x) => [x.attackType, x.fired])).to.deep.equal([
      ['', 0n],
      ['scanner', 2n],
      ['sqli', 0n],
    ]);
    // Every gate, and the one that names the deciding test.
    const checks = r.recommendation!.checks;
    expect(checks.map((c) => c.name)).to.include.members(['significance', 'precision_full', 'precision_canary', 'sample_size', 'baseline', 'baseline_benign']);
    expect(checks.find((c) => c.name === 'significance')!.message).to.match(/fisher_exact p=0\.0488/);
    expect(r.recommendation!.decision).to.equal(Decision.DECISION_NEEDS_REVIEW);
  });

  // Item 4: a score rule over samples carrying scores gives the ranking AUC of scikit-learn's example.
  it("ranks by the samples' scores for a score rule", async () => {
    const rule: Rule = { kind: { $case: 'score', value: { minScore: 0.38 } } };
    const started = await start({ rule, selection: { dataset: scored, limit: 0n } });
    expect(started.error).to.equal(null);
    const r = (await done(started.evaluation!.id)).result!;
    expect(r.metrics).to.include({ aucRoc: 0.75, aucRocDefined: true, aucRocMethod: AucRocMethod.AUC_ROC_METHOD_RANKED });
    expect(r.metrics).to.include({ balancedAccuracy: 0.5 });
    expect(r.matrix).to.deep.equal({ truePositives: 1n, falsePositives: 1n, trueNegatives: 1n, falseNegatives: 1n });
  });

  // Item 6: each new threshold is validated, INVALID_ARGUMENT naming its proto field; a bad score rule names its field.
  it('refuses bad thresholds and score rules naming the field', async () => {
    const cases: [Partial<Thresholds>, string][] = [
      [{ confidenceLevel: 0.3 }, 'thresholds.confidence_level'],
      [{ canaryMinPrecision: 0.99 }, 'thresholds.canary_min_precision'],
      [{ canaryMinRecall: 0.9 }, 'thresholds.canary_min_recall'],
      [{ canaryMaxFalsePositiveRate: 1.5 }, 'thresholds.canary_max_false_positive_rate'],
      [{ minSamplesPerClass: -1n }, 'thresholds.min_samples_per_class'],
    ];
    for (const [t, field] of cases) {
      const details = errorDetails((await start({ rule: hitRule, selection: { dataset: table, limit: 0n }, thresholds: Thresholds.fromPartial(t) })).error);
      expect(details, field).to.include({ code: grpcStatus.INVALID_ARGUMENT, reason: 'INVALID_ARGUMENT' });
      expect(details!.fieldViolations[0]!.field).to.equal(field);
    }
    const badRule: Rule = { kind: { $case: 'score', value: { minScore: 0 } } };
    const details = errorDetails((await start({ rule: badRule, selection: { dataset: scored, limit: 0n } })).error);
    expect(details!.fieldViolations[0]!.field).to.equal('rule.score.min_score');
  });
});
