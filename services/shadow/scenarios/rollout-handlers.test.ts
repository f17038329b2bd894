import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { status as grpcStatus } from '@grpc/grpc-js';
import {
  RolloutState,
  WebhookType,
  type MetricTemplate,
  type RolloutWebhook,
  type CreateRolloutRequest,
  type ShadowServiceClient,
  type WatchRolloutResponse,
} from '../../../gen/shieldx/shadow/v1/shadow';
import { errorDetails } from '../../../platform/grpc-errors';
import { encodePageToken } from '../../../platform/page-token';
import type { RunningService } from '../../../platform/server';
import { bearer, startTestService, testKeys } from '../../../testing/harness';
import { clientFor, insertEvaluation, rolloutTestModule, rpc } from '../../../testing/rollout-kit';

/** Runs `fn`, expecting a failure; returns its ErrorInfo. */
async function failure(fn: () => Promise<unknown>) {
  try {
    await fn();
  } catch (error) {
    return errorDetails(error)!;
  }
  throw new Error('expected the call to fail');
}

describe('rollout RPCs (controller off)', function () {
  this.timeout(30_000);
  let service: RunningService;
  let client: ShadowServiceClient;
  let api: ReturnType<typeof rpc>;
  let approved: string;
  let dir: string;
  let routeCounter = 0;
  const keyPrefix = `handlers-${Date.now().toString(36)}-`;

  const requestCount = async () => Number((await service.pool.query<{ n: bigint }>('SELECT count(*) AS n FROM shadow_rollout_requests')).rows[0]!.n);
  const rowCount = async () => Number((await service.pool.query<{ n: bigint }>('SELECT count(*) AS n FROM shadow_rollouts')).rows[0]!.n);
  const request = (overrides: Partial<CreateRolloutRequest> = {}): CreateRolloutRequest => ({
    evaluationId: approved,
    target: {
      namespace: 'shieldx',
      virtualService: `handlers-${++routeCounter}`,
      host: 'credits.shieldx.svc.cluster.local',
      stableSubset: 'stable',
      canarySubset: 'canary',
      routeName: '',
    },
    steps: [],
    stepDuration: undefined,
    analysis: undefined,
    autoRollback: true,
    disableAutoRollback: false,
    manualPromotion: false,
    idempotencyKey: '',
    webhooks: [],
    ...overrides,
  });

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'shieldx-rollout-handlers-'));
    service = await startTestService(rolloutTestModule, { ROLLOUT_CONTROLLER: 'off', ROLLOUT_FILE_ROUTER_DIR: dir, ROLLOUT_WATCH_POLL_MS: '50' });
    client = clientFor(service);
    api = rpc(client);
    approved = await insertEvaluation(service.pool, 'approved');
  });

  after(async () => {
    client?.close();
    // Left PENDING (the controller is off here): no later suite's controller should pick these up.
    await service?.pool.query(`DELETE FROM shadow_rollouts WHERE virtual_service LIKE 'handlers-%'`);
    await service?.pool.query(`DELETE FROM shadow_rollout_requests WHERE idempotency_key LIKE $1`, [`${keyPrefix}%`]);
    await service?.shutdown();
    rmSync(dir, { recursive: true, force: true });
  });

  // CreateRollout of an approved evaluation persists a PENDING rollout with the documented defaults and a CREATED event; GetRollout reads it back.
  it('creates a rollout with defaults', async () => {
    const { rollout } = await api.create(request());
    expect(rollout!.state).to.equal(RolloutState.ROLLOUT_STATE_PENDING);
    expect(rollout!.steps).to.deep.equal([5, 25, 50, 100]);
    expect(rollout!.stepDuration).to.deep.equal({ seconds: 60n, nanos: 0 });
    expect(rollout!.analysis).to.deep.equal({
      maxErrorRate: 0.01,
      maxP99Latency: { seconds: 0n, nanos: 500_000_000 },
      minRequests: 100n,
      maxInconclusive: 3,
      window: { seconds: 60n, nanos: 0 },
      failureThreshold: 1,
      // Default: one analysis per step, at its end.
      interval: { seconds: 60n, nanos: 0 },
      metrics: [],
    });
    // Rollback is on unless disable_auto_rollback; the progress deadline defaults to max(10 min, 10 steps).
    expect(rollout!.autoRollback).to.equal(true);
    expect(rollout!.progressDeadline).to.deep.equal({ seconds: 600n, nanos: 0 });
    expect(rollout!.target!.routeName).to.equal('primary');
    expect(rollout!.events.map((e) => [e.sequence, e.fromState, e.toState, e.reason])).to.deep.equal([
      [1n, RolloutState.ROLLOUT_STATE_UNSPECIFIED, RolloutState.ROLLOUT_STATE_PENDING, 'CREATED'],
    ]);
    const { rollout: read } = await api.get({ id: rollout!.id });
    expect(read).to.deep.equal(rollout);
    // DECISION_APPROVE_FULL_DEPLOYMENT is an approval too.
    const full = await insertEvaluation(service.pool, 'approved_full');
    const second = await api.create(request({ evaluationId: full, steps: [10, 100], stepDuration: { seconds: 5n, nanos: 0 } }));
    expect(second.rollout!.steps).to.deep.equal([10, 100]);
  });

  // Evaluations that did not succeed with an approving decision are refused with FAILED_PRECONDITION, and nothing is written.
  it('refuses evaluations that are not approved', async () => {
    const before = await rowCount();
    for (const kind of ['rejected', 'running'] as const) {
      const evaluationId = await insertEvaluation(service.pool, kind);
      const error = await failure(() => api.create(request({ evaluationId })));
      expect([error.code, error.reason]).to.deep.equal([9, 'EVALUATION_NOT_APPROVED']);
    }
    expect(await rowCount()).to.equal(before);
  });

  // An unknown evaluation is NOT_FOUND, nothing written.
  it('refuses an unknown evaluation', async () => {
    const before = await rowCount();
    const error = await failure(() => api.create(request({ evaluationId: '00000000-0000-4000-8000-000000000000' })));
    expect([error.code, error.reason]).to.deep.equal([5, 'EVALUATION_NOT_FOUND']);
    expect(await rowCount()).to.equal(before);
  });

  // Each bad field is INVALID_ARGUMENT naming that field, and nothing is written.
  it('validates the request field by field', async () => {
    const base = request();
    const hook = (overrides: Partial<RolloutWebhook> = {}): RolloutWebhook => ({
      name: 'h',
      type: WebhookType.WEBHOOK_TYPE_CONFIRM_TRAFFIC_INCREASE,
      url: 'https://hooks.example/confirm',
      timeout: undefined,
      steps: [],
      ...overrides,
    });
    const metrics = (templates: Partial<MetricTemplate>[]) => ({
      maxErrorRate: 0,
      maxP99Latency: undefined,
      minRequests: 0n,
      maxInconclusive: 0,
      window: undefined,
      failureThreshold: 0,
      metrics: templates.map((t) => ({ name: 'm', query: 'sum(rate(x{subset="{{subset}}"}[{{interval}}]))', min: undefined, max: 1, maxAboveStable: undefined, ...t })),
    });
    const cases: [string, Partial<CreateRolloutRequest>][] = [
      ['evaluation_id', { evaluationId: '' }],
      ['evaluation_id', { evaluationId: 'not-a-uuid' }],
      ['target', { target: undefined }],
      ['target.namespace', { target: { ...base.target!, namespace: '' } }],
      ['target.namespace', { target: { ...base.target!, namespace: 'Bad_NS' } }],
      ['target.virtual_service', { target: { ...base.target!, virtualService: '' } }],
      ['target.host', { target: { ...base.target!, host: '' } }],
      ['target.stable_subset', { target: { ...base.target!, stableSubset: '' } }],
      ['target.canary_subset', { target: { ...base.target!, canarySubset: '' } }],
      ['target.canary_subset', { target: { ...base.target!, canarySubset: 'stable' } }],
      ['target.route_name', { target: { ...base.target!, routeName: 'has space' } }],
      ['steps[1]', { steps: [10, 10, 100] }],
      ['steps[1]', { steps: [50, 20, 100] }],
      ['steps[0]', { steps: [0, 50, 100] }],
      ['steps[1]', { steps: [10, 101] }],
      ['steps[1]', { steps: [10, 90] }],
      ['step_duration', { stepDuration: { seconds: 0n, nanos: 500_000_000 } }],
      ['step_duration', { stepDuration: { seconds: -1n, nanos: 0 } }],
      ['analysis.max_error_rate', { analysis: { maxErrorRate: 1.5, maxP99Latency: undefined, minRequests: 0n, maxInconclusive: 0, window: undefined, failureThreshold: 0, metrics: [] } }],
      ['analysis.min_requests', { analysis: { maxErrorRate: 0, maxP99Latency: undefined, minRequests: -1n, maxInconclusive: 0, window: undefined, failureThreshold: 0, metrics: [] } }],
      ['analysis.max_inconclusive', { analysis: { maxErrorRate: 0, maxP99Latency: undefined, minRequests: 0n, maxInconclusive: -2, window: undefined, failureThreshold: 0, metrics: [] } }],
      ['analysis.window', { analysis: { maxErrorRate: 0, maxP99Latency: undefined, minRequests: 0n, maxInconclusive: 0, window: { seconds: 0n, nanos: 1_000_000 }, failureThreshold: 0, metrics: [] } }],
      ['idempotency_key', { idempotencyKey: 'k'.repeat(201) }],
      ['idempotency_key', { idempotencyKey: 'has space' }],
      ['idempotency_key', { idempotencyKey: 'k'.repeat(150) }],
      ['idempotency_key', { idempotencyKey: 'ключ' }],
      // Every other rule parseCreateRollout enforces: lengths, patterns, bounds of each field.
      ['target.namespace', { target: { ...base.target!, namespace: 'n'.repeat(64) } }],
      ['target.virtual_service', { target: { ...base.target!, virtualService: 'v'.repeat(254) } }],
      ['target.virtual_service', { target: { ...base.target!, virtualService: 'Bad_VS' } }],
      ['target.host', { target: { ...base.target!, host: 'h'.repeat(254) } }],
      ['target.host', { target: { ...base.target!, host: 'has space.example' } }],
      ['target.stable_subset', { target: { ...base.target!, stableSubset: 's'.repeat(64) } }],
      ['target.stable_subset', { target: { ...base.target!, stableSubset: 'Stable' } }],
      ['target.canary_subset', { target: { ...base.target!, canarySubset: 'c'.repeat(64) } }],
      ['target.canary_subset', { target: { ...base.target!, canarySubset: 'can_ary' } }],
      ['target.route_name', { target: { ...base.target!, routeName: 'r'.repeat(64) } }],
      ['steps', { steps: [...Array.from({ length: 20 }, (_, i) => i + 1), 100] }],
      ['step_duration', { stepDuration: { seconds: 86_401n, nanos: 0 } }],
      ['step_duration', { stepDuration: { seconds: 86_400n, nanos: 500_000_000 } }],
      ['step_duration', { stepDuration: { seconds: 1n, nanos: -1 } }],
      ['step_duration', { stepDuration: { seconds: 1n, nanos: 1_000_000_000 } }],
      // Set but under a millisecond: refused, not taken as "unset" (the 60 s default).
      ['step_duration', { stepDuration: { seconds: 0n, nanos: 1 } }],
      ['analysis.max_error_rate', { analysis: { maxErrorRate: -0.1, maxP99Latency: undefined, minRequests: 0n, maxInconclusive: 0, window: undefined, failureThreshold: 0, metrics: [] } }],
      ['analysis.max_error_rate', { analysis: { maxErrorRate: Number.NaN, maxP99Latency: undefined, minRequests: 0n, maxInconclusive: 0, window: undefined, failureThreshold: 0, metrics: [] } }],
      ['analysis.max_error_rate', { analysis: { maxErrorRate: Number.POSITIVE_INFINITY, maxP99Latency: undefined, minRequests: 0n, maxInconclusive: 0, window: undefined, failureThreshold: 0, metrics: [] } }],
      ['analysis.max_p99_latency', { analysis: { maxErrorRate: 0, maxP99Latency: { seconds: -1n, nanos: 0 }, minRequests: 0n, maxInconclusive: 0, window: undefined, failureThreshold: 0, metrics: [] } }],
      ['analysis.max_p99_latency', { analysis: { maxErrorRate: 0, maxP99Latency: { seconds: 86_401n, nanos: 0 }, minRequests: 0n, maxInconclusive: 0, window: undefined, failureThreshold: 0, metrics: [] } }],
      ['analysis.max_p99_latency', { analysis: { maxErrorRate: 0, maxP99Latency: { seconds: 86_400n, nanos: 999_000_000 }, minRequests: 0n, maxInconclusive: 0, window: undefined, failureThreshold: 0, metrics: [] } }],
      ['analysis.max_p99_latency', { analysis: { maxErrorRate: 0, maxP99Latency: { seconds: 0n, nanos: 1 }, minRequests: 0n, maxInconclusive: 0, window: undefined, failureThreshold: 0, metrics: [] } }],
      ['analysis.max_inconclusive', { analysis: { maxErrorRate: 0, maxP99Latency: undefined, minRequests: 0n, maxInconclusive: 101, window: undefined, failureThreshold: 0, metrics: [] } }],
      ['analysis.window', { analysis: { maxErrorRate: 0, maxP99Latency: undefined, minRequests: 0n, maxInconclusive: 0, window: { seconds: 86_401n, nanos: 0 }, failureThreshold: 0, metrics: [] } }],
      ['analysis.window', { analysis: { maxErrorRate: 0, maxP99Latency: undefined, minRequests: 0n, maxInconclusive: 0, window: { seconds: -5n, nanos: 0 }, failureThreshold: 0, metrics: [] } }],
      ['analysis.window', { analysis: { maxErrorRate: 0, maxP99Latency: undefined, minRequests: 0n, maxInconclusive: 0, window: { seconds: 0n, nanos: 1 }, failureThreshold: 0, metrics: [] } }],
      ['analysis.failure_threshold', { analysis: { maxErrorRate: 0, maxP99Latency: undefined, minRequests: 0n, maxInconclusive: 0, window: undefined, failureThreshold: 101, metrics: [] } }],
      ['analysis.failure_threshold', { analysis: { maxErrorRate: 0, maxP99Latency: undefined, minRequests: 0n, maxInconclusive: 0, window: undefined, failureThreshold: -1, metrics: [] } }],
      ['progress_deadline', { progressDeadline: { seconds: 0n, nanos: 1_000_000 } }],
      ['analysis.interval', { analysis: { maxErrorRate: 0, maxP99Latency: undefined, minRequests: 0n, maxInconclusive: 0, window: undefined, failureThreshold: 0, interval: { seconds: 0n, nanos: 500_000_000 }, metrics: [] } }],
      ['analysis.interval', { analysis: { maxErrorRate: 0, maxP99Latency: undefined, minRequests: 0n, maxInconclusive: 0, window: undefined, failureThreshold: 0, interval: { seconds: 61n, nanos: 0 }, metrics: [] } }],
      ['webhooks[0].url', { webhooks: [hook({ url: 'ftp://hooks.example/x' })] }],
      ['webhooks[0].url', { webhooks: [hook({ url: 'not a url' })] }],
      ['webhooks[0].url', { webhooks: [hook({ url: 'https://user:secret@hooks.example/x' })] }],
      ['webhooks[0].url', { webhooks: [hook({ url: '' })] }],
      ['webhooks[0].url', { webhooks: [hook({ url: `https://hooks.example/${'x'.repeat(2048)}` })] }],
      ['webhooks[0].type', { webhooks: [hook({ type: WebhookType.WEBHOOK_TYPE_UNSPECIFIED })] }],
      ['webhooks[0].type', { webhooks: [hook({ type: 99 as WebhookType })] }],
      ['webhooks[0].name', { webhooks: [hook({ name: '' })] }],
      ['webhooks[1].name', { webhooks: [hook(), hook()] }],
      ['webhooks[0].timeout', { webhooks: [hook({ timeout: { seconds: 31n, nanos: 0 } })] }],
      ['webhooks[0].steps', { webhooks: [hook({ type: WebhookType.WEBHOOK_TYPE_CONFIRM_PROMOTION, steps: [50] })] }],
      ['webhooks[0].steps[0]', { webhooks: [hook({ type: WebhookType.WEBHOOK_TYPE_CONFIRM_TRAFFIC_INCREASE, steps: [40] })] }],
      ['webhooks[0].steps[0]', { webhooks: [hook({ type: WebhookType.WEBHOOK_TYPE_CONFIRM_TRAFFIC_INCREASE, steps: [100] })] }],
      ['webhooks', { webhooks: Array.from({ length: 11 }, (_, i) => hook({ name: `h${i}` })) }],
      ['analysis.metrics[0].query', { analysis: metrics([{ query: 'up{job="{{job}}"}' }]) }],
      ['analysis.metrics[0].query', { analysis: metrics([{ query: 'up{job="{{service}"}' }]) }],
      ['analysis.metrics[0].query', { analysis: metrics([{ query: '' }]) }],
      ['analysis.metrics[0].query', { analysis: metrics([{ query: `up${' '.repeat(1000)}or${'x'.repeat(2000)}` }]) }],
      ['analysis.metrics[0].name', { analysis: metrics([{ name: 'Bad Name' }]) }],
      ['analysis.metrics[1].name', { analysis: metrics([{}, {}]) }],
      ['analysis.metrics[0].max', { analysis: metrics([{ max: undefined }]) }],
      ['analysis.metrics[0].max', { analysis: metrics([{ max: Number.NaN }]) }],
      ['analysis.metrics[0].min', { analysis: metrics([{ min: 5, max: 1 }]) }],
      ['analysis.metrics[0].max_above_stable', { analysis: metrics([{ maxAboveStable: -1 }]) }],
      ['analysis.metrics', { analysis: metrics(Array.from({ length: 11 }, (_, i) => ({ name: `m${i}` }))) }],
      ['progress_deadline', { progressDeadline: { seconds: 8n * 86_400n, nanos: 0 } }],
    ];
    const keysBefore = await requestCount();
    const before = await rowCount();
    for (const [field, overrides] of cases) {
      const error = await failure(() => api.create({ ...base, ...overrides }));
      expect([error.code, error.reason, error.fieldViolations.map((v) => v.field)], JSON.stringify(overrides, (_, v) => (typeof v === 'bigint' ? String(v) : v))).to.deep.equal([
        3,
        'INVALID_ARGUMENT',
        [field],
      ]);
    }
    expect(await rowCount()).to.equal(before);
    // Not even an idempotency key was claimed.
    expect(await requestCount()).to.equal(keysBefore);
  });

  // PromoteRollout and AbortRollout: each bad field is INVALID_ARGUMENT naming it; the rollout (state, version, events) and the key table are unchanged.
  it('validates PromoteRollout and AbortRollout field by field', async () => {
    const { rollout } = await api.create(request({ manualPromotion: true }));
    const id = rollout!.id;
    await service.pool.query(`UPDATE shadow_rollouts SET state = 'AWAITING_PROMOTION' WHERE id = $1`, [id]);
    const snapshot = async () =>
      (await service.pool.query('SELECT state, version, canary_weight, (SELECT count(*)::int FROM shadow_rollout_events WHERE rollout_id = $1) AS events FROM shadow_rollouts WHERE id = $1', [id])).rows[0];
    const before = await snapshot();
    const keysBefore = await requestCount();
    const cases: [string, string, () => Promise<unknown>][] = [
      ['PromoteRollout', 'id', () => api.promote({ id: '', idempotencyKey: '' })],
      ['PromoteRollout', 'id', () => api.promote({ id: 'not-a-uuid', idempotencyKey: '' })],
      ['PromoteRollout', 'id', () => api.promote({ id: '-'.repeat(36), idempotencyKey: '' })],
      ['PromoteRollout', 'idempotency_key', () => api.promote({ id, idempotencyKey: `${keyPrefix}${'k'.repeat(200)}` })],
      ['AbortRollout', 'id', () => api.abort({ id: '', reason: '', idempotencyKey: '' })],
      ['AbortRollout', 'id', () => api.abort({ id: 'not-a-uuid', reason: '', idempotencyKey: '' })],
      ['AbortRollout', 'idempotency_key', () => api.abort({ id, reason: '', idempotencyKey: `${keyPrefix}${'k'.repeat(200)}` })],
      // The mesh's one key rule (platform/idempotency-key.ts): 1-128 printable ASCII, no spaces.
      ...['has space', 'k'.repeat(150), 'ключ'].flatMap((key): [string, string, () => Promise<unknown>][] => [
        ['PromoteRollout', 'idempotency_key', () => api.promote({ id, idempotencyKey: key })],
        ['AbortRollout', 'idempotency_key', () => api.abort({ id, reason: '', idempotencyKey: key })],
      ]),
      ['AbortRollout', 'reason', () => api.abort({ id, reason: 'r'.repeat(1001), idempotencyKey: `${keyPrefix}abort-long-reason` })],
    ];
    for (const [method, field, call] of cases) {
      const error = await failure(call);
      expect([error.code, error.reason, error.fieldViolations.map((v) => v.field)], `${method} ${field}`).to.deep.equal([grpcStatus.INVALID_ARGUMENT, 'INVALID_ARGUMENT', [field]]);
    }
    expect(await snapshot()).to.deep.equal(before);
    expect(await requestCount()).to.equal(keysBefore);
    // The limits themselves are allowed: a 1000-character reason aborts.
    const aborted = await api.abort({ id, reason: 'r'.repeat(1000), idempotencyKey: '' });
    expect(aborted.rollout!.state).to.equal(RolloutState.ROLLOUT_STATE_ABORTED);
  });

  // The same idempotency key with the same request replays the first rollout; with another request it is IDEMPOTENCY_KEY_REUSED.
  it('honours idempotency keys on CreateRollout', async () => {
    const first = request({ idempotencyKey: `${keyPrefix}create-once` });
    const before = await rowCount();
    const [a, b] = await Promise.all([api.create(first), api.create(first)]);
    expect(b.rollout).to.deep.equal(a.rollout);
    const replay = await api.create(first);
    expect(replay.rollout).to.deep.equal(a.rollout);
    expect(await rowCount()).to.equal(before + 1);
    const error = await failure(() => api.create({ ...first, manualPromotion: true }));
    expect(error.reason).to.equal('IDEMPOTENCY_KEY_REUSED');
    expect(await rowCount()).to.equal(before + 1);
  });

  // A second live rollout on the same route is refused (they would fight over its weights).
  it('refuses a second live rollout of the same route', async () => {
    const first = request();
    await api.create(first);
    const before = await rowCount();
    const error = await failure(() => api.create({ ...first, idempotencyKey: '' }));
    expect([error.code, error.reason]).to.deep.equal([9, 'ROLLOUT_ALREADY_ACTIVE']);
    expect(await rowCount()).to.equal(before);
  });

  // GetRollout: a malformed id is INVALID_ARGUMENT, an unknown one ROLLOUT_NOT_FOUND.
  it('reports bad and unknown rollout ids', async () => {
    expect((await failure(() => api.get({ id: 'x' }))).fieldViolations[0]!.field).to.equal('id');
    expect((await failure(() => api.get({ id: '00000000-0000-4000-8000-000000000000' }))).reason).to.equal('ROLLOUT_NOT_FOUND');
    expect((await failure(() => api.promote({ id: '00000000-0000-4000-8000-000000000000', idempotencyKey: '' }))).reason).to.equal('ROLLOUT_NOT_FOUND');
    expect((await failure(() => api.abort({ id: '00000000-0000-4000-8000-000000000000', reason: '', idempotencyKey: '' }))).reason).to.equal('ROLLOUT_NOT_FOUND');
  });

  // ListRollouts pages newest first without gaps or repeats, filters by state, and rejects bad tokens and sizes.
  it('lists rollouts page by page', async () => {
    for (let i = 0; i < 3; i++) await api.create(request());
    const all = (await api.list({ pageSize: 500, pageToken: '', state: RolloutState.ROLLOUT_STATE_UNSPECIFIED })).rollouts.map((r) => r.id);
    const paged: string[] = [];
    let pageToken = '';
    for (let pages = 0; pages < 100; pages++) {
      const page = await api.list({ pageSize: 2, pageToken, state: RolloutState.ROLLOUT_STATE_UNSPECIFIED });
      expect(page.rollouts.length).to.be.at.most(2);
      paged.push(...page.rollouts.map((r) => r.id));
      pageToken = page.nextPageToken;
      if (pageToken === '') break;
    }
    expect(paged).to.deep.equal(all);
    expect(all.length).to.be.at.least(5);
    const pending = await api.list({ pageSize: 500, pageToken: '', state: RolloutState.ROLLOUT_STATE_PENDING });
    expect(pending.rollouts.every((r) => r.state === RolloutState.ROLLOUT_STATE_PENDING)).to.equal(true);
    expect((await failure(() => api.list({ pageSize: 2, pageToken: 'garbage!', state: 0 }))).fieldViolations[0]!.field).to.equal('page_token');
    // Well-formed tokens of this query (platform codec, right filter) whose cursor was forged: INVALID_ARGUMENT, not INTERNAL.
    for (const cursor of [['-1'], ['0'], ['abc'], ['99999999999999999999'], ['1', '2']]) {
      const forged = await failure(() => api.list({ pageSize: 2, pageToken: encodePageToken(cursor, { state: null }), state: 0 }));
      expect([forged.code, forged.fieldViolations[0]!.field], JSON.stringify(cursor)).to.deep.equal([grpcStatus.INVALID_ARGUMENT, 'page_token']);
    }
    // A token is bound to its filter: a page token of the PENDING listing is refused for all states.
    const pendingPage = await api.list({ pageSize: 1, pageToken: '', state: RolloutState.ROLLOUT_STATE_PENDING });
    if (pendingPage.nextPageToken !== '') {
      expect((await failure(() => api.list({ pageSize: 1, pageToken: pendingPage.nextPageToken, state: 0 }))).fieldViolations[0]!.field).to.equal('page_token');
    }
    expect((await failure(() => api.list({ pageSize: -1, pageToken: '', state: 0 }))).fieldViolations[0]!.field).to.equal('page_size');
    // An enum number this version does not know (ts-proto keeps it as it is) is refused, not taken as "any state".
    const unknownState = await failure(() => api.list({ pageSize: 2, pageToken: '', state: 99 as RolloutState }));
    expect([unknownState.code, unknownState.fieldViolations[0]!.field]).to.deep.equal([grpcStatus.INVALID_ARGUMENT, 'state']);
  });

  // Promote before the gate is ROLLOUT_NOT_AWAITING_PROMOTION; Abort moves any live rollout to ABORTED at weight 0 (replayable by key); a finished rollout refuses both with ROLLOUT_FINISHED.
  it('guards promote and abort by state', async () => {
    const { rollout } = await api.create(request({ manualPromotion: true }));
    const id = rollout!.id;
    expect((await failure(() => api.promote({ id, idempotencyKey: '' }))).reason).to.equal('ROLLOUT_NOT_AWAITING_PROMOTION');
    const aborted = await api.abort({ id, reason: 'bad build', idempotencyKey: `${keyPrefix}abort-1` });
    expect([aborted.rollout!.state, aborted.rollout!.canaryWeight]).to.deep.equal([RolloutState.ROLLOUT_STATE_ABORTED, 0]);
    expect(aborted.rollout!.events.at(-1)!.reason).to.equal('ABORTED_BY_OPERATOR: bad build');
    expect((await api.abort({ id, reason: 'bad build', idempotencyKey: `${keyPrefix}abort-1` })).rollout).to.deep.equal(aborted.rollout);
    expect((await failure(() => api.abort({ id, reason: 'other', idempotencyKey: `${keyPrefix}abort-1` }))).reason).to.equal('IDEMPOTENCY_KEY_REUSED');
    expect((await failure(() => api.abort({ id, reason: '', idempotencyKey: '' }))).reason).to.equal('ROLLOUT_FINISHED');
    expect((await failure(() => api.promote({ id, idempotencyKey: '' }))).reason).to.equal('ROLLOUT_FINISHED');
  });

  // Keys without the rollout scope cannot create; keys without any shadow scope cannot read.
  it('enforces scopes', async () => {
    expect((await failure(() => api.create(request(), bearer(testKeys.creditsReader)))).code).to.equal(7);
    expect((await failure(() => api.get({ id: approved }, bearer(testKeys.noScopes)))).code).to.equal(7);
  });

  // WatchRollout of a finished rollout sends it with its history and ends; an unknown id is ROLLOUT_NOT_FOUND.
  it('watches a finished rollout to its end', async () => {
    const { rollout } = await api.create(request());
    await api.abort({ id: rollout!.id, reason: '', idempotencyKey: '' });
    const messages: WatchRolloutResponse[] = [];
    await new Promise<void>((resolve, reject) => {
      const stream = client.watchRollout({ id: rollout!.id }, bearer());
      stream.on('data', (m: WatchRolloutResponse) => messages.push(m));
      stream.on('end', resolve);
      stream.on('error', reject);
    });
    expect(messages).to.have.length(1);
    expect(messages[0]!.rollout!.state).to.equal(RolloutState.ROLLOUT_STATE_ABORTED);
    expect(messages[0]!.rollout!.events.map((e) => e.reason)).to.deep.equal(['CREATED', 'ABORTED_BY_OPERATOR']);
    const error = await new Promise<unknown>((resolve) => {
      const stream = client.watchRollout({ id: '00000000-0000-4000-8000-000000000000' }, bearer());
      stream.on('data', () => undefined);
      stream.on('error', resolve);
      stream.on('end', () => resolve(undefined));
    });
    expect(errorDetails(error)!.reason).to.equal('ROLLOUT_NOT_FOUND');
  });
});
