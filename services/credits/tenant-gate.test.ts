import { expect } from 'chai';
import { TenantGate } from './tenant-gate';

/** Settles pending promise callbacks (grants resolve through the microtask queue). */
const settle = () => new Promise((resolve) => setImmediate(resolve));

describe('credits tenant gate', () => {
  // A writer gets free tenants at once; a second writer of the same tenant waits for the first one's release.
  it('lets one writer per tenant in at a time', async () => {
    const gate = new TenantGate();
    const first = await gate.acquire(['t1']);
    let second: (() => void) | undefined;
    void gate.acquire(['t1']).then((release) => (second = release));
    await settle();
    expect(second).to.equal(undefined);
    first();
    await settle();
    expect(second).to.be.a('function');
    // A release is idempotent: calling it twice frees nothing held by someone else.
    first();
    expect(gate.available('t1')).to.equal(false);
    second!();
    expect(gate.available('t1')).to.equal(true);
  });

  // The batcher may not take a tenant a writer waits for, so a stream of consume batches cannot starve a top-up.
  it('keeps a tenant from the batcher while a writer waits for it', async () => {
    const gate = new TenantGate();
    gate.take(['t1']); // a batch in flight
    let writer: (() => void) | undefined;
    void gate.acquire(['t1']).then((release) => (writer = release));
    expect(gate.available('t1')).to.equal(false);
    gate.release(['t1']); // the batch committed
    await settle();
    expect(writer).to.be.a('function');
    expect(gate.available('t1')).to.equal(false);
    writer!();
    expect(gate.available('t1')).to.equal(true);
    expect(() => {
      gate.take(['t2']);
      gate.take(['t2']);
    }).to.throw('t2 is already held');
  });

  // Waiters are served in arrival order: B (t2) never overtakes A (t1+t2); C (t3) shares nothing and goes at once.
  it('serves waiting writers in order, and takes all of a writer tenants at once', async () => {
    const gate = new TenantGate();
    const order: string[] = [];
    const releases = new Map<string, () => void>();
    const want = (name: string, tenants: string[]) =>
      void gate.acquire(tenants).then((release) => {
        order.push(name);
        releases.set(name, release);
      });
    gate.take(['t1']);
    want('A', ['t1', 't2']);
    want('B', ['t2']);
    want('C', ['t3']);
    await settle();
    expect(order).to.deep.equal(['C']);
    // t2 was free all along, but A waits for it: neither B nor the batcher may take it.
    expect(gate.available('t2')).to.equal(false);
    gate.release(['t1']);
    await settle();
    expect(order).to.deep.equal(['C', 'A']);
    releases.get('A')!();
    await settle();
    expect(order).to.deep.equal(['C', 'A', 'B']);
  });

  // Every release tells the listeners (the batcher cuts the batches that waited for the tenant).
  it('calls its release listeners', async () => {
    const gate = new TenantGate();
    let calls = 0;
    gate.onRelease(() => (calls += 1));
    (await gate.acquire(['t1']))();
    gate.take(['t2']);
    gate.release(['t2']);
    expect(calls).to.equal(2);
  });
});
