/**
 * IngestSamples on the wire: the replica's bound on concurrent streams, the call's own duration
 * bound (not GRPC_DEFAULT_DEADLINE_MS), and the ingest metric; the stream itself is read and
 * landed in one transaction by ingest/sample-ingest.ts.
 */
import type pg from 'pg';
import type { Counter } from 'prom-client';
import {
  ShadowServiceService,
  type IngestSamplesRequest,
  type IngestSamplesResponse,
  type ShadowServiceServer,
} from '../../../gen/shieldx/shadow/v1/shadow';
import { clientStream, type HandlerOptions } from '../../../platform/handlers';
import { ingestLimitExceeded } from '../errors';
import { ingestSampleStream } from '../ingest/sample-ingest';

export interface IngestHandlerDeps {
  readonly pool: pg.Pool;
  readonly handlerOptions: HandlerOptions;
  /** shadow_samples_ingested_total, by result. */
  readonly ingested: Counter<'result'>;
  readonly streamsMax: number;
  readonly samplesMax: number;
  readonly secondsMax: number;
}

export function ingestHandler(deps: IngestHandlerDeps): Pick<ShadowServiceServer, 'ingestSamples'> {
  const { pool, handlerOptions, ingested, streamsMax } = deps;
  let streams = 0;
  return {
    ingestSamples: clientStream<IngestSamplesRequest, IngestSamplesResponse>(
      ShadowServiceService.ingestSamples.path,
      handlerOptions,
      async (messages, callContext) => {
        if (streams >= streamsMax) {
          throw ingestLimitExceeded('streams', `this replica already runs ${streamsMax} IngestSamples calls; retry later`, streamsMax);
        }
        streams++;
        try {
          const { response, replayed } = await ingestSampleStream(
            pool,
            messages,
            { samplesMax: deps.samplesMax, durationMsMax: deps.secondsMax * 1000 },
            callContext.signal,
          );
          if (!replayed) {
            ingested.inc({ result: 'accepted' }, Number(response.accepted));
            ingested.inc({ result: 'rejected' }, Number(response.rejected));
          }
          return response;
        } catch (error) {
          // The stream ended early because the client left: say so, not the stream's internal error.
          if (callContext.signal.aborted) throw callContext.signal.reason;
          throw error;
        } finally {
          streams--;
        }
      },
      // SHADOW_INGEST_SECONDS_MAX bounds the call (ingestSampleStream), not GRPC_DEFAULT_DEADLINE_MS.
      { handlerBoundsDuration: true },
    ),
  };
}
