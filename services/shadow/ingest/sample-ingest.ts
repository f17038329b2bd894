/**
 * IngestSamples as one unit: a client stream of samples lands all at once or
 * not at all. A stream that fails part-way (the client cancels, the connection
 * drops, a later message is refused, a limit is exceeded, the server stops)
 * leaves nothing behind, so the client's retry cannot duplicate rows. Rows are
 * still written in INSERT_BATCH_ROWS chunks as they arrive (memory stays
 * bounded), inside one transaction that commits only after the client has
 * half-closed the stream.
 *
 * That transaction holds a pooled connection and an open transaction id (which
 * holds back vacuum for the whole database) while it waits on the client, so a
 * call is bounded: at most `samplesMax` samples and `durationMsMax` from its
 * first message to its last; beyond either it fails RESOURCE_EXHAUSTED
 * INGEST_LIMIT_EXCEEDED and writes nothing (the client splits its data).
 *
 * A lost response (the commit happened, the answer did not arrive) is made safe
 * by an optional idempotency key on the first message, kept with the other
 * shadow keys in shadow_rollout_requests (method 'IngestSamples'): a retry with
 * the same dataset and samples replays the stored response without writing; a
 * concurrent duplicate is ABORTED OPERATION_IN_PROGRESS while the first runs.
 */
import { createHash } from 'node:crypto';
import type pg from 'pg';
import { IngestSamplesResponse, type IngestSamplesRequest } from '../../../gen/shieldx/shadow/v1/shadow';
import { withLockTimeout, withTransaction } from '../store/transactions';
import { ServiceError } from '../../../platform/service-error';
import { ingestLimitExceeded } from '../errors';
import { claimIdempotencyKey, saveIdempotentResponse } from '../store/rollout-store';
import { optionalIdempotencyKey } from '../../../platform/idempotency-key';
import { DATASET_PATTERN, SampleIngestor } from '../store/sample-store';
import type { TrafficSample } from '../domain/traffic-sample';

/** The method name its idempotency keys are stored under. */
export const INGEST_METHOD = 'IngestSamples';

export interface IngestLimits {
  /** Samples one call may carry (valid or not). */
  readonly samplesMax: number;
  /** Longest time from the first message to the end of the stream (and longest wait for the first). */
  readonly durationMsMax: number;
}

/** Converts a proto sample to the domain form (validation happens in the ingestor). */
export function sampleFromProto(sample: IngestSamplesRequest['samples'][number]): TrafficSample {
  return {
    timestampMs: sample.timestamp ? sample.timestamp.getTime() : Number.NaN,
    clientKey: sample.clientKey,
    clientIp: sample.clientIp,
    method: sample.method,
    path: sample.path,
    status: sample.status,
    userAgent: sample.userAgent,
    headers: sample.headers,
    requestBytes: Number(sample.requestBytes),
    malicious: sample.malicious,
    attackType: sample.attackType,
    ...(sample.score === undefined ? {} : { score: sample.score }),
  };
}

function keyReused(key: string): ServiceError {
  return ServiceError.idempotencyKeyReused(key, { metadata: { method: INGEST_METHOD } });
}

/**
 * Next message of the stream, or undefined at its end; fails INGEST_LIMIT_EXCEEDED
 * once `durationMsMax` has passed since the first message, also while the client
 * sends nothing (a stalled client must not keep the transaction open). The wait
 * for the first message has the same bound: no transaction is open yet, but the
 * call holds one of the replica's ingest streams, and no other timer ends it.
 */
function streamReader<T>(messages: AsyncIterable<T>, durationMsMax: number): () => Promise<T | undefined> {
  const iterator = messages[Symbol.asyncIterator]();
  let deadlineAt = Date.now() + durationMsMax;
  let firstRead = true;
  const tooSlow = () =>
    firstRead
      ? ingestLimitExceeded('duration', `the stream sent no message within ${durationMsMax} ms`, durationMsMax)
      : ingestLimitExceeded('duration', `the stream stayed open longer than ${durationMsMax} ms; send fewer samples per call`, durationMsMax);
  return async () => {
    const remainingMs = deadlineAt - Date.now();
    if (remainingMs <= 0) throw tooSlow();
    let timer: NodeJS.Timeout | undefined;
    const next = iterator.next();
    // A read that loses the race to the timer rejects later, when the call is torn down.
    next.catch(() => undefined);
    try {
      const result = await Promise.race([
        next,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(tooSlow()), remainingMs);
        }),
      ]);
      if (firstRead) {
        firstRead = false;
        deadlineAt = Date.now() + durationMsMax;
      }
      return result.done ? undefined : result.value;
    } finally {
      clearTimeout(timer);
    }
  };
}

/**
 * Claims the idempotency key inside the transaction. A call still running
 * under the same key holds it uncommitted: rather than wait (possibly for the
 * whole of that stream) fail at once, as credits does.
 */
async function claimKey(client: pg.PoolClient, key: string) {
  // The request hash is known only at the end of the stream: saveIdempotentResponse stores it.
  const claim = await withLockTimeout(client, () => claimIdempotencyKey(client, key, INGEST_METHOD, ''));
  if (claim.lockHeld) throw ServiceError.operationInProgress();
  return claim.value;
}

/**
 * Reads the whole stream and writes its valid samples in one transaction.
 * `signal` (the call's) aborting before the commit rolls everything back.
 */
export async function ingestSampleStream(
  pool: pg.Pool,
  messages: AsyncIterable<IngestSamplesRequest>,
  limits: IngestLimits,
  signal?: AbortSignal,
): Promise<{ response: IngestSamplesResponse; replayed: boolean }> {
  const read = streamReader(messages, limits.durationMsMax);
  const first = await read();
  if (first === undefined) throw ServiceError.invalidArgument('dataset', 'is required on the first message; the stream carried no messages');
  if (!DATASET_PATTERN.test(first.dataset)) {
    throw ServiceError.invalidArgument('dataset', 'must be 1-64 characters of a-z, 0-9, "-" and "_" (on the first message)');
  }
  const dataset = first.dataset;
  const key = optionalIdempotencyKey(first.idempotencyKey);

  return withTransaction(pool, async (client) => {
    const claim = key === undefined ? undefined : { key, ...(await claimKey(client, key)) };
    // A key already used: read the stream to compare it with the first call, write nothing.
    const replay = claim !== undefined && !claim.claimed ? claim : undefined;
    if (replay && replay.method !== INGEST_METHOD) throw keyReused(replay.key);
    const ingestor = replay ? undefined : new SampleIngestor(client, dataset);
    // The request a key stands for: the dataset and the samples in order, not their grouping into messages.
    const hash = key === undefined ? undefined : createHash('sha256').update(JSON.stringify(dataset));
    let received = 0;
    for (let message: IngestSamplesRequest | undefined = first; message !== undefined; message = await read()) {
      if (message !== first) {
        if (message.dataset !== '' && message.dataset !== dataset) {
          throw ServiceError.invalidArgument('dataset', `must not change within one stream (it was "${dataset}" on the first message)`);
        }
        if (message.idempotencyKey !== '' && message.idempotencyKey !== first.idempotencyKey) {
          throw ServiceError.invalidArgument('idempotency_key', 'must not change within one stream (set it on the first message)');
        }
      }
      if (received + message.samples.length > limits.samplesMax) {
        throw ingestLimitExceeded('samples', `the stream carried more than ${limits.samplesMax} samples; send at most that many per call`, limits.samplesMax);
      }
      received += message.samples.length;
      for (const proto of message.samples) {
        const sample = sampleFromProto(proto);
        // JSON text never holds a raw newline: one line per sample.
        hash?.update(JSON.stringify(sample)).update('\n');
        if (ingestor) await ingestor.add(sample);
      }
    }
    // Cancelled between the last read and here: roll back rather than commit an answer nobody reads.
    signal?.throwIfAborted();

    const requestHash = hash?.digest('hex');
    if (replay) {
      if (replay.requestHash !== requestHash || replay.response === null) {
        throw keyReused(replay.key);
      }
      return { response: IngestSamplesResponse.decode(replay.response), replayed: true };
    }
    await ingestor!.flush();
    const { summary } = ingestor!;
    const response: IngestSamplesResponse = {
      dataset,
      received: BigInt(summary.received),
      accepted: BigInt(summary.accepted),
      rejected: BigInt(summary.rejected),
      rejectedSamples: summary.rejectedSamples.map((r) => ({ index: BigInt(r.index), reason: r.reason })),
    };
    if (key !== undefined) await saveIdempotentResponse(client, key, IngestSamplesResponse.encode(response).finish(), undefined, requestHash);
    signal?.throwIfAborted();
    return { response, replayed: false };
  });
}
