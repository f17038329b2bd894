import { expect } from 'chai';
import { AnalysisVerdict } from '../../../gen/shieldx/shadow/v1/shadow';
import { waitFor } from '../../../testing/harness';
import { requirePrometheus, startIstioSeries, startPrometheus, type IstioSeries, type RunningPrometheus } from '../../../testing/prometheus';
import { analyse, istioQueries, PrometheusClient, verdictFor, type AnalysisThresholds } from './rollout-analysis';

const thresholds: AnalysisThresholds = { maxErrorRate: 0.05, maxP99LatencyMs: 500, minRequests: 20n, windowMs: 3_000 };
const host = (name: string) => `${name}.analysis.svc.cluster.local`;
const target = (name: string) => ({ host: host(name), stableSubset: 'stable', canarySubset: 'canary' });

describe('rollout analysis: pure verdicts', () => {
  // A failed query is never taken as healthy.
  it('is inconclusive when a query failed', () => {
    expect(verdictFor({ failure: 'boom' }, thresholds).verdict).to.equal(AnalysisVerdict.ANALYSIS_VERDICT_INCONCLUSIVE);
  });

  // No series and too few requests are inconclusive, even with a perfect error rate.
  it('is inconclusive without data or with too few requests', () => {
    expect(verdictFor({}, thresholds).verdict).to.equal(AnalysisVerdict.ANALYSIS_VERDICT_INCONCLUSIVE);
    expect(verdictFor({ requests: 19, errorRate: 0, p99LatencyMs: 10 }, thresholds).verdict).to.equal(AnalysisVerdict.ANALYSIS_VERDICT_INCONCLUSIVE);
    expect(verdictFor({ requests: 0, errorRate: 0, p99LatencyMs: 10 }, { ...thresholds, minRequests: 0n }).verdict).to.equal(
      AnalysisVerdict.ANALYSIS_VERDICT_INCONCLUSIVE,
    );
    expect(verdictFor({ requests: 100, p99LatencyMs: 10 }, thresholds).verdict).to.equal(AnalysisVerdict.ANALYSIS_VERDICT_INCONCLUSIVE);
    expect(verdictFor({ requests: 100, errorRate: 0 }, thresholds).verdict).to.equal(AnalysisVerdict.ANALYSIS_VERDICT_INCONCLUSIVE);
  });

  // Error rate and p99 above their thresholds are unhealthy; within both, healthy.
  it('judges error rate and p99 against the thresholds', () => {
    expect(verdictFor({ requests: 100, errorRate: 0.06, p99LatencyMs: 10 }, thresholds).verdict).to.equal(AnalysisVerdict.ANALYSIS_VERDICT_UNHEALTHY);
    // A high error rate is enough even when latency data is missing.
    expect(verdictFor({ requests: 100, errorRate: 0.5 }, thresholds).verdict).to.equal(AnalysisVerdict.ANALYSIS_VERDICT_UNHEALTHY);
    expect(verdictFor({ requests: 100, errorRate: 0.01, p99LatencyMs: 501 }, thresholds).verdict).to.equal(AnalysisVerdict.ANALYSIS_VERDICT_UNHEALTHY);
    expect(verdictFor({ requests: 100, errorRate: 0.05, p99LatencyMs: 500 }, thresholds).verdict).to.equal(AnalysisVerdict.ANALYSIS_VERDICT_HEALTHY);
  });

  // Hosts are regex-escaped and quoted: a "." cannot match another character.
  it('builds queries on the destination reporter with an escaped host', () => {
    const queries = istioQueries('a.b"c', 'canary', 1500);
    expect(queries.requests).to.equal('sum(increase(istio_requests_total{reporter="destination",destination_service=~"a\\\\.b\\"c",destination_version="canary"}[1500ms]))');
    expect(queries.errorRate).to.contain('response_code=~"5.."');
    expect(queries.errorRate).to.contain('grpc_response_status=~"2|4|12|13|14|15"');
    expect(queries.p99LatencyMs).to.match(/^histogram_quantile\(0\.99, sum by \(le\) \(rate\(istio_request_duration_milliseconds_bucket\{/);
  });
});

describe('rollout analysis against a real Prometheus', function () {
  this.timeout(60_000);
  let series: IstioSeries;
  let prometheus: RunningPrometheus;
  let client: PrometheusClient;

  before(async function () {
    const binary = requirePrometheus(this);
    series = await startIstioSeries();
    series.set(host('healthy'), 'canary', { rps: 40, http5xxRatio: 0.01, latencyMs: 20 });
    series.set(host('healthy'), 'stable', { rps: 80, latencyMs: 30 });
    series.set(host('http-errors'), 'canary', { rps: 40, http5xxRatio: 0.3, latencyMs: 20 });
    series.set(host('grpc-unavailable'), 'canary', { rps: 40, grpcStatusRatio: 0.3, grpcStatus: 14, latencyMs: 20 });
    series.set(host('grpc-not-found'), 'canary', { rps: 40, grpcStatusRatio: 0.3, grpcStatus: 5, latencyMs: 20 });
    series.set(host('slow'), 'canary', { rps: 40, latencyMs: 800 });
    series.set(host('no-canary'), 'stable', { rps: 40, latencyMs: 20 });
    series.set(host('idle-canary'), 'canary', { rps: 0, latencyMs: 20 });
    prometheus = await startPrometheus(binary, [series.target]);
    client = new PrometheusClient({ baseUrl: prometheus.url });
    // rate() needs two samples inside the window, and the figures below a window full of them.
    await new Promise((resolve) => setTimeout(resolve, thresholds.windowMs + 1_500));
    await waitFor(
      'a healthy analysis of the healthy canary',
      async () => ((await analyse(client, target('healthy'), thresholds)).verdict === AnalysisVerdict.ANALYSIS_VERDICT_HEALTHY ? true : undefined),
      15_000,
      200,
    );
  });

  after(async () => {
    await prometheus?.stop();
    await series?.close();
  });

  // A canary within thresholds is healthy, and the snapshot records both subsets' figures (one reporter only).
  it('measures a healthy canary and its stable', async () => {
    const snapshot = await analyse(client, target('healthy'), thresholds);
    expect(snapshot.verdict).to.equal(AnalysisVerdict.ANALYSIS_VERDICT_HEALTHY);
    expect(snapshot.canaryErrorRate).to.be.closeTo(0.01, 0.005);
    expect(snapshot.stableErrorRate).to.equal(0);
    // 40 rps over 3 s, counted once (not once per reporter): about 120.
    expect(Number(snapshot.canaryRequests)).to.be.within(80, 170);
    expect(Number(snapshot.stableRequests)).to.be.within(160, 340);
    // 20 ms lies in Istio's (10, 25] bucket; 30 ms in (25, 50].
    expect(snapshot.canaryP99LatencyMs).to.be.within(10, 25);
    expect(snapshot.stableP99LatencyMs).to.be.within(25, 50);
  });

  // HTTP 5xx above the threshold is unhealthy, with the measured rate recorded.
  it('finds HTTP 5xx errors', async () => {
    const snapshot = await analyse(client, target('http-errors'), thresholds);
    expect(snapshot.verdict).to.equal(AnalysisVerdict.ANALYSIS_VERDICT_UNHEALTHY);
    expect(snapshot.canaryErrorRate).to.be.closeTo(0.3, 0.05);
    expect(snapshot.detail).to.contain('error rate');
  });

  // gRPC UNAVAILABLE over HTTP 200 counts as a server error; NOT_FOUND (a client error) does not.
  it('counts gRPC server faults, not client errors', async () => {
    const unavailable = await analyse(client, target('grpc-unavailable'), thresholds);
    expect(unavailable.verdict).to.equal(AnalysisVerdict.ANALYSIS_VERDICT_UNHEALTHY);
    expect(unavailable.canaryErrorRate).to.be.closeTo(0.3, 0.05);
    const notFound = await analyse(client, target('grpc-not-found'), thresholds);
    expect(notFound.verdict).to.equal(AnalysisVerdict.ANALYSIS_VERDICT_HEALTHY);
    expect(notFound.canaryErrorRate).to.equal(0);
  });

  // p99 above the latency threshold is unhealthy.
  it('finds a slow canary', async () => {
    const snapshot = await analyse(client, target('slow'), thresholds);
    expect(snapshot.verdict).to.equal(AnalysisVerdict.ANALYSIS_VERDICT_UNHEALTHY);
    expect(snapshot.canaryP99LatencyMs).to.be.within(500, 1000);
    expect(snapshot.detail).to.contain('p99');
  });

  // No canary series, or a canary series without traffic, is inconclusive, never healthy.
  it('is inconclusive without canary traffic', async () => {
    const missing = await analyse(client, target('no-canary'), thresholds);
    expect(missing.verdict).to.equal(AnalysisVerdict.ANALYSIS_VERDICT_INCONCLUSIVE);
    expect(Number(missing.stableRequests)).to.be.greaterThan(0);
    const idle = await analyse(client, target('idle-canary'), { ...thresholds, minRequests: 0n });
    expect(idle.verdict).to.equal(AnalysisVerdict.ANALYSIS_VERDICT_INCONCLUSIVE);
  });

  // An unreachable Prometheus, or one rejecting the query, makes the analysis inconclusive.
  it('is inconclusive when Prometheus fails', async () => {
    const down = new PrometheusClient({ baseUrl: 'http://127.0.0.1:1', timeoutMs: 1_000 });
    const unreachable = await analyse(down, target('healthy'), thresholds);
    expect(unreachable.verdict).to.equal(AnalysisVerdict.ANALYSIS_VERDICT_INCONCLUSIVE);
    expect(unreachable.detail).to.contain('unreachable');
    let error: unknown;
    await client.queryValue('sum(rate(istio_requests_total[').catch((e: unknown) => (error = e));
    expect((error as Error).name).to.equal('PrometheusQueryError');
  });
});
