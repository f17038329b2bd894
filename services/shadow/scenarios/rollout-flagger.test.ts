/**
 * Issue 18, what a Flagger user expects beyond the findings, against a real Prometheus scraping
 * Istio-shaped series: analysis every interval within a step.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { parse } from 'yaml';
import { AnalysisVerdict, RolloutState, type CreateRolloutRequest, type Rollout } from '../../../gen/shieldx/shadow/v1/shadow';
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

  const request = (name: string, overrides: Partial<CreateRolloutRequest> = {}): CreateRolloutRequest => ({
    evaluationId,
    target: { namespace: NS, virtualService: name, host: hostOf(name), stableSubset: 'stable', canarySubset: 'canary', routeName: 'primary' },
    steps: [25, 100],
    stepDuration: seconds(3),
    analysis: { maxErrorRate: 0.05, maxP99Latency: { seconds: 0n, nanos: 300_000_000 }, minRequests: 20n, maxInconclusive: 3, window: seconds(3), failureThreshold: 0, interval: undefined },
    autoRollback: true,
    disableAutoRollback: false,
    manualPromotion: false,
    idempotencyKey: '',
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
    for (const name of ['interval-fail', 'interval-healthy']) {
      series.set(hostOf(name), 'canary', healthy);
      series.set(hostOf(name), 'stable', { ...healthy, rps: 100 });
    }
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
});
