import { expect } from 'chai';
import { decodePageToken, encodePageToken } from './page-token';
import { Code, ServiceError } from './service-error';

const seqCursor = (c: readonly string[]) => (c.length === 1 && /^[1-9][0-9]{0,18}$/.test(c[0]!) ? BigInt(c[0]!) : undefined);

function refused(run: () => unknown): ServiceError {
  try {
    run();
  } catch (error) {
    expect(error).to.be.instanceOf(ServiceError);
    return error as ServiceError;
  }
  throw new Error('not refused');
}

describe('platform page token', () => {
  // A token round-trips to its cursor for the same filter; '' is the first page.
  it('round-trips the cursor for the query that made it', () => {
    const filter = { tenant: 'acme', types: ['CONSUME'], before: 10n };
    const token = encodePageToken(['42'], filter);
    expect(token).to.match(/^[A-Za-z0-9_-]+$/);
    expect(decodePageToken(token, { tenant: 'acme', types: ['CONSUME'], before: 10n }, seqCursor)).to.equal(42n);
    expect(decodePageToken('', filter, seqCursor)).to.equal(undefined);
    expect(encodePageToken(undefined, filter)).to.equal('');
  });

  // Replayed with other filters, edited, forged or not a token at all: INVALID_ARGUMENT naming the field.
  it('refuses a token from another query, an edited cursor and garbage', () => {
    const token = encodePageToken(['42'], { tenant: 'acme' });
    const forged = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
    const good = JSON.parse(Buffer.from(token, 'base64url').toString()) as { f: string };
    for (const [name, bad] of [
      ['other filter', token],
      ['negative cursor', forged({ v: 1, c: ['-1'], f: good.f })],
      ['number cursor', forged({ v: 1, c: [42], f: good.f })],
      ['empty cursor', forged({ v: 1, c: [], f: good.f })],
      ['other version', forged({ v: 2, c: ['42'], f: good.f })],
      ['null', forged(null)],
      ['array', forged([1])],
      ['not base64url', 'a+b/c='],
      ['not JSON', Buffer.from('{').toString('base64url')],
      ['too long', 'A'.repeat(2000)],
    ] as const) {
      const filter = name === 'other filter' ? { tenant: 'other' } : { tenant: 'acme' };
      const error = refused(() => decodePageToken(bad, filter, seqCursor, 'page_token'));
      expect(error.code, name).to.equal(Code.INVALID_ARGUMENT);
      expect(error.fieldViolations, name).to.deep.equal([{ field: 'page_token', description: 'is not a page token returned by this query' }]);
    }
  });
});
