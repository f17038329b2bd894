/**
 * Shadow behind a real PgBouncer (Debian's 1.18, its defaults, transaction pooling;
 * testing/pgbouncer.ts), two instances on it, each LISTENing on a direct connection
 * (SHADOW_LISTEN_DATABASE_URL): every RPC answers, an evaluation is picked up by LISTEN alone (the
 * poll is ten minutes), and a LISTEN URL that goes through the pooler is refused at start, saying so.
 */
import { randomUUID } from 'node:crypto';
import { expect } from 'chai';
import type pg from 'pg';
import {
  EvaluationState,
  RolloutState,
  type Evaluation,
  type IngestSamplesResponse,
  type ListEvaluationsRequest,
  type StartEvaluationRequest,
  type ShadowServiceClient,
  type WatchRolloutResponse,
} from '../../../gen/shieldx/shadow/v1/shadow';
import { createPool } from '../../../platform/db';
import { runMigrations } from '../../../platform/migrate';
import type { RunningService } from '../../../platform/server';
import { bearer, startTestService, testInfrastructure, testKeys, waitFor } from '../../../testing/harness';
import { requirePgBouncer, startPgBouncer, type PgBouncer } from '../../../testing/pgbouncer';
import { clientFor, insertEvaluation, rpc } from '../../../testing/rollout-kit';
import { shadowService } from '..';

type Callback<Res> = (err: Error | null, res: Res) => void;
const unary =
  <Req, Res>(client: ShadowServiceClient, fn: (req: Req, md: ReturnType<typeof bearer>, cb: Callback<Res>) => unknown) =>
  (req: Req): Promise<Res> =>
    new Promise((resolve, reject) => fn.call(client, req, bearer(testKeys.shadowWriter), (err, res) => (err ? reject(err) : resolve(res))));

describe('shadow through PgBouncer (transaction pooling, two instances)', function () {
  this.timeout(120_000);
  let bouncer: PgBouncer | undefined;
  let direct: pg.Pool | undefined;
  let dir: string;
  const services: RunningService[] = [];
  const clients: ShadowServiceClient[] = [];

  before(async function () {
    const binary = requirePgBouncer(this);
    const { databaseUrl } = testInfrastructure();
    await runMigrations(databaseUrl, 'shadow');
    bouncer = await startPgBouncer(binary, databaseUrl, { settings: { default_pool_size: '4' } });
    direct = createPool(databaseUrl, { max: 2, statementTimeoutMs: 10_000, applicationName: 'shadow-pgb-test' });
    dir = `/tmp/shieldx-shadow-pgb-${randomUUID()}`;
    for (let i = 0; i < 2; i++) {
      const service = await startTestService(shadowService, {
        DATABASE_URL: bouncer.url(databaseUrl),
        MIGRATE_ON_START: 'false',
        SHADOW_LISTEN_DATABASE_URL: databaseUrl,
        // Only a notification can wake an idle runner within the test.
        SHADOW_EVALUATION_POLL_MS: '600000',
        ROLLOUT_CONTROLLER: 'off',
        ROLLOUT_FILE_ROUTER_DIR: dir,
        ROLLOUT_WATCH_POLL_MS: '50',
      });
      services.push(service);
      clients.push(clientFor(service));
    }
  });
  after(async () => {
    for (const client of clients) client.close();
    for (const service of services) await service.shutdown();
    // Not left for a later suite's controller to pick up (the run's database is shared).
    await direct?.query(`DELETE FROM shadow_rollouts WHERE virtual_service LIKE 'pgb-%'`);
    await direct?.end();
    await bouncer?.stop();
  });

  const getEvaluation = (i: number, id: string) => unary<{ id: string }, { evaluation?: Evaluation }>(clients[i]!, clients[i]!.getEvaluation)({ id });
  const waitDone = (i: number, id: string) =>
    waitFor(`evaluation ${id} to finish`, async () => {
      const { evaluation } = await getEvaluation(i, id);
      return evaluation?.state === EvaluationState.EVALUATION_STATE_SUCCEEDED || evaluation?.state === EvaluationState.EVALUATION_STATE_FAILED ? evaluation : undefined;
    }, 60_000);

  it('answers every RPC, alternating between the two instances, and LISTEN picks up evaluations', async () => {
    const dataset = `pgb-${randomUUID().slice(0, 8)}`;
    const ingested = await new Promise<IngestSamplesResponse>((resolve, reject) => {
      const stream = clients[0]!.ingestSamples(bearer(testKeys.shadowWriter), (err, res) => (err ? reject(err) : resolve(res)));
      const samples = Array.from({ length: 50 }, (_, i) => ({
        timestamp: new Date(1_717_236_000_000 + i * 1000),
        clientKey: `k${i}`,
        clientIp: '203.0.113.7',
        method: 'GET',
        path: i % 2 ? '/.env' : '/',
        status: 200,
        userAgent: i % 2 ? 'sqlmap/1.7' : 'Mozilla/5.0',
        headers: {},
        requestBytes: 100n,
        malicious: i % 2 === 1,
        attackType: i % 2 ? 'scanner' : '',
      }));
      stream.write({ dataset, idempotencyKey: `ingest-${dataset}`, samples });
      stream.end();
    });
    expect(ingested.accepted).to.equal(50n);

    const started = await unary<StartEvaluationRequest, { evaluation?: Evaluation }>(clients[1]!, clients[1]!.startEvaluation)({
      name: 'pgbouncer',
      rule: { kind: { $case: 'headerPattern', value: { header: 'user-agent', patterns: ['sqlmap'], caseInsensitive: true } } },
      baselineRule: undefined,
      selection: { dataset, limit: 0n },
      thresholds: undefined,
      idempotencyKey: '',
    });
    const first = await waitDone(0, started.evaluation!.id);
    expect(first.state).to.equal(EvaluationState.EVALUATION_STATE_SUCCEEDED);

    // A job enqueued behind both instances' backs (as another replica would): only its NOTIFY, heard on the
    // direct LISTEN connections, can wake them.
    const copy = randomUUID();
    await direct!.query(
      `INSERT INTO shadow_evaluations (id, name, rule, baseline_rule, selection, thresholds)
       SELECT $1, 'notified', rule, baseline_rule, selection, thresholds FROM shadow_evaluations WHERE id = $2`,
      [copy, first.id],
    );
    expect((await waitDone(1, copy)).state).to.equal(EvaluationState.EVALUATION_STATE_SUCCEEDED);
    const listed = await unary<ListEvaluationsRequest, { evaluations: Evaluation[] }>(clients[0]!, clients[0]!.listEvaluations)({ pageSize: 100, pageToken: '', state: 0 });
    expect(listed.evaluations.map((e) => e.id)).to.include.members([first.id, copy]);

    const approved = await insertEvaluation(direct!, 'approved');
    const api = [rpc(clients[0]!), rpc(clients[1]!)];
    const target = (name: string) => ({ namespace: 'shieldx', virtualService: name, host: 'credits.shieldx.svc.cluster.local', stableSubset: 'stable', canarySubset: 'canary', routeName: '' });
    const base = { evaluationId: approved, steps: [], stepDuration: undefined, analysis: undefined, autoRollback: true, disableAutoRollback: false, progressDeadline: undefined, idempotencyKey: '' };
    const { rollout: manual } = await api[0]!.create({ ...base, target: target(`pgb-a-${copy.slice(0, 6)}`), manualPromotion: true });
    expect((await api[1]!.get({ id: manual!.id })).rollout!.id).to.equal(manual!.id);
    // At the gate with a healthy latest analysis, as the controller leaves it (PromoteRollout requires one).
    await direct!.query(`UPDATE shadow_rollouts SET state = 'AWAITING_PROMOTION', last_verdict = 'ANALYSIS_VERDICT_HEALTHY' WHERE id = $1`, [manual!.id]);
    expect((await api[1]!.promote({ id: manual!.id, idempotencyKey: `p-${copy}` })).rollout).to.not.equal(undefined);
    const { rollout: other } = await api[1]!.create({ ...base, target: target(`pgb-b-${copy.slice(0, 6)}`), manualPromotion: false });
    const aborted = await api[0]!.abort({ id: other!.id, reason: 'test', idempotencyKey: `a-${copy}` });
    expect(aborted.rollout!.state).to.equal(RolloutState.ROLLOUT_STATE_ABORTED);
    const page = await api[1]!.list({ pageSize: 100, pageToken: '', state: 0 });
    expect(page.rollouts.map((r) => r.id)).to.include.members([manual!.id, other!.id]);
    const messages: WatchRolloutResponse[] = [];
    await new Promise<void>((resolve, reject) => {
      const stream = clients[0]!.watchRollout({ id: other!.id }, bearer());
      stream.on('data', (m: WatchRolloutResponse) => messages.push(m));
      stream.on('end', resolve);
      stream.on('error', reject);
    });
    expect(messages.at(-1)?.rollout?.state).to.equal(RolloutState.ROLLOUT_STATE_ABORTED);
  });

  it('refuses to start when its LISTEN connection would go through the pooler, saying what to set', async () => {
    const { databaseUrl } = testInfrastructure();
    const refusal = await startTestService(shadowService, {
      DATABASE_URL: bouncer!.url(databaseUrl),
      MIGRATE_ON_START: 'false',
      ROLLOUT_CONTROLLER: 'off',
      ROLLOUT_FILE_ROUTER_DIR: dir,
    }).then(
      async (service) => {
        await service.shutdown();
        return 'started';
      },
      (error: Error) => error.message,
    );
    expect(refusal).to.match(/SHADOW_LISTEN_DATABASE_URL .* connection pooler/);
  });
});
