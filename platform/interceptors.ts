/**
 * The grpc-js server interceptor shared by every service: metrics, access
 * logging and authentication of every call.
 */
import {
  Metadata,
  ResponderBuilder,
  ServerInterceptingCall,
  ServerListenerBuilder,
  status as grpcStatus,
  type ServerInterceptor,
  type StatusObject,
} from '@grpc/grpc-js';
import { ApiKeyVerifier, hasScope } from './auth';
import { Code, ServiceError } from './service-error';
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
interface MethodInfo {
  readonly required: string | null;
  readonly labels: Labels;
  readonly started: { inc(): void };
  readonly received: { inc(): void };
  readonly sent: { inc(): void };
  readonly seconds: { observe(value: number): void };
  readonly handled: Map<number, { inc(): void }>;
}

/** Bound on cached method series (methods are the server's own; unknown paths are not cached past it). */
const METHOD_SERIES_MAX = 1_000;

const SERVER_FAULT_CODES = new Set<number>([
  grpcStatus.UNKNOWN,
  grpcStatus.INTERNAL,
  grpcStatus.UNAVAILABLE,
  grpcStatus.DATA_LOSS,
  grpcStatus.DEADLINE_EXCEEDED,
]);

/** The caller's trace id for a log line (read only when a line is written). */
function traceIdField(metadata: Metadata | undefined): { trace_id?: string } {
  const traceId = metadata && traceIdOf(metadata);
  return traceId ? { trace_id: traceId } : {};
}

function traceIdOf(metadata: Metadata): string | undefined {
  const traceparent = metadata.get('traceparent')[0];
  if (typeof traceparent !== 'string') return undefined;
  return /^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$/.exec(traceparent)?.[1];
}

/** Which scope a method needs; `null` means the method is open (health, open reflection). */
export type ScopeResolver = (path: string) => string | null;

/**
 * Calls that have arrived and not yet ended (a status sent, or the stream gone): what the drain
 * at shutdown waits for. grpc-js's own session bookkeeping also keeps streams whose status it
 * sent itself but whose client never closed its side, so it cannot tell "running" apart.
 */
export class InFlightCalls {
  private count = 0;
  private readonly waiters = new Set<() => void>();

  get size(): number {
    return this.count;
  }

  enter(): void {
    this.count += 1;
  }

  leave(): void {
    this.count -= 1;
    if (this.count === 0) for (const waiter of [...this.waiters]) waiter();
  }

  /** Resolves once no call is in flight (at once if none is). */
  idle(): Promise<void> {
    if (this.count === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        this.waiters.delete(done);
        resolve();
      };
      this.waiters.add(done);
    });
  }
}

/**
 * What grpc-js answers on its own, before or beside the handler, mapped to the gRPC spec's codes
 * (doc/statuscodes.md) where grpc-js 1.14 uses another: an unparsable `grpc-timeout` is the
 * client's bad request (grpc-js says INTERNAL). Undecodable and undecompressable bodies stay
 * INTERNAL as the spec says, but they are the caller's fault, so they are logged at info.
 */
function specStatus(status: { code?: number; details?: string }): { code?: number; details?: string } {
  if (status.code === grpcStatus.INTERNAL && status.details?.startsWith('Invalid grpc-timeout value')) {
    return { ...status, code: grpcStatus.INVALID_ARGUMENT };
  }
  return status;
}

const CALLER_FAULT_DETAILS = ['Error deserializing request', 'Failed to decompress message'];

function isCallerFault(status: { code?: number; details?: string }): boolean {
  return status.code === grpcStatus.INTERNAL && CALLER_FAULT_DETAILS.some((d) => status.details?.startsWith(d) === true);
}

/**
 * The status grpc-js's own call object sends, whoever decided it: the interceptor's responder
 * only sees statuses that the handler or the interceptor send, not those grpc-js sends itself
 * (undecodable body, bad compression, bad grpc-timeout, its deadline timer). Relies on grpc-js
 * 1.14's BaseServerInterceptingCall being the `call` this (sole) interceptor is handed and
 * sending every status through its `sendStatus`; if that shape is not there, nothing is changed
 * and those calls are recorded as cancelled when their stream closes.
 */
function watchStatuses(call: object, onStatus: (status: { code?: number; details?: string }) => { code?: number; details?: string }): void {
  const target = call as { sendStatus?: (status: StatusObject) => void; stream?: { once?(event: 'close', fn: () => void): unknown } };
  if (typeof target.sendStatus !== 'function') return;
  // A stream that closes before any status (and before grpc-js gave the call a listener) ends the call too.
  target.stream?.once?.('close', () => process.nextTick(() => onStatus({ code: grpcStatus.CANCELLED, details: 'stream closed before a status was sent' })));
  const send = target.sendStatus.bind(call);
  target.sendStatus = (status: StatusObject) => send(onStatus(status) as StatusObject);
}

export interface CallInterceptorOptions {
  readonly metrics: GrpcServerMetrics;
  /** Every call enters on arrival and leaves once, on its status or when its stream is gone. */
  readonly inFlight?: InFlightCalls;
  readonly logger: Logger;
  readonly verifier: ApiKeyVerifier;
  readonly scopeFor: ScopeResolver;
  /** ErrorInfo domain of the authentication errors. */
  readonly domain: string;
}

/**
 * Every call, in one interceptor (each grpc-js interceptor layer costs a call
 * object and a hop per event; three layers cost ~15 % of a small unary call):
 *  - metrics, go-grpc-prometheus semantics: started on arrival, messages
 *    counted, handled + latency on the final status;
 *  - one structured access-log line per call: server faults at error, client
 *    errors at info, successes at debug (a 10k-calls/s service must not log
 *    every success by default);
 *  - bearer-key authentication and scope check before the handler sees
 *    anything: missing/invalid key → UNAUTHENTICATED, wrong scope →
 *    PERMISSION_DENIED — a refused call is counted and logged like any other.
 */
export function callInterceptor(options: CallInterceptorOptions): ServerInterceptor {
  const { metrics, logger, verifier, scopeFor, domain, inFlight } = options;
  const series = new Map<string, MethodInfo>();
  const seriesFor = (path: string, requestStream: boolean, responseStream: boolean): MethodInfo => {
    const cached = series.get(path);
    if (cached) return cached;
    const { service, method } = splitPath(path);
    const labels: Labels = { grpc_type: grpcType(requestStream, responseStream), grpc_service: service, grpc_method: method };
    const made: MethodInfo = {
      required: scopeFor(path),
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

  /** Why the caller may not make this call, or undefined (and the principal is set on the metadata). */
  const refusal = (metadata: Metadata, required: string): ServiceError | undefined => {
    const header = metadata.get('authorization')[0];
    const result = verifier.authenticate(typeof header === 'string' ? header : undefined);
    if (!result.ok) {
      const message = result.reason === 'MISSING_CREDENTIALS' ? 'missing credentials: send "authorization: Bearer <key>"' : 'invalid API key';
      return ServiceError.platform(Code.UNAUTHENTICATED, result.reason, message);
    }
    if (!hasScope(result.principal, required)) {
      return ServiceError.platform(Code.PERMISSION_DENIED, 'MISSING_SCOPE', `API key "${result.principal.keyId}" lacks scope "${required}"`, {
        metadata: { scope: required },
      });
    }
    metadata.set(PRINCIPAL_METADATA_KEY, result.principal.keyId);
    return undefined;
  };

  return (methodDescriptor, call) => {
    const path = methodDescriptor.path;
    const m = seriesFor(path, methodDescriptor.requestStream, methodDescriptor.responseStream);
    const required = m.required;
    let startedAt = process.hrtime.bigint();
    let received: Metadata | undefined;
    let recorded = false;
    let counted = false;
    const count = () => {
      if (counted) return;
      counted = true;
      m.started.inc();
    };
    inFlight?.enter();

    /** Counts and logs the call's final status, once, whoever sent it (grpc-js, the interceptor, the handler). */
    const record = (status: { code?: number; details?: string }) => {
      if (recorded) return;
      recorded = true;
      inFlight?.leave();
      count();
      const code = status.code ?? grpcStatus.UNKNOWN;
      let handled = m.handled.get(code);
      if (!handled) {
        handled = metrics.handled.labels({ ...m.labels, grpc_code: grpcCodeName(code) });
        m.handled.set(code, handled);
      }
      handled.inc();
      const elapsedNs = startedAt === 0n ? 0n : process.hrtime.bigint() - startedAt;
      if (startedAt !== 0n) m.seconds.observe(Number(elapsedNs) / 1e9);
      // Hot path: a success is logged at debug only; skip building the line when that is off.
      if (code === grpcStatus.OK && !logger.isLevelEnabled('debug')) return;
      const line = {
        grpc_method: path,
        grpc_code: grpcCodeName(code),
        duration_ms: Math.round(Number(elapsedNs) / 1e3) / 1e3,
        peer: call.getPeer(),
        ...traceIdField(received),
      };
      if (SERVER_FAULT_CODES.has(code) && !isCallerFault(status)) logger.error({ ...line, details: status.details }, 'call failed');
      else if (code !== grpcStatus.OK) logger.info({ ...line, details: status.details }, 'call rejected');
      else logger.debug(line, 'call handled');
    };

    const listener = new ServerListenerBuilder()
      .withOnReceiveMetadata((metadata, next) => {
        startedAt = process.hrtime.bigint();
        count();
        received = metadata;
        // Only this interceptor may say who the caller is.
        metadata.remove(PRINCIPAL_METADATA_KEY);
        const refused = required === null ? undefined : refusal(metadata, required);
        if (refused) {
          // The handler never runs: this is the call's only status.
          const status = toGrpcStatus(refused, domain);
          record(status);
          call.sendStatus(status as StatusObject);
          return;
        }
        next(metadata);
      })
      .withOnReceiveMessage((message, next) => {
        m.received.inc();
        next(message);
      })
      .withOnCancel(() => {
        // The stream is gone. A status sent first was recorded already; otherwise the client
        // cancelled (or the connection died) before any status: that is the call's end.
        record({ code: grpcStatus.CANCELLED, details: 'cancelled before a status was sent' });
      })
      .build();
    const responder = new ResponderBuilder()
      .withStart((next) => next(listener))
      .withSendMessage((message, next) => {
        m.sent.inc();
        next(message);
      })
      .withSendStatus((status, next) => {
        record(status);
        next(status);
      })
      .build();
    watchStatuses(call, (status) => {
      const answered = specStatus(status);
      record(answered);
      return answered;
    });
    return new ServerInterceptingCall(call, responder);
  };
}
