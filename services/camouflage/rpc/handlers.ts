/**
 * The camouflage service: thin gRPC handlers over CamouflageEngine (scoring,
 * bandit-chosen decoys, honeytokens), with its state in Redis so every replica
 * learns from every outcome.
 */
import { Counter, Histogram } from 'prom-client';
import { z } from 'zod';
import {
  BanditPolicy as ProtoPolicy,
  CamouflageServiceService,
  ThreatTier,
  type ArmStats as ProtoArmStats,
  type AssessRequest,
  type AssessResponse,
  type CamouflageServiceServer,
  type Decoy as ProtoDecoy,
} from '../../../gen/shieldx/camouflage/v1/camouflage';
import { requestIdStream, unary } from '../../../platform/handlers';
import type { ServiceModule } from '../../../platform/server';
import { ServiceError } from '../../../platform/service-error';
import {
  CamouflageEngine,
  DECISION_TTL_SECONDS_DEFAULT,
  DECISION_TTL_SECONDS_MAX,
  HONEYTOKEN_TTL_SECONDS_DEFAULT,
  HONEYTOKEN_TTL_SECONDS_MAX,
  KEY_PREFIX_DEFAULT,
  type ArmStats,
  type BanditPolicy,
  type Decoy,
  type Tier,
} from '../store/engine';
import { isValidKeyPrefix } from '../store/redis-keys';

const TIER_TO_PROTO: Record<Tier, ThreatTier> = {
  benign: ThreatTier.THREAT_TIER_BENIGN,
  suspicious: ThreatTier.THREAT_TIER_SUSPICIOUS,
  likely_bot: ThreatTier.THREAT_TIER_LIKELY_BOT,
  attack: ThreatTier.THREAT_TIER_ATTACK,
};

function tierFromProto(tier: ThreatTier, field: string): Tier {
  const found = (Object.keys(TIER_TO_PROTO) as Tier[]).find((t) => TIER_TO_PROTO[t] === tier);
  if (!found) throw ServiceError.invalidArgument(field, 'must be a threat tier (BENIGN, SUSPICIOUS, LIKELY_BOT or ATTACK)');
  return found;
}

function policyFromProto(policy: ProtoPolicy): BanditPolicy | undefined {
  if (policy === ProtoPolicy.BANDIT_POLICY_UCB1) return 'ucb1';
  if (policy === ProtoPolicy.BANDIT_POLICY_THOMPSON_SAMPLING) return 'thompson';
  if (policy === ProtoPolicy.BANDIT_POLICY_UNSPECIFIED) return undefined;
  throw ServiceError.invalidArgument('policy', 'unknown bandit policy');
}

function policyToProto(policy: BanditPolicy): ProtoPolicy {
  return policy === 'thompson' ? ProtoPolicy.BANDIT_POLICY_THOMPSON_SAMPLING : ProtoPolicy.BANDIT_POLICY_UCB1;
}

/**
 * Engine field names → the request's proto field paths, per RPC (the engine's input types name
 * some fields differently from the proto). A name not listed falls back to snake_case.
 */
type FieldMap = Readonly<Record<string, string>>;
const ASSESS_FIELDS: FieldMap = {
  request: 'request',
  clientIp: 'client_ip',
  userAgent: 'user_agent',
  tlsFingerprint: 'tls_fingerprint',
  sessionKey: 'session_key',
  timestampMs: 'timestamp',
  previousStatus: 'previous_status',
};
const RECORD_OUTCOME_FIELDS: FieldMap = {
  decisionId: 'decision_id',
  outcome: 'engagement',
  'outcome.interactions': 'engagement.interactions',
  'outcome.dwellSeconds': 'engagement.dwell',
  'outcome.honeytokenUsed': 'engagement.honeytoken_used',
  'outcome.credentialsSubmitted': 'engagement.credentials_submitted',
  'outcome.reachedRealAsset': 'engagement.reached_real_asset',
  idempotencyKey: 'idempotency_key',
};
const REGISTER_DECOY_FIELDS: FieldMap = {
  decoy: 'decoy',
  id: 'decoy.id',
  kind: 'decoy.kind',
  description: 'decoy.name',
  tiers: 'decoy.tiers',
  template: 'decoy.content_template',
  contentType: 'decoy.content_type',
  carriesHoneytoken: 'decoy.carries_honeytoken',
  carriesCredentials: 'decoy.carries_credentials',
  status: 'decoy.status',
  headers: 'decoy.headers',
  idempotencyKey: 'idempotency_key',
};
const LIST_DECOYS_FIELDS: FieldMap = { pageSize: 'page_size', pageToken: 'page_token', tier: 'tier' };

function protoField(field: string, fields: FieldMap): string {
  const mapped = fields[field];
  if (mapped !== undefined) return mapped;
  // Header names are data (a map key), not field names: keep them as sent, under the map's path.
  if (field.startsWith('headers.')) return `${fields.headers ?? 'headers'}${field.slice('headers'.length)}`;
  return field.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

/**
 * The engine's ServiceError with its field paths renamed to this RPC's proto field paths (in the
 * BadRequest and in ErrorInfo's `field`); code, reason, message and other metadata are the engine's.
 */
function withProtoFields(error: unknown, fields: FieldMap): unknown {
  if (!(error instanceof ServiceError)) return error;
  const field = error.metadata.field;
  if (error.fieldViolations.length === 0 && field === undefined) return error;
  return new ServiceError(
    error.code,
    error.reason,
    error.message,
    {
      metadata: field === undefined ? error.metadata : { ...error.metadata, field: protoField(field, fields) },
      fieldViolations: error.fieldViolations.map((v) => ({ field: protoField(v.field, fields), description: v.description })),
      cause: error.cause,
    },
    error.domain,
  );
}

async function engineCall<T>(work: () => Promise<T>, fields: FieldMap): Promise<T> {
  try {
    return await work();
  } catch (error) {
    throw withProtoFields(error, fields);
  }
}

function decoyToProto(decoy: Decoy): ProtoDecoy {
  return {
    id: decoy.id,
    name: decoy.description,
    kind: decoy.kind,
    tiers: decoy.tiers.map((t) => TIER_TO_PROTO[t]),
    contentType: decoy.contentType,
    contentTemplate: decoy.template,
    carriesHoneytoken: decoy.carriesHoneytoken,
    carriesCredentials: decoy.carriesCredentials,
    builtin: decoy.builtIn,
    createdAt: new Date(decoy.createdAtMs),
    status: decoy.status,
    headers: { ...decoy.headers },
  };
}

function armToProto(arm: ArmStats): ProtoArmStats {
  return {
    decoyId: arm.decoyId,
    pulls: BigInt(arm.pulls),
    meanReward: arm.meanReward,
    rewardSum: arm.rewardSum,
    ucbIndex: arm.ucb1Index ?? 0,
    selectionProbability: arm.selectionProbability,
  };
}

function durationOf(ms: number) {
  return { seconds: BigInt(Math.floor(ms / 1000)), nanos: Math.round((ms % 1000) * 1e6) };
}

const camouflageConfigShape = {
  CAMOUFLAGE_BANDIT_POLICY: z.enum(['ucb1', 'thompson']).default('ucb1'),
  CAMOUFLAGE_REDIS_PREFIX: z.string().refine(isValidKeyPrefix, 'must be 1-64 printable ASCII characters without spaces').default(KEY_PREFIX_DEFAULT),
  // Bounds and defaults are the engine's, so a value the config accepts never fails engine.start().
  CAMOUFLAGE_DECISION_TTL_SECONDS: z.coerce
    .number()
    .int()
    .min(60, 'must be at least 60')
    .max(DECISION_TTL_SECONDS_MAX, `must be at most ${DECISION_TTL_SECONDS_MAX}`)
    .default(DECISION_TTL_SECONDS_DEFAULT),
  CAMOUFLAGE_HONEYTOKEN_TTL_SECONDS: z.coerce
    .number()
    .int()
    .min(3600, 'must be at least 3600')
    .max(HONEYTOKEN_TTL_SECONDS_MAX, `must be at most ${HONEYTOKEN_TTL_SECONDS_MAX}`)
    .default(HONEYTOKEN_TTL_SECONDS_DEFAULT),
};

/** Assessments one AssessStream call runs at once; reading pauses beyond it (backpressure). */
const ASSESS_STREAM_IN_FLIGHT_MAX = 256;

export const camouflageService: ServiceModule<typeof camouflageConfigShape> = {
  name: 'camouflage',
  grpcServiceName: 'shieldx.camouflage.v1.CamouflageService',
  errorDomain: 'camouflage.shieldx.io',
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
    const { config, registry, logger, handlerOptions: options } = ctx;
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

    const engine = new CamouflageEngine({
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

    /** Scores one request and chooses its decoy: Assess, and each item of AssessStream. */
    const assessOne = async (request: AssessRequest): Promise<AssessResponse> => {
      const started = process.hrtime.bigint();
      const policy = policyFromProto(request.policy);
      const result = await engineCall(() =>
        engine.assess(
          {
            clientIp: request.clientIp,
            method: request.method,
            path: request.path,
            query: request.query,
            headers: request.headers,
            userAgent: request.userAgent,
            tlsFingerprint: request.tlsFingerprint || undefined,
            sessionKey: request.sessionKey,
            timestampMs: request.timestamp ? request.timestamp.getTime() : Date.now(),
            previousStatus: request.previousStatus || undefined,
          },
          policy ? { policy } : {},
        ),
        ASSESS_FIELDS,
      );
      assessSeconds.observe(Number(process.hrtime.bigint() - started) / 1e9);
      assessments.inc({ tier: result.tier });
      return {
        decisionId: result.decisionId,
        threatLevel: result.threatLevel,
        tier: TIER_TO_PROTO[result.tier],
        signals: result.signals.map((s) => ({ name: s.name, points: s.points, detail: s.detail })),
        strategy: { name: result.strategy.decoyWeight, responseDelay: durationOf(result.strategy.responseDelayMs) },
        decoy: decoyToProto(result.decoyDefinition),
        content: result.decoy.content,
        honeytoken: result.honeytoken?.token ?? '',
        selection: {
          policy: policyToProto(result.policy),
          probability: result.selectionProbability,
          score: result.selectionScore ?? 0,
          eligibleArms: result.eligibleArms,
        },
        honeytokenTriggered: result.honeytokenHits.length > 0,
      };
    };

    const implementation: CamouflageServiceServer = {
      assess: unary(CamouflageServiceService.assess.path, options, assessOne),

      assessStream: requestIdStream(CamouflageServiceService.assessStream.path, options, ASSESS_STREAM_IN_FLIGHT_MAX, assessOne),

      recordOutcome: unary(CamouflageServiceService.recordOutcome.path, options, async (request) => {
        if (!request.engagement) throw ServiceError.invalidArgument('engagement', 'is required');
        const engagement = request.engagement;
        const dwellSeconds = engagement.dwell ? Number(engagement.dwell.seconds) + engagement.dwell.nanos / 1e9 : 0;
        const result = await engineCall(() =>
          engine.recordOutcome(request.decisionId, {
            interactions: engagement.interactions,
            dwellSeconds,
            honeytokenUsed: engagement.honeytokenUsed,
            credentialsSubmitted: engagement.credentialsSubmitted,
            reachedRealAsset: engagement.reachedRealAsset,
          }, { idempotencyKey: request.idempotencyKey }),
          RECORD_OUTCOME_FIELDS,
        );
        outcomes.inc({ tier: result.tier });
        return { reward: result.reward, arm: result.arm ? armToProto(result.arm) : undefined };
      }),

      listDecoys: unary(CamouflageServiceService.listDecoys.path, options, async (request) => {
        const tier = request.tier === ThreatTier.THREAT_TIER_UNSPECIFIED ? undefined : tierFromProto(request.tier, 'tier');
        // The catalog filters by tier before paging (and applies the page-size rule): a page never exceeds page_size and none is skipped.
        const page = await engineCall(
          () => engine.listDecoys({ pageSize: request.pageSize, pageToken: request.pageToken, ...(tier ? { tier } : {}) }),
          LIST_DECOYS_FIELDS,
        );
        return { decoys: page.decoys.map(decoyToProto), nextPageToken: page.nextPageToken };
      }),

      registerDecoy: unary(CamouflageServiceService.registerDecoy.path, options, async (request) => {
        const decoy = request.decoy;
        if (!decoy) throw ServiceError.invalidArgument('decoy', 'is required');
        const tiers = decoy.tiers.map((t, i) => tierFromProto(t, `decoy.tiers[${i}]`));
        const registered = await engineCall(() =>
          engine.registerDecoy({
            id: decoy.id,
            kind: decoy.kind as Decoy['kind'],
            description: decoy.name,
            tiers,
            carriesHoneytoken: decoy.carriesHoneytoken,
            carriesCredentials: decoy.carriesCredentials,
            contentType: decoy.contentType || undefined,
            status: decoy.status || undefined,
            headers: decoy.headers,
            template: decoy.contentTemplate,
          }, { idempotencyKey: request.idempotencyKey }),
          REGISTER_DECOY_FIELDS,
        );
        return { decoy: decoyToProto(registered.decoy) };
      }),

      getBanditStats: unary(CamouflageServiceService.getBanditStats.path, options, async (request) => {
        const tier = tierFromProto(request.tier, 'tier');
        const stats = await engineCall(() => engine.getBanditStats(tier), { tier: 'tier' });
        return { tier: request.tier, totalPulls: BigInt(stats.totalPulls), arms: stats.arms.map(armToProto) };
      }),
    };

    return { definition: CamouflageServiceService, implementation };
  },
};
