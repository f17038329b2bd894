import { expect } from 'chai';
import { randomUUID } from 'node:crypto';
import { status as grpcStatus } from '@grpc/grpc-js';
import {
  Decision,
  EvaluationState,
  RateLimitKey,
  ShadowServiceClient,
  Thresholds,
  type Evaluation,
  type IngestSamplesResponse,
  type Rule,
  type StartEvaluationRequest,
  type TrafficSample as ProtoSample,
} from '../../../gen/shieldx/shadow/v1/shadow';
import { errorDetails } from '../../../platform/grpc-errors';
import { encodePageToken } from '../../../platform/page-token';
import type { RunningService } from '../../../platform/server';
import { address, bearer, insecure, startTestService, testKeys, waitFor } from '../../../testing/harness';
import { SampleColumnsCache } from '../store/sample-store';
import { shadowService } from '..';
import { generateTraffic } from '../domain/traffic-generator';

function toProto(sample: ReturnType<typeof generateTraffic>[number]): ProtoSample {
  return {
    timestamp: new Date(sample.timestampMs),
    clientKey: sample.clientKey,
    clientIp: sample.clientIp,
    method: sample.method,
    path: sample.path,
    status: sample.status,
    userAgent: sample.userAgent,
    headers: sample.headers,
    requestBytes: BigInt(sample.requestBytes),
    malicious: sample.malicious,
    attackType: sample.attackType,
  };
}

const scannerRule: Rule = {
  kind: { $case: 'headerPattern', value: { header: 'user-agent', patterns: ['(nikto|sqlmap|nuclei|gobuster|masscan|zgrab|nmap)'], caseInsensitive: true } },
};

describe('shadow service over gRPC', function () {
  this.timeout(60_000);
  let service: RunningService;
  let client: ShadowServiceClient;
  const dataset = `e2e-${randomUUID().slice(0, 8)}`;

  const ingest = (batches: { dataset: string; samples: ProtoSample[] }[]) =>
    new Promise<{ error: unknown; response?: IngestSamplesResponse }>((resolve) => {
      const stream = client.ingestSamples(bearer(testKeys.shadowWriter), (error, response) => resolve({ error, response }));
      for (const batch of batches) stream.write({ idempotencyKey: '', ...batch });
      stream.end();
    });
  const start = (request: Partial<StartEvaluationRequest>) =>
    new Promise<{ error: unknown; evaluation?: Evaluation }>((resolve) =>
      client.startEvaluation(
        { name: '', rule: undefined, baselineRule: undefined, selection: undefined, thresholds: undefined, idempotencyKey: '', ...request },
        bearer(testKeys.shadowWriter),
        (error, response) => resolve({ error, evaluation: response?.evaluation }),
      ),
    );
  const get = (id: string) =>
    new Promise<{ error: unknown; evaluation?: Evaluation }>((resolve) =>
      client.getEvaluation({ id }, bearer(testKeys.shadowWriter), (error, response) => resolve({ error, evaluation: response?.evaluation })),
    );
  const waitDone = (id: string): Promise<Evaluation> =>
    waitFor(`evaluation ${id} to finish`, async () => {
      const { evaluation } = await get(id);
      const done = evaluation && (evaluation.state === EvaluationState.EVALUATION_STATE_SUCCEEDED || evaluation.state === EvaluationState.EVALUATION_STATE_FAILED);
      return done ? evaluation : undefined;
    });
  const list = (pageSize: number, pageToken: string, state: EvaluationState = EvaluationState.EVALUATION_STATE_UNSPECIFIED) =>
    new Promise<{ error: unknown; response?: { evaluations: Evaluation[]; nextPageToken: string } }>((resolve) =>
      client.listEvaluations({ pageSize, pageToken, state }, bearer(testKeys.shadowWriter), (error, response) => resolve({ error, response })),
    );

  before(async () => {
    // Sweeps expired leases every second (default 30 s): the abandoned-job test waits for one.
    service = await startTestService(shadowService, { ROLLOUT_CONTROLLER: 'off', SHADOW_EVALUATION_LEASE_SWEEP_SECONDS: '1' });
    client = new ShadowServiceClient(address(service), insecure);
  });
  after(async () => {
    client.close();
    await service.shutdown();
  });

  // Ingest lands the good rows in batches and reports each bad row with its index and reason.
  it('ingests samples, reporting bad rows while the good ones land', async () => {
    const samples = generateTraffic({ count: 3000, seed: 7 }).map(toProto);
    const bad: ProtoSample = { ...samples[0]!, clientIp: 'not-an-ip' };
    const badStatus: ProtoSample = { ...samples[1]!, status: 42 };
    const { error, response } = await ingest([
      { dataset, samples: samples.slice(0, 1500) },
      { dataset: '', samples: [bad, ...samples.slice(1500), badStatus] },
    ]);
    expect(error).to.equal(null);
    expect(response).to.deep.include({ dataset, received: 3002n, accepted: 3000n, rejected: 2n });
    expect(response!.rejectedSamples.map((r) => Number(r.index))).to.deep.equal([1500, 3001]);
    expect(response!.rejectedSamples[0]!.reason).to.match(/client_ip/);
    expect(response!.rejectedSamples[1]!.reason).to.match(/status/);
    const count = await service.pool.query('SELECT count(*)::int AS n FROM shadow_samples WHERE dataset = $1', [dataset]);
    expect(count.rows[0].n).to.equal(3000);
  });

  // A bad dataset name fails the stream with INVALID_ARGUMENT and writes nothing.
  it('refuses a stream without a valid dataset', async () => {
    const total = async () => (await service.pool.query('SELECT count(*)::int AS n FROM shadow_samples')).rows[0].n as number;
    const before = await total();
    const { error } = await ingest([{ dataset: 'Bad Name!', samples: generateTraffic({ count: 3, seed: 1 }).map(toProto) }]);
    expect(errorDetails(error)).to.include({ code: grpcStatus.INVALID_ARGUMENT, reason: 'INVALID_ARGUMENT' });
    expect(errorDetails(error)!.fieldViolations[0]!.field).to.equal('dataset');
    // Not a row in any dataset (the CHECK on the column would refuse 'Bad Name!' itself anyway).
    expect(await total()).to.equal(before);
  });

  // From ingest to a recommendation: the job runs, the matrix adds up to the samples, and a baseline gets McNemar.
  it('evaluates a rule against a baseline end to end', async () => {
    const baseline: Rule = { kind: { $case: 'rateLimit', value: { maxRequests: 20n, window: { seconds: 10n, nanos: 0 }, keyBy: RateLimitKey.RATE_LIMIT_KEY_CLIENT_IP } } };
    const { error, evaluation } = await start({ name: 'scanners', rule: scannerRule, baselineRule: baseline, selection: { dataset, limit: 0n } });
    expect(error).to.equal(null);
    expect(evaluation!.state).to.be.oneOf([EvaluationState.EVALUATION_STATE_PENDING, EvaluationState.EVALUATION_STATE_RUNNING]);
    const done = await waitDone(evaluation!.id);
    expect(done.state, done.error).to.equal(EvaluationState.EVALUATION_STATE_SUCCEEDED);
    const result = done.result!;
    const m = result.matrix!;
    expect(m.truePositives + m.falsePositives + m.trueNegatives + m.falseNegatives).to.equal(3000n);
    expect(result.samplesEvaluated).to.equal(3000n);
    const precision = result.metrics!.precision!;
    expect(precision.numerator).to.equal(m.truePositives);
    expect(precision.lower).to.be.at.most(precision.value);
    expect(precision.upper).to.be.at.least(precision.value);
    expect(result.chiSquare!.name).to.equal('chi_square_independence');
    expect(result.baseline!.mcnemar!.name).to.match(/^mcnemar_/);
    expect(result.recommendation!.decision).to.not.equal(Decision.DECISION_UNSPECIFIED);
    expect(result.recommendation!.reasons.length).to.be.greaterThan(0);
    const row = await service.pool.query('SELECT decision FROM shadow_evaluations WHERE id = $1', [done.id]);
    expect(row.rows[0].decision).to.equal(Decision[result.recommendation!.decision]);
  });

  // Invalid rule configs are INVALID_ARGUMENT naming the exact field, and no job is created.
  it('rejects invalid rules naming the field', async () => {
    const before = (await service.pool.query('SELECT count(*)::int AS n FROM shadow_evaluations')).rows[0].n;
    const cases: [Rule | undefined, string][] = [
      [undefined, 'rule'],
      [{ kind: { $case: 'pathPattern', value: { patterns: ['(unclosed'], caseInsensitive: false } } }, 'rule.path_pattern.patterns[0]'],
      [{ kind: { $case: 'any', value: { rules: [scannerRule, { kind: { $case: 'ipBlocklist', value: { cidrs: ['10.0.0.0/33'] } } }] } } }, 'rule.any.rules[1].ip_blocklist.cidrs[0]'],
      [{ kind: { $case: 'rateLimit', value: { maxRequests: 0n, window: { seconds: 1n, nanos: 0 }, keyBy: RateLimitKey.RATE_LIMIT_KEY_CLIENT_IP } } }, 'rule.rate_limit.max_requests'],
      // An enum number this version does not know arrives as itself (ts-proto keeps it), not as UNRECOGNIZED.
      [{ kind: { $case: 'rateLimit', value: { maxRequests: 10n, window: { seconds: 1n, nanos: 0 }, keyBy: 99 as RateLimitKey } } }, 'rule.rate_limit.key_by'],
      [{ kind: { $case: 'all', value: { rules: [scannerRule, { kind: { $case: 'rateLimit', value: { maxRequests: 10n, window: { seconds: 1n, nanos: 0 }, keyBy: 99 as RateLimitKey } } }] } } }, 'rule.all.rules[1].rate_limit.key_by'],
    ];
    for (const [rule, field] of cases) {
      const details = errorDetails((await start({ rule, selection: { dataset, limit: 0n } })).error);
      expect(details?.code, field).to.equal(grpcStatus.INVALID_ARGUMENT);
      expect(details?.fieldViolations[0]?.field).to.equal(field);
    }
    const after = (await service.pool.query('SELECT count(*)::int AS n FROM shadow_evaluations')).rows[0].n;
    expect(after).to.equal(before);
  });

  // Thresholds out of range, a missing dataset and an empty dataset are refused before a job exists.
  it('rejects bad thresholds and selections', async () => {
    const thresholds = Thresholds.fromPartial({ minPrecision: 1.5 });
    expect(errorDetails((await start({ rule: scannerRule, selection: { dataset, limit: 0n }, thresholds })).error)?.fieldViolations[0]?.field).to.equal('thresholds.min_precision');
    expect(errorDetails((await start({ rule: scannerRule })).error)?.fieldViolations[0]?.field).to.equal('selection.dataset');
    expect(errorDetails((await start({ rule: scannerRule, selection: { dataset: 'nothing-here', limit: 0n } })).error)).to.include({
      code: grpcStatus.FAILED_PRECONDITION,
      reason: 'NO_SAMPLES',
    });
    // Every other StartEvaluation limit: INVALID_ARGUMENT naming the field, and no job written.
    const before = (await service.pool.query('SELECT count(*)::int AS n FROM shadow_evaluations')).rows[0].n;
    const bad: [Partial<StartEvaluationRequest>, string][] = [
      [{ name: 'n'.repeat(201) }, 'name'],
      [{ idempotencyKey: 'k'.repeat(201) }, 'idempotency_key'],
      // The mesh's one key rule (platform/idempotency-key.ts): 1-128 printable ASCII, no spaces.
      [{ idempotencyKey: 'has space' }, 'idempotency_key'],
      [{ idempotencyKey: 'k'.repeat(150) }, 'idempotency_key'],
      [{ idempotencyKey: 'ключ' }, 'idempotency_key'],
      [{ selection: { dataset, limit: -1n } }, 'selection.limit'],
      [{ selection: { dataset, limit: 0n, startTime: new Date(2_000), endTime: new Date(2_000) } }, 'selection.end_time'],
      [{ selection: { dataset, limit: 0n, startTime: new Date(3_000), endTime: new Date(2_000) } }, 'selection.end_time'],
    ];
    for (const [request, field] of bad) {
      const details = errorDetails((await start({ rule: scannerRule, selection: { dataset, limit: 0n }, ...request })).error);
      expect(details?.code, field).to.equal(grpcStatus.INVALID_ARGUMENT);
      expect(details?.fieldViolations[0]?.field, field).to.equal(field);
    }
    expect((await service.pool.query('SELECT count(*)::int AS n FROM shadow_evaluations')).rows[0].n).to.equal(before);
  });

  // The same idempotency key replays the first job; a different request under it is IDEMPOTENCY_KEY_REUSED.
  it('honours idempotency keys', async () => {
    const key = `start-${randomUUID()}`;
    const first = await start({ rule: scannerRule, selection: { dataset, limit: 100n }, idempotencyKey: key });
    const again = await start({ rule: scannerRule, selection: { dataset, limit: 100n }, idempotencyKey: key });
    expect(again.evaluation!.id).to.equal(first.evaluation!.id);
    const other = await start({ rule: scannerRule, selection: { dataset, limit: 200n }, idempotencyKey: key });
    expect(errorDetails(other.error)).to.include({ code: grpcStatus.FAILED_PRECONDITION, reason: 'IDEMPOTENCY_KEY_REUSED' });
    await waitDone(first.evaluation!.id);
  });

  // Unknown and malformed ids, bad page sizes and tokens get clear errors.
  it('reports unknown evaluations and bad pagination', async () => {
    expect(errorDetails((await get(randomUUID())).error)).to.include({ code: grpcStatus.NOT_FOUND, reason: 'EVALUATION_NOT_FOUND' });
    expect(errorDetails((await get('nope')).error)?.code).to.equal(grpcStatus.INVALID_ARGUMENT);
    // 36 characters of [0-9a-f-] that are no UUID: refused up front, not an INTERNAL from PostgreSQL's uuid cast.
    const dashes = errorDetails((await get('-'.repeat(36))).error);
    expect(dashes).to.include({ code: grpcStatus.INVALID_ARGUMENT });
    expect(dashes!.fieldViolations[0]!.field).to.equal('id');
    expect(errorDetails((await list(10, 'garbage')).error)?.fieldViolations[0]?.field).to.equal('page_token');
    const dashToken = Buffer.from(JSON.stringify({ c: new Date().toISOString(), i: '-'.repeat(36) })).toString('base64url');
    const badToken = errorDetails((await list(10, dashToken)).error);
    expect(badToken).to.include({ code: grpcStatus.INVALID_ARGUMENT });
    expect(badToken!.fieldViolations[0]!.field).to.equal('page_token');
    // Well-formed tokens of this query (platform codec, right filter) whose cursor was forged: refused
    // by the cursor check as INVALID_ARGUMENT, never an INTERNAL from PostgreSQL's casts.
    for (const cursor of [['-1', randomUUID()], ['not a time', randomUUID()], ['2024-01-01T00:00:00.000000Z', '-1'], ['-1']]) {
      const forged = errorDetails((await list(10, encodePageToken(cursor, { state: null }))).error);
      expect([forged?.code, forged?.fieldViolations[0]?.field], JSON.stringify(cursor)).to.deep.equal([grpcStatus.INVALID_ARGUMENT, 'page_token']);
    }
    expect(errorDetails((await list(-1, '')).error)?.fieldViolations[0]?.field).to.equal('page_size');
    // Pages of one walk all evaluations newest first without repeats.
    const seen: string[] = [];
    let token = '';
    for (let i = 0; i < 50; i++) {
      const { response } = await list(1, token);
      seen.push(...response!.evaluations.map((e) => e.id));
      token = response!.nextPageToken;
      if (token === '') break;
    }
    const all = await service.pool.query('SELECT id FROM shadow_evaluations ORDER BY created_at DESC, id DESC');
    expect(seen).to.deep.equal(all.rows.map((r) => r.id));
  });

  // A state filter this version does not know is INVALID_ARGUMENT, not a silent "list everything"; a known one filters.
  it('rejects an unknown state filter', async () => {
    const unknown = errorDetails((await list(10, '', 99 as EvaluationState)).error);
    expect(unknown).to.include({ code: grpcStatus.INVALID_ARGUMENT });
    expect(unknown!.fieldViolations[0]!.field).to.equal('state');
    const { error, response } = await list(500, '', EvaluationState.EVALUATION_STATE_SUCCEEDED);
    expect(error).to.equal(null);
    expect(response!.evaluations.length).to.be.greaterThan(0);
    expect(response!.evaluations.every((e) => e.state === EvaluationState.EVALUATION_STATE_SUCCEEDED)).to.equal(true);
  });

  // Re-evaluating a selection reuses the loaded samples, yet samples ingested since are never missed.
  it('sees newly ingested samples when it re-evaluates a dataset', async () => {
    const small = `grow-${randomUUID().slice(0, 8)}`;
    await ingest([{ dataset: small, samples: generateTraffic({ count: 400, seed: 3 }).map(toProto) }]);
    const first = await waitDone((await start({ rule: scannerRule, selection: { dataset: small, limit: 0n } })).evaluation!.id);
    const again = await waitDone((await start({ rule: scannerRule, selection: { dataset: small, limit: 0n } })).evaluation!.id);
    expect(again.result!.matrix).to.deep.equal(first.result!.matrix);
    await ingest([{ dataset: small, samples: generateTraffic({ count: 100, seed: 4, startTimeMs: Date.UTC(2026, 0, 1) }).map(toProto) }]);
    const grown = await waitDone((await start({ rule: scannerRule, selection: { dataset: small, limit: 0n } })).evaluation!.id);
    expect(first.result!.samplesEvaluated).to.equal(400n);
    expect(grown.result!.samplesEvaluated).to.equal(500n);
    // The cache itself: a second load of the same selection is served from memory, one after an ingest is not.
    const cache = new SampleColumnsCache();
    const selection = { dataset: small, limit: 0 };
    const loaded = await cache.load(service.pool, selection, []);
    expect([loaded.cached, loaded.columns.length]).to.deep.equal([false, 500]);
    const reused = await cache.load(service.pool, selection, []);
    expect(reused.cached).to.equal(true);
    expect(reused.columns).to.equal(loaded.columns);
    await ingest([{ dataset: small, samples: generateTraffic({ count: 10, seed: 5, startTimeMs: Date.UTC(2026, 0, 2) }).map(toProto) }]);
    const refreshed = await cache.load(service.pool, selection, []);
    expect([refreshed.cached, refreshed.columns.length]).to.deep.equal([false, 510]);
  });

  // A job left RUNNING by a replica that died is taken up again when its lease runs out, never stuck.
  it('re-queues a job abandoned mid-run', async () => {
    const { evaluation } = await start({ rule: scannerRule, selection: { dataset, limit: 50n }, idempotencyKey: `orphan-${randomUUID()}` });
    await waitDone(evaluation!.id);
    // Simulate a replica that claimed it and died: RUNNING with an expired lease.
    await service.pool.query(
      `UPDATE shadow_evaluations SET state = 'RUNNING', result = NULL, decision = NULL, attempts = 1, lease_expires_at = now() - interval '1 second' WHERE id = $1`,
      [evaluation!.id],
    );
    const done = await waitDone(evaluation!.id);
    expect(done.state).to.equal(EvaluationState.EVALUATION_STATE_SUCCEEDED);
    const row = await service.pool.query('SELECT attempts FROM shadow_evaluations WHERE id = $1', [evaluation!.id]);
    expect(row.rows[0].attempts).to.equal(2);
  });
});
