/**
 * Shadow evaluation sample loads with a real streaming replica (pg_basebackup -R from a scratch
 * primary, as the credits replica test builds it) as DATABASE_READ_URL. A job records the primary's
 * WAL position when it is created; its load reads the replica only once the replica has replayed
 * past it (checked on the replica connection, in the load's own transaction). With replay paused,
 * samples ingested then evaluated are all counted: the load falls back to the primary. With replay
 * resumed the load comes from the replica, shown by the replica's own table statistics (a scan of
 * shadow_samples there) and the load metric.
 *
 * DB_READ_MAX_LAG_MS is an hour here, so the database watch keeps routing reads that may lag to
 * the paused replica: the job's WAL position is the only thing that keeps the load off it.
 */
import { appendFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { expect } from 'chai';
import pg from 'pg';
import {
  EvaluationState,
  ShadowServiceClient,
  type Evaluation,
  type IngestSamplesResponse,
  type Rule,
  type StartEvaluationRequest,
  type TrafficSample as ProtoSample,
} from '../../../gen/shieldx/shadow/v1/shadow';
import { parseLsn } from '../../../platform/db-watch';
import type { RunningService } from '../../../platform/server';
import { freePort } from '../../../dev/local-servers';
import { address, bearer, insecure, startTestService, testKeys, waitFor } from '../../../testing/harness';
import { skipOrFailInCi } from '../../../testing/require-tool';
import { findServerBinDir, ownedDir, runAsClusterUser, startScratchCluster, type ScratchCluster } from '../../../testing/scratch-cluster';
import { generateTraffic } from '../domain/traffic-generator';
import { shadowService } from '..';

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

describe('shadow evaluation sample loads from a streaming read replica (DATABASE_READ_URL)', function () {
  this.timeout(180_000);
  let primary: ScratchCluster | undefined;
  let standbyData: string | undefined;
  let standbyUrl = '';
  let service: RunningService | undefined;
  let client: ShadowServiceClient | undefined;

  const onStandby = async <R extends pg.QueryResultRow>(sql: string, params: unknown[] = []) => {
    const c = new pg.Client({ connectionString: standbyUrl });
    await c.connect();
    try {
      return (await c.query<R>(sql, params)).rows;
    } finally {
      await c.end();
    }
  };
  /** Scans of shadow_samples the replica itself ran (its own statistics: nothing else reads it). */
  const standbyScans = async () =>
    Number(
      (await onStandby<{ n: string }>(`SELECT (coalesce(seq_scan, 0) + coalesce(idx_scan, 0))::text AS n FROM pg_stat_user_tables WHERE relname = 'shadow_samples'`))[0]
        ?.n ?? 0,
    );
  const loads = async (source: string, reason: string) => {
    const metric = await service!.registry.getSingleMetric('shadow_evaluation_sample_loads_total')!.get();
    return metric.values.find((v) => v.labels.source === source && v.labels.reason === reason)?.value ?? 0;
  };
  const ingest = (dataset: string, samples: ProtoSample[]) =>
    new Promise<{ error: unknown; response?: IngestSamplesResponse }>((resolve) => {
      const stream = client!.ingestSamples(bearer(testKeys.shadowWriter), (error, response) => resolve({ error, response }));
      stream.write({ idempotencyKey: '', dataset, samples });
      stream.end();
    });
  const start = (request: Partial<StartEvaluationRequest>) =>
    new Promise<{ error: unknown; evaluation?: Evaluation }>((resolve) =>
      client!.startEvaluation(
        { name: '', rule: undefined, baselineRule: undefined, selection: undefined, thresholds: undefined, idempotencyKey: '', ...request },
        bearer(testKeys.shadowWriter),
        (error, response) => resolve({ error, evaluation: response?.evaluation }),
      ),
    );
  const waitDone = (id: string): Promise<Evaluation> =>
    waitFor(
      `evaluation ${id} to finish`,
      () =>
        new Promise<Evaluation | undefined>((resolve) =>
          client!.getEvaluation({ id }, bearer(testKeys.shadowWriter), (_error, response) => {
            const state = response?.evaluation?.state;
            resolve(state === EvaluationState.EVALUATION_STATE_SUCCEEDED || state === EvaluationState.EVALUATION_STATE_FAILED ? response!.evaluation : undefined);
          }),
        ),
      60_000,
    );
  const evaluate = async (dataset: string) => {
    const started = await start({ name: `replica ${dataset}`, rule: scannerRule, selection: { dataset, startTime: undefined, endTime: undefined, limit: 0n } });
    expect(started.error).to.equal(null);
    const done = await waitDone(started.evaluation!.id);
    expect(done.error).to.equal('');
    expect(done.state).to.equal(EvaluationState.EVALUATION_STATE_SUCCEEDED);
    const lsn = (await service!.pool.query<{ lsn: string }>('SELECT created_wal_lsn::text AS lsn FROM shadow_evaluations WHERE id = $1', [done.id])).rows[0]!.lsn;
    return { done, lsn };
  };

  before(async function () {
    const found = findServerBinDir(['postgres', 'initdb', 'pg_ctl', 'pg_basebackup']);
    if ('missing' in found) skipOrFailInCi(this, found.missing);
    const { binDir } = found as Exclude<typeof found, { missing: string }>;
    primary = await startScratchCluster({ binDir, prefix: 'shieldx-shadow-replica-', settings: { max_wal_senders: '4', wal_level: 'replica' } });
    standbyData = join(primary.root, 'standby');
    const port = await freePort();
    runAsClusterUser(join(binDir.dir, 'pg_basebackup'), ['-d', primary.url, '-D', standbyData, '-R', '-X', 'stream', '--no-sync']);
    appendFileSync(join(standbyData, 'postgresql.conf'), `\n# standby\nport = ${port}\nunix_socket_directories = '${ownedDir(join(primary.root, 'standby-sock'))}'\n`);
    runAsClusterUser(join(binDir.dir, 'pg_ctl'), ['-D', standbyData, '-l', join(primary.root, 'standby.log'), '-w', '-t', '60', 'start']);
    standbyUrl = `postgres://postgres@127.0.0.1:${port}/postgres`;
    service = await startTestService(shadowService, {
      DATABASE_URL: primary.url,
      DATABASE_READ_URL: standbyUrl,
      DB_HEALTH_CHECK_INTERVAL_MS: '100',
      DB_READ_MAX_LAG_MS: '3600000',
      SHADOW_EVALUATION_REPLICA_WAIT_MS: '5000',
      ROLLOUT_CONTROLLER: 'off',
    });
    client = new ShadowServiceClient(address(service), insecure);
    // The watch has measured the replica (checked every 100 ms) and routes reads that may lag to it.
    await waitFor('the watch to route reads to the replica', async () => (service!.database.readPool() !== service!.pool ? true : undefined), 20_000);
  });
  after(async () => {
    client?.close();
    await service?.shutdown();
    if (primary && standbyData) {
      try {
        runAsClusterUser(join(primary.binDir, 'pg_ctl'), ['-D', standbyData, '-m', 'immediate', '-w', 'stop']);
      } catch {
        // not running
      }
    }
    primary?.destroy();
  });

  it('counts every sample a caller ingested when the replica has not replayed them: the load falls back to the primary', async () => {
    await onStandby('SELECT pg_wal_replay_pause()');
    try {
      const dataset = `paused-${randomUUID().slice(0, 8)}`;
      const ingested = await ingest(dataset, generateTraffic({ count: 600, seed: 11 }).map(toProto));
      expect(ingested.error).to.equal(null);
      expect(ingested.response!.accepted).to.equal(600n);
      const before = await loads('primary', 'replica_behind');
      const { done, lsn } = await evaluate(dataset);
      expect(done.result!.samplesEvaluated, 'samples counted').to.equal(600n);
      expect(await loads('primary', 'replica_behind')).to.equal(before + 1);
      // The replica still has none of them, and the watch still routes reads that may lag to it:
      // only the job's WAL position kept the load off it.
      expect(await onStandby('SELECT 1 FROM shadow_samples WHERE dataset = $1', [dataset])).to.deep.equal([]);
      const replay = (await onStandby<{ replay: string }>('SELECT pg_last_wal_replay_lsn()::text AS replay'))[0]!.replay;
      expect(parseLsn(replay) < parseLsn(lsn), `replica replay ${replay} behind the job's position ${lsn}`).to.equal(true);
      expect(service!.database.readPool()).to.not.equal(service!.pool);
    } finally {
      await onStandby('SELECT pg_wal_replay_resume()');
    }
  });

  it('loads from the replica once it has replayed past the job, and measures how far behind it was', async () => {
    const dataset = `resumed-${randomUUID().slice(0, 8)}`;
    const ingested = await ingest(dataset, generateTraffic({ count: 400, seed: 12 }).map(toProto));
    expect(ingested.error).to.equal(null);
    const scansBefore = await standbyScans();
    const before = await loads('replica', 'replica_caught_up');
    const { done, lsn } = await evaluate(dataset);
    expect(done.result!.samplesEvaluated, 'samples counted').to.equal(400n);
    expect(await loads('replica', 'replica_caught_up')).to.equal(before + 1);
    // The replica's own statistics show the load's scans of shadow_samples (flushed by its backends
    // within seconds of going idle: a bounded wait).
    const scansAfter = await waitFor('the replica to count the load\'s scans', async () => {
      const n = await standbyScans();
      return n > scansBefore ? n : undefined;
    }, 30_000, 250);
    expect(scansAfter).to.be.greaterThan(scansBefore);
    const replay = (await onStandby<{ replay: string }>('SELECT pg_last_wal_replay_lsn()::text AS replay'))[0]!.replay;
    expect(parseLsn(replay) >= parseLsn(lsn)).to.equal(true);
    const bound = service!.database.replicaStalenessMs();
    expect(bound, 'measured staleness bound (ms)').to.be.a('number');
    process.stdout.write(`      job WAL position ${lsn}, replica replay now ${replay}; measured replica staleness bound: ${bound} ms\n`);
  });
});
