/**
 * Validation and defaults of a CreateRollout request. Each problem is an
 * INVALID_ARGUMENT naming the proto field path the caller wrote
 * (`target.virtual_service`, `steps[2]`, `analysis.max_error_rate`).
 */
import { ServiceError } from '../../../platform/service-error';

export const ROLLOUT_STATES = ['PENDING', 'PROGRESSING', 'AWAITING_PROMOTION', 'SUCCEEDED', 'ROLLED_BACK', 'ABORTED', 'FAILED'] as const;
export type RolloutStateName = (typeof ROLLOUT_STATES)[number];
export const ACTIVE_STATES: readonly RolloutStateName[] = ['PENDING', 'PROGRESSING', 'AWAITING_PROMOTION'];

export function isTerminal(state: RolloutStateName): boolean {
  return !ACTIVE_STATES.includes(state);
}

/** Where a canary's traffic split lives (RolloutTarget with defaults applied). */
export interface RouteTarget {
  readonly namespace: string;
  /** Name of the Istio VirtualService. */
  readonly virtualService: string;
  /** Destination host, e.g. "credits.shieldx.svc.cluster.local". */
  readonly host: string;
  readonly stableSubset: string;
  readonly canarySubset: string;
  /** Name of the HTTP route whose weights are set. */
  readonly routeName: string;
}

/** What CreateRollout persists (validated, defaults applied). */
export interface RolloutSpec {
  readonly evaluationId: string;
  readonly target: RouteTarget;
  readonly steps: readonly number[];
  readonly stepDurationMs: number;
  readonly maxErrorRate: number;
  readonly maxP99LatencyMs: number;
  readonly minRequests: bigint;
  readonly maxInconclusive: number;
  readonly analysisWindowMs: number;
  /** Unhealthy analyses in a row before rollback. */
  readonly failureThreshold: number;
  /** How often the canary is analysed within a step (at most the step duration). */
  readonly analysisIntervalMs: number;
  /** A live rollout that has not advanced a step for this long fails. */
  readonly progressDeadlineMs: number;
  /** On unless the request set disable_auto_rollback. */
  readonly autoRollback: boolean;
  readonly manualPromotion: boolean;
  readonly webhooks: readonly WebhookSpec[];
  readonly metrics: readonly MetricSpec[];
}

/** A validated MetricTemplate. */
export interface MetricSpec {
  readonly name: string;
  readonly query: string;
  readonly min?: number;
  readonly max?: number;
  readonly maxAboveStable?: number;
}

export interface MetricInput {
  readonly name: string;
  readonly query: string;
  readonly min?: number | undefined;
  readonly max?: number | undefined;
  readonly maxAboveStable?: number | undefined;
}

export const METRIC_VARIABLES = ['namespace', 'service', 'virtual_service', 'subset', 'interval'] as const;
export type MetricVariable = (typeof METRIC_VARIABLES)[number];
export const MAX_METRICS = 10;
export const MAX_METRIC_QUERY_LENGTH = 2_000;
/** `{{ name }}` in a template. */
export const METRIC_VARIABLE_PATTERN = /\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}/g;

/** Validated metric templates (field paths `analysis.metrics[i].…`). */
export function validateMetrics(metrics: readonly MetricInput[]): readonly MetricSpec[] {
  if (metrics.length > MAX_METRICS) throw ServiceError.invalidArgument('analysis.metrics', `must have at most ${MAX_METRICS} metrics`);
  const names = new Set<string>();
  return metrics.map((metric, index) => {
    const field = `analysis.metrics[${index}]`;
    const name = requireName(`${field}.name`, metric.name, DNS_LABEL, 63, 'a DNS label (lowercase letters, digits, "-")');
    if (names.has(name)) throw ServiceError.invalidArgument(`${field}.name`, 'must be unique among the metrics');
    names.add(name);
    const query = metric.query.trim();
    if (query === '') throw ServiceError.invalidArgument(`${field}.query`, 'is required');
    if (query.length > MAX_METRIC_QUERY_LENGTH) throw ServiceError.invalidArgument(`${field}.query`, `must be at most ${MAX_METRIC_QUERY_LENGTH} characters`);
    for (const match of query.matchAll(METRIC_VARIABLE_PATTERN)) {
      if (!(METRIC_VARIABLES as readonly string[]).includes(match[1]!)) {
        throw ServiceError.invalidArgument(`${field}.query`, `unknown variable {{${match[1]}}} (known: ${METRIC_VARIABLES.join(', ')})`);
      }
    }
    if (/\{\{|\}\}/.test(query.replace(METRIC_VARIABLE_PATTERN, ''))) throw ServiceError.invalidArgument(`${field}.query`, 'has a malformed {{variable}}');
    for (const [key, proto] of [['min', 'min'], ['max', 'max'], ['maxAboveStable', 'max_above_stable']] as const) {
      const value = metric[key];
      if (value !== undefined && !Number.isFinite(value)) throw ServiceError.invalidArgument(`${field}.${proto}`, 'must be a finite number');
    }
    if (metric.min === undefined && metric.max === undefined && metric.maxAboveStable === undefined) {
      throw ServiceError.invalidArgument(`${field}.max`, 'one of min, max, max_above_stable is required');
    }
    if (metric.min !== undefined && metric.max !== undefined && metric.min > metric.max) throw ServiceError.invalidArgument(`${field}.min`, 'must not be above max');
    if (metric.maxAboveStable !== undefined && metric.maxAboveStable < 0) throw ServiceError.invalidArgument(`${field}.max_above_stable`, 'must not be negative');
    return {
      name,
      query,
      ...(metric.min === undefined ? {} : { min: metric.min }),
      ...(metric.max === undefined ? {} : { max: metric.max }),
      ...(metric.maxAboveStable === undefined ? {} : { maxAboveStable: metric.maxAboveStable }),
    };
  });
}

/** WebhookType without its prefix, in the order of the proto enum (value = index + 1). */
export const WEBHOOK_TYPES = ['PRE_ROLLOUT', 'CONFIRM_TRAFFIC_INCREASE', 'CONFIRM_PROMOTION', 'ROLLBACK', 'POST_ROLLOUT'] as const;
export type WebhookTypeName = (typeof WEBHOOK_TYPES)[number];
/** Types whose non-2xx answer holds the rollout; the others are notifications. */
export const GATE_WEBHOOK_TYPES: readonly WebhookTypeName[] = ['PRE_ROLLOUT', 'CONFIRM_TRAFFIC_INCREASE', 'CONFIRM_PROMOTION'];

/** A validated RolloutWebhook. */
export interface WebhookSpec {
  readonly name: string;
  readonly type: WebhookTypeName;
  readonly url: string;
  readonly timeoutMs: number;
  /** CONFIRM_TRAFFIC_INCREASE only: the canary weights it gates; empty = every increase. */
  readonly steps: readonly number[];
}

export interface WebhookInput {
  readonly name: string;
  /** The proto enum's value. */
  readonly type: number;
  readonly url: string;
  readonly timeout?: DurationInput | undefined;
  readonly steps: readonly number[];
}

/** A google.protobuf.Duration as the request carries it. */
export interface DurationInput {
  readonly seconds: bigint;
  readonly nanos: number;
}

/**
 * What parseCreateRollout reads: the fields of a CreateRolloutRequest (the generated message fits
 * it as it is), declared here so the rules do not depend on generated code.
 */
export interface CreateRolloutInput {
  readonly evaluationId: string;
  readonly target?: RouteTarget | undefined;
  readonly steps: readonly number[];
  readonly stepDuration?: DurationInput | undefined;
  readonly analysis?:
    | {
        readonly maxErrorRate: number;
        readonly maxP99Latency?: DurationInput | undefined;
        readonly minRequests: bigint;
        readonly maxInconclusive: number;
        readonly window?: DurationInput | undefined;
        readonly failureThreshold?: number;
        readonly interval?: DurationInput | undefined;
        readonly metrics?: readonly MetricInput[];
      }
    | undefined;
  /** Deprecated: rollback is automatic by default; false cannot turn it off (it is the proto3 default). */
  readonly autoRollback: boolean;
  readonly disableAutoRollback?: boolean;
  readonly manualPromotion: boolean;
  readonly progressDeadline?: DurationInput | undefined;
  readonly webhooks?: readonly WebhookInput[];
}

export const DEFAULT_STEPS: readonly number[] = [5, 25, 50, 100];
export const MAX_STEPS = 20;
export const DEFAULT_STEP_DURATION_MS = 60_000;
export const MIN_DURATION_MS = 1_000;
export const MAX_DURATION_MS = 24 * 3_600_000;
export const DEFAULT_MAX_ERROR_RATE = 0.01;
export const DEFAULT_MAX_P99_LATENCY_MS = 500;
export const DEFAULT_MIN_REQUESTS = 100n;
export const DEFAULT_MAX_INCONCLUSIVE = 3;
export const MAX_INCONCLUSIVE_LIMIT = 100;
export const DEFAULT_ROUTE_NAME = 'primary';
export const DEFAULT_FAILURE_THRESHOLD = 1;
export const MAX_FAILURE_THRESHOLD = 100;
/** Default progress deadline: 10 × the step duration, at least this. */
export const MIN_DEFAULT_PROGRESS_DEADLINE_MS = 10 * 60_000;
export const MAX_PROGRESS_DEADLINE_MS = 7 * 24 * 3_600_000;

export const MAX_WEBHOOKS = 10;
export const DEFAULT_WEBHOOK_TIMEOUT_MS = 5_000;
export const MAX_WEBHOOK_TIMEOUT_MS = 30_000;
export const MAX_WEBHOOK_URL_LENGTH = 2_048;

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function isUuid(value: string): boolean {
  return UUID.test(value);
}

function requireName(field: string, value: string, pattern: RegExp, maxLength: number, what: string): string {
  if (value === '') throw ServiceError.invalidArgument(field, 'is required');
  if (value.length > maxLength) throw ServiceError.invalidArgument(field, `must be at most ${maxLength} characters`);
  if (!pattern.test(value)) throw ServiceError.invalidArgument(field, `must be ${what}`);
  return value;
}

/**
 * Milliseconds of a Duration; undefined when unset or exactly zero (the default applies). A set
 * duration that rounds to 0 ms (e.g. 1ns) is 0, for the caller's lower bound to refuse, not the default.
 */
function durationMs(field: string, duration: DurationInput | undefined, maxMs = MAX_DURATION_MS, maxText = '24h'): number | undefined {
  if (duration === undefined) return undefined;
  const { seconds, nanos } = duration;
  if (seconds < 0n || nanos < 0 || nanos > 999_999_999) throw ServiceError.invalidArgument(field, 'must be a positive duration');
  if (seconds > BigInt(maxMs / 1000)) throw ServiceError.invalidArgument(field, `must be at most ${maxText}`);
  if (seconds === 0n && nanos === 0) return undefined;
  return Number(seconds) * 1000 + Math.round(nanos / 1_000_000);
}

function boundedDuration(field: string, ms: number | undefined, fallback: number): number {
  const value = ms ?? fallback;
  if (value < MIN_DURATION_MS) throw ServiceError.invalidArgument(field, 'must be at least 1s');
  if (value > MAX_DURATION_MS) throw ServiceError.invalidArgument(field, 'must be at most 24h');
  return value;
}

export function validateSteps(steps: readonly number[]): readonly number[] {
  if (steps.length === 0) return DEFAULT_STEPS;
  if (steps.length > MAX_STEPS) throw ServiceError.invalidArgument('steps', `must have at most ${MAX_STEPS} steps`);
  steps.forEach((weight, index) => {
    const field = `steps[${index}]`;
    if (!Number.isInteger(weight) || weight < 1 || weight > 100) throw ServiceError.invalidArgument(field, 'must be a percentage between 1 and 100');
    if (index > 0 && weight <= steps[index - 1]!) throw ServiceError.invalidArgument(field, 'must be greater than the previous step');
  });
  if (steps[steps.length - 1] !== 100) throw ServiceError.invalidArgument(`steps[${steps.length - 1}]`, 'the last step must be 100');
  return [...steps];
}

/** Validated webhooks (field paths `webhooks[i].…`); `steps` are the rollout's validated steps. */
export function validateWebhooks(webhooks: readonly WebhookInput[], steps: readonly number[]): readonly WebhookSpec[] {
  if (webhooks.length > MAX_WEBHOOKS) throw ServiceError.invalidArgument('webhooks', `must have at most ${MAX_WEBHOOKS} webhooks`);
  const names = new Set<string>();
  return webhooks.map((hook, index) => {
    const field = `webhooks[${index}]`;
    const name = requireName(`${field}.name`, hook.name, DNS_LABEL, 63, 'a DNS label (lowercase letters, digits, "-")');
    if (names.has(name)) throw ServiceError.invalidArgument(`${field}.name`, 'must be unique among the webhooks');
    names.add(name);
    const type = WEBHOOK_TYPES[hook.type - 1];
    if (type === undefined) throw ServiceError.invalidArgument(`${field}.type`, 'must be a webhook type');
    if (hook.url === '') throw ServiceError.invalidArgument(`${field}.url`, 'is required');
    if (hook.url.length > MAX_WEBHOOK_URL_LENGTH) throw ServiceError.invalidArgument(`${field}.url`, `must be at most ${MAX_WEBHOOK_URL_LENGTH} characters`);
    let url: URL;
    try {
      url = new URL(hook.url);
    } catch {
      throw ServiceError.invalidArgument(`${field}.url`, 'must be an absolute http:// or https:// URL');
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw ServiceError.invalidArgument(`${field}.url`, 'must be an http:// or https:// URL');
    if (url.username !== '' || url.password !== '') throw ServiceError.invalidArgument(`${field}.url`, 'must not carry user info (credentials)');
    const timeoutMs = durationMs(`${field}.timeout`, hook.timeout) ?? DEFAULT_WEBHOOK_TIMEOUT_MS;
    if (timeoutMs < 1) throw ServiceError.invalidArgument(`${field}.timeout`, 'must be at least 1ms');
    if (timeoutMs > MAX_WEBHOOK_TIMEOUT_MS) throw ServiceError.invalidArgument(`${field}.timeout`, 'must be at most 30s');
    if (hook.steps.length > 0 && type !== 'CONFIRM_TRAFFIC_INCREASE') {
      throw ServiceError.invalidArgument(`${field}.steps`, 'is only for WEBHOOK_TYPE_CONFIRM_TRAFFIC_INCREASE');
    }
    hook.steps.forEach((weight, i) => {
      const position = steps.indexOf(weight);
      if (position < 1 || position === steps.length - 1) {
        throw ServiceError.invalidArgument(`${field}.steps[${i}]`, 'must be one of steps, neither the first nor the last (WEBHOOK_TYPE_CONFIRM_PROMOTION gates the last)');
      }
    });
    return { name, type, url: url.href, timeoutMs, steps: [...new Set(hook.steps)] };
  });
}

/** The validated spec with defaults applied; throws INVALID_ARGUMENT naming the first bad field. */
export function parseCreateRollout(request: CreateRolloutInput): RolloutSpec {
  if (request.evaluationId === '') throw ServiceError.invalidArgument('evaluation_id', 'is required');
  if (!isUuid(request.evaluationId)) throw ServiceError.invalidArgument('evaluation_id', 'must be a UUID');
  const target = request.target;
  if (target === undefined) throw ServiceError.invalidArgument('target', 'is required');
  const namespace = requireName('target.namespace', target.namespace, DNS_LABEL, 63, 'a DNS label (lowercase letters, digits, "-")');
  const virtualService = requireName('target.virtual_service', target.virtualService, DNS_SUBDOMAIN, 253, 'a DNS subdomain name');
  const host = requireName('target.host', target.host.toLowerCase(), DNS_SUBDOMAIN, 253, 'a DNS host name');
  const stableSubset = requireName('target.stable_subset', target.stableSubset, DNS_LABEL, 63, 'a DNS label');
  const canarySubset = requireName('target.canary_subset', target.canarySubset, DNS_LABEL, 63, 'a DNS label');
  if (canarySubset === stableSubset) throw ServiceError.invalidArgument('target.canary_subset', 'must differ from target.stable_subset');
  const routeName =
    target.routeName === '' ? DEFAULT_ROUTE_NAME : requireName('target.route_name', target.routeName, /^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/, 63, 'a route name (letters, digits, "-", "_", ".")');

  const steps = validateSteps(request.steps);
  const stepDurationMs = boundedDuration('step_duration', durationMs('step_duration', request.stepDuration), DEFAULT_STEP_DURATION_MS);

  const analysis = request.analysis;
  // Only an unset (0) rate takes the default: NaN is refused below, not silently replaced.
  const maxErrorRate = analysis === undefined || analysis.maxErrorRate === 0 ? DEFAULT_MAX_ERROR_RATE : analysis.maxErrorRate;
  if (!Number.isFinite(maxErrorRate) || maxErrorRate < 0 || maxErrorRate > 1) {
    throw ServiceError.invalidArgument('analysis.max_error_rate', 'must be between 0 and 1');
  }
  const maxP99LatencyMs = durationMs('analysis.max_p99_latency', analysis?.maxP99Latency) ?? DEFAULT_MAX_P99_LATENCY_MS;
  if (maxP99LatencyMs < 1) throw ServiceError.invalidArgument('analysis.max_p99_latency', 'must be at least 1ms');
  if (maxP99LatencyMs > MAX_DURATION_MS) throw ServiceError.invalidArgument('analysis.max_p99_latency', 'must be at most 24h');
  const minRequests = analysis?.minRequests || DEFAULT_MIN_REQUESTS;
  if (minRequests < 0n) throw ServiceError.invalidArgument('analysis.min_requests', 'must not be negative');
  const maxInconclusive = analysis?.maxInconclusive || DEFAULT_MAX_INCONCLUSIVE;
  if (maxInconclusive < 1 || maxInconclusive > MAX_INCONCLUSIVE_LIMIT) {
    throw ServiceError.invalidArgument('analysis.max_inconclusive', `must be between 1 and ${MAX_INCONCLUSIVE_LIMIT}`);
  }
  const analysisWindowMs = boundedDuration('analysis.window', durationMs('analysis.window', analysis?.window), stepDurationMs);
  const failureThreshold = analysis?.failureThreshold || DEFAULT_FAILURE_THRESHOLD;
  if (!Number.isInteger(failureThreshold) || failureThreshold < 1 || failureThreshold > MAX_FAILURE_THRESHOLD) {
    throw ServiceError.invalidArgument('analysis.failure_threshold', `must be between 1 and ${MAX_FAILURE_THRESHOLD}`);
  }
  const analysisIntervalMs = boundedDuration('analysis.interval', durationMs('analysis.interval', analysis?.interval), stepDurationMs);
  if (analysisIntervalMs > stepDurationMs) throw ServiceError.invalidArgument('analysis.interval', 'must not be longer than step_duration');
  const progressDeadlineMs =
    durationMs('progress_deadline', request.progressDeadline, MAX_PROGRESS_DEADLINE_MS, '7 days') ?? Math.min(MAX_PROGRESS_DEADLINE_MS, Math.max(MIN_DEFAULT_PROGRESS_DEADLINE_MS, 10 * stepDurationMs));
  if (progressDeadlineMs < MIN_DURATION_MS) throw ServiceError.invalidArgument('progress_deadline', 'must be at least 1s');
  if (progressDeadlineMs > MAX_PROGRESS_DEADLINE_MS) throw ServiceError.invalidArgument('progress_deadline', 'must be at most 7 days');

  const webhooks = validateWebhooks(request.webhooks ?? [], steps);
  const metrics = validateMetrics(analysis?.metrics ?? []);

  return {
    evaluationId: request.evaluationId.toLowerCase(),
    target: { namespace, virtualService, host, stableSubset, canarySubset, routeName },
    steps,
    stepDurationMs,
    maxErrorRate,
    maxP99LatencyMs,
    minRequests,
    maxInconclusive,
    analysisWindowMs,
    failureThreshold,
    analysisIntervalMs,
    progressDeadlineMs,
    // Rollback is the safe default (an unhealthy canary must not keep its traffic); `auto_rollback`
    // alone cannot say "off", since false is what an unset proto3 bool reads as.
    autoRollback: request.disableAutoRollback !== true,
    manualPromotion: request.manualPromotion,
    webhooks,
    metrics,
  };
}
