/**
 * The camouflage service module (wiring only), what the launchers load: builds the engine over the
 * shared Redis client from the validated config (config.ts), registers the metrics, and hands the
 * rpc handlers (rpc/handlers.ts) to the platform server. Scoring, tiers, the bandit and honeytokens
 * live in domain/, their Redis state in store/.
 */
import { Counter, Histogram } from 'prom-client';
import { CamouflageServiceService } from '../../gen/shieldx/camouflage/v1/camouflage';
import type { ServiceModule } from '../../platform/server';
import { camouflageConfigShape, type CamouflageConfigShape } from './config';
import { camouflageHandlers } from './rpc/handlers';
import { CamouflageEngine } from './store/engine';
import { DdwafRunner } from './waf/ddwaf';

export const camouflageService: ServiceModule<CamouflageConfigShape> = {
  name: 'camouflage',
  grpcServiceName: 'shieldx.camouflage.v1.CamouflageService',
  errorDomain: 'camouflage.shieldx.io',
  // Its state is in Redis: a PostgreSQL outage must not take it out of service.
  usesDatabase: false,
  configShape: camouflageConfigShape,
  scopes: {
    Assess: 'camouflage:assess',
    AssessStream: 'camouflage:assess',
    RecordOutcome: 'camouflage:assess',
    ListDecoys: 'camouflage:read',
    GetBanditStats: 'camouflage:read',
    RegisterDecoy: 'camouflage:admin',
  },
  async create(ctx) {
    const { config, registry, logger, handlerOptions } = ctx;
    const assessments = new Counter({
      name: 'camouflage_assessments_total',
      help: 'Assess decisions by threat tier.',
      labelNames: ['tier'],
      registers: [registry],
    });
    const honeytokenAlerts = new Counter({
      name: 'camouflage_honeytoken_alerts_total',
      help: 'Requests that carried a honeytoken minted by an earlier decision.',
      labelNames: ['decoy'],
      registers: [registry],
    });
    const assessSeconds = new Histogram({
      name: 'camouflage_assess_duration_seconds',
      help: 'Time to score a request and choose its decoy (engine only).',
      buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05],
      registers: [registry],
    });
    const outcomes = new Counter({
      name: 'camouflage_outcomes_total',
      help: 'Engagement outcomes recorded, by tier.',
      labelNames: ['tier'],
      registers: [registry],
    });
    const honeytokenCreditErrors = new Counter({
      name: 'camouflage_honeytoken_credit_errors_total',
      help: 'Returning honeytokens whose decoy could not be credited (the assessment still succeeded).',
      registers: [registry],
    });

    const wafFailures = new Counter({
      name: 'camouflage_waf_incomplete_total',
      help: 'WAF runs that timed out or failed (each scored waf-timeout, SUSPICIOUS, never benign).',
      registers: [registry],
    });
    const wafRunner = config.CAMOUFLAGE_WAF === 'on' ? new DdwafRunner({ timeoutMicros: config.CAMOUFLAGE_WAF_TIMEOUT_MICROS }) : undefined;
    if (wafRunner !== undefined) {
      logger.info({ libddwaf: wafRunner.version, ruleset: wafRunner.rulesetVersion, rules: wafRunner.rulesLoaded }, 'camouflage WAF loaded');
    }
    const waf = wafRunner === undefined ? undefined : (request: Parameters<DdwafRunner['run']>[0]) => {
      const outcome = wafRunner.run(request);
      if (outcome.timedOut || outcome.error !== undefined) wafFailures.inc();
      return outcome;
    };
    const engine = new CamouflageEngine({
      ...(waf ? { waf } : {}),
      redis: ctx.redis,
      keyPrefix: config.CAMOUFLAGE_REDIS_PREFIX,
      policy: config.CAMOUFLAGE_BANDIT_POLICY,
      decisionTtlSeconds: config.CAMOUFLAGE_DECISION_TTL_SECONDS,
      honeytokenTtlSeconds: config.CAMOUFLAGE_HONEYTOKEN_TTL_SECONDS,
      onHoneytokenAlert: (alert) => {
        honeytokenAlerts.inc({ decoy: alert.originDecoyId });
        // The alert names the decision and decoy, never the token itself.
        logger.warn(
          { alert: 'honeytoken_used', origin_decision_id: alert.originDecisionId, origin_decoy_id: alert.originDecoyId },
          'honeytoken used: a decoy credential came back',
        );
      },
      onHoneytokenCreditError: (error, origin) => {
        honeytokenCreditErrors.inc();
        logger.error(
          { err: error instanceof Error ? error.message : String(error), origin_decision_id: origin.decisionId, origin_decoy_id: origin.decoyId },
          'honeytoken credit failed: the decoy was not rewarded for this sighting',
        );
      },
    });
    await engine.start();

    const implementation = camouflageHandlers(engine, handlerOptions, { assessments, assessSeconds, outcomes });
    return { definition: CamouflageServiceService, implementation };
  },
};
