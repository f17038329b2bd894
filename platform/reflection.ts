/**
 * gRPC server reflection (grpc.reflection.v1 and v1alpha) that serves the compiled descriptors
 * exactly as `buf build` wrote them into gen/descriptors.binpb: each FileDescriptorProto byte for
 * byte, under its own name, with its imports, options and comments.
 *
 * Why not @grpc/reflection: it takes a @grpc/proto-loader package definition, and that round
 * trip through protobuf.js drops every file's `dependency` list, merges files per package, sets
 * `map_entry` on the wrong messages and loses source info, so grpcurl, `buf curl`, python's
 * grpcio and every other strict client fail on `describe` and every call (grpc/grpc-node
 * #2595, #2958, #3018; fullstorydev/grpcurl#519). No library serves a descriptor set for grpc-js,
 * so this small module does, reading the set with @bufbuild/protobuf.
 *
 * As grpc-go does, a file answer carries the file and every transitive import not yet sent on
 * the same stream, dependencies first.
 */
import { readFileSync } from 'node:fs';
import type { ServerDuplexStream, ServiceDefinition, UntypedServiceImplementation } from '@grpc/grpc-js';
import { fromBinary } from '@bufbuild/protobuf';
import { BinaryReader, WireType } from '@bufbuild/protobuf/wire';
import { FileDescriptorProtoSchema, type DescriptorProto, type FileDescriptorProto } from '@bufbuild/protobuf/wkt';
import {
  ServerReflectionService as ReflectionV1,
  type ServerReflectionRequest,
  type ServerReflectionResponse,
} from '../gen/grpc/reflection/v1/reflection';
import { ServerReflectionService as ReflectionV1Alpha } from '../gen/grpc/reflection/v1alpha/reflection';
import { invariant } from './invariant';
import { projectPath } from './paths';

/** grpc status codes used in ErrorResponse.error_code (reflection.proto says they are grpc codes). */
const NOT_FOUND = 5;
const INVALID_ARGUMENT = 3;
const UNIMPLEMENTED = 12;

interface IndexedFile {
  readonly name: string;
  /** The FileDescriptorProto exactly as it stands in the descriptor set. */
  readonly bytes: Buffer;
  readonly dependencies: readonly string[];
}

/** The files of a FileDescriptorSet, and which file defines each symbol and extension. */
export class DescriptorIndex {
  private readonly files = new Map<string, IndexedFile>();
  private readonly fileOfSymbol = new Map<string, string>();
  /** `<extendee full name>` → extension number → file. */
  private readonly extensions = new Map<string, Map<number, string>>();
  private readonly serviceNames: string[] = [];

  constructor(descriptorSet: Uint8Array) {
    // FileDescriptorSet is `repeated FileDescriptorProto file = 1`: each file's bytes are read
    // as they stand, never decoded and encoded again.
    const reader = new BinaryReader(descriptorSet);
    while (reader.pos < reader.len) {
      const [fieldNo, wireType] = reader.tag();
      if (fieldNo !== 1 || wireType !== WireType.LengthDelimited) {
        reader.skip(wireType);
        continue;
      }
      const bytes = Buffer.from(reader.bytes());
      this.add(bytes, fromBinary(FileDescriptorProtoSchema, bytes));
    }
  }

  static fromFile(path = projectPath('gen', 'descriptors.binpb')): DescriptorIndex {
    return new DescriptorIndex(readFileSync(path));
  }

  /** Every service of every file, fully qualified. */
  services(): readonly string[] {
    return this.serviceNames;
  }

  hasFile(name: string): boolean {
    return this.files.has(name);
  }

  /** The file that defines a package-qualified symbol (service, method, message, field, enum, enum value). */
  fileContainingSymbol(symbol: string): string | undefined {
    return this.fileOfSymbol.get(symbol.replace(/^\./, ''));
  }

  fileContainingExtension(extendee: string, number: number): string | undefined {
    return this.extensions.get(extendee.replace(/^\./, ''))?.get(number);
  }

  extensionNumbers(extendee: string): number[] | undefined {
    const numbers = this.extensions.get(extendee.replace(/^\./, ''));
    return numbers && [...numbers.keys()].sort((a, b) => a - b);
  }

  /** `name` and its transitive imports that are not in `sent`, imports first; adds them to `sent`. */
  withImports(name: string, sent: Set<string>): Buffer[] {
    const out: Buffer[] = [];
    const visit = (fileName: string, depth: number) => {
      invariant(depth <= this.files.size, 'an import chain is longer than the number of files (an import cycle)');
      if (sent.has(fileName)) return;
      const file = this.files.get(fileName);
      invariant(file !== undefined, `the descriptor set holds every import (missing ${fileName})`);
      sent.add(fileName);
      for (const dependency of file.dependencies) visit(dependency, depth + 1);
      out.push(file.bytes);
    };
    visit(name, 0);
    return out;
  }

  private add(bytes: Buffer, file: FileDescriptorProto): void {
    invariant(!this.files.has(file.name), `each file is in the descriptor set once (${file.name})`);
    this.files.set(file.name, { name: file.name, bytes, dependencies: file.dependency });
    const prefix = file.package === '' ? '' : `${file.package}.`;
    const define = (symbol: string) => this.fileOfSymbol.set(symbol, file.name);
    const addMessage = (message: DescriptorProto, scope: string) => {
      const full = `${scope}${message.name}`;
      define(full);
      for (const field of message.field) define(`${full}.${field.name}`);
      for (const oneof of message.oneofDecl) define(`${full}.${oneof.name}`);
      for (const nested of message.nestedType) addMessage(nested, `${full}.`);
      for (const e of message.enumType) addEnum(e.name, e.value, `${full}.`);
      for (const extension of message.extension) this.addExtension(extension.extendee, extension.number, file.name, `${full}.${extension.name}`);
    };
    // Enum values are scoped like their enum's siblings (C++ scoping rules), as protoc resolves them.
    const addEnum = (name: string, values: readonly { name: string }[], scope: string) => {
      define(`${scope}${name}`);
      for (const value of values) define(`${scope}${value.name}`);
    };
    for (const message of file.messageType) addMessage(message, prefix);
    for (const e of file.enumType) addEnum(e.name, e.value, prefix);
    for (const service of file.service) {
      const full = `${prefix}${service.name}`;
      define(full);
      this.serviceNames.push(full);
      for (const method of service.method) define(`${full}.${method.name}`);
    }
    for (const extension of file.extension) this.addExtension(extension.extendee, extension.number, file.name, `${prefix}${extension.name}`);
  }

  private addExtension(extendee: string, number: number, fileName: string, symbol: string): void {
    this.fileOfSymbol.set(symbol, fileName);
    const key = extendee.replace(/^\./, '');
    let numbers = this.extensions.get(key);
    if (!numbers) this.extensions.set(key, (numbers = new Map()));
    numbers.set(number, fileName);
  }
}

/**
 * The reflection service for a server that serves `services` (fully qualified names): only those
 * are listed, but any file of the set can be fetched (a client resolving imports needs them).
 */
export class ReflectionServer {
  constructor(
    private readonly index: DescriptorIndex,
    private readonly services: readonly string[],
  ) {
    for (const service of services) invariant(index.fileContainingSymbol(service) !== undefined, `the descriptor set defines ${service}`);
  }

  /** The answer to one request; `sent` holds the files already sent on this stream. */
  answer(request: ServerReflectionRequest, sent: Set<string>): ServerReflectionResponse {
    const response = (messageResponse: ServerReflectionResponse['messageResponse']): ServerReflectionResponse => ({
      validHost: request.host,
      originalRequest: request,
      messageResponse,
    });
    const error = (errorCode: number, errorMessage: string) => response({ $case: 'errorResponse', value: { errorCode, errorMessage } });
    const files = (name: string | undefined, what: string) =>
      name === undefined
        ? error(NOT_FOUND, `${what} not found`)
        : response({ $case: 'fileDescriptorResponse', value: { fileDescriptorProto: this.index.withImports(name, sent) } });
    const asked = request.messageRequest;
    switch (asked?.$case) {
      case 'listServices':
        return response({ $case: 'listServicesResponse', value: { service: [...this.services].sort().map((name) => ({ name })) } });
      case 'fileByFilename':
        return files(this.index.hasFile(asked.value) ? asked.value : undefined, `file ${JSON.stringify(asked.value)}`);
      case 'fileContainingSymbol':
        return files(this.index.fileContainingSymbol(asked.value), `symbol ${JSON.stringify(asked.value)}`);
      case 'fileContainingExtension':
        return files(
          this.index.fileContainingExtension(asked.value.containingType, asked.value.extensionNumber),
          `extension ${asked.value.extensionNumber} of ${JSON.stringify(asked.value.containingType)}`,
        );
      case 'allExtensionNumbersOfType': {
        const numbers = this.index.extensionNumbers(asked.value);
        if (numbers === undefined && this.index.fileContainingSymbol(asked.value) === undefined) {
          return error(NOT_FOUND, `type ${JSON.stringify(asked.value)} not found`);
        }
        return response({ $case: 'allExtensionNumbersResponse', value: { baseTypeName: asked.value, extensionNumber: numbers ?? [] } });
      }
      case undefined:
        return error(INVALID_ARGUMENT, 'the request names nothing to reflect on');
      default:
        return error(UNIMPLEMENTED, 'unknown reflection request');
    }
  }

  /** The grpc-js handler: one answer per request, files tracked per stream. */
  private handler() {
    return (call: ServerDuplexStream<ServerReflectionRequest, ServerReflectionResponse>) => {
      const sent = new Set<string>();
      call.on('data', (request: ServerReflectionRequest) => call.write(this.answer(request, sent)));
      call.on('end', () => call.end());
      call.on('error', () => undefined);
    };
  }

  /** Both protocol versions' definitions with their implementations, for `server.addService`. */
  definitions(): { definition: ServiceDefinition; implementation: UntypedServiceImplementation }[] {
    const implementation = { serverReflectionInfo: this.handler() };
    return [
      { definition: ReflectionV1 as ServiceDefinition, implementation },
      // v1alpha's messages are the same on the wire; its codecs come from its own generated file.
      { definition: ReflectionV1Alpha as unknown as ServiceDefinition, implementation },
    ];
  }
}

let sharedIndex: DescriptorIndex | undefined;

/** gen/descriptors.binpb, read once per process. */
export function compiledDescriptors(): DescriptorIndex {
  return (sharedIndex ??= DescriptorIndex.fromFile());
}
