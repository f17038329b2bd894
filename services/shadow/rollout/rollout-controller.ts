/**
 * The canary rollout controller: a reconcile loop, run by whichever shadow
 * replica holds the `rollout-controller` lease, that drives each rollout's
 * persisted state machine and makes the traffic router show the weight the
 * state implies.
 *
 *   PENDING ──start──▶ PROGRESSING(step i, weight steps[i]) ──healthy──▶ PROGRESSING(i+1)
 *      │                 │  │  │                                  └──▶ AWAITING_PROMOTION (manual gate
 *      │                 │  │  │                                        before the last step; still analysed)
 *      │                 │  │  └─inconclusive (hold; FAILED after max_inconclusive in a row)
 *      │                 │  └────unhealthy × failure_threshold, auto rollback (default) ──▶ ROLLED_BACK (weight 0)
 *      │                 └───────last step reached ─────────▶ SUCCEEDED (weight 100)
 *      └── AbortRollout (any live state) ─────────────────────▶ ABORTED (weight 0)
 *   (any live state) ── VirtualService misconfigured (RouterConfigError) ──▶ FAILED (weight 0)
 *   (any live state) ── no step advanced for progress_deadline ───────────▶ FAILED (weight 0)
 *
 * Every tick also re-checks a live rollout's split and puts it back if something else changed it
 * (drift correction; the step's clock restarts). Every write carries the lease epoch (fencing,
 * traffic-router.ts). An analysis is cut at what is left of the lease: a slow Prometheus yields
 * INCONCLUSIVE verdicts that count, never a silent stall.
 *
 * Crash safety: each transition is one compare-and-set transaction on the
 * row's version (rollout-store.ts), the router is written *after* the commit
 * with weights derived from the committed state, and `applied_weight` records
 * what the router confirmed. A controller killed anywhere resumes from the
 * database: a committed step is never taken twice, an unapplied weight is
 * re-applied (idempotently), and a step's clock starts when its split took
 * effect.
 *
 * Only the leader writes to the router; RPC handlers on any replica change
 * state in the database and wake the local controller (the leader applies the
 * new weight within one tick).
 */
import { performance } from 'node:perf_hooks';
import type pg from 'pg';
import { Counter, Gauge, type Registry } from 'prom-client';
import { AnalysisVerdict, type AnalysisSnapshot } from '../../../gen/shieldx/shadow/v1/shadow';
import type { Logger } from '../../../platform/logger';
import { analyse, type PrometheusClient } from './rollout-analysis';
import type { PgLease } from '../store/rollout-lease';
import { isTerminal, ROLLOUT_STATES, type WebhookTypeName } from '../domain/rollout-spec';
import {
  claimFinishNotifications,
  latestAnalysis,
  listActionable,
  markApplied,
  recordAnalysis,
  recordGateRefusal,
  restartStepClock,
  transition,
  type RolloutRow,
  type Transition,
} from '../store/rollout-store';
import { callWebhook, webhookPayload, webhookTypeName } from './rollout-webhooks';
import { RouterConfigError, RouterFencedError, weightsFor, type TrafficRouter, type WriteFence } from './traffic-router';

export const CONTROLLER_LEASE_NAME = 'rollout-controller';

export interface ControllerMetrics {
  readonly rollbacks: Counter<'target_namespace' | 'target_virtual_service'>;
  readonly analyses: Counter<'verdict'>;
  readonly transitions: Counter<'to_state'>;
  readonly routerErrors: Counter<'router'>;
  readonly leader: Gauge;
  readonly driftCorrections: Counter<'target_namespace' | 'target_virtual_service'>;
  readonly fencedWrites: Counter<'router'>;
  readonly weight: Gauge<'target_namespace' | 'target_virtual_service'>;
  readonly phase: Gauge<'target_namespace' | 'target_virtual_service' | 'phase'>;
  readonly webhookCalls: Counter<'type' | 'outcome'>;
}

export function createControllerMetrics(registry: Registry): ControllerMetrics {
  return {
    rollbacks: new Counter({
      name: 'canary_rollbacks_total',
      help: 'Canary rollouts rolled back automatically because the canary analysis was unhealthy, by target VirtualService.',
      // By target, never by rollout id: the VirtualServices of the mesh are a fixed set, rollout ids
      // grow without bound (one series each). Which rollout it was: ListRollouts / the controller's log.
      labelNames: ['target_namespace', 'target_virtual_service'],
      registers: [registry],
    }),
    analyses: new Counter({
      name: 'canary_analyses_total',
      help: 'Canary analyses run, by verdict (healthy, unhealthy, inconclusive).',
      labelNames: ['verdict'],
      registers: [registry],
    }),
    transitions: new Counter({
      name: 'canary_rollout_transitions_total',
      help: 'Rollout state transitions made by the controller, by target state.',
      labelNames: ['to_state'],
      registers: [registry],
    }),
    routerErrors: new Counter({
      name: 'canary_router_errors_total',
      help: 'Failed attempts to write a traffic split (retried on the next tick).',
      labelNames: ['router'],
      registers: [registry],
    }),
    leader: new Gauge({
      name: 'canary_controller_leader',
      help: '1 while this replica holds the rollout controller lease.',
      registers: [registry],
    }),
    driftCorrections: new Counter({
      name: 'canary_drift_corrections_total',
      help: 'Traffic splits found changed behind the controller (e.g. a GitOps sync) during a live rollout and put back, by target VirtualService.',
      labelNames: ['target_namespace', 'target_virtual_service'],
      registers: [registry],
    }),
    fencedWrites: new Counter({
      name: 'canary_fenced_writes_total',
      help: 'Traffic writes refused because their lease epoch was no longer current (a successor leads).',
      labelNames: ['router'],
      registers: [registry],
    }),
    weight: new Gauge({
      name: 'canary_rollout_weight',
      help: 'Canary weight (percent) the controller last applied, by target VirtualService (set by the leader).',
      labelNames: ['target_namespace', 'target_virtual_service'],
      registers: [registry],
    }),
    phase: new Gauge({
      name: 'canary_rollout_phase',
      help: '1 for the phase of the latest rollout of a target VirtualService, 0 for the other phases (set by the leader).',
      labelNames: ['target_namespace', 'target_virtual_service', 'phase'],
      registers: [registry],
    }),
    webhookCalls: new Counter({
      name: 'canary_webhook_calls_total',
      help: 'Rollout webhook calls (each with its retries), by webhook type and outcome (ok, refused: an answer other than 2xx, error: no answer).',
      labelNames: ['type', 'outcome'],
      registers: [registry],
    }),
  };
}

/** Upper bound of rollouts reconciled per tick (the rest wait for the next one). */
export const MAX_ROLLOUTS_PER_TICK = 50;

/**
 * The next state after moving to step `index` (pure). Reaching the last step
 * (100 %) is success; with the manual gate the rollout waits just before it.
 */
export function advanceTo(row: RolloutRow, index: number, reason: string, analysis?: AnalysisSnapshot): Transition {
  const last = row.steps.length - 1;
  if (index >= last) {
    if (row.manualPromotion) {
      // The canary keeps being analysed at the gate: its step clock restarts.
      return { to: 'AWAITING_PROMOTION', step: row.currentStep, canaryWeight: row.canaryWeight, reason: 'AWAITING_PROMOTION', analysis, inconclusiveCount: 0, restartStepClock: true, progressed: true };
    }
    return { to: 'SUCCEEDED', step: last, canaryWeight: 100, reason: 'PROMOTED', analysis, inconclusiveCount: 0, restartStepClock: false, progressed: true };
  }
  return { to: 'PROGRESSING', step: index, canaryWeight: row.steps[index]!, reason, analysis, inconclusiveCount: 0, restartStepClock: true, progressed: true };
}

/**
 * What an analysis of a live rollout's current step leads to (pure): a transition, or undefined
 * for "nothing changes but the verdict" (a healthy analysis within a step, before its duration has
 * passed, or at the manual gate: recorded without an event, the counts reset). The canary is
 * analysed every `analysisIntervalMs`; only a healthy analysis made once the step has run its
 * duration (`row.stepDue`) advances it. Every unhealthy analysis counts toward failure_threshold
 * and every inconclusive one toward max_inconclusive, wherever in the step it falls; a hold at
 * the end of a step waits a whole step again, one within it keeps the step's clock.
 * PROGRESSING and AWAITING_PROMOTION are analysed alike: a canary failing at the gate is rolled
 * back like one failing mid-way.
 */
export function decide(row: RolloutRow, snapshot: AnalysisSnapshot): Transition | undefined {
  const live = row.state === 'AWAITING_PROMOTION' ? 'AWAITING_PROMOTION' : 'PROGRESSING';
  const hold = (reason: string, inconclusiveCount: number, unhealthyCount: number): Transition => ({
    to: live,
    step: row.currentStep,
    canaryWeight: row.canaryWeight,
    reason,
    analysis: snapshot,
    inconclusiveCount,
    unhealthyCount,
    restartStepClock: row.stepDue === true,
  });
  switch (snapshot.verdict) {
    case AnalysisVerdict.ANALYSIS_VERDICT_HEALTHY:
      if (live === 'AWAITING_PROMOTION' || row.stepDue !== true) return undefined;
      return advanceTo(row, row.currentStep + 1, 'STEP_ADVANCED', snapshot);
    case AnalysisVerdict.ANALYSIS_VERDICT_UNHEALTHY: {
      const unhealthy = row.unhealthyCount + 1;
      if (row.autoRollback && unhealthy >= row.failureThreshold) {
        return { to: 'ROLLED_BACK', step: row.currentStep, canaryWeight: 0, reason: 'ANALYSIS_UNHEALTHY', analysis: snapshot, inconclusiveCount: row.inconclusiveCount, unhealthyCount: unhealthy, restartStepClock: false };
      }
      // Below the failure threshold, or without auto rollback (an operator decides: AbortRollout; the progress
      // deadline ends it otherwise): the split stays as it is.
      return hold('ANALYSIS_UNHEALTHY_HOLD', row.inconclusiveCount, unhealthy);
    }
    default: {
      const count = row.inconclusiveCount + 1;
      if (count >= row.maxInconclusive) {
        return { to: 'FAILED', step: row.currentStep, canaryWeight: 0, reason: 'ANALYSIS_INCONCLUSIVE', analysis: snapshot, inconclusiveCount: count, unhealthyCount: row.unhealthyCount, restartStepClock: false };
      }
      return hold('ANALYSIS_INCONCLUSIVE_HOLD', count, row.unhealthyCount);
    }
  }
}

/** A live rollout past its progress deadline fails back to weight 0 (pure). */
export function progressDeadlineFailure(row: RolloutRow): Transition {
  return {
    to: 'FAILED',
    step: row.currentStep,
    canaryWeight: 0,
    reason: `PROGRESS_DEADLINE_EXCEEDED: no step advanced for ${Math.round(row.progressDeadlineMs / 1000)} s`,
    inconclusiveCount: row.inconclusiveCount,
    unhealthyCount: row.unhealthyCount,
    restartStepClock: false,
  };
}

/**
 * A live rollout whose VirtualService lacks what the split needs (RouterConfigError: retrying cannot help,
 * an operator must act) fails back to weight 0 (pure).
 */
export function routerConfigFailure(row: RolloutRow, error: RouterConfigError): Transition {
  return {
    to: 'FAILED',
    step: row.currentStep,
    canaryWeight: 0,
    reason: `ROUTER_CONFIG_ERROR: ${error.message}`,
    inconclusiveCount: row.inconclusiveCount,
    restartStepClock: false,
    unhealthyCount: row.unhealthyCount,
  };
}

export interface RolloutControllerOptions {
  readonly pool: pg.Pool;
  readonly router: TrafficRouter;
  readonly prometheus: PrometheusClient;
  readonly lease: PgLease;
  readonly logger: Logger;
  readonly metrics: ControllerMetrics;
  readonly tickMs: number;
}

export class RolloutController {
  private stopped = false;
  private loop: Promise<void> | undefined;
  private wakeUp: (() => void) | undefined;
  private wakeRequested = false;
  /** Notifications in flight (never awaited by a tick); cancelled and awaited by close(). */
  private readonly notifications = new Set<Promise<void>>();
  private readonly closing = new AbortController();

  constructor(private readonly options: RolloutControllerOptions) {}

  start(): void {
    if (this.loop) return;
    this.loop = this.run();
  }

  /** Runs a tick soon (after an RPC changed a rollout) instead of at the next interval. */
  wake(): void {
    this.wakeRequested = true;
    this.wakeUp?.();
  }

  /** Stops after the current tick and gives the lease up. */
  async close(): Promise<void> {
    this.stopped = true;
    this.wakeUp?.();
    await this.loop;
    this.closing.abort(new Error('the controller is stopping'));
    await Promise.all(this.notifications);
    this.options.metrics.leader.set(0);
    await this.options.lease.release().catch((err: unknown) => this.options.logger.warn({ err }, 'could not release the controller lease'));
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      const startedAt = performance.now();
      try {
        await this.tick();
      } catch (err) {
        this.options.logger.error({ err }, 'rollout controller tick failed');
      }
      const waitMs = Math.max(0, this.options.tickMs - (performance.now() - startedAt));
      if (this.stopped) break;
      if (this.wakeRequested) {
        this.wakeRequested = false;
        continue;
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, waitMs);
        this.wakeUp = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wakeUp = undefined;
      this.wakeRequested = false;
    }
  }

  /** One reconcile pass (exposed for tests): renew the lease, then work each actionable rollout. */
  async tick(): Promise<void> {
    const { lease, metrics, logger, pool } = this.options;
    let leader = false;
    try {
      leader = await lease.acquireOrRenew();
    } catch (err) {
      logger.warn({ err }, 'could not renew the controller lease');
    }
    metrics.leader.set(leader ? 1 : 0);
    if (!leader) return;
    const rows = await listActionable(pool, MAX_ROLLOUTS_PER_TICK);
    for (const row of rows) {
      if (this.stopped || !lease.isHeld()) return;
      try {
        await this.reconcile(row);
      } catch (err) {
        logger.error({ err, rollout: row.id }, 'rollout reconcile failed');
      }
    }
  }

  private async reconcile(initial: RolloutRow): Promise<void> {
    const { lease, prometheus, metrics, logger, pool } = this.options;
    let row = initial;
    // Before starting: a pre-rollout webhook that keeps refusing holds a PENDING rollout until its deadline.
    if (!isTerminal(row.state) && row.progressOverdue === true) {
      logger.warn({ rollout: row.id, state: row.state, step: row.currentStep, progress_deadline_ms: row.progressDeadlineMs }, 'rollout made no progress before its deadline; failing it');
      const next = await this.commit(row, progressDeadlineFailure(row));
      if (next) await this.apply(next);
      return;
    }
    if (row.state === 'PENDING') {
      if (!(await this.gate(row, 'PRE_ROLLOUT', undefined, 0))) return;
      const next = await this.commit(row, advanceTo(row, 0, 'STARTED'));
      if (!next) return;
      row = next;
    }
    if (row.appliedWeight !== row.canaryWeight) {
      // The step's clock starts once the split is in place: analysis waits for a later tick.
      await this.apply(row);
      return;
    }
    if (isTerminal(row.state)) return;
    // Drift correction: the split is believed in place; make sure the route still shows it (a GitOps sync,
    // a kubectl apply may have reset it). An idempotent write: nothing is written when it does.
    if ((await this.apply(row, { drift: true })) === 'wrote') return;
    if (row.analysisDue !== true) return;

    // The analysis may take up to what is left of the lease (renewed now), minus a margin to commit its
    // decision: a slow Prometheus ends in an INCONCLUSIVE verdict that counts, not in a discarded analysis.
    if (!(await lease.acquireOrRenew().catch(() => false))) return;
    const remaining = lease.remainingMs();
    const budgetMs = Math.max(1, Math.floor(remaining - Math.max(250, remaining / 5)));
    const snapshot = await analyse(
      prometheus,
      row.target,
      { maxErrorRate: row.maxErrorRate, maxP99LatencyMs: row.maxP99LatencyMs, minRequests: row.minRequests, windowMs: row.analysisWindowMs, metrics: row.metrics },
      { stepElapsedMs: row.stepElapsedMs, signal: AbortSignal.timeout(budgetMs) },
    );
    const verdict = AnalysisVerdict[snapshot.verdict].replace('ANALYSIS_VERDICT_', '').toLowerCase();
    // The queries may have outlasted our lease anyway (a frozen process): a successor may already act on this rollout.
    if (this.stopped || !lease.isHeld()) {
      metrics.analyses.inc({ verdict: 'discarded' });
      logger.warn({ rollout: row.id, verdict, detail: snapshot.detail }, 'analysis outlasted the controller lease; discarded');
      return;
    }
    metrics.analyses.inc({ verdict });
    const decision = decide(row, snapshot);
    if (decision?.progressed === true) {
      // Taking a step: the confirm-* webhooks of that step must agree (else the step holds, asked again an interval later).
      const promoting = decision.to === 'SUCCEEDED' || decision.to === 'AWAITING_PROMOTION';
      const nextStep = promoting ? row.steps.length - 1 : decision.step;
      if (!(await this.gate(row, promoting ? 'CONFIRM_PROMOTION' : 'CONFIRM_TRAFFIC_INCREASE', snapshot, nextStep))) return;
      if (this.stopped || !lease.isHeld()) return;
    }
    if (decision === undefined) {
      await recordAnalysis(pool, row, snapshot.verdict);
      logger.debug({ rollout: row.id, state: row.state, step: row.currentStep }, row.state === 'AWAITING_PROMOTION' ? 'healthy analysis at the manual gate' : 'healthy analysis within the step');
      return;
    }
    const next = await this.commit(row, decision);
    if (!next) return;
    logger.info(
      { rollout: row.id, namespace: row.target.namespace, virtual_service: row.target.virtualService, from: row.state, to: next.state, step: next.currentStep, canary_weight: next.canaryWeight, reason: decision.reason, verdict: snapshot.verdict, detail: snapshot.detail },
      'rollout decision',
    );
    if (next.state === 'ROLLED_BACK') {
      metrics.rollbacks.inc({ target_namespace: next.target.namespace, target_virtual_service: next.target.virtualService });
    }
    // A rollback (or any weight change) is applied at once, not on the next tick.
    if (next.appliedWeight !== next.canaryWeight) await this.apply(next);
  }

  /**
   * Asks the rollout's gate webhooks of `type` (for CONFIRM_TRAFFIC_INCREASE, those gating step `nextStep`);
   * true when there are none or all answered 2xx. A refusal is recorded (the gate is asked again an interval
   * later, the healthy `analysis` before it kept as the latest verdict) and logged.
   */
  private async gate(row: RolloutRow, type: WebhookTypeName, analysis: AnalysisSnapshot | undefined, nextStep: number): Promise<boolean> {
    const { lease, metrics, logger, pool } = this.options;
    const weight = row.steps[nextStep]!;
    const hooks = row.webhooks.filter((hook) => hook.type === type && (hook.steps.length === 0 || hook.steps.includes(weight)));
    if (hooks.length === 0) return true;
    // In PENDING nothing else paces the gate: ask at most once an interval.
    if (row.state === 'PENDING' && row.gateDue !== true) return false;
    if (!(await lease.acquireOrRenew().catch(() => false))) return false;
    const remaining = lease.remainingMs();
    const signal = AbortSignal.timeout(Math.max(1, Math.floor(remaining - Math.max(250, remaining / 5))));
    const outcomes = await Promise.all(hooks.map((hook) => callWebhook(hook, webhookPayload(row, hook, analysis, nextStep), { signal })));
    outcomes.forEach((outcome) => metrics.webhookCalls.inc({ type: webhookTypeName(type), outcome: outcome.ok ? 'ok' : outcome.status === undefined ? 'error' : 'refused' }));
    const refused = hooks.map((hook, i) => ({ hook, outcome: outcomes[i]! })).filter(({ outcome }) => !outcome.ok);
    if (refused.length === 0) return true;
    logger.warn(
      {
        rollout: row.id,
        state: row.state,
        step: row.currentStep,
        next_step: nextStep,
        webhook_type: webhookTypeName(type),
        refused: refused.map(({ hook, outcome }) => ({ name: hook.name, status: outcome.status, error: outcome.error, attempts: outcome.attempts })),
      },
      'a gate webhook did not confirm; holding',
    );
    if (lease.isHeld()) await recordGateRefusal(pool, row, analysis?.verdict);
    return false;
  }

  /** Sends a finished rollout's rollback / post-rollout notifications once, in the background (never blocks a tick). */
  private async notifyFinished(row: RolloutRow): Promise<void> {
    const types: WebhookTypeName[] = row.state === 'SUCCEEDED' ? ['POST_ROLLOUT'] : ['ROLLBACK', 'POST_ROLLOUT'];
    const hooks = row.webhooks.filter((hook) => types.includes(hook.type));
    if (hooks.length === 0 || !(await claimFinishNotifications(this.options.pool, row.id))) return;
    const { metrics, logger, pool } = this.options;
    const sending = (async () => {
      const analysis = await latestAnalysis(pool, row.id).catch(() => undefined);
      // Rollback hooks first, then post-rollout (Flagger's order).
      for (const type of types) {
        await Promise.all(
          hooks
            .filter((hook) => hook.type === type)
            .map(async (hook) => {
              const outcome = await callWebhook(hook, webhookPayload(row, hook, analysis), { signal: this.closing.signal });
              metrics.webhookCalls.inc({ type: webhookTypeName(type), outcome: outcome.ok ? 'ok' : outcome.status === undefined ? 'error' : 'refused' });
              if (!outcome.ok) logger.warn({ rollout: row.id, webhook: hook.name, webhook_type: webhookTypeName(type), status: outcome.status, error: outcome.error, attempts: outcome.attempts }, 'rollout notification not delivered');
            }),
        );
      }
    })().catch((err: unknown) => logger.warn({ err, rollout: row.id }, 'rollout notifications failed'));
    this.notifications.add(sending);
    void sending.finally(() => this.notifications.delete(sending));
  }

  private async commit(row: RolloutRow, decision: Transition): Promise<RolloutRow | undefined> {
    const next = await transition(this.options.pool, row, decision);
    if (next) {
      this.options.metrics.transitions.inc({ to_state: next.state.toLowerCase() });
      this.setPhase(next);
    } else this.options.logger.debug({ rollout: row.id }, 'rollout changed concurrently; re-read next tick');
    return next;
  }

  private setPhase(row: RolloutRow): void {
    const labels = { target_namespace: row.target.namespace, target_virtual_service: row.target.virtualService };
    for (const phase of ROLLOUT_STATES) this.options.metrics.phase.set({ ...labels, phase: phase.toLowerCase() }, phase === row.state ? 1 : 0);
  }

  /**
   * Writes the weight `row` implies, fenced by our lease epoch. 'wrote' when the router changed the
   * route, 'in-place' when it already showed it, 'failed' otherwise (retried next tick, or the rollout failed).
   */
  private async apply(row: RolloutRow, options: { drift?: boolean } = {}): Promise<'wrote' | 'in-place' | 'failed'> {
    const { router, pool, metrics, logger, lease } = this.options;
    const epoch = lease.epoch;
    if (epoch === 0) return 'failed';
    const fence: WriteFence = { epoch, isCurrent: () => lease.isCurrent(epoch) };
    let wrote: boolean | void;
    try {
      wrote = await router.setWeights(row.target, weightsFor(row.canaryWeight), fence);
    } catch (err) {
      if (err instanceof RouterFencedError) {
        metrics.fencedWrites.inc({ router: router.kind });
        logger.warn({ err, rollout: row.id, canary_weight: row.canaryWeight, epoch }, 'traffic write refused: our lease epoch is no longer current');
        return 'failed';
      }
      metrics.routerErrors.inc({ router: router.kind });
      if (err instanceof RouterConfigError && isTerminal(row.state)) {
        // A finished rollout whose route no longer has what the split needs (the operator took the canary
        // destination out, or the route away): no canary traffic is left to move. Nothing to retry.
        logger.info({ err, rollout: row.id, state: row.state, canary_weight: row.canaryWeight }, 'finished rollout: the route no longer has the canary destination; nothing left to write');
        if (await markApplied(pool, row, row.canaryWeight)) await this.notifyFinished(row);
        return 'failed';
      }
      if (err instanceof RouterConfigError) {
        // Retrying cannot help (an operator must fix the VirtualService): fail the rollout rather than retry
        // every tick. Its weight 0 is written once the route can take it (like any finished rollout's).
        logger.error({ err, rollout: row.id, canary_weight: row.canaryWeight }, 'the VirtualService cannot take the traffic split; failing the rollout');
        await this.commit(row, routerConfigFailure(row, err));
        return 'failed';
      }
      logger.warn({ err, rollout: row.id, canary_weight: row.canaryWeight }, 'could not set the traffic split; retrying next tick');
      return 'failed';
    }
    metrics.weight.set({ target_namespace: row.target.namespace, target_virtual_service: row.target.virtualService }, row.canaryWeight);
    this.setPhase(row);
    if (options.drift) {
      if (wrote === false || wrote === undefined) return 'in-place';
      // Someone reset the split: put back, and the step's clock restarts (its window held other traffic).
      metrics.driftCorrections.inc({ target_namespace: row.target.namespace, target_virtual_service: row.target.virtualService });
      logger.warn({ rollout: row.id, canary_weight: row.canaryWeight }, 'traffic split drifted from the rollout (e.g. a GitOps sync); put back');
      await restartStepClock(pool, row);
      return 'wrote';
    }
    if ((await markApplied(pool, row, row.canaryWeight)) && isTerminal(row.state)) await this.notifyFinished(row);
    return wrote === false ? 'in-place' : 'wrote';
  }
}
