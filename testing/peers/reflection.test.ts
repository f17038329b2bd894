/**
 * Reflection, proven by clients nobody here wrote: `buf curl` (Go's gRPC stack and strict
 * descriptor handling, as grpcurl and grpcui use), Debian's python3-grpcio (the C-core runtime)
 * with a descriptor pool built from reflection alone, and @bufbuild/protobuf's createFileRegistry.
 * Each service is listed, described and called through what reflection serves, health included.
 * Under CI=true a missing peer fails instead of skipping.
 */
import { execFile, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { createFileRegistry, fromBinary } from '@bufbuild/protobuf';
import { FileDescriptorSetSchema } from '@bufbuild/protobuf/wkt';
import { expect } from 'chai';
import { projectPath } from '../../platform/paths';
import type { RunningService } from '../../platform/server';
import { SERVICES } from '../../scripts/services';
import { address, startTestService, testKeys } from '../harness';
import { fileDescriptorSet, filesContainingSymbol, listServices } from '../reflection-client';
import { skipOrFailInCi } from '../require-tool';

const run = promisify(execFile);
const BUF = projectPath('node_modules', '.bin', 'buf');
const PYTHON = '/usr/bin/python3';
const PYTHON_CLIENT = join(__dirname, 'grpc_reflection_client.py');
const PROTO_DIR = projectPath('proto');

/** One call per service that succeeds with a fresh database, and what its answer must hold. */
const CALLS: Record<string, { method: string; body: object; expect: (answer: Record<string, unknown>) => void }> = {
  credits: {
    method: 'shieldx.credits.v1.CreditsService/TopUp',
    body: {
      tenant_id: 'peer-tenant',
      amount: '1000',
      idempotency_key: 'peer-topup-1',
      payment: { card_number: '4242424242424242', expiry_month: 12, expiry_year: 2030, cardholder_name: 'Ada' },
    },
    // The second peer sends the same key: the first answer, replayed.
    expect: (answer) => expect(answer.account).to.deep.include({ tenantId: 'peer-tenant', balance: '1000', available: '1000' }),
  },
  shadow: {
    method: 'shieldx.shadow.v1.ShadowService/ListEvaluations',
    body: { page_size: 5 },
    // No evaluation yet: proto3 JSON leaves the empty list out; nothing else may be there.
    expect: (answer) => expect(Object.keys(answer).filter((k) => k !== 'evaluations' && k !== 'nextPageToken')).to.deep.equal([]),
  },
  camouflage: {
    method: 'shieldx.camouflage.v1.CamouflageService/Assess',
    body: { client_ip: '203.0.113.7', method: 'GET', path: '/.env', user_agent: 'sqlmap/1.7', session_key: 'peer-1' },
    expect: (answer) => expect(answer.tier).to.equal('THREAT_TIER_ATTACK'),
  },
};

describe('reflection, through peers we did not write', function () {
  this.timeout(180_000);
  const services: RunningService[] = [];

  before(async () => {
    for (const entry of SERVICES) services.push(await startTestService(entry.load()));
  });
  after(async () => {
    await Promise.all(services.map((s) => s.shutdown()));
  });

  const grpcServiceName = (s: RunningService) => `shieldx.${s.name}.v1.${s.name[0]!.toUpperCase()}${s.name.slice(1)}Service`;

  describe('buf curl (Go)', () => {
    before(function () {
      if (!existsSync(BUF)) skipOrFailInCi(this, 'node_modules/.bin/buf is missing (a devDependency: run npm ci)');
    });
    const buf = async (service: RunningService, args: string[]) =>
      (await run(BUF, ['curl', '--protocol', 'grpc', '--http2-prior-knowledge', ...args], { timeout: 60_000 })).stdout;

    // --list-services and --list-methods read reflection only; Health/Check and one method of the
    // service are called with the schema reflection gave.
    it('lists, describes and calls each service, health included', async () => {
      for (const service of services) {
        const base = `http://${address(service)}`;
        const listed = (await buf(service, ['--list-services', base])).trim().split('\n').sort();
        expect(listed, service.name).to.deep.equal(['grpc.health.v1.Health', grpcServiceName(service)]);
        // Older clients speak grpc.reflection.v1alpha: the same answers.
        const alpha = (await buf(service, ['--reflect-protocol', 'grpc-v1alpha', '--list-services', base])).trim().split('\n').sort();
        expect(alpha, `${service.name} v1alpha`).to.deep.equal(listed);
        const methods = (await buf(service, ['--list-methods', base])).trim().split('\n');
        expect(methods, service.name).to.include(`${CALLS[service.name]!.method}`);
        const health = JSON.parse(await buf(service, [`${base}/grpc.health.v1.Health/Check`])) as { status: string };
        expect(health.status, service.name).to.equal('SERVING');
        const call = CALLS[service.name]!;
        const key = testKeys.admin.key;
        const answer = JSON.parse(await buf(service, ['-H', `authorization: Bearer ${key}`, '-d', JSON.stringify(call.body), `${base}/${call.method}`]));
        call.expect(answer);
      }
    });
  });

  describe('python3-grpcio (C-core)', () => {
    before(function () {
      const probe = spawnSync(PYTHON, ['-c', 'import grpc, grpc_tools, google.protobuf'], { encoding: 'utf8' });
      if (probe.status !== 0) skipOrFailInCi(this, `${PYTHON} cannot import grpc, grpc_tools and google.protobuf (apt-get install python3-grpcio python3-protobuf python3-grpc-tools)`);
    });
    const python = async (service: RunningService, args: string[]) => {
      const { stdout } = await run(PYTHON, [PYTHON_CLIENT, address(service), PROTO_DIR, ...args], { timeout: 60_000 });
      return JSON.parse(stdout) as Record<string, unknown>;
    };

    // The C-core client builds a strict descriptor pool from reflection alone (every import served
    // under its own name), then calls Health/Check and one method of each service.
    it('builds its descriptor pool from reflection and calls each service', async () => {
      for (const service of services) {
        expect((await python(service, ['list'])).services, service.name).to.have.members(['grpc.health.v1.Health', grpcServiceName(service)]);
        const described = await python(service, ['describe', grpcServiceName(service)]);
        expect(described.files, service.name).to.include(`shieldx/${service.name}/v1/${service.name}.proto`);
        const health = await python(service, ['call', 'grpc.health.v1.Health/Check', '{}']);
        expect(health, service.name).to.deep.equal({ ok: true, response: { status: 'SERVING' } });
        const call = CALLS[service.name]!;
        const answer = await python(service, ['call', call.method, JSON.stringify(call.body), testKeys.admin.key]);
        expect(answer.ok, `${service.name}: ${JSON.stringify(answer)}`).to.equal(true);
        call.expect(answer.response as Record<string, unknown>);
      }
    });
  });

  describe('@bufbuild/protobuf createFileRegistry', () => {
    // Every file reflection sends for a service resolves: its imports were all sent, each file
    // once under its own name, and the messages, enums and services are where they belong.
    it('accepts every file served, with all imports resolvable', async () => {
      for (const service of services) {
        for (const symbol of [grpcServiceName(service), 'grpc.health.v1.Health']) {
          const files = await filesContainingSymbol(address(service), symbol);
          const set = fromBinary(FileDescriptorSetSchema, fileDescriptorSet(files));
          const names = set.file.map((f) => f.name);
          expect(new Set(names).size, `${symbol}: each file once`).to.equal(names.length);
          const registry = createFileRegistry(set);
          expect(registry.getService(symbol), symbol).to.not.equal(undefined);
        }
      }
    });
  });
});
