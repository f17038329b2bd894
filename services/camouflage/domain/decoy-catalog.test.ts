import { expect } from 'chai';
import { encodePageToken } from '../../../platform/page-token';
import { ServiceError } from '../../../platform/service-error';
import { BUILT_IN_DECOYS, DecoyCatalog, type DecoyStore, type ListDecoysRequest } from './decoy-catalog';

/** The built-in decoys only: paging is about the catalog's view, not where custom decoys live. */
const builtInOnly: DecoyStore = {
  load: async () => ({ version: 0, custom: [] }),
  register: async () => {
    throw new Error('not used');
  },
  version: async () => 0,
};

async function refusedToken(catalog: DecoyCatalog, request: ListDecoysRequest): Promise<ServiceError> {
  try {
    await catalog.list(request);
  } catch (thrown) {
    expect(thrown).to.be.instanceOf(ServiceError);
    return thrown as ServiceError;
  }
  return expect.fail('expected the page token to be refused');
}

describe('camouflage decoy catalog (ListDecoys paging)', () => {
  // Proves the pages of a tier-filtered listing cover every matching decoy once, in id order.
  it('pages through a tier filter with the platform page token', async () => {
    const catalog = new DecoyCatalog(builtInOnly);
    const seen: string[] = [];
    let pageToken = '';
    do {
      const page = await catalog.list({ pageSize: 2, pageToken, tier: 'attack' });
      seen.push(...page.decoys.map((decoy) => decoy.id));
      pageToken = page.nextPageToken;
    } while (pageToken !== '');
    expect(seen).to.deep.equal(BUILT_IN_DECOYS.filter((decoy) => decoy.tiers.includes('attack')).map((decoy) => decoy.id).sort());
  });

  // Proves a token is bound to its tier filter: replayed with another tier (or none) it is INVALID_ARGUMENT on
  // page_token, not a page of another list.
  it('refuses a token replayed with another tier filter', async () => {
    const catalog = new DecoyCatalog(builtInOnly);
    const { nextPageToken } = await catalog.list({ pageSize: 1, tier: 'likely_bot' });
    expect(nextPageToken).to.not.equal('');
    for (const request of [{ tier: 'attack' as const }, { tier: 'benign' as const }, {}]) {
      const error = await refusedToken(catalog, { ...request, pageToken: nextPageToken });
      expect(error).to.include({ reason: 'INVALID_ARGUMENT', message: 'page_token: is not a page token returned by this query' });
      expect(error.fieldViolations.map((v) => v.field)).to.deep.equal(['page_token']);
    }
    expect((await catalog.list({ pageSize: 1, pageToken: nextPageToken, tier: 'likely_bot' })).decoys).to.have.length(1);
  });

  // Proves a forged token (the codec's own format, filter right, cursor not a decoy id or not one part) is refused.
  it('refuses a forged cursor', async () => {
    const catalog = new DecoyCatalog(builtInOnly);
    for (const cursor of [['../x'], ['nginx-404', 'extra'], ['']]) {
      const forged = encodePageToken(cursor, { tier: '' });
      const error = await refusedToken(catalog, { pageToken: forged });
      expect(error.fieldViolations.map((v) => v.field), JSON.stringify(cursor)).to.deep.equal(['page_token']);
    }
    const legacy = Buffer.from(JSON.stringify({ v: 1, after: 'nginx-404' })).toString('base64url');
    expect((await refusedToken(catalog, { pageToken: legacy })).reason).to.equal('INVALID_ARGUMENT');
  });
});
