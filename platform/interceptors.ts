/**
 * grpc-js server interceptors shared by every service: metrics, access logging
 * and authentication. Order matters: grpc-js wraps them so that the first in
 * the list is closest to the wire, so `[metrics, logging, auth]` lets metrics
 * and logs see the UNAUTHENTICATED a rejected call ends with.
 */
import {
  Metadata,
  ResponderBuilder,
  ServerInterceptingCall,
  ServerListenerBuilder,
  status as grpcStatus,
  type ServerInterceptor,
} from '@grpc/grpc-js';
import { ApiKeyVerifier, hasScope } from './auth';
import { ServiceError } from './service-error';
import { toGrpcStatus } from './grpc-errors';
import type { Logger } from './logger';
import { grpcCodeName, type GrpcServerMetrics, type GrpcType } from './metrics';

/** Metadata key the auth interceptor sets to the authenticated key's id (incoming values are dropped). */
export const PRINCIPAL_METADATA_KEY = 'x-shieldx-key-id';

function splitPath(path: string): { service: string; method: string } {
  const match = /^\/([^/]+)\/([^/]+)$/.exec(path);
  return match ? { service: match[1]!, method: match[2]! } : { service: 'unknown', method: path };
}

function grpcType(requestStream: boolean, responseStream: boolean): GrpcType {
  if (requestStream && responseStream) return 'bidi_stream';
  if (requestStream) return 'client_stream';
  if (responseStream) return 'server_stream';
  return 'unary';
}

type Labels = { grpc_type: GrpcType; grpc_service: string; grpc_method: string };

/** Label children bound once per method (prom-client hashes a label object on every inc otherwise). */
interface MethodSeries {
  readonly labels: Labels;
  readonly started: { inc(): void };
  readonly received: { inc(): void };
  readonly sent: { inc(): void };
  readonly seconds: { observe(value: number): void };
  readonly handled: Map<number, { inc(): void }>;
}

/** Bound on cached method series (methods are the server's own; unknown paths are not cached past it). */
const METHOD_SERIES_MAX = 1_000;

/** go-grpc-prometheus semantics: started on arrival, handled + latency on the final status. */
export function metricsInterceptor(metrics: GrpcServerMetrics): ServerInterceptor {
  const series = new Map<string, MethodSeries>();
  const seriesFor = (path: string, requestStream: boolean, responseStream: boolean): MethodSeries => {
    const cached = series.get(path);
    if (cached) return cached;
    const { service, method } = splitPath(path);
    const labels: Labels = { grpc_type: grpcType(requestStream, responseStream), grpc_service: service, grpc_method: method };
    const made: MethodSeries = {
      labels,
      started: metrics.started.labels(labels),
      received: metrics.messagesReceived.labels(labels),
      sent: metrics.messagesSent.labels(labels),
      seconds: metrics.handlingSeconds.labels(labels),
      handled: new Map(),
    };
    if (series.size < METHOD_SERIES_MAX) series.set(path, made);
    return made;
  };
  return (methodDescriptor, call) => {
    const m = seriesFor(methodDescriptor.path, methodDescriptor.requestStream, methodDescriptor.responseStream);
    let startedAt = 0n;
    const listener = new ServerListenerBuilder()
      .withOnReceiveMetadata((metadata, next) => {
        startedAt = process.hrtime.bigint();
        m.started.inc();
        next(metadata);
      })
      .withOnReceiveMessage((message, next) => {
        m.received.inc();
        next(message);
      })
      .build();
    const responder = new ResponderBuilder()
      .withStart((next) => next(listener))
      .withSendMessage((message, next) => {
        m.sent.inc();
        next(message);
      })
      .withSendStatus((status, next) => {
        let handled = m.handled.get(status.code);
        if (!handled) {
          handled = metrics.handled.labels({ ...m.labels, grpc_code: grpcCodeName(status.code) });
          m.handled.set(status.code, handled);
        }
        handled.inc();
        if (startedAt !== 0n) m.seconds.observe(Number(process.hrtime.bigint() - startedAt) / 1e9);
        next(status);
      })
      .build();
    return new ServerInterceptingCall(call, responder);
  };
}

const SERVER_FAULT_CODES = new Set<number>([
  grpcStatus.UNKNOWN,
  grpcStatus.INTERNAL,
  grpcStatus.UNAVAILABLE,
  grpcStatus.DATA_LOSS,
  grpcStatus.DEADLINE_EXCEEDED,
]);

function traceIdOf(metadata: Metadata): string | undefined {
  const traceparent = metadata.get('traceparent')[0];
  if (typeof traceparent !== 'string') return undefined;
  return /^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$/.exec(traceparent)?.[1];
}

/**
 * One structured line per call: server faults at error, client errors at info,
 * successes at debug (a 10k-calls/s service must not log every success by default).
 */
export function loggingInterceptor(logger: Logger): ServerInterceptor {
  return (methodDescriptor, call) => {
    let startedAt = 0n;
    let traceId: string | undefined;
    const listener = new ServerListenerBuilder()
      .withOnReceiveMetadata((metadata, next) => {
        startedAt = process.hrtime.bigint();
        traceId = traceIdOf(metadata);
        next(metadata);
      })
      .build();
    const responder = new ResponderBuilder()
      .withStart((next) => next(listener))
      .withSendStatus((status, next) => {
        // Hot path: a success is logged at debug only; skip building the line when that is off.
        if (status.code === grpcStatus.OK && !logger.isLevelEnabled('debug')) {
          next(status);
          return;
        }
        const durationMs = startedAt === 0n ? 0 : Number(process.hrtime.bigint() - startedAt) / 1e6;
        const line = {
          grpc_method: methodDescriptor.path,
          grpc_code: grpcCodeName(status.code),
          duration_ms: Math.round(durationMs * 1000) / 1000,
          peer: call.getPeer(),
          ...(traceId ? { trace_id: traceId } : {}),
        };
        if (SERVER_FAULT_CODES.has(status.code)) logger.error({ ...line, details: status.details }, 'call failed');
        else if (status.code !== grpcStatus.OK) logger.info({ ...line, details: status.details }, 'call rejected');
        else logger.debug(line, 'call handled');
        next(status);
      })
      .build();
    return new ServerInterceptingCall(call, responder);
  };
}

/** Which scope a method needs; `null` means the method is open (health, open reflection). */
export type ScopeResolver = (path: string) => string | null;

/**
 * Bearer-key authentication and scope check, before the handler sees anything:
 * missing/invalid key → UNAUTHENTICATED, wrong scope → PERMISSION_DENIED.
 */
export function authInterceptor(verifier: ApiKeyVerifier, scopeFor: ScopeResolver, domain: string): ServerInterceptor {
  return (methodDescriptor, call) => {
    const required = scopeFor(methodDescriptor.path);
    const listener = new ServerListenerBuilder()
      .withOnReceiveMetadata((metadata, next) => {
        metadata.remove(PRINCIPAL_METADATA_KEY);
        if (required === null) {
          next(metadata);
          return;
        }
        const header = metadata.get('authorization')[0];
        const result = verifier.authenticate(typeof header === 'string' ? header : undefined);
        if (!result.ok) {
          const message =
            result.reason === 'MISSING_CREDENTIALS'
              ? 'missing credentials: send "authorization: Bearer <key>"'
              : 'invalid API key';
          call.sendStatus(toGrpcStatus(new ServiceError(grpcStatus.UNAUTHENTICATED, result.reason, message), domain) as never);
          return;
        }
        if (!hasScope(result.principal, required)) {
          const error = new ServiceError(
            grpcStatus.PERMISSION_DENIED,
            'MISSING_SCOPE',
            `API key "${result.principal.keyId}" lacks scope "${required}"`,
            { metadata: { scope: required } },
          );
          call.sendStatus(toGrpcStatus(error, domain) as never);
          return;
        }
        metadata.set(PRINCIPAL_METADATA_KEY, result.principal.keyId);
        next(metadata);
      })
      .build();
    const responder = new ResponderBuilder().withStart((next) => next(listener)).build();
    return new ServerInterceptingCall(call, responder);
  };
}
