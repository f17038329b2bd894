import { expect } from 'chai';
import { AnalysisVerdict, type AnalysisSnapshot } from '../../../gen/shieldx/shadow/v1/shadow';
import type { RolloutRow } from '../store/rollout-store';
import { advanceTo, decide, progressDeadlineFailure } from './rollout-controller';

const snapshot = (verdict: AnalysisVerdict): AnalysisSnapshot => ({
  verdict,
  canaryErrorRate: 0,
  stableErrorRate: 0,
  canaryP99LatencyMs: 0,
  stableP99LatencyMs: 0,
  canaryRequests: 0n,
  stableRequests: 0n,
  detail: '',
  metrics: [],
});
const row = (overrides: Partial<RolloutRow> = {}): RolloutRow =>
  ({
    id: 'r',
    state: 'PROGRESSING',
    steps: [10, 50, 100],
    currentStep: 0,
    canaryWeight: 10,
    inconclusiveCount: 0,
    unhealthyCount: 0,
    failureThreshold: 1,
    maxInconclusive: 3,
    autoRollback: true,
    manualPromotion: false,
    progressDeadlineMs: 600_000,
    stepDue: true,
    ...overrides,
  }) as RolloutRow;

describe('rollout decisions (pure)', () => {
  // failure_threshold: unhealthy analyses in a row hold the step until the threshold, then roll back.
  it('rolls back after failure_threshold unhealthy analyses in a row', () => {
    const first = decide(row({ failureThreshold: 3 }), snapshot(AnalysisVerdict.ANALYSIS_VERDICT_UNHEALTHY))!;
    expect([first.to, first.reason, first.unhealthyCount, first.canaryWeight]).to.deep.equal(['PROGRESSING', 'ANALYSIS_UNHEALTHY_HOLD', 1, 10]);
    const third = decide(row({ failureThreshold: 3, unhealthyCount: 2 }), snapshot(AnalysisVerdict.ANALYSIS_VERDICT_UNHEALTHY))!;
    expect([third.to, third.reason, third.canaryWeight]).to.deep.equal(['ROLLED_BACK', 'ANALYSIS_UNHEALTHY', 0]);
    // A healthy analysis resets the count (the step advances with unhealthy_count 0).
    const healthy = decide(row({ failureThreshold: 3, unhealthyCount: 2 }), snapshot(AnalysisVerdict.ANALYSIS_VERDICT_HEALTHY))!;
    expect([healthy.to, healthy.step, healthy.unhealthyCount ?? 0]).to.deep.equal(['PROGRESSING', 1, 0]);
  });

  // Without auto rollback the step is held whatever the count.
  it('holds an unhealthy canary when auto rollback is disabled', () => {
    const held = decide(row({ autoRollback: false, unhealthyCount: 10 }), snapshot(AnalysisVerdict.ANALYSIS_VERDICT_UNHEALTHY))!;
    expect([held.to, held.reason, held.canaryWeight]).to.deep.equal(['PROGRESSING', 'ANALYSIS_UNHEALTHY_HOLD', 10]);
  });

  // At the gate: healthy changes nothing (undefined: recorded without an event), unhealthy rolls back, inconclusive holds.
  it('analyses at the manual gate like a step', () => {
    const gated = row({ state: 'AWAITING_PROMOTION', manualPromotion: true, currentStep: 1, canaryWeight: 50 });
    expect(decide(gated, snapshot(AnalysisVerdict.ANALYSIS_VERDICT_HEALTHY))).to.equal(undefined);
    expect(decide(gated, snapshot(AnalysisVerdict.ANALYSIS_VERDICT_UNHEALTHY))!.to).to.equal('ROLLED_BACK');
    const inconclusive = decide(gated, snapshot(AnalysisVerdict.ANALYSIS_VERDICT_INCONCLUSIVE))!;
    expect([inconclusive.to, inconclusive.reason, inconclusive.canaryWeight]).to.deep.equal(['AWAITING_PROMOTION', 'ANALYSIS_INCONCLUSIVE_HOLD', 50]);
    // Entering the gate restarts the step clock (analysis continues) and counts as progress.
    const entering = advanceTo(row({ manualPromotion: true, currentStep: 1, canaryWeight: 50 }), 2, 'STEP_ADVANCED');
    expect([entering.to, entering.restartStepClock, entering.progressed]).to.deep.equal(['AWAITING_PROMOTION', true, true]);
  });

  // analysis.interval: within a step (its duration not yet run) a healthy analysis changes nothing but the counts,
  // an unhealthy one counts toward failure_threshold (rolling back on reaching it) and keeps the step's clock.
  it('counts analyses within a step without advancing it', () => {
    const within = row({ stepDue: false, failureThreshold: 2 });
    expect(decide(within, snapshot(AnalysisVerdict.ANALYSIS_VERDICT_HEALTHY))).to.equal(undefined);
    const first = decide(within, snapshot(AnalysisVerdict.ANALYSIS_VERDICT_UNHEALTHY))!;
    expect([first.to, first.reason, first.unhealthyCount, first.restartStepClock]).to.deep.equal(['PROGRESSING', 'ANALYSIS_UNHEALTHY_HOLD', 1, false]);
    const second = decide(row({ stepDue: false, failureThreshold: 2, unhealthyCount: 1 }), snapshot(AnalysisVerdict.ANALYSIS_VERDICT_UNHEALTHY))!;
    expect([second.to, second.canaryWeight]).to.deep.equal(['ROLLED_BACK', 0]);
    const inconclusive = decide(within, snapshot(AnalysisVerdict.ANALYSIS_VERDICT_INCONCLUSIVE))!;
    expect([inconclusive.reason, inconclusive.inconclusiveCount, inconclusive.restartStepClock]).to.deep.equal(['ANALYSIS_INCONCLUSIVE_HOLD', 1, false]);
    // At the end of the step a hold waits a whole step again, as before.
    expect(decide(row({ failureThreshold: 2 }), snapshot(AnalysisVerdict.ANALYSIS_VERDICT_UNHEALTHY))!.restartStepClock).to.equal(true);
  });

  // The progress deadline fails a live rollout back to weight 0, naming the deadline.
  it('fails a rollout past its progress deadline', () => {
    const failed = progressDeadlineFailure(row({ state: 'AWAITING_PROMOTION', canaryWeight: 50 }));
    expect([failed.to, failed.canaryWeight, failed.reason]).to.deep.equal(['FAILED', 0, 'PROGRESS_DEADLINE_EXCEEDED: no step advanced for 600 s']);
  });
});
