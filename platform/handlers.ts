/**
 * Adapters from async domain-calling functions to grpc-js handlers, so each
 * service's handler layer stays thin: decode, validate, call the domain, and
 * let this module map whatever was thrown to a status with ErrorInfo details.
 */
import {
  Metadata,
  type handleBidiStreamingCall,
  type handleClientStreamingCall,
  type handleServerStreamingCall,
  type handleUnaryCall,
  type ServerDuplexStream,
  type ServerReadableStream,
  type ServerWritableStream,
} from '@grpc/grpc-js';
import type { Status } from '../gen/google/rpc/status';
import { toGrpcStatus } from './grpc-errors';
import { PRINCIPAL_METADATA_KEY } from './interceptors';
import type { Logger } from './logger';
import { Code, ServiceError } from './service-error';
import { toStatus } from './status-details';
import { checkRequestFields } from './request-fields';

export interface CallContext {
  readonly metadata: Metadata;
  /** Id of the API key that authenticated the call ('' for open methods). */
  readonly keyId: string;
  /** Aborted when the client cancels, the deadline passes, or the server is stopping (streams). */
  readonly signal: AbortSignal;
}

export interface HandlerOptions {
  /** ErrorInfo domain, e.g. "credits.shieldx.io". */
  readonly domain: string;
  readonly logger: Logger;
  /** Applied when the client sent no deadline. */
  readonly defaultDeadlineMs: number;
  /** Aborted when the server begins to shut down (long-lived streams end cleanly). */
  readonly shutdownSignal: AbortSignal;
}

function remainingMs(deadline: Date | number): number {
  const at = deadline instanceof Date ? deadline.getTime() : deadline;
  return at === Infinity ? Infinity : at - Date.now();
}

const cancelledByClient = () => ServiceError.platform(Code.CANCELLED, 'CANCELLED', 'call cancelled by the client');
const deadlineExceeded = (ms?: number) =>
  ServiceError.platform(Code.DEADLINE_EXCEEDED, 'DEADLINE_EXCEEDED', ms === undefined ? "the client's deadline passed" : `no response within ${ms} ms`);
/** grpc-js reports an expired client deadline as a cancellation; its timer may fire a hair early. */
const DEADLINE_SLACK_MS = 5;
const serverShuttingDown = () => ServiceError.platform(Code.UNAVAILABLE, 'SERVER_SHUTTING_DOWN', 'server is shutting down');

/**
 * The call's context. Hot path: grpc-js emits 'cancelled' after EVERY call
 * (once the status is sent), so a cancellation after the handler settled is
 * ignored, and the AbortController is only made when a handler reads
 * `ctx.signal` (most unary handlers never do); its reason is then whatever
 * cancelled the call first.
 */
function contextFor(
  call: { metadata: Metadata; getDeadline(): Date | number; on(event: 'cancelled', fn: () => void): unknown },
  options: HandlerOptions,
  includeShutdown: boolean,
): { ctx: CallContext; timeoutMs: number; expire: () => void; dispose: () => void } {
  let controller: AbortController | undefined;
  let cancelledBy: (() => ServiceError) | undefined;
  let settled = false;
  const cancel = (reason: () => ServiceError) => {
    if (settled || cancelledBy) return;
    cancelledBy = reason;
    controller?.abort(reason());
  };
  const onShutdown = () => cancel(serverShuttingDown);
  call.on('cancelled', () => cancel(remainingMs(call.getDeadline()) <= DEADLINE_SLACK_MS ? () => deadlineExceeded() : cancelledByClient));
  if (includeShutdown) options.shutdownSignal.addEventListener('abort', onShutdown, { once: true });
  const keyId = call.metadata.get(PRINCIPAL_METADATA_KEY)[0];
  const clientMs = remainingMs(call.getDeadline());
  const timeoutMs = clientMs === Infinity ? options.defaultDeadlineMs : Infinity;
  return {
    ctx: {
      metadata: call.metadata,
      keyId: typeof keyId === 'string' ? keyId : '',
      get signal(): AbortSignal {
        if (!controller) {
          controller = new AbortController();
          if (cancelledBy) controller.abort(cancelledBy());
        }
        return controller.signal;
      },
    },
    // A client deadline is enforced by grpc-js itself (DEADLINE_EXCEEDED to the client): only
    // calls without one need our timer.
    timeoutMs,
    // Our timer fired: the handler's signal says so, as it does for a client's deadline.
    expire: () => cancel(() => deadlineExceeded(timeoutMs)),
    dispose: () => {
      settled = true;
      if (includeShutdown) options.shutdownSignal.removeEventListener('abort', onShutdown);
    },
  };
}

/** Anything thrown, as a ServiceError; unexpected ones (INTERNAL/UNKNOWN) are logged with their cause. */
function serviceErrorFor(error: unknown, options: HandlerOptions, path: string): ServiceError {
  const serviceError = ServiceError.from(error);
  if (serviceError.code === Code.INTERNAL || serviceError.code === Code.UNKNOWN) {
    options.logger.error({ err: error, grpc_method: path }, 'unexpected error');
  }
  return serviceError;
}

function statusFor(error: unknown, options: HandlerOptions, path: string) {
  return toGrpcStatus(serviceErrorFor(error, options, path), options.domain);
}

/** Anything thrown, as the google.rpc.Status a stream sends for one failed item. */
function itemErrorStatus(error: unknown, options: HandlerOptions, path: string): Status {
  return toStatus(serviceErrorFor(error, options, path), options.domain);
}

/** `work`, or DEADLINE_EXCEEDED after `ms` (after telling the handler through `expire`). */
function withDeadline<T>(work: Promise<T>, ms: number, expire: () => void): Promise<T> {
  if (ms === Infinity) return work;
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => {
      expire();
      reject(deadlineExceeded(ms));
    }, ms);
    timer.unref();
    work.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}

export function unary<Req, Res>(
  path: string,
  options: HandlerOptions,
  fn: (request: Req, ctx: CallContext) => Promise<Res>,
): handleUnaryCall<Req, Res> {
  return (call, callback) => {
    const { ctx, timeoutMs, expire, dispose } = contextFor(call, options, false);
    withDeadline(
      Promise.resolve().then(() => {
        checkRequestFields(call.request);
        return fn(call.request, ctx);
      }),
      timeoutMs,
      expire,
    ).then(
      (response) => {
        dispose();
        callback(null, response);
      },
      (error: unknown) => {
        dispose();
        callback(statusFor(error, options, path) as never);
      },
    );
  };
}

/**
 * The messages of a client stream, ending only when the client half-closed it.
 * grpc-js ends the read side of a cancelled call too: a client's RST_STREAM
 * ends the HTTP/2 stream's readable before its 'close' reports the
 * cancellation, so a plain iteration cannot tell "the client sent everything"
 * from "the client went away". Once the read side has ended, this lets the
 * events already queued (the cancellation among them) run, then fails with
 * CANCELLED if the call was cancelled — so a handler that commits at the end
 * of the stream never commits a stream its client abandoned.
 */
async function* halfClosedMessages<Req>(call: ServerReadableStream<Req, unknown>): AsyncGenerator<Req> {
  // Client streams are not walked here: IngestSamples refuses a bad row as a row (its own rule,
  // which also refuses NUL), not the whole call.
  for await (const message of call as AsyncIterable<Req>) yield message;
  await new Promise<void>((resolve) => setImmediate(resolve));
  if (call.cancelled) throw cancelledByClient();
}

export interface ClientStreamOptions {
  /**
   * `fn` bounds the call's duration itself and fails with its own error when
   * the call runs over (e.g. IngestSamples and SHADOW_INGEST_SECONDS_MAX), so
   * `defaultDeadlineMs` is not applied: a timer of its own would cut the call
   * first, with a generic DEADLINE_EXCEEDED, whenever that limit is longer. A
   * deadline the client sent still applies (grpc-js enforces it).
   */
  readonly handlerBoundsDuration?: boolean;
}

export function clientStream<Req, Res>(
  path: string,
  options: HandlerOptions,
  fn: (messages: AsyncIterable<Req>, ctx: CallContext) => Promise<Res>,
  streamOptions: ClientStreamOptions = {},
): handleClientStreamingCall<Req, Res> {
  return (call: ServerReadableStream<Req, Res>, callback) => {
    const { ctx, timeoutMs, expire, dispose } = contextFor(call, options, false);
    const serverTimeoutMs = streamOptions.handlerBoundsDuration ? Infinity : timeoutMs;
    withDeadline(Promise.resolve().then(() => fn(halfClosedMessages(call), ctx)), serverTimeoutMs, expire).then(
      (response) => {
        dispose();
        callback(null, response);
      },
      (error: unknown) => {
        dispose();
        // Stop reading what the client still sends: the call has failed.
        call.destroy();
        callback(statusFor(error, options, path) as never);
      },
    );
  };
}

/**
 * Server streaming: `fn` writes with `send` until it returns. Long-lived
 * streams watch `ctx.signal`, which also fires on shutdown, and return.
 */
export function serverStream<Req, Res>(
  path: string,
  options: HandlerOptions,
  fn: (request: Req, send: (message: Res) => Promise<void>, ctx: CallContext) => Promise<void>,
): handleServerStreamingCall<Req, Res> {
  return (call: ServerWritableStream<Req, Res>) => {
    const { ctx, dispose } = contextFor(call, options, true);
    const send = (message: Res) =>
      new Promise<void>((resolve) => {
        if (call.write(message)) resolve();
        else call.once('drain', () => resolve());
      });
    Promise.resolve()
      .then(() => {
        checkRequestFields(call.request);
        return fn(call.request, send, ctx);
      })
      .then(
        () => {
          dispose();
          call.end();
        },
        (error: unknown) => {
          dispose();
          // Cancelled, or past the client's deadline: grpc-js has already ended the call.
          const code = ctx.signal.aborted ? (ctx.signal.reason as ServiceError)?.code : undefined;
          if (code === Code.CANCELLED || code === Code.DEADLINE_EXCEEDED) return;
          call.emit('error', statusFor(error, options, path));
        },
      );
  };
}

/**
 * A bidirectional stream in which every request gets exactly one response: a
 * request/response multiplexer over one call. `handle` answers one request and
 * must turn its failures into a response (requestIdStream does); at most
 * `maxInFlight` run at once, and reading pauses beyond that or while the client
 * is slow to read answers, so a fast writer cannot queue unbounded work. The
 * call ends OK once the client has half-closed and every answer is written. On
 * server shutdown it stops reading, answers what it has read, then ends
 * UNAVAILABLE (SERVER_SHUTTING_DOWN) so the client resends the rest elsewhere.
 */
export function multiplexedStream<Req, Res>(
  path: string,
  options: HandlerOptions,
  maxInFlight: number,
  handle: (request: Req, ctx: CallContext) => Promise<Res>,
): handleBidiStreamingCall<Req, Res> {
  return (call: ServerDuplexStream<Req, Res>) => {
    coalesceWrites(call);
    // Shutdown is handled below (stop reading, answer what was read), so it does not abort ctx.signal.
    const { ctx, dispose } = contextFor(call, options, false);
    let inFlight = 0;
    let readEnded = false;
    let stopping = false;
    let writeBlocked = false;
    let done = false;
    const finish = (status?: ReturnType<typeof statusFor>) => {
      if (done) return;
      done = true;
      dispose();
      options.shutdownSignal.removeEventListener('abort', onShutdown);
      if (status) call.emit('error', status);
      else call.end();
    };
    const update = () => {
      if (done) return;
      if ((readEnded || stopping) && inFlight === 0) {
        finish(stopping ? statusFor(serverShuttingDown(), options, path) : undefined);
        return;
      }
      if (stopping || inFlight >= maxInFlight || writeBlocked) call.pause();
      else if (!readEnded) call.resume();
    };
    const onShutdown = () => {
      stopping = true;
      update();
    };
    options.shutdownSignal.addEventListener('abort', onShutdown, { once: true });
    // A call that arrives once shutdown has begun ends at once (the listener would never fire).
    if (options.shutdownSignal.aborted) onShutdown();
    // The client went away: nothing more can be written.
    call.on('cancelled', () => {
      done = true;
      dispose();
      options.shutdownSignal.removeEventListener('abort', onShutdown);
    });
    call.on('error', () => undefined);
    call.on('end', () => {
      readEnded = true;
      update();
    });
    call.on('data', (request: Req) => {
      if (done || stopping) return;
      inFlight += 1;
      update();
      Promise.resolve()
        .then(() => handle(request, ctx))
        .then(
          (response) => {
            inFlight -= 1;
            if (done) return;
            if (!call.write(response) && !writeBlocked) {
              writeBlocked = true;
              call.once('drain', () => {
                writeBlocked = false;
                update();
              });
            }
            update();
          },
          (error: unknown) => {
            // `handle` answers its own failures; reaching here is a bug: end the call, INTERNAL.
            inFlight -= 1;
            finish(statusFor(error, options, path));
          },
        );
    });
  };
}

/** One request of a request-id stream (AssessStream, ConsumeStream): `request_id` = 1, `request` = 2. */
export interface IdentifiedRequest<Req> {
  requestId: string;
  request?: Req | undefined;
}

/** Its answer: the same `request_id`, and the RPC's response or the Status it would have failed with. */
export interface IdentifiedAnswer<Res> {
  requestId: string;
  result?: { $case: 'response'; value: Res } | { $case: 'error'; value: Status } | undefined;
}

/**
 * The mesh's request-id streams: a multiplexedStream whose messages carry a
 * caller-chosen `request_id` (1-128 characters) echoed in the answer, and whose
 * answer is what the unary RPC (`handle`) would have returned or failed with
 * (as a google.rpc.Status with its ErrorInfo/BadRequest details).
 */
export function requestIdStream<Req, Res>(
  path: string,
  options: HandlerOptions,
  maxInFlight: number,
  handle: (request: Req, ctx: CallContext) => Promise<Res>,
): handleBidiStreamingCall<IdentifiedRequest<Req>, IdentifiedAnswer<Res>> {
  return multiplexedStream(path, options, maxInFlight, async (item: IdentifiedRequest<Req>, ctx): Promise<IdentifiedAnswer<Res>> => {
    const requestId = item.requestId;
    try {
      if (requestId.length === 0 || requestId.length > 128) throw ServiceError.invalidArgument('request_id', 'must be 1-128 characters');
      if (!item.request) throw ServiceError.invalidArgument('request', 'is required');
      checkRequestFields({ request: item.request });
      return { requestId, result: { $case: 'response', value: await handle(item.request, ctx) } };
    } catch (error) {
      return { requestId, result: { $case: 'error', value: itemErrorStatus(error, options, path) } };
    }
  });
}

/**
 * grpc-js's server stream is a Node Writable whose `_write` sends one message
 * and calls back only once its HTTP/2 write has completed, so messages leave
 * one at a time: a syscall and an event-loop turn each (measured: one writev
 * per ConsumeStream answer). Answers that complete together — a
 * group-committed batch — then trickle out one turn apart. Given a `_writev`,
 * the Writable hands over everything queued behind the write in flight at
 * once; sending those straight to grpc-js's call lets the HTTP/2 stream (whose
 * own `_writev` batches) put them in one write. Relies on grpc-js's
 * `ServerDuplexStreamImpl` delegating `_write` to `this.call.sendMessage`
 * (1.14); if that shape is not there, nothing is changed.
 */
function coalesceWrites(call: object): void {
  const duplex = call as {
    _writev?: unknown;
    call?: { sendMessage?: (message: unknown, callback: () => void) => void };
  };
  const inner = duplex.call;
  if (typeof duplex._writev === 'function' || typeof inner?.sendMessage !== 'function') return;
  const send = inner.sendMessage.bind(inner);
  duplex._writev = (chunks: readonly { chunk: unknown }[], callback: () => void) => {
    // grpc-js calls back only on success (a failed write ends the call with a status instead),
    // exactly as for `_write`: the Writable is done when every message of the group is.
    let pending = chunks.length;
    for (const { chunk } of chunks) {
      send(chunk, () => {
        pending -= 1;
        if (pending === 0) callback();
      });
    }
  };
}

/** For RPCs whose behaviour a later change brings: a clear UNIMPLEMENTED, not a hang. */
export function notImplemented(path: string): ServiceError {
  return ServiceError.platform(Code.UNIMPLEMENTED, 'NOT_IMPLEMENTED', `${path} is not implemented yet`);
}

/**
 * An implementation answering every method of `definition` with UNIMPLEMENTED
 * (with ErrorInfo), for a service whose behaviour has not landed yet.
 */
export function unimplementedService(
  definition: Record<string, { path: string; requestStream: boolean; responseStream: boolean }>,
  options: HandlerOptions,
): Record<string, unknown> {
  const implementation: Record<string, unknown> = {};
  for (const [name, method] of Object.entries(definition)) {
    const fail = async () => {
      throw notImplemented(method.path);
    };
    // Bidi too goes through serverStream, which runs `fail` as the call starts (a bidi call has no
    // `request`; `fail` reads none). multiplexedStream would run it per message only: the call hung
    // while the client sent nothing, and ended OK when it half-closed without sending.
    if (method.responseStream) implementation[name] = serverStream(method.path, options, fail);
    else if (method.requestStream) implementation[name] = clientStream(method.path, options, fail);
    else implementation[name] = unary(method.path, options, fail);
  }
  return implementation;
}
