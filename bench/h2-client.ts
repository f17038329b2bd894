/**
 * A lean unary gRPC client over node:http2, for load generation only.
 *
 * Why: on a 2-core machine the load generator shares the CPU with the service
 * it measures, and the grpc-js client spends about as much CPU per unary call as
 * the grpc-js server (channel, resolver, load balancer, interceptor and
 * retry layers per call), so a generator built on it caps the service at
 * roughly half the machine. This one sends the same bytes — HTTP/2 POST,
 * `content-type: application/grpc`, `te: trailers`, the 5-byte
 * length-prefixed message encoded by the generated ts-proto codec, the same
 * `grpc-timeout` deadline — and reads `grpc-status` / `grpc-message` from the
 * trailers (or a trailers-only response), so the server sees an ordinary gRPC
 * call. It does no retries, compression, name resolution or load balancing:
 * it is a load generator, not a client library (tests use the generated
 * grpc-js clients).
 */
import { connect, constants, type ClientHttp2Session, type IncomingHttpHeaders } from 'node:http2';
import { status as grpcStatus } from '@grpc/grpc-js';

export interface Codec<T> {
  encode(message: T): { finish(): Uint8Array };
  decode(bytes: Uint8Array): T;
}

/** A failed call: `code` is the gRPC status code, as on grpc-js errors (runLoad counts by it). */
export class GrpcCallError extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(`${code} ${message}`);
  }
}

export class H2GrpcClient {
  private readonly sessions: ClientHttp2Session[];
  private next = 0;

  /** `connections` HTTP/2 connections to `address` (host:port), used round-robin. */
  constructor(
    address: string,
    connections: number,
    private readonly metadata: Readonly<Record<string, string>>,
  ) {
    this.sessions = Array.from({ length: Math.max(1, connections) }, () => {
      const session = connect(`http://${address}`, { settings: { enablePush: false } });
      session.on('error', () => undefined);
      return session;
    });
  }

  unary<Req, Res>(path: string, requestCodec: Codec<Req>, responseCodec: Codec<Res>, request: Req, deadlineMs: number): Promise<Res> {
    const message = requestCodec.encode(request).finish();
    const frame = Buffer.allocUnsafe(5 + message.length);
    frame[0] = 0;
    frame.writeUInt32BE(message.length, 1);
    frame.set(message, 5);
    const session = this.sessions[this.next++ % this.sessions.length]!;
    return new Promise<Res>((resolve, reject) => {
      const stream = session.request({
        [constants.HTTP2_HEADER_METHOD]: 'POST',
        [constants.HTTP2_HEADER_PATH]: path,
        'content-type': 'application/grpc',
        te: 'trailers',
        'grpc-timeout': `${Math.max(1, Math.round(deadlineMs))}m`,
        ...this.metadata,
      });
      const chunks: Buffer[] = [];
      let status: IncomingHttpHeaders | undefined;
      stream.on('response', (headers) => {
        // Trailers-only response (an error before any message): the status is in the headers.
        if (headers['grpc-status'] !== undefined) status = headers;
      });
      stream.on('trailers', (trailers) => {
        status = trailers;
      });
      stream.on('data', (chunk: Buffer) => chunks.push(chunk));
      stream.on('error', (error) => reject(new GrpcCallError(grpcStatus.UNAVAILABLE, error.message)));
      stream.on('close', () => {
        const code = Number(status?.['grpc-status'] ?? grpcStatus.UNAVAILABLE);
        if (code !== 0) {
          reject(new GrpcCallError(code, decodeURIComponent(String(status?.['grpc-message'] ?? 'no status'))));
          return;
        }
        const body = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
        if (body.length < 5 || body[0] !== 0 || body.readUInt32BE(1) !== body.length - 5) {
          reject(new GrpcCallError(grpcStatus.INTERNAL, 'malformed or compressed response message'));
          return;
        }
        resolve(responseCodec.decode(body.subarray(5)));
      });
      stream.end(frame);
    });
  }

  close(): void {
    for (const session of this.sessions) session.close();
  }
}
