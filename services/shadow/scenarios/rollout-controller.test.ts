import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { parse } from 'yaml';
import {
  AnalysisVerdict,
  RolloutState,
  type CreateRolloutRequest,
  type RolloutEvent,
  type ShadowServiceClient,
  type WatchRolloutResponse,
} from '../../../gen/shieldx/shadow/v1/shadow';
import { errorDetails } from '../../../platform/grpc-errors';
import type { RunningService } from '../../../platform/server';
import { bearer, startTestService, waitFor } from '../../../testing/harness';
import { metricSamples, metricValue, scrapeMetrics } from '../../../platform/prometheus-text';
import { requirePrometheus, startIstioSeries, startPrometheus, type IstioSeries, type RunningPrometheus } from '../../../testing/prometheus';
import { PrometheusClient } from '../rollout/rollout-analysis';
import { CONTROLLER_LEASE_NAME, createControllerMetrics, RolloutController } from '../rollout/rollout-controller';
import { PgLease } from '../store/rollout-lease';
import { getRollout, listEvents } from '../store/rollout-store';
import { clientFor, insertEvaluation, rolloutTestModule, rpc } from '../../../testing/rollout-kit';
import type { RouteTarget } from '../domain/rollout-spec';
import { RouterConfigError, type TrafficRouter, type TrafficWeights } from '../rollout/traffic-router';
import { expectValidVirtualService } from '../../../testing/traffic-router-kit';
import { Registry } from 'prom-client';
import pino from 'pino';

const S = RolloutState;
const NAMESPACE = 'ctl';
const hostOf = (name: string) => `${name}.ctl.svc.cluster.local`;
const healthy = { rps: 40, http5xxRatio: 0, latencyMs: 20 };
const TERMINAL = [S.ROLLOUT_STATE_SUCCEEDED, S.ROLLOUT_STATE_ROLLED_BACK, S.ROLLOUT_STATE_ABORTED, S.ROLLOUT_STATE_FAILED];

/** (to_state, step, weight, reason) of each event: the history in one comparable value. */
const path = (events: RolloutEvent[]) => events.map((e) => [RolloutState[e.toState].replace('ROLLOUT_STATE_', ''), e.step, e.canaryWeight, e.reason]);

describe('rollout controller against a real Prometheus', function () {
  this.timeout(90_000);
  let series: IstioSeries;
  let prometheus: RunningPrometheus;
  let service: RunningService;
  let client: ShadowServiceClient;
  let api: ReturnType<typeof rpc>;
  let dir: string;
  let env: Record<string, string>;
  let evaluationId: string;

  const request = (name: string, overrides: Partial<CreateRolloutRequest> = {}): CreateRolloutRequest => ({
    evaluationId,
    target: { namespace: NAMESPACE, virtualService: name, host: hostOf(name), stableSubset: 'stable', canarySubset: 'canary', routeName: 'primary' },
    steps: [10, 50, 100],
    // The window is capped at the step's age (older samples are another step's): step and window alike, 2 s.
    stepDuration: { seconds: 2n, nanos: 0 },
    analysis: { maxErrorRate: 0.05, maxP99Latency: { seconds: 0n, nanos: 300_000_000 }, minRequests: 20n, maxInconclusive: 5, window: { seconds: 2n, nanos: 0 }, failureThreshold: 0, metrics: [] },
    autoRollback: true,
    disableAutoRollback: false,
    manualPromotion: false,
    idempotencyKey: '',
    webhooks: [],
    ...overrides,
  });

  /** Canary weight in the VirtualService manifest the file router keeps. */
  const fileWeights = (name: string): { stable: number; canary: number } | undefined => {
    let text: string;
    try {
      text = readFileSync(join(dir, `${NAMESPACE}.${name}.yaml`), 'utf8');
    } catch {
      return undefined;
    }
    const vs = parse(text);
    expectValidVirtualService(vs);
    const route = vs.spec.http.find((r: { name: string }) => r.name === 'primary');
    const weightOf = (subset: string) => route.route.find((d: { destination: { subset: string } }) => d.destination.subset === subset).weight;
    return { stable: weightOf('stable'), canary: weightOf('canary') };
  };

  const waitForFileWeights = (name: string, canary: number) =>
    waitFor(`VirtualService ${name} at canary ${canary}`, async () => (fileWeights(name)?.canary === canary ? true : undefined));

  const waitForState = (id: string, states: RolloutState[]) =>
    waitFor(`rollout ${id} in ${states.map((s) => RolloutState[s]).join('|')}`, async () => {
      const { rollout } = await api.get({ id });
      return states.includes(rollout!.state) ? rollout! : undefined;
    });

  before(async function () {
    const binary = requirePrometheus(this);
    series = await startIstioSeries();
    for (const name of ['promote', 'gate', 'abort', 'restart']) {
      series.set(hostOf(name), 'canary', healthy);
      series.set(hostOf(name), 'stable', { ...healthy, rps: 100 });
    }
    series.set(hostOf('erroring'), 'canary', { rps: 40, http5xxRatio: 0.5, latencyMs: 20 });
    series.set(hostOf('erroring'), 'stable', healthy);
    // No canary series at all: the canary gets no traffic.
    series.set(hostOf('silent'), 'stable', healthy);
    prometheus = await startPrometheus(binary, [series.target]);
    dir = mkdtempSync(join(tmpdir(), 'shieldx-rollout-vs-'));
    env = {
      PROMETHEUS_URL: prometheus.url,
      ROLLOUT_FILE_ROUTER_DIR: dir,
      ROLLOUT_TICK_MS: '200',
      ROLLOUT_LEADER_LEASE_SECONDS: '2',
      ROLLOUT_WATCH_POLL_MS: '100',
    };
    service = await startTestService(rolloutTestModule, env);
    client = clientFor(service);
    api = rpc(client);
    evaluationId = await insertEvaluation(service.pool, 'approved');
    // Let Prometheus fill one analysis window (3 s at a 1 s scrape) before the first rollout.
    await new Promise((resolve) => setTimeout(resolve, 4_000));
  });

  after(async () => {
    client?.close();
    if (service) {
      await service.pool.query(`DELETE FROM shadow_rollouts WHERE namespace = $1`, [NAMESPACE]).catch(() => undefined);
      await service.shutdown();
    }
    await prometheus?.stop();
    await series?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  // A healthy canary goes 10 → 50 → 100 % on healthy analyses (each recorded with its metrics), ends SUCCEEDED with the VirtualService at 0/100, and WatchRollout streams every change and ends.
  it('promotes a healthy canary step by step to 100 %', async () => {
    const { rollout } = await api.create(request('promote'));
    const messages: WatchRolloutResponse[] = [];
    const watched = new Promise<void>((resolve, reject) => {
      const stream = client.watchRollout({ id: rollout!.id }, bearer());
      stream.on('data', (m: WatchRolloutResponse) => messages.push(m));
      stream.on('end', resolve);
      stream.on('error', reject);
    });
    await watched;
    const { rollout: done } = await api.get({ id: rollout!.id });
    expect([done!.state, done!.currentStep, done!.canaryWeight]).to.deep.equal([S.ROLLOUT_STATE_SUCCEEDED, 2, 100]);
    const decisions = done!.events.filter((e) => !e.reason.endsWith('_HOLD'));
    expect(path(decisions)).to.deep.equal([
      ['PENDING', 0, 0, 'CREATED'],
      ['PROGRESSING', 0, 10, 'STARTED'],
      ['PROGRESSING', 1, 50, 'STEP_ADVANCED'],
      ['SUCCEEDED', 2, 100, 'PROMOTED'],
    ]);
    for (const decision of decisions.slice(2)) {
      expect(decision.analysis!.verdict).to.equal(AnalysisVerdict.ANALYSIS_VERDICT_HEALTHY);
      expect(Number(decision.analysis!.canaryRequests)).to.be.at.least(20);
      expect(Number(decision.analysis!.stableRequests)).to.be.greaterThan(0);
      expect(decision.analysis!.canaryErrorRate).to.equal(0);
      expect(decision.analysis!.canaryP99LatencyMs).to.be.within(10, 25);
    }
    // The stream: the rollout with its history first, then one message per later event, in order, ending at SUCCEEDED.
    const seen = [...messages[0]!.rollout!.events, ...messages.slice(1).map((m) => m.event!)];
    expect(seen.map((e) => e.sequence)).to.deep.equal(done!.events.map((e) => e.sequence));
    expect(messages.at(-1)!.rollout!.state).to.equal(S.ROLLOUT_STATE_SUCCEEDED);
    await waitForFileWeights('promote', 100);
    expect(fileWeights('promote')).to.deep.equal({ stable: 0, canary: 100 });
  });

  // A canary erroring above max_error_rate is rolled back on the first analysis: weight 0 in the manifest, ROLLED_BACK with the measured error rate, canary_rollbacks_total{target_namespace,target_virtual_service} incremented.
  it('rolls an erroring canary back at once', async () => {
    const { rollout } = await api.create(request('erroring'));
    const id = rollout!.id;
    const done = await waitForState(id, TERMINAL);
    expect([done.state, done.canaryWeight]).to.deep.equal([S.ROLLOUT_STATE_ROLLED_BACK, 0]);
    const decisions = done.events.filter((e) => !e.reason.endsWith('_HOLD'));
    expect(path(decisions)).to.deep.equal([
      ['PENDING', 0, 0, 'CREATED'],
      ['PROGRESSING', 0, 10, 'STARTED'],
      ['ROLLED_BACK', 0, 0, 'ANALYSIS_UNHEALTHY'],
    ]);
    const analysis = decisions.at(-1)!.analysis!;
    expect(analysis.verdict).to.equal(AnalysisVerdict.ANALYSIS_VERDICT_UNHEALTHY);
    expect(analysis.canaryErrorRate).to.be.closeTo(0.5, 0.1);
    expect(analysis.stableErrorRate).to.equal(0);
    expect(analysis.detail).to.contain('error rate');
    await waitForFileWeights('erroring', 0);
    expect(fileWeights('erroring')).to.deep.equal({ stable: 100, canary: 0 });
    const metrics = await scrapeMetrics(service);
    // Labelled by the target (a bounded set), never by the rollout id (a new series per rollout).
    expect(metricValue(metrics, 'canary_rollbacks_total', { target_namespace: 'ctl', target_virtual_service: 'erroring' })).to.equal(1);
    expect(metricSamples(metrics, 'canary_rollbacks_total').every((sample) => !Object.values(sample.labels).includes(id))).to.equal(true);
  });

  // Without canary traffic every analysis is inconclusive: the step is held (weight unchanged), and after max_inconclusive in a row the rollout FAILS back to weight 0.
  it('holds on inconclusive analyses, then fails', async () => {
    const { rollout } = await api.create(request('silent', { analysis: { ...request('x').analysis!, maxInconclusive: 2 } }));
    const done = await waitForState(rollout!.id, TERMINAL);
    expect([done.state, done.canaryWeight]).to.deep.equal([S.ROLLOUT_STATE_FAILED, 0]);
    expect(path(done.events)).to.deep.equal([
      ['PENDING', 0, 0, 'CREATED'],
      ['PROGRESSING', 0, 10, 'STARTED'],
      ['PROGRESSING', 0, 10, 'ANALYSIS_INCONCLUSIVE_HOLD'],
      ['FAILED', 0, 0, 'ANALYSIS_INCONCLUSIVE'],
    ]);
    for (const event of done.events.slice(2)) {
      expect(event.analysis!.verdict).to.equal(AnalysisVerdict.ANALYSIS_VERDICT_INCONCLUSIVE);
      expect(event.analysis!.canaryRequests).to.equal(0n);
      expect(Number(event.analysis!.stableRequests)).to.be.greaterThan(0);
    }
    await waitForFileWeights('silent', 0);
  });

  // With the manual gate the rollout stops before 100 % (AWAITING_PROMOTION, canary weight kept) until PromoteRollout, which is idempotent by key; a second promote is ROLLOUT_FINISHED.
  it('waits at the manual gate until PromoteRollout', async () => {
    const { rollout } = await api.create(request('gate', { steps: [20, 100], manualPromotion: true }));
    const id = rollout!.id;
    const gated = await waitForState(id, [S.ROLLOUT_STATE_AWAITING_PROMOTION, ...TERMINAL]);
    expect([gated.state, gated.canaryWeight]).to.deep.equal([S.ROLLOUT_STATE_AWAITING_PROMOTION, 20]);
    expect(gated.events.at(-1)!.analysis!.verdict).to.equal(AnalysisVerdict.ANALYSIS_VERDICT_HEALTHY);
    await waitForFileWeights('gate', 20);
    // Several ticks later it is still waiting, at 20 %.
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    const { rollout: still } = await api.get({ id });
    expect([still!.state, still!.canaryWeight, still!.events.length]).to.deep.equal([S.ROLLOUT_STATE_AWAITING_PROMOTION, 20, gated.events.length]);
    expect(fileWeights('gate')).to.deep.equal({ stable: 80, canary: 20 });

    const key = `promote-${id}`;
    const promoted = await api.promote({ id, idempotencyKey: key });
    expect([promoted.rollout!.state, promoted.rollout!.canaryWeight]).to.deep.equal([S.ROLLOUT_STATE_SUCCEEDED, 100]);
    expect(promoted.rollout!.events.at(-1)!.reason).to.equal('PROMOTED_BY_OPERATOR');
    expect((await api.promote({ id, idempotencyKey: key })).rollout).to.deep.equal(promoted.rollout);
    const again = await api.promote({ id, idempotencyKey: '' }).catch((e: unknown) => errorDetails(e));
    expect((again as { reason: string }).reason).to.equal('ROLLOUT_FINISHED');
    await waitForFileWeights('gate', 100);
  });

  // AbortRollout mid-step sends all traffic back to stable and stops the rollout for good.
  it('aborts a progressing rollout', async () => {
    const { rollout } = await api.create(request('abort', { steps: [5, 100], stepDuration: { seconds: 600n, nanos: 0 } }));
    const id = rollout!.id;
    await waitForFileWeights('abort', 5);
    const aborted = await api.abort({ id, reason: 'pager went off', idempotencyKey: '' });
    expect([aborted.rollout!.state, aborted.rollout!.canaryWeight]).to.deep.equal([S.ROLLOUT_STATE_ABORTED, 0]);
    await waitForFileWeights('abort', 0);
    expect(fileWeights('abort')).to.deep.equal({ stable: 100, canary: 0 });
    const { rollout: after } = await api.get({ id });
    expect(path(after!.events)).to.deep.equal([
      ['PENDING', 0, 0, 'CREATED'],
      ['PROGRESSING', 0, 5, 'STARTED'],
      ['ABORTED', 0, 0, 'ABORTED_BY_OPERATOR: pager went off'],
    ]);
  });

  // A controller stopped mid-rollout is replaced by a new process that continues from the persisted step: every step is taken exactly once and the history is intact.
  it('resumes after a controller restart without a double step', async () => {
    const { rollout } = await api.create(request('restart', { steps: [10, 20, 30, 100] }));
    const id = rollout!.id;
    const midway = await waitFor('first step advance', async () => {
      const { rollout: current } = await api.get({ id });
      return current!.events.some((e) => e.reason === 'STEP_ADVANCED') ? current! : undefined;
    });
    client.close();
    await service.shutdown();

    service = await startTestService(rolloutTestModule, env);
    client = clientFor(service);
    api = rpc(client);
    const persisted = await listEvents(service.pool, id);
    // What a client saw before the restart is what the database holds (a prefix: the old controller may have gone on a little).
    expect(persisted.slice(0, midway.events.length)).to.deep.equal(midway.events);
    // Nothing ran while no controller was up: the rollout is where the old process left it.
    expect(persisted.at(-1)!.toState).to.equal(S.ROLLOUT_STATE_PROGRESSING);
    const done = await waitForState(id, TERMINAL);
    expect(done.state).to.equal(S.ROLLOUT_STATE_SUCCEEDED);
    // The history before the restart is unchanged, sequences are contiguous, and each step was entered once.
    expect(done.events.slice(0, persisted.length)).to.deep.equal(persisted);
    expect(done.events.map((e) => e.sequence)).to.deep.equal(done.events.map((_, i) => BigInt(i + 1)));
    const entered = done.events.filter((e) => e.reason === 'STARTED' || e.reason === 'STEP_ADVANCED').map((e) => [e.step, e.canaryWeight]);
    expect(entered).to.deep.equal([
      [0, 10],
      [1, 20],
      [2, 30],
    ]);
    await waitForFileWeights('restart', 100);
  });
});

/** A router that records calls and can be made to fail (a crash between commit and write). */
class RecordingRouter implements TrafficRouter {
  readonly kind = 'recording';
  readonly calls: { target: string; weights: TrafficWeights }[] = [];
  failNext = 0;
  async setWeights(target: RouteTarget, weights: TrafficWeights): Promise<void> {
    if (this.failNext > 0) {
      this.failNext -= 1;
      throw new Error('router down');
    }
    this.calls.push({ target: target.virtualService, weights });
  }
}

/** A router whose VirtualService lacks the named route: every write is a RouterConfigError (only an operator can fix it). */
class MisconfiguredRouter implements TrafficRouter {
  readonly kind = 'misconfigured';
  attempts = 0;
  async setWeights(target: RouteTarget): Promise<void> {
    this.attempts += 1;
    throw new RouterConfigError(target, `has no http route named "${target.routeName}"`);
  }
}

describe('rollout controller: leadership and crash recovery', function () {
  this.timeout(30_000);
  let service: RunningService;
  let evaluationId: string;
  const logger = pino({ level: 'silent' });

  const controller = (router: TrafficRouter, holder: string) =>
    new RolloutController({
      pool: service.pool,
      router,
      // Nothing here reaches an analysis (steps are long): no Prometheus needed.
      prometheus: new PrometheusClient({ baseUrl: 'http://127.0.0.1:1', timeoutMs: 500 }),
      lease: new PgLease(service.pool, CONTROLLER_LEASE_NAME, holder, 2),
      logger,
      metrics: createControllerMetrics(new Registry()),
      tickMs: 100,
    });

  before(async () => {
    // Controller off in the service: the test drives its own controllers tick by tick.
    service = await startTestService(rolloutTestModule, { ROLLOUT_CONTROLLER: 'off' });
    evaluationId = await insertEvaluation(service.pool, 'approved');
  });

  after(async () => {
    await service?.pool.query(`DELETE FROM shadow_rollouts WHERE namespace = 'lease'`).catch(() => undefined);
    await service?.pool.query(`DELETE FROM shadow_leases WHERE name = $1`, [CONTROLLER_LEASE_NAME]).catch(() => undefined);
    await service?.shutdown();
  });

  /** A rollout on 'lease/<virtualService>' whose first step lasts 600 s: nothing reaches an analysis. */
  const createLongStepRollout = async (api: ReturnType<typeof rpc>, virtualService: string): Promise<string> => {
    const { rollout } = await api.create({
      evaluationId,
      target: { namespace: 'lease', virtualService, host: `${virtualService}.lease.svc`, stableSubset: 'stable', canarySubset: 'canary', routeName: '' },
      steps: [10, 100],
      stepDuration: { seconds: 600n, nanos: 0 },
      analysis: undefined,
      autoRollback: true,
      disableAutoRollback: false,
      manualPromotion: false,
      idempotencyKey: '',
    });
    return rollout!.id;
  };

  // Only the lease holder acts; when it dies without releasing, a peer takes over after expiry and re-applies the committed weight without a new transition.
  it('lets one leader act and recovers a crash between commit and router write', async () => {
    const api = rpc(clientFor(service));
    const id = await createLongStepRollout(api, 'vs');
    const routerA = new RecordingRouter();
    const routerB = new RecordingRouter();
    const a = controller(routerA, 'replica-a');
    const b = controller(routerB, 'replica-b');

    // A leads; its router write fails right after the PENDING → PROGRESSING commit (as if it died there).
    routerA.failNext = 1;
    await a.tick();
    await b.tick();
    expect(routerB.calls).to.deep.equal([]);
    let row = (await getRollout(service.pool, id))!;
    expect([row.state, row.canaryWeight, row.appliedWeight]).to.deep.equal(['PROGRESSING', 10, null]);
    const eventsAfterCrash = await listEvents(service.pool, id);

    // A is gone (never releases). B cannot act until A's lease expires, then re-applies 10 % and records nothing new.
    await b.tick();
    expect(routerB.calls).to.deep.equal([]);
    await waitFor('lease expiry', async () => ((await PgLease.currentHolder(service.pool, CONTROLLER_LEASE_NAME)) === undefined ? true : undefined), 10_000);
    await b.tick();
    expect(routerB.calls.filter((c) => c.target === 'vs')).to.deep.equal([{ target: 'vs', weights: { stable: 90, canary: 10 } }]);
    row = (await getRollout(service.pool, id))!;
    expect([row.state, row.currentStep, row.appliedWeight]).to.deep.equal(['PROGRESSING', 0, 10]);
    expect(await listEvents(service.pool, id)).to.deep.equal(eventsAfterCrash);
    expect(await PgLease.currentHolder(service.pool, CONTROLLER_LEASE_NAME)).to.equal('replica-b');

    // Applied: further ticks only check the split (drift correction: the same weights, an idempotent write) and
    // transition nothing (the 600 s step is not due).
    await b.tick();
    expect(routerB.calls.filter((c) => c.target === 'vs').map((c) => c.weights)).to.deep.equal([
      { stable: 90, canary: 10 },
      { stable: 90, canary: 10 },
    ]);
    expect(await listEvents(service.pool, id)).to.deep.equal(eventsAfterCrash);
    await api.abort({ id, reason: '', idempotencyKey: '' });
    await b.tick();
    expect(routerB.calls.filter((c) => c.target === 'vs').at(-1)!.weights).to.deep.equal({ stable: 100, canary: 0 });
    await b.close();
  });

  // A VirtualService that cannot take the split (RouterConfigError) is not retried as a live step every tick: the rollout FAILS at weight 0, once, naming the problem.
  it('fails a rollout whose VirtualService is misconfigured', async () => {
    const api = rpc(clientFor(service));
    const id = await createLongStepRollout(api, 'misconfigured');
    const router = new MisconfiguredRouter();
    const c = controller(router, 'replica-c');
    try {
      // Tick until C leads (a peer's lease from an earlier test may still run); the leading tick does the work.
      await waitFor('replica-c to lead', async () => {
        await c.tick();
        return (await PgLease.currentHolder(service.pool, CONTROLLER_LEASE_NAME)) === 'replica-c' ? true : undefined;
      }, 10_000);
      const row = (await getRollout(service.pool, id))!;
      expect([row.state, row.canaryWeight]).to.deep.equal(['FAILED', 0]);
      const events = await listEvents(service.pool, id);
      expect(path(events).map(([state, step, weight]) => [state, step, weight])).to.deep.equal([
        ['PENDING', 0, 0],
        ['PROGRESSING', 0, 10],
        ['FAILED', 0, 0],
      ]);
      expect(events.at(-1)!.reason).to.equal('ROUTER_CONFIG_ERROR: VirtualService lease/misconfigured: has no http route named "primary"');
      // Later ticks change nothing: no further transitions, the rollout stays FAILED.
      await c.tick();
      await c.tick();
      expect(await listEvents(service.pool, id)).to.deep.equal(events);
      expect((await getRollout(service.pool, id))!.state).to.equal('FAILED');
    } finally {
      await c.close();
    }
  });
});
