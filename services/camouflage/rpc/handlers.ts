/**
 * The camouflage RPCs: proto names in, proto names out. Each handler decodes its request, calls
 * one CamouflageEngine method and encodes the answer. The engine throws ServiceErrors already
 * naming the request's proto fields, so errors pass to the wire as they are (platform/handlers.ts).
 */
import type { Counter, Histogram } from 'prom-client';
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
import { requestIdStream, unary, type HandlerOptions } from '../../../platform/handlers';
import { ServiceError } from '../../../platform/service-error';
import type { ArmStats, BanditPolicy, CamouflageEngine, Decoy, Tier } from '../store/engine';
import { BODY_BYTES_MAX } from '../domain/threat-signals';

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

const UTF8 = new TextDecoder('utf-8', { fatal: false });

/** The captured body, cut at BODY_BYTES_MAX (never refused: the overflow is a signal, body.length says how long it was). */
function bodyOf(request: AssessRequest): { bodyExcerpt?: string; bodyContentType?: string; bodyLength?: number } {
  const body = request.body;
  if (body === undefined || body.content.length === 0) return {};
  const content = body.content.length > BODY_BYTES_MAX ? body.content.subarray(0, BODY_BYTES_MAX) : body.content;
  const declared = Number(body.length);
  return {
    bodyExcerpt: UTF8.decode(content),
    bodyContentType: body.contentType,
    bodyLength: Math.max(body.content.length, Number.isSafeInteger(declared) ? declared : Number.MAX_SAFE_INTEGER),
  };
}

/** Assessments one AssessStream call runs at once; reading pauses beyond it (backpressure). */
const ASSESS_STREAM_IN_FLIGHT_MAX = 256;

/** What the handlers count (registered by index.ts on the service's registry). */
export interface CamouflageRpcMetrics {
  readonly assessments: Counter<'tier'>;
  readonly assessSeconds: Histogram;
  readonly outcomes: Counter<'tier'>;
}

/** The CamouflageService implementation over `engine`: decode, call the engine, encode. */
export function camouflageHandlers(engine: CamouflageEngine, options: HandlerOptions, metrics: CamouflageRpcMetrics): CamouflageServiceServer {
  const { assessments, assessSeconds, outcomes } = metrics;
  /** Scores one request and chooses its decoy: Assess, and each item of AssessStream. */
  const assessOne = async (request: AssessRequest): Promise<AssessResponse> => {
    const started = process.hrtime.bigint();
    const policy = policyFromProto(request.policy);
    const result = await engine.assess(
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
          ...bodyOf(request),
        },
        policy ? { policy } : {},
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
      const result = await engine.recordOutcome(request.decisionId, {
          interactions: engagement.interactions,
          dwellSeconds,
          honeytokenUsed: engagement.honeytokenUsed,
          credentialsSubmitted: engagement.credentialsSubmitted,
          reachedRealAsset: engagement.reachedRealAsset,
        }, { idempotencyKey: request.idempotencyKey });
      outcomes.inc({ tier: result.tier });
      return { reward: result.reward, arm: result.arm ? armToProto(result.arm) : undefined };
    }),

    listDecoys: unary(CamouflageServiceService.listDecoys.path, options, async (request) => {
      const tier = request.tier === ThreatTier.THREAT_TIER_UNSPECIFIED ? undefined : tierFromProto(request.tier, 'tier');
      // The catalog filters by tier before paging (and applies the page-size rule): a page never exceeds page_size and none is skipped.
      const page = await engine.listDecoys({ pageSize: request.pageSize, pageToken: request.pageToken, ...(tier ? { tier } : {}) });
      return { decoys: page.decoys.map(decoyToProto), nextPageToken: page.nextPageToken };
    }),

    registerDecoy: unary(CamouflageServiceService.registerDecoy.path, options, async (request) => {
      const decoy = request.decoy;
      if (!decoy) throw ServiceError.invalidArgument('decoy', 'is required');
      const tiers = decoy.tiers.map((t, i) => tierFromProto(t, `decoy.tiers[${i}]`));
      const registered = await engine.registerDecoy({
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
        }, { idempotencyKey: request.idempotencyKey });
      return { decoy: decoyToProto(registered.decoy) };
    }),

    getBanditStats: unary(CamouflageServiceService.getBanditStats.path, options, async (request) => {
      const tier = tierFromProto(request.tier, 'tier');
      const stats = await engine.getBanditStats(tier);
      return { tier: request.tier, totalPulls: BigInt(stats.totalPulls), arms: stats.arms.map(armToProto) };
    }),
  };

  return implementation;
}
