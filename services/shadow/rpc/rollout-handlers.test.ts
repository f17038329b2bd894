import { expect } from 'chai';
import { parseRolloutCursor } from './rollout-handlers';

describe('shadow rpc: ListRollouts cursor', () => {
  it('accepts a positive int8 seq', () => {
    expect(parseRolloutCursor(['1'])).to.equal(1n);
    expect(parseRolloutCursor(['9223372036854775807'])).to.equal(2n ** 63n - 1n);
  });

  // A forged cursor is refused here (INVALID_ARGUMENT page_token), not by PostgreSQL's bigint cast (INTERNAL).
  it('refuses forged cursors', () => {
    for (const cursor of [['-1'], ['0'], ['01'], ['abc'], ['9223372036854775808'], ['1', '2'], []]) {
      expect(parseRolloutCursor(cursor), JSON.stringify(cursor)).to.equal(undefined);
    }
  });
});
