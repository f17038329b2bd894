import { expect } from 'chai';
import { browserRequest } from '../../../testing/camouflage-kit';
import { BUILT_IN_DECOYS, renderDecoy } from './decoy-catalog';
import { HONEYTOKEN_PATTERN, HONEYTOKENS_PER_REQUEST_MAX, findHoneytokens, honeytokenMaterial, mintHoneytoken, redactToken } from './honeytokens';
import { prepareRequest } from './threat-signals';
import { validateAssessInput } from './threat-scoring';

function find(overrides: Parameters<typeof browserRequest>[0]) {
  return findHoneytokens(prepareRequest(validateAssessInput(browserRequest(overrides))));
}

describe('camouflage honeytokens', () => {
  // Proves both token shapes are well-formed, unique, and matched by the one detection regex.
  it('mints unique tokens of both shapes that the detector recognises', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 500; i += 1) {
      const shx = mintHoneytoken('shx', 'attack');
      const aws = mintHoneytoken('aws', 'likely_bot');
      expect(shx.token).to.match(/^shx_[0-9a-f]{32}$/);
      expect(aws.token).to.match(/^AKIA[A-Z2-7]{16}$/);
      for (const token of [shx.token, aws.token]) {
        expect(seen.has(token)).to.equal(false);
        seen.add(token);
        expect([...token.matchAll(HONEYTOKEN_PATTERN)].map((m) => m[0])).to.deep.equal([token]);
      }
    }
    expect(redactToken('shx_0123456789abcdef0123456789abcdef')).to.equal('shx_0123…');
  });

  // Proves tokens are found wherever an attacker would replay them: header, encoded query, Basic auth, body.
  it('finds tokens in headers, encoded query, Basic credentials and body', () => {
    const token = mintHoneytoken('shx', 'attack').token;
    const aws = mintHoneytoken('aws', 'attack').token;
    const base = browserRequest().headers;
    expect(find({ headers: { ...base, authorization: `Bearer ${token}` } })).to.deep.equal([{ token, location: 'header:authorization' }]);
    expect(find({ query: `key=${encodeURIComponent(`"${token}"`)}` })).to.deep.equal([{ token, location: 'query' }]);
    const basic = Buffer.from(`deploy:${token}`).toString('base64');
    expect(find({ headers: { ...base, authorization: `Basic ${basic}` } })).to.deep.equal([{ token, location: 'header:authorization (basic)' }]);
    const sigv4 = `AWS4-HMAC-SHA256 Credential=${aws}/20240304/eu-west-1/s3/aws4_request, SignedHeaders=host, Signature=abc`;
    expect(find({ headers: { ...base, authorization: sigv4 } })).to.deep.equal([{ token: aws, location: 'header:authorization' }]);
    expect(find({ method: 'POST', bodyExcerpt: `username=admin&password=${token}` })).to.deep.equal([{ token, location: 'body' }]);
    expect(find({})).to.deep.equal([]);
  });

  // Proves a token in the Basic credentials of one Authorization header is found next to a case twin of that header:
  // the twins are one field with both values joined, and each credential of it is decoded on its own.
  it('finds a token in Basic credentials next to an Authorization twin differing in case', () => {
    const token = mintHoneytoken('shx', 'attack').token;
    const base = browserRequest().headers;
    const basic = Buffer.from(`deploy:${token}`).toString('base64');
    const harmless = `Basic ${Buffer.from('deploy:hunter2').toString('base64')}`;
    for (const twins of [{ Authorization: harmless, authorization: `Basic ${basic}` }, { authorization: `Basic ${basic}`, Authorization: harmless }]) {
      expect(find({ headers: { ...base, ...twins } })).to.deep.equal([{ token, location: 'header:authorization (basic)' }]);
    }
  });

  // Proves near-misses are not tokens and the per-request lookup count is bounded.
  it('ignores near-misses and bounds candidates per request', () => {
    const token = mintHoneytoken('shx', 'attack').token;
    expect(find({ query: `k=${token}0` })).to.deep.equal([]);
    expect(find({ query: `k=x${token}` })).to.deep.equal([]);
    expect(find({ query: `k=${token.toUpperCase()}` })).to.deep.equal([]);
    const many = Array.from({ length: 10 }, () => mintHoneytoken('shx', 'attack').token).join(',');
    expect(find({ query: `k=${many}` })).to.have.length(HONEYTOKENS_PER_REQUEST_MAX);
  });

  // Proves rendering fills every placeholder of every honeytoken decoy with the minted token.
  it('renders honeytoken decoys with the token in place', () => {
    for (const decoy of BUILT_IN_DECOYS.filter((d) => d.carriesHoneytoken)) {
      const minted = mintHoneytoken(decoy.honeytokenShape ?? 'shx', 'attack');
      const content = renderDecoy(decoy, honeytokenMaterial(minted));
      expect(content, decoy.id).to.contain(minted.token);
      expect(content, decoy.id).to.not.contain('{{');
    }
  });
});
