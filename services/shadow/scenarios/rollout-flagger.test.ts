/**
 * Issue 18, what a Flagger user expects beyond the findings, against a real Prometheus scraping
 * Istio-shaped series: analysis every interval within a step; webhooks (gates and notifications)
 * against a recording HTTP server on loopback.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { parse } from 'yaml';
import { AnalysisVerdict, RolloutState, WebhookType, type CreateRolloutRequest, type Rollout, type RolloutWebhook } from '../../../gen/shieldx/shadow/v1/shadow';
import { metricValue, scrapeMetrics } from '../../../platform/prometheus-text';
import type { RunningService } from '../../../platform/server';
import { startTestService, waitFor } from '../../../testing/harness';
import { requirePrometheus, startIstioSeries, startPrometheus, type IstioSeries, type RunningPrometheus } from '../../../testing/prometheus';
import { clientFor, insertEvaluation, rolloutTestModule, rpc } from '../../../testing/rollout-kit';
import { getRollout } from '../store/rollout-store';

const S = RolloutState;
const TERMINAL = [S.ROLLOUT_STATE_SUCCEEDED, S.ROLLOUT_STATE_ROLLED_BACK, S.ROLLOUT_STATE_ABORTED, S.ROLLOUT_STATE_FAILED];
const healthy = { rps: 40, http5xxRatio: 0, latencyMs: 20 };
const erroring = { rps: 40, http5xxRatio: 0.5, latencyMs: 20 };
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const seconds = (s: number) => ({ seconds: BigInt(s), nanos: 0 });

interface HookCall {
  readonly name: string;
  readonly status: number;
  readonly body: Record<string, unknown>;
}

/** A webhook receiver: records every call, answers each path with its scripted statuses in turn, then 200 (or `otherwise`). */
async function startHookServer() {
  const calls: HookCall[] = [];
  const scripts = new Map<string, { statuses: number[]; otherwise: number }>();
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const name = (req.url ?? '/').slice(1);
      const script = scripts.get(name);
      const status = script?.statuses.shift() ?? script?.otherwise ?? 200;
      calls.push({ name, status, body: req.method === 'POST' ? JSON.parse(Buffer.concat(chunks).toString('utf8')) : {} });
      res.writeHead(status, { 'content-type': 'text/plain' }).end(String(status));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    calls,
    url: (name: string) => `http://127.0.0.1:${port}/${name}`,
    script: (name: string, statuses: number[], otherwise = 200) => scripts.set(name, { statuses, otherwise }),
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

const path = (rollout: Rollout) => rollout.events.map((e) => [RolloutState[e.toState].replace('ROLLOUT_STATE_', ''), e.step, e.canaryWeight, e.reason]);

describe('rollouts as Flagger users expect (issue 18) against a real Prometheus', function () {
  this.timeout(90_000);
  const NS = 'flagger';
  const hostOf = (name: string) => `${name}.${NS}.svc.cluster.local`;
  let series: IstioSeries;
  let prometheus: RunningPrometheus;
  let service: RunningService;
  let api: ReturnType<typeof rpc>;
  let dir: string;
  let evaluationId: string;
  let hooks: Awaited<ReturnType<typeof startHookServer>>;
  const hook = (name: string, type: WebhookType, steps: number[] = []): RolloutWebhook => ({ name, type, url: hooks.url(name), timeout: seconds(2), steps });

  const request = (name: string, overrides: Partial<CreateRolloutRequest> = {}): CreateRolloutRequest => ({
    evaluationId,
    target: { namespace: NS, virtualService: name, host: hostOf(name), stableSubset: 'stable', canarySubset: 'canary', routeName: 'primary' },
    steps: [25, 100],
    stepDuration: seconds(3),
    analysis: { maxErrorRate: 0.05, maxP99Latency: { seconds: 0n, nanos: 300_000_000 }, minRequests: 20n, maxInconclusive: 3, window: seconds(3), failureThreshold: 0, interval: undefined, metrics: [] },
    autoRollback: true,
    disableAutoRollback: false,
    manualPromotion: false,
    idempotencyKey: '',
    webhooks: [],
    progressDeadline: undefined,
    ...overrides,
  });
  const weights = (name: string): { stable: number; canary: number } | undefined => {
    let text: string;
    try {
      text = readFileSync(join(dir, `${NS}.${name}.yaml`), 'utf8');
    } catch {
      return undefined;
    }
    const route = parse(text).spec.http.find((r: { name: string }) => r.name === 'primary');
    const weightOf = (subset: string) => route.route.find((d: { destination: { subset: string } }) => d.destination.subset === subset)?.weight;
    return { stable: weightOf('stable'), canary: weightOf('canary') };
  };
  const waitForWeight = (name: string, canary: number, timeoutMs = 20_000) =>
    waitFor(`${name} at canary ${canary}`, async () => (weights(name)?.canary === canary ? true : undefined), timeoutMs);
  const waitForState = (id: string, states: RolloutState[], timeoutMs = 30_000): Promise<Rollout> =>
    waitFor(
      `rollout ${id} in ${states.map((s) => RolloutState[s]).join('|')}`,
      async () => {
        const { rollout } = await api.get({ id });
        return states.includes(rollout!.state) ? rollout! : undefined;
      },
      timeoutMs,
    );

  before(async function () {
    const binary = requirePrometheus(this);
    series = await startIstioSeries();
    hooks = await startHookServer();
    for (const name of ['interval-fail', 'interval-healthy', 'hooks', 'hook-hold', 'metric-ok']) {
      series.set(hostOf(name), 'canary', healthy);
      series.set(hostOf(name), 'stable', { ...healthy, rps: 100 });
    }
    // Within the built-in bars (p99 under 300 ms, no errors), but 60 ms against stable's 20 ms: only a comparison sees it.
    series.set(hostOf('metric-slower'), 'canary', { ...healthy, latencyMs: 60 });
    series.set(hostOf('metric-slower'), 'stable', { ...healthy, rps: 100 });
    prometheus = await startPrometheus(binary, [series.target]);
    dir = mkdtempSync(join(tmpdir(), 'shieldx-rollout-flagger-'));
    service = await startTestService(rolloutTestModule, {
      PROMETHEUS_URL: prometheus.url,
      ROLLOUT_FILE_ROUTER_DIR: dir,
      ROLLOUT_TICK_MS: '200',
      ROLLOUT_LEADER_LEASE_SECONDS: '2',
      ROLLOUT_WATCH_POLL_MS: '100',
    });
    api = rpc(clientFor(service));
    evaluationId = await insertEvaluation(service.pool, 'approved');
    await sleep(4_000);
  });

  after(async () => {
    if (service) {
      await service.pool.query(`DELETE FROM shadow_rollouts WHERE namespace = $1`, [NS]).catch(() => undefined);
      await service.shutdown();
    }
    await prometheus?.stop();
    await series?.close();
    await hooks?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  // analysis.interval: a 60 s step analysed every 2 s. A canary that starts failing mid-step is rolled back after
  // failure_threshold (2) unhealthy analyses in a row, long before the step's end (where today's code first looks).
  it('analyses every interval within a step and rolls back mid-step', async () => {
    const { rollout } = await api.create(
      request('interval-fail', { stepDuration: seconds(60), analysis: { ...request('x').analysis!, window: seconds(2), interval: seconds(2), failureThreshold: 2 } }),
    );
    expect(rollout!.analysis!.interval).to.deep.equal({ seconds: 2n, nanos: 0 });
    const id = rollout!.id;
    await waitForWeight('interval-fail', 25);
    series.set(hostOf('interval-fail'), 'canary', erroring);
    const done = await waitForState(id, TERMINAL, 30_000);
    expect(path(done)).to.deep.equal([
      ['PENDING', 0, 0, 'CREATED'],
      ['PROGRESSING', 0, 25, 'STARTED'],
      ['PROGRESSING', 0, 25, 'ANALYSIS_UNHEALTHY_HOLD'],
      ['ROLLED_BACK', 0, 0, 'ANALYSIS_UNHEALTHY'],
    ]);
    expect(done.events.at(-1)!.analysis!.verdict).to.equal(AnalysisVerdict.ANALYSIS_VERDICT_UNHEALTHY);
    // Well inside the 60 s step.
    expect(done.events.at(-1)!.time!.getTime() - done.events[1]!.time!.getTime()).to.be.below(40_000);
    await waitForWeight('interval-fail', 0);
  });

  // A healthy canary is analysed within the step (recorded, no event) but advances only once the step has run its duration.
  it('advances only at the end of the step, on a healthy analysis', async () => {
    const { rollout } = await api.create(request('interval-healthy', { stepDuration: seconds(8), analysis: { ...request('x').analysis!, window: seconds(2), interval: seconds(2) } }));
    const id = rollout!.id;
    const midStep = await waitFor('an analysis within the step', async () => {
      const row = (await getRollout(service.pool, id))!;
      return row.analysedAt !== null && row.state === 'PROGRESSING' && row.currentStep === 0 ? row : undefined;
    });
    expect(midStep.lastVerdict).to.equal('ANALYSIS_VERDICT_HEALTHY');
    const done = await waitForState(id, TERMINAL, 30_000);
    expect(path(done)).to.deep.equal([
      ['PENDING', 0, 0, 'CREATED'],
      ['PROGRESSING', 0, 25, 'STARTED'],
      ['SUCCEEDED', 1, 100, 'PROMOTED'],
    ]);
    // The step lasted its duration (8 s), whatever the healthy analyses within it said.
    expect(done.events[2]!.time!.getTime() - done.events[1]!.time!.getTime()).to.be.at.least(7_000);
  });

  // Webhooks: pre-rollout answers 500 then 200 (retried within the call); the confirm-traffic-increase gate of step 50
  // refuses twice (the step holds at 25, asked again) then confirms; confirm-promotion confirms; the post-rollout
  // notification answers 500 then 200 (retried); no rollback notification for a success. Each body carries the
  // rollout, target, phase, weights, step and the latest analysis.
  it('calls gate and notification webhooks, holding while a gate refuses', async () => {
    hooks.script('pre', [500]);
    hooks.script('confirm-50', [403, 403]);
    hooks.script('post', [500]);
    const { rollout } = await api.create(
      request('hooks', {
        steps: [25, 50, 75, 100],
        stepDuration: seconds(2),
        analysis: { ...request('x').analysis!, window: seconds(2), maxInconclusive: 5 },
        webhooks: [
          hook('pre', WebhookType.WEBHOOK_TYPE_PRE_ROLLOUT),
          hook('confirm-50', WebhookType.WEBHOOK_TYPE_CONFIRM_TRAFFIC_INCREASE, [50]),
          hook('promote', WebhookType.WEBHOOK_TYPE_CONFIRM_PROMOTION),
          hook('rollback', WebhookType.WEBHOOK_TYPE_ROLLBACK),
          hook('post', WebhookType.WEBHOOK_TYPE_POST_ROLLOUT),
        ],
      }),
    );
    expect(rollout!.webhooks.map((w) => [w.name, w.type, w.steps])).to.deep.equal([
      ['pre', WebhookType.WEBHOOK_TYPE_PRE_ROLLOUT, []],
      ['confirm-50', WebhookType.WEBHOOK_TYPE_CONFIRM_TRAFFIC_INCREASE, [50]],
      ['promote', WebhookType.WEBHOOK_TYPE_CONFIRM_PROMOTION, []],
      ['rollback', WebhookType.WEBHOOK_TYPE_ROLLBACK, []],
      ['post', WebhookType.WEBHOOK_TYPE_POST_ROLLOUT, []],
    ]);
    const id = rollout!.id;
    const done = await waitForState(id, TERMINAL, 40_000);
    expect(path(done)).to.deep.equal([
      ['PENDING', 0, 0, 'CREATED'],
      ['PROGRESSING', 0, 25, 'STARTED'],
      ['PROGRESSING', 1, 50, 'STEP_ADVANCED'],
      ['PROGRESSING', 2, 75, 'STEP_ADVANCED'],
      ['SUCCEEDED', 3, 100, 'PROMOTED'],
    ]);
    await waitFor('the post-rollout notification', async () => (hooks.calls.some((c) => c.name === 'post' && c.status === 200) ? true : undefined));
    const of = (name: string) => hooks.calls.filter((c) => c.body.rollout_id === id && c.name === name);
    expect(of('pre').map((c) => c.status)).to.deep.equal([500, 200]);
    expect(of('pre')[0]!.body).to.include({ type: 'pre-rollout', phase: 'PENDING', canary_weight: 0, stable_weight: 100, step: 0, analysis: null });
    // The gate of 50 % was asked until it confirmed, each time at 25 % with the healthy analysis that preceded it.
    expect(of('confirm-50').map((c) => c.status)).to.deep.equal([403, 403, 200]);
    for (const call of of('confirm-50')) {
      expect(call.body).to.deep.include({ type: 'confirm-traffic-increase', phase: 'PROGRESSING', canary_weight: 25, stable_weight: 75, step: 0, next_step: { index: 1, canary_weight: 50 } });
      expect((call.body.analysis as { verdict: string }).verdict).to.equal('ANALYSIS_VERDICT_HEALTHY');
      expect(Number((call.body.analysis as { canaryRequests: string }).canaryRequests)).to.be.at.least(20);
      expect(call.body.target).to.deep.equal({ namespace: NS, virtual_service: 'hooks', host: hostOf('hooks'), stable_subset: 'stable', canary_subset: 'canary', route_name: 'primary' });
    }
    // Not asked for 75 % (it gates 50 % only); confirm-promotion once, at 75 %.
    expect(of('promote').map((c) => [c.status, c.body.canary_weight, (c.body.next_step as { canary_weight: number }).canary_weight])).to.deep.equal([[200, 75, 100]]);
    expect(of('post').map((c) => [c.status, c.body.phase, c.body.canary_weight])).to.deep.equal([
      [500, 'SUCCEEDED', 100],
      [200, 'SUCCEEDED', 100],
    ]);
    expect(of('rollback')).to.deep.equal([]);
    const metrics = await scrapeMetrics(service);
    expect(metricValue(metrics, 'canary_webhook_calls_total', { type: 'confirm-traffic-increase', outcome: 'refused' })).to.equal(2);
  });

  // A gate that never confirms holds the rollout (weight unchanged) until the progress deadline fails it back to 0;
  // then the rollback and post-rollout notifications are sent once, with phase FAILED.
  it('fails a rollout whose gate never confirms by its progress deadline, and notifies', async () => {
    hooks.script('never', [], 503);
    const { rollout } = await api.create(
      request('hook-hold', {
        steps: [30, 100],
        stepDuration: seconds(2),
        analysis: { ...request('x').analysis!, window: seconds(2) },
        progressDeadline: seconds(8),
        webhooks: [hook('never', WebhookType.WEBHOOK_TYPE_CONFIRM_PROMOTION), hook('rb', WebhookType.WEBHOOK_TYPE_ROLLBACK), hook('post-hold', WebhookType.WEBHOOK_TYPE_POST_ROLLOUT)],
      }),
    );
    const id = rollout!.id;
    await waitForWeight('hook-hold', 30);
    const done = await waitForState(id, TERMINAL, 30_000);
    expect(path(done).map(([state, step, weight]) => [state, step, weight])).to.deep.equal([
      ['PENDING', 0, 0],
      ['PROGRESSING', 0, 30],
      ['FAILED', 0, 0],
    ]);
    expect(done.events.at(-1)!.reason).to.match(/^PROGRESS_DEADLINE_EXCEEDED/);
    await waitForWeight('hook-hold', 0);
    // Each ask of the gate is bounded: 3 attempts (503 is retried), then the step holds.
    const asks = hooks.calls.filter((c) => c.body.rollout_id === id && c.name === 'never');
    expect(asks.length).to.be.at.least(3);
    expect(asks.length % 3).to.equal(0);
    await waitFor('both notifications', async () =>
      hooks.calls.some((c) => c.body.rollout_id === id && c.name === 'rb') && hooks.calls.some((c) => c.body.rollout_id === id && c.name === 'post-hold') ? true : undefined,
    );
    await sleep(1_000);
    for (const name of ['rb', 'post-hold']) {
      const sent = hooks.calls.filter((c) => c.body.rollout_id === id && c.name === name);
      expect(sent.map((c) => [c.status, c.body.phase, c.body.canary_weight])).to.deep.equal([[200, 'FAILED', 0]]);
    }
  });

  /** Mean latency (ms) of a subset, as a template: the variables pick the service, the subset and the window. */
  const MEAN_LATENCY =
    'sum(rate(istio_request_duration_milliseconds_sum{reporter="destination",destination_service_name="{{service}}",destination_version="{{ subset }}"}[{{interval}}]))' +
    ' / sum(rate(istio_request_duration_milliseconds_count{reporter="destination",destination_service_name="{{service}}",destination_version="{{subset}}"}[{{interval}}]))';

  // Metric templates: a user-defined query in range (mean latency ≤ 50 ms, request rate ≥ 1/s) lets a healthy canary
  // through, and each analysis records what every template measured.
  it('promotes a canary whose metric templates are in range, recording their values', async () => {
    const { rollout } = await api.create(
      request('metric-ok', {
        analysis: {
          ...request('x').analysis!,
          window: seconds(2),
          metrics: [
            { name: 'mean-latency', query: MEAN_LATENCY, max: 50, min: undefined, maxAboveStable: 10 },
            { name: 'rps', query: 'sum(rate(istio_requests_total{reporter="destination",destination_service_name="{{service}}",destination_version="{{subset}}"}[{{interval}}]))', min: 1, max: undefined, maxAboveStable: undefined },
          ],
        },
        stepDuration: seconds(2),
      }),
    );
    expect(rollout!.analysis!.metrics.map((m) => m.name)).to.deep.equal(['mean-latency', 'rps']);
    const done = await waitForState(rollout!.id, TERMINAL, 30_000);
    expect(RolloutState[done.state]).to.equal('ROLLOUT_STATE_SUCCEEDED');
    const decided = done.events.find((e) => e.reason === 'PROMOTED')!.analysis!;
    expect(decided.metrics.map((m) => [m.name, m.verdict])).to.deep.equal([
      ['mean-latency', AnalysisVerdict.ANALYSIS_VERDICT_HEALTHY],
      ['rps', AnalysisVerdict.ANALYSIS_VERDICT_HEALTHY],
    ]);
    expect(decided.metrics[0]!.canaryValue).to.be.closeTo(20, 1);
    expect(decided.metrics[0]!.stableValue).to.be.closeTo(20, 1);
    expect(decided.metrics[1]!.canaryValue).to.be.closeTo(40, 10);
  });

  // Stable-vs-canary comparison: a canary 40 ms slower than stable (allowed: 10 ms) is rolled back though the built-in
  // checks pass.
  it('rolls back a canary worse than stable by more than a template allows', async () => {
    const { rollout } = await api.create(
      request('metric-slower', {
        stepDuration: seconds(2),
        analysis: { ...request('x').analysis!, window: seconds(2), metrics: [{ name: 'mean-latency', query: MEAN_LATENCY, min: undefined, max: undefined, maxAboveStable: 10 }] },
      }),
    );
    const done = await waitForState(rollout!.id, TERMINAL, 30_000);
    expect([RolloutState[done.state], done.events.at(-1)!.reason]).to.deep.equal(['ROLLOUT_STATE_ROLLED_BACK', 'ANALYSIS_UNHEALTHY']);
    const analysis = done.events.at(-1)!.analysis!;
    expect(analysis.canaryP99LatencyMs).to.be.below(300);
    expect(analysis.metrics[0]!.canaryValue).to.be.closeTo(60, 2);
    expect(analysis.metrics[0]!.stableValue).to.be.closeTo(20, 2);
    expect(analysis.detail).to.contain('metric mean-latency: canary');
    await waitForWeight('metric-slower', 0);
  });
});
