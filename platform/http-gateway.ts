/**
 * JSON over HTTP for callers without a gRPC stack: the Connect protocol (and gRPC-Web), served by
 * @connectrpc/connect-node on HTTP_PORT, so
 *
 *   curl -H 'content-type: application/json' -H "authorization: Bearer $KEY" \
 *     -d '{"tenant_id":"acme"}' http://127.0.0.1:8004/shieldx.credits.v1.CreditsService/GetBalance
 *
 * answers the same JSON a gRPC client would decode.
 *
 * It is the same API, not a second one: each call is forwarded, as protobuf bytes, to this
 * process's own gRPC server over loopback, so the one interceptor authenticates it, checks its
 * scope, validates nothing differently, counts it in grpc_server_* and logs it; errors come back
 * as the same google.rpc.Status, whose ErrorInfo and BadRequest become Connect error details
 * (with their JSON in `debug`). The schemas come from the compiled descriptors
 * (gen/descriptors.binpb), read through @bufbuild/protobuf's registry.
 *
 * Unary and server-streaming methods are served; client-streaming and bidirectional ones stay
 * gRPC-only (Connect over HTTP/1.1 cannot carry them): a call to one answers `unimplemented`.
 */
import { createServer, type Server as HttpServer } from 'node:http';
import { createFileRegistry, fromBinary, toBinary, type DescMessage, type DescMethod, type FileRegistry } from '@bufbuild/protobuf';
import { FileDescriptorSetSchema } from '@bufbuild/protobuf/wkt';
import { Code as ConnectCode, ConnectError, type ConnectRouter, type HandlerContext } from '@connectrpc/connect';
import { connectNodeAdapter } from '@connectrpc/connect-node';
import { Client, credentials, Metadata, type ServiceError as GrpcError } from '@grpc/grpc-js';
import { readFileSync } from 'node:fs';
import { Status } from '../gen/google/rpc/status';
import { projectPath } from './paths';
import { STATUS_DETAILS_KEY } from './status-details';

/** Request headers passed on to the gRPC call: credentials, trace context and the mesh's own. */
const FORWARDED_HEADER = /^(authorization|traceparent|tracestate|baggage|x-request-id|x-shieldx-.+)$/;
const TYPE_URL_PREFIX = 'type.googleapis.com/';

let sharedRegistry: FileRegistry | undefined;

/** The compiled descriptors as a @bufbuild/protobuf registry, built once per process. */
export function compiledRegistry(): FileRegistry {
  return (sharedRegistry ??= createFileRegistry(fromBinary(FileDescriptorSetSchema, readFileSync(projectPath('gen', 'descriptors.binpb')))));
}

export interface HttpGatewayOptions {
  /** Fully-qualified gRPC service, e.g. "shieldx.credits.v1.CreditsService". */
  readonly grpcServiceName: string;
  /** Where this process's gRPC server listens (host:port, loopback when bound to all addresses). */
  readonly grpcTarget: string;
  readonly host: string;
  readonly port: number;
  readonly maxMessageBytes: number;
  /** Applied when the caller sent no `connect-timeout-ms`, as for gRPC calls. */
  readonly defaultDeadlineMs: number;
}

export interface HttpGateway {
  readonly server: HttpServer;
  readonly port: number;
  /** Stops accepting calls and resolves once the calls in flight have ended (keep-alive connections are closed). */
  close(): Promise<void>;
  /** Ends every connection at once (after the shutdown grace period). */
  destroy(): void;
}

/** Starts the JSON/HTTP endpoint; resolves once it listens. */
export async function startHttpGateway(options: HttpGatewayOptions): Promise<HttpGateway> {
  const registry = compiledRegistry();
  const service = registry.getService(options.grpcServiceName);
  if (service === undefined) throw new Error(`the compiled descriptors do not define ${options.grpcServiceName}`);
  const client = new Client(options.grpcTarget, credentials.createInsecure(), {
    'grpc.max_receive_message_length': options.maxMessageBytes,
    'grpc.max_send_message_length': options.maxMessageBytes,
  });
  const forwarder = new Forwarder(client, registry, options.defaultDeadlineMs);
  const handler = connectNodeAdapter({
    // gRPC proper stays on the gRPC port; this one speaks Connect and gRPC-Web over HTTP/1.1.
    grpc: false,
    readMaxBytes: options.maxMessageBytes,
    writeMaxBytes: options.maxMessageBytes,
    routes(router: ConnectRouter) {
      for (const method of service.methods) {
        if (method.methodKind === 'unary') router.rpc(method, ((request: never, ctx: HandlerContext) => forwarder.unary(method, request, ctx)) as never);
        if (method.methodKind === 'server_streaming') {
          router.rpc(method, ((request: never, ctx: HandlerContext) => forwarder.serverStream(method, request, ctx)) as never);
        }
      }
    },
  });
  const server = createServer(handler);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : options.port;
  return {
    server,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => {
          client.close();
          resolve();
        });
        server.closeIdleConnections();
      }),
    destroy: () => {
      server.closeAllConnections();
      client.close();
    },
  };
}

const identity = (bytes: Buffer) => bytes;

class Forwarder {
  constructor(
    private readonly client: Client,
    private readonly registry: FileRegistry,
    private readonly defaultDeadlineMs: number,
  ) {}

  async unary(method: DescMethod, request: Parameters<typeof toBinary>[1], ctx: HandlerContext): Promise<unknown> {
    const bytes = Buffer.from(toBinary(method.input, request));
    const answer = await new Promise<Buffer>((resolve, reject) => {
      const call = this.client.makeUnaryRequest(path(method), identity, identity, bytes, this.metadata(ctx), { deadline: this.deadline(ctx) }, (error, response) =>
        error ? reject(this.connectError(error)) : resolve(response!),
      );
      ctx.signal.addEventListener('abort', () => call.cancel(), { once: true });
    });
    return fromBinary(method.output, answer);
  }

  async *serverStream(method: DescMethod, request: Parameters<typeof toBinary>[1], ctx: HandlerContext): AsyncGenerator<unknown> {
    const bytes = Buffer.from(toBinary(method.input, request));
    const call = this.client.makeServerStreamRequest(path(method), identity, identity, bytes, this.metadata(ctx), { deadline: this.deadline(ctx) });
    ctx.signal.addEventListener('abort', () => call.cancel(), { once: true });
    try {
      for await (const message of call as AsyncIterable<Buffer>) yield fromBinary(method.output, message);
    } catch (error) {
      throw this.connectError(error as GrpcError);
    } finally {
      call.cancel();
    }
  }

  private metadata(ctx: HandlerContext): Metadata {
    const metadata = new Metadata();
    ctx.requestHeader.forEach((value, name) => {
      if (FORWARDED_HEADER.test(name)) metadata.set(name, value);
    });
    return metadata;
  }

  private deadline(ctx: HandlerContext): number {
    return Date.now() + (ctx.timeoutMs() ?? this.defaultDeadlineMs);
  }

  /** The gRPC status as a Connect error: same code, message and details (ErrorInfo, BadRequest). */
  private connectError(error: GrpcError): ConnectError {
    const raw = error.metadata?.get(STATUS_DETAILS_KEY)[0];
    const details: { desc: DescMessage; value: never }[] = [];
    if (raw !== undefined) {
      try {
        const status = Status.decode(typeof raw === 'string' ? Buffer.from(raw, 'binary') : raw);
        for (const any of status.details) {
          const desc = this.registry.getMessage(any.typeUrl.startsWith(TYPE_URL_PREFIX) ? any.typeUrl.slice(TYPE_URL_PREFIX.length) : any.typeUrl);
          if (desc) details.push({ desc, value: fromBinary(desc, any.value) as never });
        }
      } catch {
        // Undecodable details: the code and message still reach the caller.
      }
    }
    // grpc-js codes and Connect codes are the same numbers (both are the canonical gRPC codes).
    return new ConnectError(error.details ?? error.message, error.code as number as ConnectCode, undefined, details);
  }
}

function path(method: DescMethod): string {
  return `/${method.parent.typeName}/${method.name}`;
}
