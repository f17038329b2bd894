import { expect } from 'chai';
import { parseEvaluationCursor } from './evaluation-handlers';

describe('shadow rpc: ListEvaluations cursor', () => {
  const id = '0b6f2a3e-8a41-4c1e-9d1b-2f5e8c7a9b10';

  it('accepts the [created_at, id] the store writes', () => {
    expect(parseEvaluationCursor(['2024-06-01T10:00:00.123456Z', id])).to.deep.equal({ createdAt: '2024-06-01T10:00:00.123456Z', id });
  });

  // A forged cursor is refused here (INVALID_ARGUMENT page_token), not by PostgreSQL's casts (INTERNAL).
  it('refuses forged cursors', () => {
    for (const cursor of [['-1', id], ['not a time', id], ['2024-13-45T99:00:00.000000Z', id], ['2024-06-01T10:00:00.123456Z', '-1'], [id], []]) {
      expect(parseEvaluationCursor(cursor), JSON.stringify(cursor)).to.equal(undefined);
    }
  });
});
