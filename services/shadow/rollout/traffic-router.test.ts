import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { parse, parseAllDocuments } from 'yaml';
import type { RouteTarget } from '../domain/rollout-spec';
import { FileTrafficRouter, RouterConfigError, weightsFor, withWeights } from './traffic-router';
import { expectValidVirtualService } from '../../../testing/traffic-router-kit';

const target: RouteTarget = {
  namespace: 'shieldx',
  virtualService: 'credits',
  host: 'credits.shieldx.svc.cluster.local',
  stableSubset: 'stable',
  canarySubset: 'canary',
  routeName: 'primary',
};

// Shaped like mesh/istio/virtual-services.yaml, with a second route and a second document.
const MANIFEST = `# Managed weights: see the rollout controller.
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: credits
  namespace: shieldx
  labels:
    shieldx.io/rollout-managed: "true"
spec:
  hosts:
    - credits.shieldx.svc.cluster.local
  http:
    - name: admin
      match:
        - uri:
            prefix: /admin
      route:
        - destination:
            host: credits.shieldx.svc.cluster.local
            subset: stable
          weight: 100
    - name: primary # the canary split
      route:
        - destination:
            host: credits.shieldx.svc.cluster.local
            subset: stable
            port:
              number: 5004
          weight: 100
        - destination:
            host: credits.shieldx.svc.cluster.local
            subset: canary
            port:
              number: 5004
          weight: 0
      retries:
        attempts: 2
        retryOn: connect-failure,refused-stream,unavailable
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: other
  namespace: shieldx
spec:
  hosts: [other]
  http:
    - name: primary
      route:
        - destination: { host: other, subset: stable }
          weight: 100
`;

describe('file traffic router', () => {
  let dir: string;
  let router: FileTrafficRouter;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'shieldx-vs-'));
    router = new FileTrafficRouter(dir);
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  // Only the named route's weights change; comments, other routes, fields and documents survive, and the result is a valid VirtualService.
  it('sets the weights of the named route and preserves everything else', async () => {
    writeFileSync(router.pathFor(target), MANIFEST);
    await router.setWeights(target, { stable: 75, canary: 25 });
    const text = readFileSync(router.pathFor(target), 'utf8');
    expect(text).to.contain('# Managed weights: see the rollout controller.');
    expect(text).to.contain('# the canary split');
    const documents = parseAllDocuments(text).map((doc) => doc.toJS());
    expect(documents).to.have.length(2);
    const [credits, other] = documents;
    const before = parseAllDocuments(MANIFEST).map((doc) => doc.toJS());
    const expected = structuredClone(before[0]);
    expected.spec.http[1].route[0].weight = 75;
    expected.spec.http[1].route[1].weight = 25;
    expect(credits).to.deep.equal(expected);
    expect(other).to.deep.equal(before[1]);
    expectValidVirtualService(credits);
    expectValidVirtualService(other);
  });

  // Setting the weights already in place does not rewrite the file.
  it('is idempotent', async () => {
    writeFileSync(router.pathFor(target), MANIFEST);
    await router.setWeights(target, { stable: 50, canary: 50 });
    const first = readFileSync(router.pathFor(target), 'utf8');
    const { mtimeMs, ino } = statSync(router.pathFor(target));
    await new Promise((resolve) => setTimeout(resolve, 20));
    await router.setWeights(target, { stable: 50, canary: 50 });
    expect(readFileSync(router.pathFor(target), 'utf8')).to.equal(first);
    expect(statSync(router.pathFor(target))).to.include({ mtimeMs, ino });
  });

  // Fencing (issue 18 #4): a manifest last written in a newer lease epoch is never overwritten by an older one, a
  // write whose epoch is no longer current (asked right before the rename) writes nothing, and a fenced write records its epoch.
  it('refuses writes from an older or lost lease epoch', async () => {
    const write = router.setWeights as (...args: unknown[]) => Promise<unknown>;
    writeFileSync(router.pathFor(target), MANIFEST);
    await write.call(router, target, { stable: 75, canary: 25 }, { epoch: 7, isCurrent: async () => true });
    const stamped = parseAllDocuments(readFileSync(router.pathFor(target), 'utf8'))[0]!.toJS();
    expect(stamped.metadata.annotations['shieldx.io/rollout-epoch']).to.equal('7');
    const text = readFileSync(router.pathFor(target), 'utf8');
    let error: unknown;
    await write.call(router, target, { stable: 50, canary: 50 }, { epoch: 6, isCurrent: async () => true }).catch((e: unknown) => (error = e));
    expect((error as Error | undefined)?.name).to.equal('RouterFencedError');
    expect(readFileSync(router.pathFor(target), 'utf8')).to.equal(text);
    error = undefined;
    await write.call(router, target, { stable: 50, canary: 50 }, { epoch: 7, isCurrent: async () => false }).catch((e: unknown) => (error = e));
    expect((error as Error | undefined)?.name).to.equal('RouterFencedError');
    expect(readFileSync(router.pathFor(target), 'utf8')).to.equal(text);
  });

  // Without a manifest, the router writes a complete, valid VirtualService for the target.
  it('creates the manifest when missing', async () => {
    await router.setWeights(target, weightsFor(5));
    const created = parse(readFileSync(router.pathFor(target), 'utf8'));
    expectValidVirtualService(created);
    expect(created).to.deep.include({ apiVersion: 'networking.istio.io/v1', kind: 'VirtualService', metadata: { name: 'credits', namespace: 'shieldx' } });
    expect(created.spec.http[0].name).to.equal('primary');
    expect(created.spec.http[0].route.map((r: { destination: { subset: string }; weight: number }) => [r.destination.subset, r.weight])).to.deep.equal([
      ['stable', 95],
      ['canary', 5],
    ]);
  });

  // A route or subset the rollout needs but the manifest lacks is a RouterConfigError, and the file is left alone.
  it('refuses a manifest without the route or subsets', async () => {
    writeFileSync(router.pathFor(target), MANIFEST);
    for (const bad of [
      { ...target, routeName: 'missing' },
      { ...target, canarySubset: 'v2' },
      { ...target, virtualService: 'credits', namespace: 'shieldx', stableSubset: 'v1' },
    ]) {
      let error: unknown;
      await router.setWeights(bad, { stable: 50, canary: 50 }).catch((e: unknown) => (error = e));
      expect(error).to.be.instanceOf(RouterConfigError);
    }
    expect(readFileSync(router.pathFor(target), 'utf8')).to.equal(MANIFEST);
  });

  // A route that also sends traffic to a third subset cannot be split two ways: refused.
  it('refuses a route with a third destination', () => {
    const vs = parse(MANIFEST.split('---')[0]!);
    vs.spec.http[1].route.push({ destination: { host: 'x', subset: 'mirror' }, weight: 0 });
    expect(() => withWeights(vs, target, { stable: 50, canary: 50 })).to.throw(RouterConfigError, /mirror/);
  });

  // Weights outside 0..100 or not summing to 100 never reach a manifest.
  it('rejects impossible weights', async () => {
    expect(() => weightsFor(101)).to.throw(RangeError);
    expect(() => weightsFor(2.5)).to.throw(RangeError);
    let error: unknown;
    await router.setWeights(target, { stable: 60, canary: 60 }).catch((e: unknown) => (error = e));
    expect(error).to.be.instanceOf(RangeError);
  });
});
