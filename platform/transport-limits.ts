/**
 * HTTP/2 limits of the gRPC server (issue 21, item 2): how much metadata a call may carry, and
 * that a connection nghttp2 has given up on is closed instead of left open for good.
 *
 * Why this is needed (measured on Node 20.20 / nghttp2 1.61 / grpc-js 1.14):
 *  - grpc-js advertises no SETTINGS_MAX_HEADER_LIST_SIZE and enforces no metadata limit of its
 *    own (it has no `grpc.max_metadata_size`, grpc/grpc-node#1533, #2050), so any header list is
 *    accepted up to nghttp2's hard limit of 65,536 bytes per header field (nodejs/node#35218).
 *  - A field over that limit is an HPACK decoding failure in nghttp2: it queues GOAWAY
 *    COMPRESSION_ERROR and stops reading the connection. Node never tells JavaScript (no
 *    'error', 'frameError', 'goaway' or 'close' on the session; the stream never reaches
 *    'stream') and never closes the socket. C-core clients keep waiting on the open socket: the
 *    call gets no status before its deadline, the connection's other streams freeze, and once
 *    the client leaves the socket stays in CLOSE-WAIT, one descriptor per such call.
 *
 * So: SETTINGS_MAX_HEADER_LIST_SIZE and the header-entry bound are set on the HTTP/2 server
 * (node then resets an oversized or over-long header list with RST_STREAM ENHANCE_YOUR_CALM,
 * which gRPC clients report as RESOURCE_EXHAUSTED, and the connection's other calls go on), and
 * connections on which nghttp2 went silent are found and destroyed (see `reapStalledSessions`).
 * grpc-js has no option for either, so both use one grpc-js 1.14 internal each, wrapped here;
 * platform/transport-limits.test.ts fails if grpc-js changes them.
 */
import type http2 from 'node:http2';
import type { Server } from '@grpc/grpc-js';
import { integerSetting } from './config';
import type { Logger } from './logger';

/** The variables of the transport limits (documented in README.md's configuration table). */
export const transportConfigShape = {
  /** SETTINGS_MAX_HEADER_LIST_SIZE: names + values + 32 per entry, pseudo-headers included. */
  GRPC_MAX_METADATA_BYTES: integerSetting(1_024, 1_048_576).default(16_384),
  /** Header entries per call, pseudo-headers included (node's maxHeaderListPairs). */
  GRPC_MAX_METADATA_ENTRIES: integerSetting(8, 10_000).default(128),
  /** Ping every connection this often; one not answered within the timeout is closed. */
  GRPC_KEEPALIVE_TIME_MS: integerSetting(1_000, 7_200_000).default(60_000),
  GRPC_KEEPALIVE_TIMEOUT_MS: integerSetting(100, 600_000).default(20_000),
} as const;

export interface TransportLimits {
  readonly GRPC_MAX_METADATA_BYTES: number;
  readonly GRPC_MAX_METADATA_ENTRIES: number;
  readonly GRPC_KEEPALIVE_TIME_MS: number;
  readonly GRPC_KEEPALIVE_TIMEOUT_MS: number;
}

/** The documented grpc-js server options of the limits: keepalive, so a dead peer's socket is reaped. */
export function transportServerOptions(limits: TransportLimits): Record<string, number> {
  return {
    'grpc.keepalive_time_ms': limits.GRPC_KEEPALIVE_TIME_MS,
    'grpc.keepalive_timeout_ms': limits.GRPC_KEEPALIVE_TIMEOUT_MS,
  };
}

/** The two grpc-js 1.14 `Server` internals used here (private fields, not API). */
interface GrpcJsServerInternals {
  /** Options `bindAsync` passes to `http2.createServer`. */
  commonServerOptions?: http2.ServerOptions;
  /** Every bound HTTP/2 server, with the sessions grpc-js tracks on it. */
  http2Servers?: Map<http2.Http2Server, { sessions?: Set<http2.ServerHttp2Session> }>;
}

const internals = (server: Server) => server as unknown as GrpcJsServerInternals;

/**
 * Sets SETTINGS_MAX_HEADER_LIST_SIZE and the header-entry bound on the HTTP/2 servers `server`
 * will create: call it before `bindAsync`. Returns false (and changes nothing) when grpc-js no
 * longer has the options object it passes to `http2.createServer`.
 */
export function limitMetadata(server: Server, limits: Pick<TransportLimits, 'GRPC_MAX_METADATA_BYTES' | 'GRPC_MAX_METADATA_ENTRIES'>): boolean {
  const options = internals(server).commonServerOptions;
  if (options === null || typeof options !== 'object') return false;
  options.maxHeaderListPairs = limits.GRPC_MAX_METADATA_ENTRIES;
  options.settings = { ...options.settings, maxHeaderListSize: limits.GRPC_MAX_METADATA_BYTES };
  return true;
}

export interface StalledSessionReaper {
  /** Connections destroyed because nghttp2 stopped answering on them. */
  readonly reaped: number;
  stop(): void;
}

/** How often sessions are looked at; only a suspect one costs more than reading its state. */
const SWEEP_INTERVAL_MS = 250;
/**
 * How long a suspect connection has to answer a PING. A live peer answers in well under a
 * millisecond on loopback and a few in a mesh (C-core answers from its own thread); only a
 * connection that already carried a stream node never delivered is ever probed.
 */
const PROBE_TIMEOUT_MS = 1_000;

/**
 * Finds HTTP/2 connections nghttp2 has stopped reading (a header field over 64 KiB: see the
 * module comment) and destroys them, so their client sees the connection end at once (UNAVAILABLE
 * for its calls, which it may retry) and no socket is left in CLOSE-WAIT. Call after `bindAsync`.
 *
 * There is no event for it; the trace it leaves is a stream nghttp2 processed
 * (`session.state.lastProcStreamID`) that never reached the session's 'stream' event. Streams
 * node refuses for their headers (too many, too large) leave the same trace on a healthy
 * connection, so a suspect connection is sent a PING first and destroyed only when it does not
 * answer within PROBE_TIMEOUT_MS (a stopped nghttp2 session never sends it). Returns undefined
 * when grpc-js no longer has its map of HTTP/2 servers.
 */
export function reapStalledSessions(server: Server, logger: Logger): StalledSessionReaper | undefined {
  const http2Servers = internals(server).http2Servers;
  if (!(http2Servers instanceof Map)) return undefined;
  interface Watched {
    /** Highest stream id that reached 'stream'. */
    seen: number;
    /** Last processed stream id already probed for. */
    probed: number;
    probing: boolean;
  }
  const sessions = new Map<http2.ServerHttp2Session, Watched>();
  const watch = (session: http2.ServerHttp2Session) => {
    if (sessions.has(session) || session.destroyed) return;
    const watched: Watched = { seen: 0, probed: 0, probing: false };
    sessions.set(session, watched);
    session.on('stream', (stream: http2.ServerHttp2Stream) => {
      const id = stream.id ?? 0;
      if (id > watched.seen) watched.seen = id;
    });
    session.once('close', () => sessions.delete(session));
  };
  for (const [http2Server, info] of http2Servers) {
    http2Server.on('session', watch);
    for (const session of info?.sessions ?? []) watch(session);
  }
  let reaped = 0;
  const reap = (session: http2.ServerHttp2Session, why: string) => {
    if (session.destroyed) return;
    reaped += 1;
    logger.info(
      { peer: `${session.socket?.remoteAddress}:${session.socket?.remotePort}`, reason: why },
      'HTTP/2 connection closed: nghttp2 stopped reading it (a header field over 64 KiB?)',
    );
    session.destroy();
  };
  const sweep = () => {
    for (const [session, watched] of sessions) {
      if (watched.probing || session.destroyed) continue;
      let last: number | undefined;
      try {
        last = session.state.lastProcStreamID;
      } catch {
        continue;
      }
      if (last === undefined || last <= watched.seen || last === watched.probed) continue;
      watched.probed = last;
      watched.probing = true;
      const timer = setTimeout(() => reap(session, `no PING answer in ${PROBE_TIMEOUT_MS} ms`), PROBE_TIMEOUT_MS);
      timer.unref();
      try {
        const sent = session.ping((err) => {
          clearTimeout(timer);
          watched.probing = false;
          if (err && !session.destroyed) reap(session, `PING failed: ${err.message}`);
        });
        if (!sent) {
          clearTimeout(timer);
          reap(session, 'PING could not be sent');
        }
      } catch (error) {
        clearTimeout(timer);
        reap(session, `PING could not be sent: ${error instanceof Error ? error.message : String(error)}`);
      }
    }
  };
  const interval = setInterval(sweep, SWEEP_INTERVAL_MS);
  interval.unref();
  return {
    get reaped() {
      return reaped;
    },
    stop: () => clearInterval(interval),
  };
}
