/**
 * Canary analysis: Istio's standard metrics for the canary and stable subsets,
 * read from Prometheus over its HTTP API, turned into a verdict.
 *
 * The rule that matters: missing evidence is never good news. No series, too
 * few requests, NaN (0/0), or a failed query make the analysis INCONCLUSIVE;
 * the controller holds the step and fails the rollout after too many in a row.
 *
 * Series (Istio telemetry v2, `reporter="destination"` so each request counts
 * once — the client sidecar reports the same request with reporter="source"):
 * - error rate = server errors / all requests, where a server error is an HTTP
 *   5xx, or a gRPC call answered with HTTP 200 whose grpc-status is a server
 *   fault (UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE,
 *   DATA_LOSS). Client errors (INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION
 *   such as INSUFFICIENT_CREDITS...) are the service working as designed.
 * - p99 = histogram_quantile(0.99) over istio_request_duration_milliseconds.
 * - requests = increase(istio_requests_total) over the window.
 *
 * Only evidence from the current step counts: the window is capped at the time
 * since the step's split took effect (a window longer than the step would
 * otherwise judge the previous step's samples), and the newest canary sample
 * must lie inside the window — a canary whose series stopped (pods gone,
 * scrape failing) is INCONCLUSIVE, never healthy on old figures.
 * Subsets are matched on `destination_version`, the pod's `version` label,
 * which is what the DestinationRule's subsets select on.
 */
import { AnalysisSnapshot, AnalysisVerdict, type MetricResult } from '../../../gen/shieldx/shadow/v1/shadow';
import { METRIC_VARIABLE_PATTERN, type MetricSpec, type MetricVariable } from '../domain/rollout-spec';

/** gRPC codes that mean the server failed (not the caller). */
export const GRPC_SERVER_ERROR_CODES = ['2', '4', '12', '13', '14', '15'] as const;

export interface AnalysisThresholds {
  readonly maxErrorRate: number;
  readonly maxP99LatencyMs: number;
  readonly minRequests: bigint;
  /** Range of the queries, `[w]`. */
  readonly windowMs: number;
  /** User-defined checks (metric templates). */
  readonly metrics?: readonly MetricSpec[];
}

export interface AnalysisTarget {
  readonly namespace?: string;
  readonly virtualService?: string;
  readonly host: string;
  readonly stableSubset: string;
  readonly canarySubset: string;
}

/** One subset's figures; undefined = no data (no series, or NaN). */
export interface SubsetMeasurement {
  readonly errorRate?: number;
  readonly p99LatencyMs?: number;
  readonly requests?: number;
  /** Set when a query failed: the measurement is unusable. */
  readonly failure?: string;
  /** Set when the newest sample is older than the window (or there is none): the figures are not from now. */
  readonly stale?: string;
}

export class PrometheusQueryError extends Error {
  override readonly name = 'PrometheusQueryError';
}

export interface PrometheusClientOptions {
  /** e.g. http://prometheus.monitoring:9090 */
  readonly baseUrl: string;
  readonly timeoutMs?: number;
}

interface PrometheusResponse {
  status: 'success' | 'error';
  errorType?: string;
  error?: string;
  data?: { resultType: string; result: unknown };
}

/** A minimal client for Prometheus' instant-query API, `/api/v1/query`. */
export class PrometheusClient {
  private readonly baseUrl: string;
  private readonly timeoutMs: number;

  constructor(options: PrometheusClientOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, '');
    this.timeoutMs = options.timeoutMs ?? 5_000;
  }

  /**
   * Evaluates `promql` and returns its single value: undefined for an empty
   * result or NaN. Throws PrometheusQueryError for a failed request or a
   * result with more than one series (the queries here always aggregate).
   */
  async queryValue(promql: string, time?: Date, signal?: AbortSignal): Promise<number | undefined> {
    const body = new URLSearchParams({ query: promql });
    if (time) body.set('time', (time.getTime() / 1000).toFixed(3));
    let response: Response;
    try {
      response = await fetch(`${this.baseUrl}/api/v1/query`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
        body,
        signal: signal ? AbortSignal.any([AbortSignal.timeout(this.timeoutMs), signal]) : AbortSignal.timeout(this.timeoutMs),
      });
    } catch (error) {
      if (signal?.aborted) throw new PrometheusQueryError(`Prometheus did not answer in time: ${String((signal.reason as Error)?.message ?? signal.reason)}`, { cause: error });
      if ((error as Error).name === 'TimeoutError') throw new PrometheusQueryError(`Prometheus did not answer within ${this.timeoutMs} ms`, { cause: error });
      throw new PrometheusQueryError(`Prometheus unreachable: ${(error as Error).message}`, { cause: error });
    }
    let parsed: PrometheusResponse;
    try {
      parsed = (await response.json()) as PrometheusResponse;
    } catch (error) {
      throw new PrometheusQueryError(`Prometheus answered HTTP ${response.status} without JSON`, { cause: error });
    }
    if (!response.ok || parsed.status !== 'success' || !parsed.data) {
      throw new PrometheusQueryError(`Prometheus query failed (HTTP ${response.status}): ${parsed.errorType ?? ''} ${parsed.error ?? ''}`.trim());
    }
    const { resultType, result } = parsed.data;
    let raw: string | undefined;
    if (resultType === 'scalar') {
      raw = (result as [number, string])[1];
    } else if (resultType === 'vector') {
      const samples = result as { value: [number, string] }[];
      if (samples.length > 1) throw new PrometheusQueryError(`expected at most one series, got ${samples.length}`);
      raw = samples[0]?.value[1];
    } else {
      throw new PrometheusQueryError(`unexpected result type ${resultType}`);
    }
    if (raw === undefined) return undefined;
    const value = Number(raw);
    return Number.isFinite(value) ? value : undefined;
  }
}

/** A PromQL double-quoted string literal. */
function promString(value: string): string {
  return `"${value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`;
}

/** Escapes RE2 metacharacters, so `=~` matches the literal host. */
function regexLiteral(value: string): string {
  return value.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** Prometheus duration for a window in milliseconds, e.g. "4000ms". */
export function promDuration(windowMs: number): string {
  if (!Number.isInteger(windowMs) || windowMs <= 0) throw new RangeError('windowMs must be a positive integer');
  return `${windowMs}ms`;
}

export interface IstioQueries {
  readonly errorRate: string;
  readonly p99LatencyMs: string;
  readonly requests: string;
  /** Seconds since the newest sample of the subset's request counter (empty when it has none or it went stale). */
  readonly newestSampleAgeSeconds: string;
}

/** The three queries for one subset of `host` over `windowMs`. */
export function istioQueries(host: string, subset: string, windowMs: number): IstioQueries {
  const w = promDuration(windowMs);
  const selector = `reporter="destination",destination_service=~${promString(regexLiteral(host))},destination_version=${promString(subset)}`;
  const http5xx = `sum(rate(istio_requests_total{${selector},response_code=~"5.."}[${w}]))`;
  const grpcFaults = `sum(rate(istio_requests_total{${selector},response_code!~"5..",grpc_response_status=~"${GRPC_SERVER_ERROR_CODES.join('|')}"}[${w}]))`;
  const all = `sum(rate(istio_requests_total{${selector}}[${w}]))`;
  return {
    // Each error term falls back to 0 (no error series yet is fine); the denominator does not (no traffic = no data).
    errorRate: `((${http5xx} or vector(0)) + (${grpcFaults} or vector(0))) / ${all}`,
    p99LatencyMs: `histogram_quantile(0.99, sum by (le) (rate(istio_request_duration_milliseconds_bucket{${selector}}[${w}])))`,
    requests: `sum(increase(istio_requests_total{${selector}}[${w}]))`,
    newestSampleAgeSeconds: `time() - max(timestamp(istio_requests_total{${selector}}))`,
  };
}

export async function measureSubset(
  client: PrometheusClient,
  host: string,
  subset: string,
  windowMs: number,
  time?: Date,
  signal?: AbortSignal,
): Promise<SubsetMeasurement> {
  const queries = istioQueries(host, subset, windowMs);
  try {
    const [errorRate, p99LatencyMs, requests, ageSeconds] = await Promise.all([
      client.queryValue(queries.errorRate, time, signal),
      client.queryValue(queries.p99LatencyMs, time, signal),
      client.queryValue(queries.requests, time, signal),
      client.queryValue(queries.newestSampleAgeSeconds, time, signal),
    ]);
    let stale: string | undefined;
    if (ageSeconds === undefined) stale = `no current ${subset} samples (the series is gone or stale)`;
    else if (ageSeconds * 1000 > windowMs) stale = `the newest ${subset} sample is ${ageSeconds.toFixed(1)} s old, older than the ${windowMs} ms window`;
    return { errorRate, p99LatencyMs, requests, ...(stale === undefined ? {} : { stale }) };
  } catch (error) {
    return { failure: (error as Error).message };
  }
}

/** The verdict for a canary measurement; pure, so every branch is easy to prove. */
export function verdictFor(canary: SubsetMeasurement, thresholds: AnalysisThresholds): { verdict: AnalysisVerdict; detail: string } {
  const inconclusive = (detail: string) => ({ verdict: AnalysisVerdict.ANALYSIS_VERDICT_INCONCLUSIVE, detail });
  if (canary.failure !== undefined) return inconclusive(`canary query failed: ${canary.failure}`);
  if (canary.stale !== undefined) return inconclusive(canary.stale);
  if (canary.requests === undefined) return inconclusive('no canary traffic data');
  const requests = Math.round(canary.requests);
  if (BigInt(requests) < thresholds.minRequests || requests === 0) {
    return inconclusive(`canary served ${requests} requests in the window, fewer than the ${thresholds.minRequests} required`);
  }
  if (canary.errorRate === undefined) return inconclusive('no canary error-rate data');
  if (canary.errorRate > thresholds.maxErrorRate) {
    return {
      verdict: AnalysisVerdict.ANALYSIS_VERDICT_UNHEALTHY,
      detail: `canary error rate ${canary.errorRate.toFixed(4)} above ${thresholds.maxErrorRate}`,
    };
  }
  if (canary.p99LatencyMs === undefined) return inconclusive('no canary latency data');
  if (canary.p99LatencyMs > thresholds.maxP99LatencyMs) {
    return {
      verdict: AnalysisVerdict.ANALYSIS_VERDICT_UNHEALTHY,
      detail: `canary p99 latency ${canary.p99LatencyMs.toFixed(1)} ms above ${thresholds.maxP99LatencyMs} ms`,
    };
  }
  return { verdict: AnalysisVerdict.ANALYSIS_VERDICT_HEALTHY, detail: '' };
}

/** A metric template with its variables filled in (values are validated names, safe inside PromQL quotes). */
export function renderMetricQuery(query: string, variables: Readonly<Record<MetricVariable, string>>): string {
  return query.replace(METRIC_VARIABLE_PATTERN, (_, name: string) => variables[name as MetricVariable] ?? '');
}

/** Runs one metric template for the canary (and stable, for a comparison) and judges it; never throws. */
export async function measureMetric(
  client: PrometheusClient,
  metric: MetricSpec,
  target: AnalysisTarget,
  windowMs: number,
  time?: Date,
  signal?: AbortSignal,
): Promise<MetricResult> {
  const variables = (subset: string) => ({
    namespace: target.namespace ?? '',
    service: target.host.split('.')[0]!,
    virtual_service: target.virtualService ?? '',
    subset,
    interval: promDuration(windowMs),
  });
  const result = (verdict: AnalysisVerdict, detail: string, canaryValue?: number, stableValue?: number): MetricResult => ({ name: metric.name, verdict, canaryValue, stableValue, detail });
  let canary: number | undefined;
  let stable: number | undefined;
  try {
    [canary, stable] = await Promise.all([
      client.queryValue(renderMetricQuery(metric.query, variables(target.canarySubset)), time, signal),
      metric.maxAboveStable === undefined ? Promise.resolve(undefined) : client.queryValue(renderMetricQuery(metric.query, variables(target.stableSubset)), time, signal),
    ]);
  } catch (error) {
    return result(AnalysisVerdict.ANALYSIS_VERDICT_INCONCLUSIVE, `metric ${metric.name}: query failed: ${(error as Error).message}`);
  }
  if (canary === undefined) return result(AnalysisVerdict.ANALYSIS_VERDICT_INCONCLUSIVE, `metric ${metric.name}: no canary value`, undefined, stable);
  if (metric.min !== undefined && canary < metric.min) return result(AnalysisVerdict.ANALYSIS_VERDICT_UNHEALTHY, `metric ${metric.name}: canary ${canary} below ${metric.min}`, canary, stable);
  if (metric.max !== undefined && canary > metric.max) return result(AnalysisVerdict.ANALYSIS_VERDICT_UNHEALTHY, `metric ${metric.name}: canary ${canary} above ${metric.max}`, canary, stable);
  if (metric.maxAboveStable !== undefined) {
    if (stable === undefined) return result(AnalysisVerdict.ANALYSIS_VERDICT_INCONCLUSIVE, `metric ${metric.name}: no stable value to compare with`, canary);
    if (canary - stable > metric.maxAboveStable) {
      return result(AnalysisVerdict.ANALYSIS_VERDICT_UNHEALTHY, `metric ${metric.name}: canary ${canary} exceeds stable ${stable} by more than ${metric.maxAboveStable}`, canary, stable);
    }
  }
  return result(AnalysisVerdict.ANALYSIS_VERDICT_HEALTHY, '', canary, stable);
}

/** Worst of the verdicts: unhealthy, then inconclusive, then healthy. */
function combine(verdicts: readonly AnalysisVerdict[]): AnalysisVerdict {
  if (verdicts.includes(AnalysisVerdict.ANALYSIS_VERDICT_UNHEALTHY)) return AnalysisVerdict.ANALYSIS_VERDICT_UNHEALTHY;
  if (verdicts.includes(AnalysisVerdict.ANALYSIS_VERDICT_INCONCLUSIVE)) return AnalysisVerdict.ANALYSIS_VERDICT_INCONCLUSIVE;
  return AnalysisVerdict.ANALYSIS_VERDICT_HEALTHY;
}

/**
 * Measures canary and stable and decides. Stable figures are context for the
 * operator (the snapshot records them); the verdict rests on the canary's
 * absolute thresholds, so a stable without traffic cannot block a rollout.
 */
export interface AnalysisContext {
  readonly time?: Date;
  /** Time since the current step's split took effect: caps the window (older samples are another step's). */
  readonly stepElapsedMs?: number;
  /** Ends the queries (e.g. before the controller's lease runs out): the analysis is then INCONCLUSIVE. */
  readonly signal?: AbortSignal;
}

/** The window actually queried: the configured one, capped at the step's age (whole ms, at least 1). */
export function effectiveWindowMs(windowMs: number, stepElapsedMs: number | undefined): number {
  if (stepElapsedMs === undefined || !Number.isFinite(stepElapsedMs)) return windowMs;
  return Math.max(1, Math.min(windowMs, Math.floor(stepElapsedMs)));
}

export async function analyse(client: PrometheusClient, target: AnalysisTarget, thresholds: AnalysisThresholds, context: AnalysisContext | Date = {}): Promise<AnalysisSnapshot> {
  const { time, stepElapsedMs, signal } = context instanceof Date ? { time: context } : context;
  const windowMs = effectiveWindowMs(thresholds.windowMs, stepElapsedMs);
  const [canary, stable, metrics] = await Promise.all([
    measureSubset(client, target.host, target.canarySubset, windowMs, time, signal),
    measureSubset(client, target.host, target.stableSubset, windowMs, time, signal),
    Promise.all((thresholds.metrics ?? []).map((metric) => measureMetric(client, metric, target, windowMs, time, signal))),
  ]);
  const builtIn = verdictFor(canary, thresholds);
  // A user-defined check can make a healthy canary unhealthy or inconclusive, never the reverse.
  const verdict = combine([builtIn.verdict, ...metrics.map((metric) => metric.verdict)]);
  const notes = [builtIn.detail, ...metrics.map((metric) => metric.detail)];
  if (stable.failure !== undefined) notes.push(`stable query failed: ${stable.failure}`);
  return {
    verdict,
    canaryErrorRate: canary.errorRate ?? 0,
    stableErrorRate: stable.errorRate ?? 0,
    canaryP99LatencyMs: canary.p99LatencyMs ?? 0,
    stableP99LatencyMs: stable.p99LatencyMs ?? 0,
    canaryRequests: BigInt(Math.round(canary.requests ?? 0)),
    stableRequests: BigInt(Math.round(stable.requests ?? 0)),
    detail: notes.filter((note) => note !== '').join('; '),
    metrics,
  };
}
