import { readFileSync } from 'node:fs';
import { fromBinary } from '@bufbuild/protobuf';
import { FileDescriptorProtoSchema, FileDescriptorSetSchema } from '@bufbuild/protobuf/wkt';
import { expect } from 'chai';
import type { ServerReflectionRequest, ServerReflectionResponse } from '../gen/grpc/reflection/v1/reflection';
import { projectPath } from './paths';
import { DescriptorIndex, ReflectionServer } from './reflection';

const SET_BYTES = readFileSync(projectPath('gen', 'descriptors.binpb'));
const SET = fromBinary(FileDescriptorSetSchema, SET_BYTES);
const index = new DescriptorIndex(SET_BYTES);
const server = new ReflectionServer(index, ['shieldx.credits.v1.CreditsService', 'grpc.health.v1.Health']);

const ask = (messageRequest: ServerReflectionRequest['messageRequest'], sent = new Set<string>()): ServerReflectionResponse =>
  server.answer({ host: '', messageRequest }, sent);
const fileNames = (response: ServerReflectionResponse) => {
  if (response.messageResponse?.$case !== 'fileDescriptorResponse') throw new Error(`not a file answer: ${JSON.stringify(response.messageResponse)}`);
  return response.messageResponse.value.fileDescriptorProto.map((bytes) => fromBinary(FileDescriptorProtoSchema, bytes).name);
};
const errorOf = (response: ServerReflectionResponse) => (response.messageResponse?.$case === 'errorResponse' ? response.messageResponse.value : undefined);

describe('platform reflection', () => {
  // Every file of the compiled set is served under its own name, byte for byte as buf wrote it
  // (which keeps imports, options and comments), including the files protobuf.js used to merge.
  it('serves each file of the descriptor set byte for byte under its own name', () => {
    expect(SET.file.map((f) => f.name)).to.include.members([
      'google/protobuf/duration.proto',
      'google/protobuf/timestamp.proto',
      'google/rpc/error_details.proto',
      'google/rpc/status.proto',
      'grpc/health/v1/health.proto',
      'shieldx/credits/v1/credits.proto',
    ]);
    for (const file of SET.file) {
      const response = ask({ $case: 'fileByFilename', value: file.name });
      const served = (response.messageResponse as { value: { fileDescriptorProto: Buffer[] } }).value.fileDescriptorProto;
      const own = served[served.length - 1]!;
      const decoded = fromBinary(FileDescriptorProtoSchema, own);
      expect(decoded.name).to.equal(file.name);
      expect(decoded.dependency).to.deep.equal(file.dependency);
      // Byte for byte: the served bytes occur verbatim in the descriptor set.
      expect(SET_BYTES.includes(own), file.name).to.equal(true);
    }
    const credits = fromBinary(FileDescriptorProtoSchema, (ask({ $case: 'fileByFilename', value: 'shieldx/credits/v1/credits.proto' }).messageResponse as { value: { fileDescriptorProto: Buffer[] } }).value.fileDescriptorProto.at(-1)!);
    expect(credits.dependency).to.include.members(['google/protobuf/timestamp.proto', 'google/rpc/status.proto']);
    expect(credits.sourceCodeInfo?.location.some((l) => l.leadingComments.length > 0), 'comments kept').to.equal(true);
    // No message that merely holds a map is marked as a map entry.
    const transaction = credits.messageType.find((m) => m.name === 'Transaction')!;
    expect(transaction.options?.mapEntry ?? false).to.equal(false);
  });

  // A file answer brings the transitive imports first, and a stream never sends a file twice.
  it('sends imports first, each once per stream', () => {
    const sent = new Set<string>();
    const first = fileNames(ask({ $case: 'fileContainingSymbol', value: 'shieldx.credits.v1.CreditsService' }, sent));
    expect(first.at(-1)).to.equal('shieldx/credits/v1/credits.proto');
    expect(first).to.include.members(['google/protobuf/timestamp.proto', 'google/protobuf/duration.proto', 'google/rpc/status.proto', 'google/protobuf/any.proto']);
    expect(first.indexOf('google/protobuf/any.proto')).to.be.lessThan(first.indexOf('google/rpc/status.proto'));
    expect(new Set(first).size).to.equal(first.length);
    // Asked again on the same stream: nothing new to send; on a new stream: everything again.
    expect(fileNames(ask({ $case: 'fileByFilename', value: 'google/rpc/status.proto' }, sent))).to.deep.equal([]);
    expect(fileNames(ask({ $case: 'fileByFilename', value: 'google/rpc/status.proto' }))).to.deep.equal(['google/protobuf/any.proto', 'google/rpc/status.proto']);
  });

  // Services, methods, messages, nested types, fields, enums and enum values all resolve to their file.
  it('finds the file of every kind of symbol', () => {
    for (const [symbol, file] of [
      ['shieldx.credits.v1.CreditsService', 'shieldx/credits/v1/credits.proto'],
      ['shieldx.credits.v1.CreditsService.Consume', 'shieldx/credits/v1/credits.proto'],
      ['shieldx.credits.v1.ConsumeRequest', 'shieldx/credits/v1/credits.proto'],
      ['shieldx.credits.v1.ConsumeRequest.tenant_id', 'shieldx/credits/v1/credits.proto'],
      ['shieldx.credits.v1.ReservationState', 'shieldx/credits/v1/credits.proto'],
      ['shieldx.credits.v1.RESERVATION_STATE_UNSPECIFIED', 'shieldx/credits/v1/credits.proto'],
      ['grpc.health.v1.Health', 'grpc/health/v1/health.proto'],
      ['grpc.health.v1.HealthCheckResponse.ServingStatus', 'grpc/health/v1/health.proto'],
      ['google.rpc.ErrorInfo', 'google/rpc/error_details.proto'],
      ['.google.protobuf.Duration', 'google/protobuf/duration.proto'],
    ] as const) {
      expect(index.fileContainingSymbol(symbol), symbol).to.equal(file);
    }
  });

  // Only this server's services are listed; unknown names are NOT_FOUND, an empty request INVALID_ARGUMENT.
  it('lists its own services and answers unknown names with NOT_FOUND', () => {
    const listed = ask({ $case: 'listServices', value: '' }).messageResponse;
    expect(listed).to.deep.equal({
      $case: 'listServicesResponse',
      value: { service: [{ name: 'grpc.health.v1.Health' }, { name: 'shieldx.credits.v1.CreditsService' }] },
    });
    expect(errorOf(ask({ $case: 'fileByFilename', value: 'nope.proto' }))).to.deep.equal({ errorCode: 5, errorMessage: 'file "nope.proto" not found' });
    expect(errorOf(ask({ $case: 'fileContainingSymbol', value: 'shieldx.Nope' }))?.errorCode).to.equal(5);
    expect(errorOf(ask({ $case: 'fileContainingExtension', value: { containingType: 'google.protobuf.FileOptions', extensionNumber: 99999 } }))?.errorCode).to.equal(5);
    expect(errorOf(ask(undefined))?.errorCode).to.equal(3);
    expect(ask({ $case: 'allExtensionNumbersOfType', value: 'shieldx.credits.v1.ConsumeRequest' }).messageResponse).to.deep.equal({
      $case: 'allExtensionNumbersResponse',
      value: { baseTypeName: 'shieldx.credits.v1.ConsumeRequest', extensionNumber: [] },
    });
  });

  // A server cannot be built to list a service the compiled set does not define.
  it('refuses to list a service the descriptor set does not define', () => {
    expect(() => new ReflectionServer(index, ['shieldx.nope.v1.NopeService'])).to.throw(/defines shieldx.nope.v1.NopeService/);
  });
});
