/**
 * A client that knows nothing but what server reflection tells it — what
 * grpcurl does: list services, fetch the file descriptors (imports included)
 * and build a working grpc-js client from them.
 */
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { projectPath } from '../platform/paths';

const reflectionProto = projectPath('proto', 'grpc', 'reflection', 'v1', 'reflection.proto');

interface ReflectionResponse {
  listServicesResponse?: { service: { name: string }[] };
  fileDescriptorResponse?: { fileDescriptorProto: Buffer[] };
  errorResponse?: { errorCode: number; errorMessage: string };
}

function reflectionClient(
  address: string,
): grpc.Client & { ServerReflectionInfo(metadata: grpc.Metadata): grpc.ClientDuplexStream<object, ReflectionResponse> } {
  const definition = protoLoader.loadSync(reflectionProto, { keepCase: false, defaults: true, oneofs: true });
  const loaded = grpc.loadPackageDefinition(definition) as unknown as {
    grpc: { reflection: { v1: { ServerReflection: grpc.ServiceClientConstructor } } };
  };
  return new loaded.grpc.reflection.v1.ServerReflection(address, grpc.credentials.createInsecure()) as never;
}

async function ask(address: string, request: object, metadata = new grpc.Metadata()): Promise<ReflectionResponse> {
  const client = reflectionClient(address);
  try {
    return await new Promise<ReflectionResponse>((resolve, reject) => {
      const stream = client.ServerReflectionInfo(metadata);
      stream.once('data', (response: ReflectionResponse) => {
        resolve(response);
        stream.end();
      });
      stream.once('error', reject);
      stream.write(request);
    });
  } finally {
    client.close();
  }
}

/** Reflection's ListServices, with `metadata` (e.g. a bearer key) if given; rejects with the call's error. */
export async function listServices(address: string, metadata?: grpc.Metadata): Promise<string[]> {
  const response = await ask(address, { listServices: '' }, metadata);
  return (response.listServicesResponse?.service ?? []).map((s) => s.name).sort();
}

/** The FileDescriptorProto bytes reflection answers for `symbol` (its file and the imports it sends). */
export async function filesContainingSymbol(address: string, symbol: string, metadata?: grpc.Metadata): Promise<Buffer[]> {
  const response = await ask(address, { fileContainingSymbol: symbol }, metadata);
  if (response.errorResponse) throw new Error(`reflection error ${response.errorResponse.errorCode}: ${response.errorResponse.errorMessage}`);
  return response.fileDescriptorResponse?.fileDescriptorProto ?? [];
}

/** Encodes FileDescriptorProto bytes as a FileDescriptorSet (field 1, repeated). */
export function fileDescriptorSet(files: Buffer[]): Buffer {
  const parts: Buffer[] = [];
  for (const file of files) {
    const length: number[] = [];
    let n = file.length;
    while (n > 0x7f) {
      length.push((n & 0x7f) | 0x80);
      n >>>= 7;
    }
    length.push(n);
    parts.push(Buffer.from([0x0a, ...length]), file);
  }
  return Buffer.concat(parts);
}

/** A grpc-js client constructor for `serviceName`, built from reflection alone. */
export async function clientFromReflection(address: string, serviceName: string): Promise<grpc.ServiceClientConstructor> {
  const response = await ask(address, { fileContainingSymbol: serviceName });
  if (response.errorResponse) throw new Error(`reflection error: ${response.errorResponse.errorMessage}`);
  const files = response.fileDescriptorResponse?.fileDescriptorProto ?? [];
  const definition = protoLoader.loadFileDescriptorSetFromBuffer(fileDescriptorSet(files), {
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  const loaded = grpc.loadPackageDefinition(definition);
  let node: unknown = loaded;
  for (const part of serviceName.split('.')) node = (node as Record<string, unknown>)[part];
  if (typeof node !== 'function') throw new Error(`${serviceName} not found in reflected descriptors`);
  return node as grpc.ServiceClientConstructor;
}
