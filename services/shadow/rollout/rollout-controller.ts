/**
 * The canary rollout controller: a reconcile loop, run by whichever shadow
 * replica holds the `rollout-controller` lease, that drives each rollout's
 * persisted state machine and makes the traffic router show the weight the
 * state implies.
 *
 *   PENDING ──start──▶ PROGRESSING(step i, weight steps[i]) ──healthy──▶ PROGRESSING(i+1)
 *      │                 │  │  │                                  └──▶ AWAITING_PROMOTION (manual gate
 *      │                 │  │  └─inconclusive (hold; FAILED after max_inconclusive in a row)    before the last step)
 *      │                 │  └────unhealthy, auto_rollback ──▶ ROLLED_BACK (weight 0 at once)
 *      │                 └───────last step reached ─────────▶ SUCCEEDED (weight 100)
 *      └── AbortRollout (any live state) ─────────────────────▶ ABORTED (weight 0)
 *   (any live state) ── VirtualService misconfigured (RouterConfigError) ──▶ FAILED (weight 0)
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
import { isTerminal } from '../domain/rollout-spec';
import { listActionable, markApplied, transition, type RolloutRow, type Transition } from '../store/rollout-store';
import { RouterConfigError, weightsFor, type TrafficRouter } from './traffic-router';

export const CONTROLLER_LEASE_NAME = 'rollout-controller';

export interface ControllerMetrics {
  readonly rollbacks: Counter<'target_namespace' | 'target_virtual_service'>;
  readonly analyses: Counter<'verdict'>;
  readonly transitions: Counter<'to_state'>;
  readonly routerErrors: Counter<'router'>;
  readonly leader: Gauge;
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
      return { to: 'AWAITING_PROMOTION', step: row.currentStep, canaryWeight: row.canaryWeight, reason: 'AWAITING_PROMOTION', analysis, inconclusiveCount: 0, restartStepClock: false };
    }
    return { to: 'SUCCEEDED', step: last, canaryWeight: 100, reason: 'PROMOTED', analysis, inconclusiveCount: 0, restartStepClock: false };
  }
  return { to: 'PROGRESSING', step: index, canaryWeight: row.steps[index]!, reason, analysis, inconclusiveCount: 0, restartStepClock: true };
}

/** What an analysis of a PROGRESSING rollout's current step leads to (pure). */
export function decide(row: RolloutRow, snapshot: AnalysisSnapshot): Transition {
  const hold = (reason: string, inconclusiveCount: number): Transition => ({
    to: 'PROGRESSING',
    step: row.currentStep,
    canaryWeight: row.canaryWeight,
    reason,
    analysis: snapshot,
    inconclusiveCount,
    restartStepClock: true,
  });
  switch (snapshot.verdict) {
    case AnalysisVerdict.ANALYSIS_VERDICT_HEALTHY:
      return advanceTo(row, row.currentStep + 1, 'STEP_ADVANCED', snapshot);
    case AnalysisVerdict.ANALYSIS_VERDICT_UNHEALTHY:
      if (row.autoRollback) {
        return { to: 'ROLLED_BACK', step: row.currentStep, canaryWeight: 0, reason: 'ANALYSIS_UNHEALTHY', analysis: snapshot, inconclusiveCount: row.inconclusiveCount, restartStepClock: false };
      }
      // Without auto_rollback an operator decides (AbortRollout); the split stays as it is.
      return hold('ANALYSIS_UNHEALTHY_HOLD', row.inconclusiveCount);
    default: {
      const count = row.inconclusiveCount + 1;
      if (count >= row.maxInconclusive) {
        return { to: 'FAILED', step: row.currentStep, canaryWeight: 0, reason: 'ANALYSIS_INCONCLUSIVE', analysis: snapshot, inconclusiveCount: count, restartStepClock: false };
      }
      return hold('ANALYSIS_INCONCLUSIVE_HOLD', count);
    }
  }
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
    const { lease, prometheus, metrics, logger } = this.options;
    let row = initial;
    if (row.state === 'PENDING') {
      const next = await this.commit(row, advanceTo(row, 0, 'STARTED'));
      if (!next) return;
      row = next;
    }
    if (row.appliedWeight !== row.canaryWeight) {
      // The step's clock starts once the split is in place: analysis waits for a later tick.
      await this.apply(row);
      return;
    }
    if (row.state !== 'PROGRESSING' || row.stepDue !== true) return;

    const snapshot = await analyse(prometheus, row.target, {
      maxErrorRate: row.maxErrorRate,
      maxP99LatencyMs: row.maxP99LatencyMs,
      minRequests: row.minRequests,
      windowMs: row.analysisWindowMs,
    });
    metrics.analyses.inc({ verdict: AnalysisVerdict[snapshot.verdict].replace('ANALYSIS_VERDICT_', '').toLowerCase() });
    // The queries may have outlasted our lease: a successor may already act on this rollout.
    if (this.stopped || !lease.isHeld()) return;
    const decision = decide(row, snapshot);
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

  private async commit(row: RolloutRow, decision: Transition): Promise<RolloutRow | undefined> {
    const next = await transition(this.options.pool, row, decision);
    if (next) this.options.metrics.transitions.inc({ to_state: next.state.toLowerCase() });
    else this.options.logger.debug({ rollout: row.id }, 'rollout changed concurrently; re-read next tick');
    return next;
  }

  private async apply(row: RolloutRow): Promise<void> {
    const { router, pool, metrics, logger, lease } = this.options;
    if (!lease.isHeld()) return;
    try {
      await router.setWeights(row.target, weightsFor(row.canaryWeight));
    } catch (err) {
      metrics.routerErrors.inc({ router: router.kind });
      if (err instanceof RouterConfigError && !isTerminal(row.state)) {
        // Retrying cannot help (an operator must fix the VirtualService): fail the rollout rather than retry
        // every tick. Its weight 0 is written once the route can take it (like any finished rollout's).
        logger.error({ err, rollout: row.id, canary_weight: row.canaryWeight }, 'the VirtualService cannot take the traffic split; failing the rollout');
        await this.commit(row, routerConfigFailure(row, err));
        return;
      }
      logger.warn({ err, rollout: row.id, canary_weight: row.canaryWeight }, 'could not set the traffic split; retrying next tick');
      return;
    }
    await markApplied(pool, row, row.canaryWeight);
  }
}
