import { expect } from 'chai';
import { status } from '@grpc/grpc-js';
import { parseMix, runLoad, weightedMix } from './grpc-load';

const KINDS = ['consume', 'balance', 'hold'];

describe('bench load generator: mixed loads', () => {
  // A mix is kind=weight pairs; every malformed one stops the bench with the flag named.
  it('parses a mix and refuses malformed ones', () => {
    expect([...parseMix('consume=6, balance=3,hold=1', KINDS)]).to.deep.equal([
      ['consume', 6],
      ['balance', 3],
      ['hold', 1],
    ]);
    expect(() => parseMix('', KINDS)).to.throw('--mix must name at least one kind');
    expect(() => parseMix('consume', KINDS)).to.throw('"consume" is not kind=weight');
    expect(() => parseMix('consume=1.5', KINDS)).to.throw('is not kind=weight');
    expect(() => parseMix('topup=1', KINDS)).to.throw('unknown kind "topup"');
    expect(() => parseMix('consume=1,consume=2', KINDS)).to.throw('"consume" given twice');
    expect(() => parseMix('consume=0', KINDS, 'BENCH_MIX')).to.throw('BENCH_MIX: the weight of "consume" must be 1..1000, not 0');
  });

  // Every cycle of sum(weights) calls holds each kind exactly its weight, and a rare kind is spread out, not bunched.
  it('interleaves kinds in proportion to their weights', () => {
    const kindOf = weightedMix(new Map([['consume', 6], ['balance', 3], ['hold', 1]]));
    const cycle = Array.from({ length: 10 }, (_, i) => kindOf(i));
    expect(cycle.filter((k) => k === 'consume')).to.have.length(6);
    expect(cycle.filter((k) => k === 'balance')).to.have.length(3);
    expect(cycle.filter((k) => k === 'hold')).to.have.length(1);
    expect(Array.from({ length: 10 }, (_, i) => kindOf(i + 40))).to.deep.equal(cycle);
    // balance (3 in 10) never comes twice in a row.
    for (let i = 0; i < 9; i++) expect(cycle[i] === 'balance' && cycle[i + 1] === 'balance', cycle.join(',')).to.equal(false);
  });

  // With kindOf, each measured call is counted once overall and once under its kind, errors included.
  it('breaks a mixed run down by kind', async () => {
    const kindOf = weightedMix(new Map([['consume', 3], ['hold', 1]]));
    const result = await runLoad({
      name: 'mix',
      mode: { kind: 'closed', concurrency: 4 },
      durationMs: 150,
      kindOf,
      call: async (i) => {
        await new Promise((resolve) => setImmediate(resolve));
        if (kindOf(i) === 'hold') throw Object.assign(new Error('no'), { code: status.FAILED_PRECONDITION });
      },
    });
    const byKind = result.byKind!;
    expect(Object.keys(byKind).sort()).to.deep.equal(['consume', 'hold']);
    expect(byKind.consume!.completed + byKind.hold!.completed).to.equal(result.completed);
    expect(byKind.hold!.succeeded).to.equal(0);
    expect(byKind.hold!.errors).to.deep.equal({ FAILED_PRECONDITION: byKind.hold!.completed });
    expect(byKind.consume!.succeeded).to.equal(byKind.consume!.completed);
    expect(result.errors).to.deep.equal({ FAILED_PRECONDITION: byKind.hold!.completed });
    expect(byKind.consume!.completed).to.be.greaterThan(0);
  });
});
