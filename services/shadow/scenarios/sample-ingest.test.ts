import { expect } from 'chai';
import { randomUUID } from 'node:crypto';
import { Client, status as grpcStatus, type ClientWritableStream } from '@grpc/grpc-js';
import {
  IngestSamplesRequest,
  IngestSamplesResponse,
  ShadowServiceClient,
  ShadowServiceService,
  type TrafficSample as ProtoSample,
} from '../../../gen/shieldx/shadow/v1/shadow';
import { errorDetails } from '../../../platform/grpc-errors';
import type { RunningService } from '../../../platform/server';
import { address, bearer, insecure, startTestService, testKeys, waitFor } from '../../../testing/harness';
import { ingestSampleStream } from '../ingest/sample-ingest';
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

const samples = generateTraffic({ count: 3000, seed: 11 }).map(toProto);
const message = (m: Partial<IngestSamplesRequest>): IngestSamplesRequest => ({ dataset: '', samples: [], idempotencyKey: '', ...m });

describe('IngestSamples: all or nothing per call', function () {
  this.timeout(60_000);
  let service: RunningService;
  let client: ShadowServiceClient;

  type Outcome = { error: unknown; response?: IngestSamplesResponse };
  /** An open stream: write more, end it, or cancel it; `done` settles with the call. */
  const open = () => {
    let settle!: (outcome: Outcome) => void;
    const done = new Promise<Outcome>((resolve) => (settle = resolve));
    const stream = client.ingestSamples(bearer(testKeys.shadowWriter), (error, response) => settle({ error, response }));
    return { stream, done };
  };
  const ingest = (messages: Partial<IngestSamplesRequest>[]) => {
    const { stream, done } = open();
    for (const m of messages) stream.write(message(m));
    stream.end();
    return done;
  };
  const rows = async (dataset: string) =>
    (await service.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM shadow_samples WHERE dataset = $1', [dataset])).rows[0]!.n;
  /** Open ingest transactions waiting on their client (each has written rows or claimed a key). */
  const openTransactions = async () =>
    (
      await service.pool.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM pg_stat_activity
          WHERE datname = current_database() AND state = 'idle in transaction'
            AND (query LIKE '%INSERT INTO shadow_samples%' OR query LIKE '%lock_timeout%')`,
      )
    ).rows[0]!.n;
  const waitOpenTransactions = (n: number) =>
    waitFor(`${n} open ingest transactions`, async () => ((await openTransactions()) === n ? true : undefined));
  const dataset = () => `ingest-${randomUUID().slice(0, 8)}`;
  /** The server has written its first 1,000-row chunk of `name` (in its open transaction, or committed). */
  const firstChunkWritten = (name: string) =>
    waitFor(`the first chunk of ${name}`, async () => ((await openTransactions()) >= 1 || (await rows(name)) >= 1000 ? true : undefined));

  before(async () => {
    service = await startTestService(shadowService, { ROLLOUT_CONTROLLER: 'off', SHADOW_INGEST_SAMPLES_MAX: '2500' });
    client = new ShadowServiceClient(address(service), insecure);
  });
  after(async () => {
    client.close();
    await service.shutdown();
  });

  // A client that cancels after 2,000 rows were inserted leaves none of them. (2,000: with nothing left to flush,
  // only the end of the stream tells the server whether to commit — grpc-js ends a cancelled stream's reads too.)
  it('writes nothing when the client cancels mid-stream', async () => {
    const name = dataset();
    const { stream, done } = open();
    stream.write(message({ dataset: name, samples: samples.slice(0, 2000) }));
    // Written all 2,000 and waiting on the client: its transaction idle for a while (or, old code, rows committed).
    await waitFor('the server to wait on the client', async () =>
      (
        await service.pool.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND state = 'idle in transaction'
             AND query LIKE '%INSERT INTO shadow_samples%' AND clock_timestamp() - state_change > interval '300 milliseconds'`,
        )
      ).rows[0]!.n === 1 || (await rows(name)) >= 2000
        ? true
        : undefined,
    );
    stream.cancel();
    const { error } = await done;
    expect(errorDetails(error)?.code).to.equal(grpcStatus.CANCELLED);
    await waitOpenTransactions(0);
    expect(await rows(name)).to.equal(0);
  });

  // A later message naming another dataset fails the call (the proto requires one dataset per stream) and writes nothing, in neither dataset.
  it('refuses a stream that changes dataset, naming the field, and writes nothing', async () => {
    const first = dataset();
    const second = dataset();
    const { error } = await ingest([
      { dataset: first, samples: samples.slice(0, 1500) },
      { dataset: second, samples: samples.slice(1500, 1600) },
    ]);
    expect(errorDetails(error)).to.include({ code: grpcStatus.INVALID_ARGUMENT, reason: 'INVALID_ARGUMENT' });
    expect(errorDetails(error)!.fieldViolations[0]!.field).to.equal('dataset');
    expect(await rows(first)).to.equal(0);
    expect(await rows(second)).to.equal(0);
  });

  // A message past row 1,000 that cannot even be decoded fails the call: the rows before it are not kept.
  it('writes nothing when a message after row 1000 is malformed', async () => {
    const name = dataset();
    const raw = new Client(address(service), insecure);
    try {
      const outcome = await new Promise<Outcome>((resolve) => {
        const call: ClientWritableStream<Buffer> = raw.makeClientStreamRequest(
          ShadowServiceService.ingestSamples.path,
          (bytes: Buffer) => bytes,
          (bytes: Buffer) => IngestSamplesResponse.decode(bytes),
          bearer(testKeys.shadowWriter),
          (error, response) => resolve({ error, response: response as IngestSamplesResponse | undefined }),
        );
        call.write(Buffer.from(IngestSamplesRequest.encode(message({ dataset: name, samples: samples.slice(0, 1500) })).finish()));
        void firstChunkWritten(name).then(() => {
          // Field 2 (samples) announcing 100 bytes, carrying 2.
          call.write(Buffer.from([0x12, 0x64, 0x0a, 0x00]));
          call.end();
        });
      });
      expect(outcome.error, 'the call fails').to.not.equal(null);
    } finally {
      raw.close();
    }
    await waitOpenTransactions(0);
    expect(await rows(name)).to.equal(0);
  });

  // More samples than SHADOW_INGEST_SAMPLES_MAX (2,500 here) fail the call RESOURCE_EXHAUSTED and write nothing.
  it('refuses a stream over the samples limit and writes nothing', async () => {
    const name = dataset();
    const { error } = await ingest([
      { dataset: name, samples: samples.slice(0, 1500) },
      { samples: samples.slice(1500, 2501) },
    ]);
    expect(errorDetails(error)).to.include({ code: grpcStatus.RESOURCE_EXHAUSTED, reason: 'INGEST_LIMIT_EXCEEDED' });
    expect(errorDetails(error)!.metadata).to.deep.include({ limit: 'samples', max: '2500' });
    expect(await rows(name)).to.equal(0);
  });

  // PostgreSQL cannot store U+0000 in text or jsonb: such a row (here row 1,500) is rejected as a row with its reason, the others land
  // (before: the INSERT failed the whole call INTERNAL, after 1,000 rows were committed).
  it('rejects a row with a NUL character as a row, not the call', async () => {
    const name = dataset();
    const nulPath: ProtoSample = { ...samples[1500]!, path: '/a\u0000b' };
    const nulHeader: ProtoSample = { ...samples[1501]!, headers: { 'x-test': 'a\u0000' } };
    const { error, response } = await ingest([
      { dataset: name, samples: samples.slice(0, 1500) },
      { samples: [nulPath, nulHeader, ...samples.slice(1502, 2000)] },
    ]);
    expect(error).to.equal(null);
    expect(response).to.deep.include({ received: 2000n, accepted: 1998n, rejected: 2n });
    expect(response!.rejectedSamples.map((r) => [Number(r.index), r.reason])).to.deep.equal([
      [1500, 'path: must not contain a NUL character'],
      [1501, 'headers[x-test]: value must not contain a NUL character'],
    ]);
    expect(await rows(name)).to.equal(1998);
  });

  // A stream with no message at all has no dataset: INVALID_ARGUMENT naming it; one first message without samples is a valid, empty ingest.
  it('answers an empty stream INVALID_ARGUMENT and an empty first message with zero counts', async () => {
    const { error } = await ingest([]);
    expect(errorDetails(error)).to.include({ code: grpcStatus.INVALID_ARGUMENT, reason: 'INVALID_ARGUMENT' });
    expect(errorDetails(error)!.fieldViolations[0]!.field).to.equal('dataset');

    const name = dataset();
    const empty = await ingest([{ dataset: name }]);
    expect(empty.error).to.equal(null);
    expect(empty.response).to.deep.equal({ dataset: name, received: 0n, accepted: 0n, rejected: 0n, rejectedSamples: [] });
    expect(await rows(name)).to.equal(0);
  });

  // The rows of a successful call all land, bad rows reported; a retry under the same key (grouped differently) replays the response and adds nothing.
  it('replays a retry with the same idempotency key without duplicating rows', async () => {
    const name = dataset();
    const key = `ingest-${randomUUID()}`;
    const bad: ProtoSample = { ...samples[0]!, clientIp: 'not-an-ip' };
    const first = await ingest([
      { dataset: name, idempotencyKey: key, samples: samples.slice(0, 1200) },
      { samples: [bad, ...samples.slice(1200, 2000)] },
    ]);
    expect(first.error).to.equal(null);
    expect(first.response).to.deep.include({ dataset: name, received: 2001n, accepted: 2000n, rejected: 1n });
    expect(await rows(name)).to.equal(2000);

    const retry = await ingest([
      { dataset: name, idempotencyKey: key, samples: samples.slice(0, 500) },
      { dataset: name, idempotencyKey: key, samples: [...samples.slice(500, 1200), bad] },
      { samples: samples.slice(1200, 2000) },
    ]);
    expect(retry.error).to.equal(null);
    expect(retry.response).to.deep.equal(first.response);
    expect(await rows(name)).to.equal(2000);
  });

  // The same key with other samples is FAILED_PRECONDITION IDEMPOTENCY_KEY_REUSED and writes nothing; so is a key another method used.
  it('refuses a reused idempotency key with other samples', async () => {
    const name = dataset();
    const key = `ingest-${randomUUID()}`;
    expect((await ingest([{ dataset: name, idempotencyKey: key, samples: samples.slice(0, 10) }])).error).to.equal(null);
    const other = await ingest([{ dataset: name, idempotencyKey: key, samples: samples.slice(0, 11) }]);
    expect(errorDetails(other.error)).to.include({ code: grpcStatus.FAILED_PRECONDITION, reason: 'IDEMPOTENCY_KEY_REUSED' });
    const otherDataset = dataset();
    const moved = await ingest([{ dataset: otherDataset, idempotencyKey: key, samples: samples.slice(0, 10) }]);
    expect(errorDetails(moved.error)).to.include({ code: grpcStatus.FAILED_PRECONDITION, reason: 'IDEMPOTENCY_KEY_REUSED' });
    expect(await rows(name)).to.equal(10);
    expect(await rows(otherDataset)).to.equal(0);

    const rolloutKey = `rollout-${randomUUID()}`;
    await service.pool.query(`INSERT INTO shadow_rollout_requests (idempotency_key, method, request_hash, response) VALUES ($1, 'AbortRollout', 'x', '\\x00')`, [
      rolloutKey,
    ]);
    const crossed = await ingest([{ dataset: name, idempotencyKey: rolloutKey, samples: samples.slice(0, 10) }]);
    expect(errorDetails(crossed.error)).to.include({ code: grpcStatus.FAILED_PRECONDITION, reason: 'IDEMPOTENCY_KEY_REUSED' });
    expect(await rows(name)).to.equal(10);
  });

  // Bad keys: too long, or changed on a later message: INVALID_ARGUMENT naming idempotency_key, nothing written.
  it('refuses bad idempotency keys naming the field', async () => {
    const name = dataset();
    const long = await ingest([{ dataset: name, idempotencyKey: 'k'.repeat(201), samples: samples.slice(0, 10) }]);
    expect(errorDetails(long.error)).to.include({ code: grpcStatus.INVALID_ARGUMENT });
    expect(errorDetails(long.error)!.fieldViolations[0]!.field).to.equal('idempotency_key');
    // The mesh's one key rule (platform/idempotency-key.ts): 1-128 printable ASCII, no spaces.
    for (const idempotencyKey of ['has space', 'k'.repeat(150), 'ключ']) {
      const refused = await ingest([{ dataset: name, idempotencyKey, samples: samples.slice(0, 10) }]);
      expect([errorDetails(refused.error)?.code, errorDetails(refused.error)?.fieldViolations[0]?.field], idempotencyKey).to.deep.equal([grpcStatus.INVALID_ARGUMENT, 'idempotency_key']);
    }
    expect(await rows(name)).to.equal(0);
    const changed = await ingest([
      { dataset: name, idempotencyKey: `a-${randomUUID()}`, samples: samples.slice(0, 1500) },
      { idempotencyKey: `b-${randomUUID()}`, samples: samples.slice(1500, 1510) },
    ]);
    expect(errorDetails(changed.error)).to.include({ code: grpcStatus.INVALID_ARGUMENT });
    expect(errorDetails(changed.error)!.fieldViolations[0]!.field).to.equal('idempotency_key');
    // A key first named on a later message: the rows before it were written unkeyed, so it cannot apply to them.
    const late = await ingest([
      { dataset: name, samples: samples.slice(0, 1500) },
      { idempotencyKey: `c-${randomUUID()}`, samples: samples.slice(1500, 1510) },
    ]);
    expect(errorDetails(late.error)).to.include({ code: grpcStatus.INVALID_ARGUMENT });
    expect(errorDetails(late.error)!.fieldViolations[0]!.field).to.equal('idempotency_key');
    expect(await rows(name)).to.equal(0);
  });

  // A duplicate arriving while the first call under its key still streams is ABORTED OPERATION_IN_PROGRESS; the first then lands once.
  it('refuses a concurrent duplicate while the first call runs', async () => {
    const name = dataset();
    const key = `ingest-${randomUUID()}`;
    const first = open();
    first.stream.write(message({ dataset: name, idempotencyKey: key, samples: samples.slice(0, 1500) }));
    await firstChunkWritten(name);
    const duplicate = await ingest([{ dataset: name, idempotencyKey: key, samples: samples.slice(0, 1500) }]);
    expect(errorDetails(duplicate.error)).to.include({ code: grpcStatus.ABORTED, reason: 'OPERATION_IN_PROGRESS' });
    first.stream.end();
    const { error, response } = await first.done;
    expect(error).to.equal(null);
    expect(response!.accepted).to.equal(1500n);
    expect(await rows(name)).to.equal(1500);
  });

  // Each call holds a connection for its whole stream: past SHADOW_INGEST_STREAMS_MAX (4) at once, a call is refused before it reads.
  it('refuses more concurrent streams than SHADOW_INGEST_STREAMS_MAX', async () => {
    const names = [dataset(), dataset(), dataset(), dataset()];
    const streams = names.map((name) => {
      const call = open();
      call.stream.write(message({ dataset: name, samples: samples.slice(0, 1) }));
      return call;
    });
    try {
      await waitFor('4 streams in their transactions', async () =>
        (
          await service.pool.query<{ n: number }>(
            `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND state = 'idle in transaction'`,
          )
        ).rows[0]!.n >= 4
          ? true
          : undefined,
      );
      const fifth = await ingest([{ dataset: dataset(), samples: samples.slice(0, 1) }]);
      expect(errorDetails(fifth.error)).to.include({ code: grpcStatus.RESOURCE_EXHAUSTED, reason: 'INGEST_LIMIT_EXCEEDED' });
      // The same ErrorInfo metadata as the samples and duration limits (one helper builds all three): which limit, its max.
      expect(errorDetails(fifth.error)!.metadata).to.deep.equal({ limit: 'streams', max: '4' });
    } finally {
      for (const call of streams) call.stream.end();
    }
    for (const call of streams) expect((await call.done).error).to.equal(null);
    for (const name of names) expect(await rows(name)).to.equal(1);
  });

  // A client that stops sending keeps the transaction open at most the duration limit: then the call fails and nothing is written.
  it('fails a stalled stream at the duration limit and writes nothing', async () => {
    const name = dataset();
    async function* stalled(): AsyncGenerator<IngestSamplesRequest> {
      yield message({ dataset: name, samples: samples.slice(0, 1500) });
      await new Promise(() => undefined);
    }
    let caught: unknown;
    try {
      await ingestSampleStream(service.pool, stalled(), { samplesMax: 10_000, durationMsMax: 500 });
    } catch (error) {
      caught = error;
    }
    expect(caught).to.include({ code: grpcStatus.RESOURCE_EXHAUSTED, reason: 'INGEST_LIMIT_EXCEEDED' });
    expect(await rows(name)).to.equal(0);
  });

  // The limit bounds the transaction, so it runs from the first message: a client slow to send it loses none of it.
  it('measures the duration limit from the first message', async () => {
    const name = dataset();
    const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
    async function* lateStart(): AsyncGenerator<IngestSamplesRequest> {
      await sleep(1000);
      yield message({ dataset: name, samples: samples.slice(0, 10) });
      await sleep(1000);
      yield message({ samples: samples.slice(10, 20) });
    }
    const { response } = await ingestSampleStream(service.pool, lateStart(), { samplesMax: 10_000, durationMsMax: 1500 });
    expect(response.accepted).to.equal(20n);
    expect(await rows(name)).to.equal(20);
  });

  // No other timer ends an IngestSamples call without a client deadline: one that never sends a message fails at the limit too.
  it('fails a stream that sends no message at the duration limit', async () => {
    async function* silent(): AsyncGenerator<IngestSamplesRequest> {
      await new Promise(() => undefined);
    }
    let caught: unknown;
    try {
      await ingestSampleStream(service.pool, silent(), { samplesMax: 10_000, durationMsMax: 300 });
    } catch (error) {
      caught = error;
    }
    expect(caught).to.include({ code: grpcStatus.RESOURCE_EXHAUSTED, reason: 'INGEST_LIMIT_EXCEEDED' });
  });
});

describe('IngestSamples: bounded by SHADOW_INGEST_SECONDS_MAX, not the default deadline', function () {
  this.timeout(30_000);
  let service: RunningService;
  let client: ShadowServiceClient;

  // The default deadline (1 s) is shorter than the ingest limit (3 s), as in production (30 s < 120 s).
  before(async () => {
    service = await startTestService(shadowService, { ROLLOUT_CONTROLLER: 'off', GRPC_DEFAULT_DEADLINE_MS: '1000', SHADOW_INGEST_SECONDS_MAX: '3' });
    client = new ShadowServiceClient(address(service), insecure);
  });
  after(async () => {
    client.close();
    await service.shutdown();
  });

  /** A call without a client deadline; `done` settles with it. */
  const open = () => {
    let settle!: (outcome: { error: unknown; response?: IngestSamplesResponse }) => void;
    const done = new Promise<{ error: unknown; response?: IngestSamplesResponse }>((resolve) => (settle = resolve));
    const stream = client.ingestSamples(bearer(testKeys.shadowWriter), (error, response) => settle({ error, response }));
    return { stream, done };
  };
  const rows = async (dataset: string) =>
    (await service.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM shadow_samples WHERE dataset = $1', [dataset])).rows[0]!.n;
  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

  // A stream that outlasts GRPC_DEFAULT_DEADLINE_MS but not SHADOW_INGEST_SECONDS_MAX succeeds and its rows land.
  it('lets a call without a client deadline run past the default deadline', async () => {
    const name = `ingest-${randomUUID().slice(0, 8)}`;
    const { stream, done } = open();
    stream.write(message({ dataset: name, samples: samples.slice(0, 10) }));
    await sleep(1500);
    stream.write(message({ samples: samples.slice(10, 20) }));
    stream.end();
    const { error, response } = await done;
    expect(error).to.equal(null);
    expect(response!.accepted).to.equal(20n);
    expect(await rows(name)).to.equal(20);
  });

  // A stream that stalls (rows already written in its transaction) fails at SHADOW_INGEST_SECONDS_MAX with
  // the ingest limit's error, not the default deadline's, and leaves nothing.
  it('fails a stalled call INGEST_LIMIT_EXCEEDED at SHADOW_INGEST_SECONDS_MAX and writes nothing', async () => {
    const name = `ingest-${randomUUID().slice(0, 8)}`;
    const { stream, done } = open();
    stream.write(message({ dataset: name, samples: samples.slice(0, 1500) }));
    const { error } = await done;
    stream.end();
    expect(errorDetails(error)).to.include({ code: grpcStatus.RESOURCE_EXHAUSTED, reason: 'INGEST_LIMIT_EXCEEDED' });
    expect(errorDetails(error)!.metadata).to.deep.include({ limit: 'duration', max: '3000' });
    expect(await rows(name)).to.equal(0);
  });
});
