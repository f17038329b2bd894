import { expect } from 'chai';
import { GATE_WAITERS_MAX, GateFullError, TenantGate } from './tenant-gate';

/** Settles pending promise callbacks (grants resolve through the microtask queue). */
const settle = () => new Promise((resolve) => setImmediate(resolve));

/** A writer's acquire, with what it got so far. */
function writer(gate: TenantGate, tenants: string[], log?: string[], name?: string) {
  const w: { release?: () => void } = {};
  void gate.acquire(tenants).then((release) => {
    w.release = release;
    if (log && name) log.push(name);
  });
  return w;
}

describe('credits tenant gate', () => {
  // A writer gets free tenants at once; a second writer of the same tenant waits for the first one's release.
  it('lets one writer per tenant in at a time', async () => {
    const gate = new TenantGate();
    const first = await gate.acquire(['t1']);
    const second = writer(gate, ['t1']);
    await settle();
    expect(second.release).to.equal(undefined);
    first();
    await settle();
    expect(second.release).to.be.a('function');
    // A release is idempotent: calling it twice frees nothing held by someone else.
    first();
    expect(gate.available('t1')).to.equal(false);
    second.release!();
    expect(gate.available('t1')).to.equal(true);
  });

  // The batcher may not take a tenant a writer waits for, so consume batches cannot starve a top-up.
  it('keeps a tenant from the batcher while a writer waits for it', async () => {
    const gate = new TenantGate();
    gate.take(['t1']); // a batch in flight
    const w = writer(gate, ['t1']);
    expect(gate.available('t1')).to.equal(false);
    gate.release(['t1']); // the batch committed
    await settle();
    expect(w.release).to.be.a('function');
    expect(gate.available('t1')).to.equal(false);
    w.release!();
    expect(gate.available('t1')).to.equal(true);
    expect(() => {
      gate.take(['t2']);
      gate.take(['t2']);
    }).to.throw('t2 is already held');
  });

  // Nor can a stream of writers starve consumes: once the batcher has items waiting it queues behind the
  // writers already there, and writers arriving later queue behind it.
  it('gives the batcher its turn between writers', async () => {
    const gate = new TenantGate();
    const w1 = writer(gate, ['t']);
    await settle();
    const w2 = writer(gate, ['t']);
    expect(gate.available('t')).to.equal(false);
    gate.wantBatch('t'); // the batcher has consume items for t
    gate.wantBatch('t'); // once is enough
    const w3 = writer(gate, ['t']);
    w1.release!();
    await settle();
    expect([w2.release !== undefined, gate.available('t')]).to.deep.equal([true, false]);
    w2.release!();
    await settle();
    // The batcher's turn: w3 waits although t is free.
    expect([gate.available('t'), w3.release]).to.deep.equal([true, undefined]);
    gate.take(['t']);
    gate.release(['t']);
    await settle();
    expect(w3.release).to.be.a('function');
  });

  // A turn the batcher cannot use (its items were dropped, say) passes on instead of blocking the writers behind it.
  it('passes on a turn the batcher gives up', async () => {
    const gate = new TenantGate();
    const w1 = writer(gate, ['t']);
    await settle();
    const w2 = writer(gate, ['t']);
    gate.wantBatch('t');
    const w3 = writer(gate, ['t']);
    w1.release!();
    await settle();
    w2.release!();
    await settle();
    expect(gate.hasBatchTurns).to.equal(true);
    gate.passTurns((tenant) => tenant !== 't');
    await settle();
    expect([gate.hasBatchTurns, w3.release !== undefined]).to.deep.equal([false, true]);
  });

  // Waiters are served in arrival order: B (t2) never overtakes A (t1+t2); C (t3) shares nothing and goes at once.
  it('serves waiting writers in order, and takes all of a writer tenants at once', async () => {
    const gate = new TenantGate();
    const order: string[] = [];
    gate.take(['t1']);
    const a = writer(gate, ['t1', 't2'], order, 'A');
    const b = writer(gate, ['t2'], order, 'B');
    writer(gate, ['t3'], order, 'C');
    await settle();
    expect(order).to.deep.equal(['C']);
    // t2 was free all along, but A waits for it: neither B nor the batcher may take it.
    expect(gate.available('t2')).to.equal(false);
    gate.release(['t1']);
    await settle();
    expect(order).to.deep.equal(['C', 'A']);
    a.release!();
    await settle();
    expect(order).to.deep.equal(['C', 'A', 'B']);
    b.release!();
    expect(['t1', 't2', 't3'].map((t) => gate.available(t))).to.deep.equal([true, true, false]);
  });

  // Two writers wanting the same two tenants in opposite orders go one after the other (no deadlock).
  it('orders writers of overlapping tenant sets the same way everywhere', async () => {
    const gate = new TenantGate();
    const order: string[] = [];
    gate.take(['x']);
    const a = writer(gate, ['x', 'y'], order, 'A');
    const b = writer(gate, ['y', 'x'], order, 'B');
    gate.release(['x']);
    await settle();
    expect(order).to.deep.equal(['A']);
    a.release!();
    await settle();
    expect(order).to.deep.equal(['A', 'B']);
    b.release!();
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

  // The number of waiting writers is bounded: one more is refused with GateFullError (the ledger answers OVERLOADED).
  it('refuses a writer beyond GATE_WAITERS_MAX', async () => {
    const gate = new TenantGate();
    gate.take(['t']);
    for (let i = 0; i < GATE_WAITERS_MAX; i++) writer(gate, ['t']);
    const refused = await gate.acquire(['t']).catch((e: unknown) => e);
    expect(refused).to.be.instanceOf(GateFullError);
    // Another tenant with nobody waiting still goes at once.
    (await gate.acquire(['u']))();
  });
});
