/**
 * Issue 18: what a Flagger or Argo Rollouts user relies on, against a real Prometheus scraping
 * Istio-shaped series: no verdict on old samples, analysis at the manual gate, rollback on by
 * default, drift correction, a slow Prometheus that ends in a decision, writes fenced by the
 * lease epoch (a controller frozen with SIGSTOP mid-write), a finished rollout that stops writing.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { expect } from 'chai';
import pino from 'pino';
import { Registry } from 'prom-client';
import { parse, stringify } from 'yaml';
import { AnalysisVerdict, RolloutState, type CreateRolloutRequest, type Rollout } from '../../../gen/shieldx/shadow/v1/shadow';
import { errorDetails } from '../../../platform/grpc-errors';
import { metricValue, scrapeMetrics } from '../../../platform/prometheus-text';
import type { RunningService } from '../../../platform/server';
import { startTestService, testInfrastructure, waitFor } from '../../../testing/harness';
import { requirePrometheus, startIstioSeries, startPrometheus, type IstioSeries, type RunningPrometheus } from '../../../testing/prometheus';
import { clientFor, insertEvaluation, rolloutTestModule, rpc } from '../../../testing/rollout-kit';
import { PrometheusClient } from '../rollout/rollout-analysis';
import { advanceTo, createControllerMetrics, RolloutController } from '../rollout/rollout-controller';
import { FileTrafficRouter } from '../rollout/traffic-router';
import { PgLease } from '../store/rollout-lease';
import { getRollout, transition } from '../store/rollout-store';

const S = RolloutState;
const TERMINAL = [S.ROLLOUT_STATE_SUCCEEDED, S.ROLLOUT_STATE_ROLLED_BACK, S.ROLLOUT_STATE_ABORTED, S.ROLLOUT_STATE_FAILED];
const healthy = { rps: 40, http5xxRatio: 0, latencyMs: 20 };
const erroring = { rps: 40, http5xxRatio: 0.5, latencyMs: 20 };
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const seconds = (s: number) => ({ seconds: BigInt(s), nanos: 0 });

function manifestWeights(dir: string, namespace: string, name: string): { stable: number; canary: number } | undefined {
  let text: string;
  try {
    text = readFileSync(join(dir, `${namespace}.${name}.yaml`), 'utf8');
  } catch {
    return undefined;
  }
  const vs = parse(text);
  const route = vs.spec.http.find((r: { name: string }) => r.name === 'primary');
  const weightOf = (subset: string) => route.route.find((d: { destination: { subset: string } }) => d.destination.subset === subset)?.weight;
  return { stable: weightOf('stable'), canary: weightOf('canary') };
}

/** Rewrites the manifest's weights as a GitOps sync to the committed 100/0 would. */
function resetManifest(dir: string, namespace: string, name: string, edit: (route: { destination: { subset: string }; weight: number }[]) => unknown[]): void {
  const file = join(dir, `${namespace}.${name}.yaml`);
  const vs = parse(readFileSync(file, 'utf8'));
  const route = vs.spec.http.find((r: { name: string }) => r.name === 'primary');
  route.route = edit(route.route);
  writeFileSync(file, stringify(vs));
}

describe('rollout safety (issue 18) against a real Prometheus', function () {
  this.timeout(90_000);
  const NS = 'safe';
  const hostOf = (name: string) => `${name}.${NS}.svc.cluster.local`;
  let series: IstioSeries;
  let prometheus: RunningPrometheus;
  let service: RunningService;
  let api: ReturnType<typeof rpc>;
  let dir: string;
  let evaluationId: string;

  const request = (name: string, overrides: Partial<CreateRolloutRequest> = {}): CreateRolloutRequest => ({
    evaluationId,
    target: { namespace: NS, virtualService: name, host: hostOf(name), stableSubset: 'stable', canarySubset: 'canary', routeName: 'primary' },
    steps: [25, 50, 100],
    stepDuration: seconds(3),
    analysis: { maxErrorRate: 0.05, maxP99Latency: { seconds: 0n, nanos: 300_000_000 }, minRequests: 20n, maxInconclusive: 2, window: seconds(3), failureThreshold: 0, metrics: [] },
    autoRollback: true,
    disableAutoRollback: false,
    manualPromotion: false,
    idempotencyKey: '',
    webhooks: [],
    progressDeadline: undefined,
    ...overrides,
  });
  const weights = (name: string) => manifestWeights(dir, NS, name);
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
    for (const name of ['stale', 'gate-errors', 'gate-hold', 'default-rollback', 'drift', 'gone-canary']) {
      series.set(hostOf(name), 'canary', name === 'default-rollback' ? erroring : healthy);
      series.set(hostOf(name), 'stable', { ...healthy, rps: 100 });
    }
    prometheus = await startPrometheus(binary, [series.target]);
    dir = mkdtempSync(join(tmpdir(), 'shieldx-rollout-safe-'));
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
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  // Finding 1: the canary's series stop after 25 %, the window (9 s) is longer than the step (3 s). The 25 % samples
  // must not be judged again at 50 %: inconclusive (no current canary samples), then FAILED — never SUCCEEDED.
  it('never judges the previous step’s samples, nor a canary whose series stopped', async () => {
    const { rollout } = await api.create(request('stale', { analysis: { ...request('x').analysis!, window: seconds(9) } }));
    const id = rollout!.id;
    await waitForWeight('stale', 50);
    series.set(hostOf('stale'), 'canary', undefined);
    const done = await waitForState(id, TERMINAL, 40_000);
    const atFifty = done.events.filter((e) => e.step >= 1 && e.analysis !== undefined && e.reason !== 'STEP_ADVANCED');
    expect(RolloutState[done.state]).to.equal('ROLLOUT_STATE_FAILED');
    expect(done.events.at(-1)!.reason).to.equal('ANALYSIS_INCONCLUSIVE');
    expect(atFifty.length).to.be.greaterThan(0);
    for (const event of atFifty) expect(event.analysis!.verdict).to.equal(AnalysisVerdict.ANALYSIS_VERDICT_INCONCLUSIVE);
    await waitForWeight('stale', 0);
  });

  // Finding 2: at the manual gate the canary is still analysed; one that starts failing there is rolled back.
  it('keeps analysing at the manual gate and rolls back a canary that fails there', async () => {
    const { rollout } = await api.create(request('gate-errors', { steps: [20, 100], manualPromotion: true }));
    const id = rollout!.id;
    await waitForState(id, [S.ROLLOUT_STATE_AWAITING_PROMOTION]);
    series.set(hostOf('gate-errors'), 'canary', erroring);
    const done = await waitForState(id, TERMINAL, 20_000);
    expect(RolloutState[done.state]).to.equal('ROLLOUT_STATE_ROLLED_BACK');
    const last = done.events.at(-1)!;
    expect([RolloutState[last.fromState], last.reason]).to.deep.equal(['ROLLOUT_STATE_AWAITING_PROMOTION', 'ANALYSIS_UNHEALTHY']);
    expect(last.analysis!.canaryErrorRate).to.be.greaterThan(0.05);
    await waitForWeight('gate-errors', 0);
  });

  // Finding 2: without auto rollback the failing canary is held at the gate, and PromoteRollout refuses to ship it.
  it('refuses PromoteRollout while the canary at the gate is unhealthy', async () => {
    const { rollout } = await api.create(request('gate-hold', { steps: [20, 100], manualPromotion: true, disableAutoRollback: true }));
    const id = rollout!.id;
    await waitForState(id, [S.ROLLOUT_STATE_AWAITING_PROMOTION]);
    series.set(hostOf('gate-hold'), 'canary', erroring);
    await waitFor('an unhealthy analysis at the gate', async () => {
      const { rollout: current } = await api.get({ id });
      return current!.events.some((e) => e.reason === 'ANALYSIS_UNHEALTHY_HOLD' && e.fromState === S.ROLLOUT_STATE_AWAITING_PROMOTION) ? true : undefined;
    });
    const refused = await api.promote({ id, idempotencyKey: '' }).then(
      (response) => response.rollout,
      (error: unknown) => errorDetails(error),
    );
    expect((refused as { reason?: string }).reason).to.equal('ROLLOUT_CANARY_NOT_HEALTHY');
    const { rollout: still } = await api.get({ id });
    expect([RolloutState[still!.state], still!.canaryWeight]).to.deep.equal(['ROLLOUT_STATE_AWAITING_PROMOTION', 20]);
    expect(weights('gate-hold')).to.deep.equal({ stable: 80, canary: 20 });
    await api.abort({ id, reason: 'test done', idempotencyKey: '' });
  });

  // Finding 3: a request that says nothing about rollback (auto_rollback unset) gets automatic rollback.
  it('rolls an unhealthy canary back by default', async () => {
    const { rollout } = await api.create(request('default-rollback', { autoRollback: false }));
    expect(rollout!.autoRollback).to.equal(true);
    const done = await waitForState(rollout!.id, TERMINAL, 15_000);
    expect([RolloutState[done.state], done.events.at(-1)!.reason]).to.deep.equal(['ROLLOUT_STATE_ROLLED_BACK', 'ANALYSIS_UNHEALTHY']);
    await waitForWeight('default-rollback', 0);
  });

  // Finding 5: a GitOps sync resets the VirtualService to 100/0 mid-step; the controller puts the step's weight back.
  it('corrects drift of the VirtualService during a step', async () => {
    const { rollout } = await api.create(request('drift', { steps: [25, 100], stepDuration: seconds(60), analysis: { ...request('x').analysis!, window: seconds(3) } }));
    const id = rollout!.id;
    await waitForWeight('drift', 25);
    resetManifest(dir, NS, 'drift', (route) => route.map((d) => ({ ...d, weight: d.destination.subset === 'stable' ? 100 : 0 })));
    expect(weights('drift')).to.deep.equal({ stable: 100, canary: 0 });
    await waitForWeight('drift', 25, 10_000);
    const { rollout: current } = await api.get({ id });
    expect([RolloutState[current!.state], current!.currentStep]).to.deep.equal(['ROLLOUT_STATE_PROGRESSING', 0]);
    await api.abort({ id, reason: 'test done', idempotencyKey: '' });
    await waitForWeight('drift', 0);
  });

  // Finding 7: a finished rollout whose route no longer has a canary destination (the operator took it out) has
  // nothing left to write: it is done, not retried every tick for ever.
  it('stops writing a finished rollout whose route has no canary destination', async () => {
    const { rollout } = await api.create(request('gone-canary', { steps: [25, 100], stepDuration: seconds(60) }));
    const id = rollout!.id;
    await waitForWeight('gone-canary', 25);
    resetManifest(dir, NS, 'gone-canary', (route) => route.filter((d) => d.destination.subset === 'stable').map((d) => ({ ...d, weight: 100 })));
    await api.abort({ id, reason: 'canary removed', idempotencyKey: '' }).catch(() => undefined);
    await waitForState(id, TERMINAL);
    const errorsAt = async () => metricValue(await scrapeMetrics(service), 'canary_router_errors_total', { router: 'file' }) ?? 0;
    await waitFor('the finished rollout to be settled', async () => {
      const row = await getRollout(service.pool, id);
      return row && row.appliedWeight === row.canaryWeight ? true : undefined;
    }, 10_000);
    const before = await errorsAt();
    await sleep(2_000);
    expect(await errorsAt()).to.equal(before);
  });
});

/** Answers Prometheus queries only after `delayMs` (a Prometheus under load). */
async function startSlowProxy(upstream: string, delayMs: number): Promise<{ url: string; requests: () => number; close: () => Promise<void> }> {
  let count = 0;
  const server: Server = createServer((req, res) => {
    count += 1;
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      setTimeout(() => {
        fetch(`${upstream}${req.url}`, { method: req.method, headers: { 'content-type': String(req.headers['content-type'] ?? '') }, body: req.method === 'POST' ? Buffer.concat(chunks) : undefined })
          .then(async (response) => {
            res.writeHead(response.status, { 'content-type': response.headers.get('content-type') ?? 'application/json' });
            res.end(Buffer.from(await response.arrayBuffer()));
          })
          .catch(() => res.destroy());
      }, delayMs);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests: () => count,
    close: () => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()); }),
  };
}

describe('rollout controller: a slow Prometheus and a frozen ex-leader', function () {
  this.timeout(90_000);
  let service: RunningService;
  let evaluationId: string;
  let dir: string;
  const logger = pino({ level: 'silent' });
  const NS = 'fence';

  before(async () => {
    service = await startTestService(rolloutTestModule, { ROLLOUT_CONTROLLER: 'off' });
    evaluationId = await insertEvaluation(service.pool, 'approved');
    dir = mkdtempSync(join(tmpdir(), 'shieldx-rollout-fence-'));
  });
  after(async () => {
    await service?.pool.query(`DELETE FROM shadow_rollouts WHERE namespace = $1`, [NS]).catch(() => undefined);
    await service?.shutdown();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const create = async (name: string, overrides: Partial<CreateRolloutRequest> = {}): Promise<string> => {
    const { rollout } = await rpc(clientFor(service)).create({
      evaluationId,
      target: { namespace: NS, virtualService: name, host: `${name}.${NS}.svc.cluster.local`, stableSubset: 'stable', canarySubset: 'canary', routeName: '' },
      steps: [25, 50, 75, 100],
      stepDuration: seconds(600),
      analysis: undefined,
      autoRollback: true,
      disableAutoRollback: false,
      manualPromotion: false,
      idempotencyKey: '',
      progressDeadline: undefined,
      ...overrides,
    });
    return rollout!.id;
  };

  // Finding 6: Prometheus answers after 3 s, the lease (3 s) lets a leader act for 2 s. Analyses must end in a
  // decision (inconclusive, counted, the reason recorded) and the rollout FAIL after max_inconclusive — not stall silently.
  it('turns answers slower than the lease into inconclusive analyses, then fails', async function () {
    const binary = requirePrometheus(this);
    const series = await startIstioSeries();
    series.set('slow.fence.svc.cluster.local', 'canary', healthy);
    series.set('slow.fence.svc.cluster.local', 'stable', healthy);
    const prometheus = await startPrometheus(binary, [series.target]);
    const proxy = await startSlowProxy(prometheus.url, 3_000);
    const registry = new Registry();
    const metrics = createControllerMetrics(registry);
    const controller = new RolloutController({
      pool: service.pool,
      router: new FileTrafficRouter(dir),
      prometheus: new PrometheusClient({ baseUrl: proxy.url }),
      lease: new PgLease(service.pool, 'slow-prometheus-test', 'slow-a', 3),
      logger,
      metrics,
      tickMs: 200,
    });
    try {
      const id = await create('slow', {
        steps: [50, 100],
        stepDuration: seconds(1),
        analysis: { maxErrorRate: 0, maxP99Latency: undefined, minRequests: 1n, maxInconclusive: 2, window: undefined, failureThreshold: 0, metrics: [] },
      });
      controller.start();
      const done = await waitFor('the slow rollout to finish', async () => {
        const row = await getRollout(service.pool, id);
        return row && (row.state === 'FAILED' || row.state === 'SUCCEEDED' || row.state === 'ROLLED_BACK') ? row : undefined;
      }, 40_000);
      expect(done.state).to.equal('FAILED');
      const { rollout } = await rpc(clientFor(service)).get({ id });
      const inconclusive = rollout!.events.filter((e) => e.analysis?.verdict === AnalysisVerdict.ANALYSIS_VERDICT_INCONCLUSIVE);
      expect(inconclusive.length).to.equal(2);
      for (const event of inconclusive) expect(event.analysis!.detail).to.match(/did not answer/);
      expect((await registry.getSingleMetric('canary_analyses_total')!.get()).values.find((v) => v.labels.verdict === 'inconclusive')?.value).to.equal(2);
    } finally {
      await controller.close();
      await proxy.close();
      await prometheus.stop();
      await series.close();
    }
  });

  // Progress deadline: a rollout that cannot advance (here: a 600 s step) FAILS back to weight 0 once its deadline passes.
  it('fails a rollout that makes no progress before its deadline', async () => {
    const id = await create('deadline', { progressDeadline: seconds(2) });
    const controller = new RolloutController({
      pool: service.pool,
      router: new FileTrafficRouter(dir),
      prometheus: new PrometheusClient({ baseUrl: 'http://127.0.0.1:1', timeoutMs: 500 }),
      lease: new PgLease(service.pool, 'deadline-test', 'deadline-a', 2),
      logger,
      metrics: createControllerMetrics(new Registry()),
      tickMs: 100,
    });
    try {
      const done = await waitFor('the deadline to fail the rollout', async () => {
        await controller.tick();
        const row = await getRollout(service.pool, id);
        return row?.state === 'FAILED' && row.appliedWeight === 0 ? row : undefined;
      }, 15_000);
      const { rollout } = await rpc(clientFor(service)).get({ id });
      expect(rollout!.events.at(-1)!.reason).to.equal('PROGRESS_DEADLINE_EXCEEDED: no step advanced for 2 s');
      expect(manifestWeights(dir, NS, 'deadline')).to.deep.equal({ stable: 100, canary: 0 });
      expect(done.canaryWeight).to.equal(0);
    } finally {
      await controller.close();
    }
  });

  // Finding 4: the leader is frozen (SIGSTOP) in the middle of writing 50 %; its successor takes over, writes 50 % and
  // 75 %; the ex-leader is thawed and its write goes on. The route must stay at 75 %: a write from an old lease epoch is refused.
  it('refuses the late write of a leader frozen mid-write', async () => {
    const id = await create('frozen');
    const leaseName = 'fence-test';
    const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', join(process.cwd(), 'testing/rollout-controller-child.ts')], {
      env: { ...process.env, DATABASE_URL: testInfrastructure().databaseUrl, ROUTER_DIR: dir, LEASE_NAME: leaseName, HOLDER: 'frozen-a', PAUSE_AT_CANARY: '50' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const events: { event: string; error?: string }[] = [];
    createInterface({ input: child.stdout! }).on('line', (line) => {
      try {
        events.push(JSON.parse(line));
      } catch {
        /* not ours */
      }
    });
    const successor = new RolloutController({
      pool: service.pool,
      router: new FileTrafficRouter(dir),
      prometheus: new PrometheusClient({ baseUrl: 'http://127.0.0.1:1', timeoutMs: 500 }),
      lease: new PgLease(service.pool, leaseName, 'successor-b', 2),
      logger,
      metrics: createControllerMetrics(new Registry()),
      tickMs: 100,
    });
    const fileWeight = () => manifestWeights(dir, NS, 'frozen')?.canary;
    const advance = async (step: number) => {
      const row = (await getRollout(service.pool, id))!;
      expect(await transition(service.pool, row, advanceTo(row, step, 'STEP_ADVANCED'))).to.not.equal(undefined);
    };
    try {
      await waitFor('the child to write 25 %', async () => (fileWeight() === 25 ? true : undefined), 30_000);
      await waitFor('25 % confirmed', async () => ((await getRollout(service.pool, id))!.appliedWeight === 25 ? true : undefined));
      await advance(1);
      await waitFor('the child to start writing 50 %', async () => (events.some((e) => e.event === 'writing') ? true : undefined));
      process.kill(child.pid!, 'SIGSTOP');
      // The successor takes over once the frozen leader's lease expires, and applies 50 %, then 75 %.
      await waitFor('the successor to apply 50 %', async () => {
        await successor.tick();
        return (await getRollout(service.pool, id))!.appliedWeight === 50 ? true : undefined;
      });
      await advance(2);
      await waitFor('the successor to apply 75 %', async () => {
        await successor.tick();
        return (await getRollout(service.pool, id))!.appliedWeight === 75 ? true : undefined;
      });
      expect(fileWeight()).to.equal(75);
      process.kill(child.pid!, 'SIGCONT');
      const outcome = await waitFor('the thawed child to finish its write', async () => events.find((e) => e.event === 'wrote' || e.event === 'refused'), 15_000);
      expect(fileWeight(), 'the route after the ex-leader resumed').to.equal(75);
      expect(outcome.event).to.equal('refused');
      expect(outcome.error).to.match(/epoch/);
    } finally {
      if (child.exitCode === null) {
        process.kill(child.pid!, 'SIGCONT');
        child.kill('SIGKILL');
      }
      await successor.close();
    }
  });
});
