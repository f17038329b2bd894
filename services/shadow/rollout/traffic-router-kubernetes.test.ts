import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { KubeConfig } from '@kubernetes/client-node';
import { expect } from 'chai';
import type { RouteTarget } from '../domain/rollout-spec';
import { RouterConfigError } from './traffic-router';
import { KubernetesTrafficRouter, RouterConflictError } from './traffic-router-kubernetes';
import { expectValidVirtualService } from '../../../testing/traffic-router-kit';

const TOKEN = 'test-service-account-token';
const PATH = '/apis/networking.istio.io/v1/namespaces/shieldx/virtualservices/credits';

const target: RouteTarget = {
  namespace: 'shieldx',
  virtualService: 'credits',
  host: 'credits.shieldx.svc.cluster.local',
  stableSubset: 'stable',
  canarySubset: 'canary',
  routeName: 'primary',
};

type Json = Record<string, any>;

function storedVirtualService(): Json {
  return {
    apiVersion: 'networking.istio.io/v1',
    kind: 'VirtualService',
    metadata: {
      name: 'credits',
      namespace: 'shieldx',
      uid: '6d1f3b2c-0000-4000-8000-000000000001',
      resourceVersion: '1000',
      generation: 3,
      labels: { 'shieldx.io/rollout-managed': 'true' },
      annotations: { 'kubectl.kubernetes.io/last-applied-configuration': '{}' },
    },
    spec: {
      hosts: ['credits.shieldx.svc.cluster.local'],
      http: [
        {
          name: 'admin',
          match: [{ uri: { prefix: '/admin' } }],
          route: [{ destination: { host: 'credits.shieldx.svc.cluster.local', subset: 'stable' }, weight: 100 }],
        },
        {
          name: 'primary',
          route: [
            { destination: { host: 'credits.shieldx.svc.cluster.local', subset: 'stable', port: { number: 5004 } }, weight: 100 },
            { destination: { host: 'credits.shieldx.svc.cluster.local', subset: 'canary', port: { number: 5004 } }, weight: 0 },
          ],
          retries: { attempts: 2, retryOn: 'connect-failure,refused-stream,unavailable' },
        },
      ],
    },
  };
}

interface Logged {
  method: string;
  path: string;
  status: number;
  resourceVersion?: string;
}

/**
 * A stand-in for the API server's custom-resource endpoint that enforces the
 * Kubernetes API conventions the router must follow, answering 400/404/405/415
 * (and recording a violation) otherwise: bearer auth, JSON in and out, GET and
 * PUT on the object path only, a PUT body of the same kind/name/namespace with
 * metadata.resourceVersion, and 409 Conflict (a Status object) on a stale one.
 */
class FakeApiServer {
  object: Json | undefined = storedVirtualService();
  readonly log: Logged[] = [];
  readonly violations: string[] = [];
  /** Called between a GET and the next PUT: simulates another writer. */
  onAfterGet: ((object: Json) => void) | undefined;
  private server!: Server;
  private revision = 1000;

  async start(): Promise<string> {
    this.server = createServer((req, res) => {
      void this.handle(req).then(({ status, body }) => {
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(body));
      });
    });
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  stop(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  bump(object: Json): void {
    this.revision += 1;
    object.metadata.resourceVersion = String(this.revision);
    object.metadata.generation += 1;
  }

  private status(code: number, reason: string, message: string) {
    return { status: code, body: { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code } };
  }

  private violation(code: number, reason: string, message: string) {
    this.violations.push(message);
    return this.status(code, reason, message);
  }

  private async handle(req: IncomingMessage): Promise<{ status: number; body: unknown }> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const url = new URL(req.url ?? '/', 'http://localhost');
    const result = await this.route(req, url, Buffer.concat(chunks).toString('utf8'));
    this.log.push({ method: req.method ?? '', path: url.pathname, status: result.status, resourceVersion: (result.body as Json)?.metadata?.resourceVersion });
    return result;
  }

  private async route(req: IncomingMessage, url: URL, raw: string): Promise<{ status: number; body: unknown }> {
    if (req.headers.authorization !== `Bearer ${TOKEN}`) return this.violation(401, 'Unauthorized', 'missing bearer token');
    if (url.pathname !== PATH) return this.violation(404, 'NotFound', `unexpected path ${url.pathname}`);
    if (!String(req.headers.accept ?? '').includes('application/json')) return this.violation(406, 'NotAcceptable', 'client must accept application/json');
    if (req.method === 'GET') {
      if (raw !== '') return this.violation(400, 'BadRequest', 'GET with a body');
      if (!this.object) return this.status(404, 'NotFound', 'virtualservices.networking.istio.io "credits" not found');
      const copy = structuredClone(this.object);
      this.onAfterGet?.(this.object);
      return { status: 200, body: copy };
    }
    if (req.method !== 'PUT') return this.violation(405, 'MethodNotAllowed', `unexpected verb ${req.method}`);
    if (!String(req.headers['content-type'] ?? '').startsWith('application/json')) {
      return this.violation(415, 'UnsupportedMediaType', `PUT content type ${req.headers['content-type']}`);
    }
    if (url.searchParams.get('fieldManager') !== 'shieldx-rollout-controller') return this.violation(400, 'BadRequest', 'PUT without our fieldManager');
    let body: Json;
    try {
      body = JSON.parse(raw) as Json;
    } catch {
      return this.violation(400, 'BadRequest', 'PUT body is not JSON');
    }
    if (body.apiVersion !== 'networking.istio.io/v1' || body.kind !== 'VirtualService') return this.violation(400, 'BadRequest', 'wrong apiVersion/kind');
    if (body.metadata?.name !== 'credits' || body.metadata?.namespace !== 'shieldx') return this.violation(400, 'BadRequest', 'body name/namespace differ from the path');
    if (typeof body.metadata?.resourceVersion !== 'string') return this.violation(422, 'Invalid', 'PUT without metadata.resourceVersion');
    if (!this.object) return this.status(404, 'NotFound', 'gone');
    if (body.metadata.resourceVersion !== this.object.metadata.resourceVersion) {
      return this.status(
        409,
        'Conflict',
        'Operation cannot be fulfilled on virtualservices.networking.istio.io "credits": the object has been modified; please apply your changes to the latest version and try again',
      );
    }
    // Server-managed fields must come back unchanged.
    if (body.metadata.uid !== this.object.metadata.uid) return this.violation(422, 'Invalid', 'uid changed');
    const stored = structuredClone(body);
    this.bump(stored);
    this.object = stored;
    return { status: 200, body: structuredClone(stored) };
  }
}

function kubeConfigFor(server: string): KubeConfig {
  const config = new KubeConfig();
  config.loadFromOptions({
    clusters: [{ name: 'test', server, skipTLSVerify: true }],
    users: [{ name: 'test', token: TOKEN }],
    contexts: [{ name: 'test', cluster: 'test', user: 'test', namespace: 'shieldx' }],
    currentContext: 'test',
  });
  return config;
}

describe('Kubernetes traffic router', () => {
  let api: FakeApiServer;
  let router: KubernetesTrafficRouter;

  beforeEach(async () => {
    api = new FakeApiServer();
    router = new KubernetesTrafficRouter(kubeConfigFor(await api.start()), { maxAttempts: 3 });
  });
  afterEach(() => api.stop());

  // GET then PUT of the whole object at the read resourceVersion: only the named route's weights change; the result is a valid VirtualService.
  it('replaces the object with new weights, keeping every other field', async () => {
    const before = structuredClone(api.object!);
    await router.setWeights(target, { stable: 75, canary: 25 });
    expect(api.violations).to.deep.equal([]);
    expect(api.log.map((l) => [l.method, l.path, l.status])).to.deep.equal([
      ['GET', PATH, 200],
      ['PUT', PATH, 200],
    ]);
    const expected = structuredClone(before);
    expected.spec.http[1].route[0].weight = 75;
    expected.spec.http[1].route[1].weight = 25;
    expected.metadata.resourceVersion = '1001';
    expected.metadata.generation = 4;
    expect(api.object).to.deep.equal(expected);
    expectValidVirtualService(api.object);
  });

  // A concurrent edit between our GET and PUT yields 409; the router re-reads and retries, and the other writer's edit survives.
  it('retries on 409 Conflict without clobbering a concurrent edit', async () => {
    let edits = 0;
    api.onAfterGet = (object) => {
      if (edits++ > 0) return;
      object.spec.http[0].route[0].weight = 100;
      object.spec.http[0].timeout = '5s';
      object.metadata.labels.team = 'payments';
      api.bump(object);
    };
    await router.setWeights(target, { stable: 50, canary: 50 });
    expect(api.violations).to.deep.equal([]);
    expect(api.log.map((l) => [l.method, l.status])).to.deep.equal([
      ['GET', 200],
      ['PUT', 409],
      ['GET', 200],
      ['PUT', 200],
    ]);
    expect(api.object!.spec.http[0].timeout).to.equal('5s');
    expect(api.object!.metadata.labels.team).to.equal('payments');
    expect(api.object!.spec.http[1].route.map((r: Json) => r.weight)).to.deep.equal([50, 50]);
    expectValidVirtualService(api.object);
  });

  // Conflicts on every attempt end in RouterConflictError after the bound (GET+PUT per attempt), nothing written.
  it('gives up after a bounded number of conflicts', async () => {
    api.onAfterGet = (object) => api.bump(object);
    const before = api.object!.spec;
    let error: unknown;
    await router.setWeights(target, { stable: 50, canary: 50 }).catch((e: unknown) => (error = e));
    expect(error).to.be.instanceOf(RouterConflictError);
    expect(api.log.filter((l) => l.method === 'PUT').map((l) => l.status)).to.deep.equal([409, 409, 409]);
    expect(api.object!.spec).to.deep.equal(before);
  });

  // Weights already in place: a GET and no write at all.
  it('does not write when the weights are already set', async () => {
    await router.setWeights(target, { stable: 100, canary: 0 });
    expect(api.log.map((l) => l.method)).to.deep.equal(['GET']);
  });

  // A missing VirtualService or route is a RouterConfigError (the router never creates objects).
  it('reports a missing object or route as a configuration error', async () => {
    let error: unknown;
    await router.setWeights({ ...target, routeName: 'nope' }, { stable: 50, canary: 50 }).catch((e: unknown) => (error = e));
    expect(error).to.be.instanceOf(RouterConfigError);
    api.object = undefined;
    error = undefined;
    await router.setWeights(target, { stable: 50, canary: 50 }).catch((e: unknown) => (error = e));
    expect(error).to.be.instanceOf(RouterConfigError);
    expect((error as Error).message).to.contain('not found');
    expect(api.log.every((l) => l.method === 'GET')).to.equal(true);
  });

  // Fencing (issue 18 #4): the write carries the lease epoch it was decided in. A successor (newer epoch) writes between
  // our GET and PUT: our PUT gets 409, and the retry must not re-apply our stale weights over the successor's.
  it('does not retry a 409 once the lease epoch has moved', async () => {
    // The epoch is current when checked before the PUT; the process then freezes, a successor (epoch 6) writes.
    let epoch = 5;
    let checks = 0;
    const fence = { epoch: 5, isCurrent: async () => checks++ === 0 || epoch === 5 };
    let edits = 0;
    api.onAfterGet = (object) => {
      if (edits++ > 0) return;
      object.spec.http[1].route[0].weight = 25;
      object.spec.http[1].route[1].weight = 75;
      object.metadata.annotations['shieldx.io/rollout-epoch'] = '6';
      api.bump(object);
      epoch = 6;
    };
    let error: unknown;
    await (router.setWeights as (...args: unknown[]) => Promise<unknown>)(target, { stable: 50, canary: 50 }, fence).catch((e: unknown) => (error = e));
    expect(api.violations).to.deep.equal([]);
    expect((error as Error | undefined)?.name).to.equal('RouterFencedError');
    expect(api.log.filter((l) => l.method === 'PUT').map((l) => l.status)).to.deep.equal([409]);
    expect(api.object!.spec.http[1].route.map((r: Json) => r.weight)).to.deep.equal([25, 75]);
  });

  // An object stamped by a newer epoch is never overwritten, even if our lease looks current to us; a fenced write records its epoch.
  it('refuses an object written in a newer epoch and stamps its own', async () => {
    api.object!.metadata.annotations['shieldx.io/rollout-epoch'] = '9';
    let error: unknown;
    const write = router.setWeights as (...args: unknown[]) => Promise<unknown>;
    await write.call(router, target, { stable: 50, canary: 50 }, { epoch: 5, isCurrent: async () => true }).catch((e: unknown) => (error = e));
    expect((error as Error | undefined)?.name).to.equal('RouterFencedError');
    expect(api.log.map((l) => l.method)).to.deep.equal(['GET']);
    await write.call(router, target, { stable: 50, canary: 50 }, { epoch: 10, isCurrent: async () => true });
    expect(api.object!.metadata.annotations['shieldx.io/rollout-epoch']).to.equal('10');
    expect(api.object!.spec.http[1].route.map((r: Json) => r.weight)).to.deep.equal([50, 50]);
    // The epoch is checked against the database right before the PUT: a lost lease writes nothing.
    const puts = api.log.filter((l) => l.method === 'PUT').length;
    error = undefined;
    await write.call(router, target, { stable: 0, canary: 100 }, { epoch: 10, isCurrent: async () => false }).catch((e: unknown) => (error = e));
    expect((error as Error | undefined)?.name).to.equal('RouterFencedError');
    expect(api.log.filter((l) => l.method === 'PUT').length).to.equal(puts);
    expectValidVirtualService(api.object);
  });
});
