import { expect } from 'chai';
import { validateSample, type TrafficSample } from './traffic-sample';

const good: TrafficSample = {
  timestampMs: Date.UTC(2025, 0, 1),
  clientKey: 'ak_123',
  clientIp: '203.0.113.9',
  method: 'GET',
  path: '/products/1?ref=home',
  status: 200,
  userAgent: 'curl/8.5.0',
  headers: { accept: '*/*' },
  requestBytes: 320,
  malicious: false,
  attackType: '',
};

describe('shadow traffic-sample: validateSample', () => {
  // A well-formed sample, IPv6 and empty user agent included, has no reason.
  it('accepts valid samples', () => {
    expect(validateSample(good)).to.equal(null);
    expect(validateSample({ ...good, clientIp: '2001:db8::1', userAgent: '', headers: {} })).to.equal(null);
    expect(validateSample({ ...good, malicious: true, attackType: 'scanner', status: 404 })).to.equal(null);
    expect(validateSample({ ...good, score: 0 })).to.equal(null);
    expect(validateSample({ ...good, score: 0.73 })).to.equal(null);
  });

  // A score, when carried, is a finite number ≥ 0.
  it('rejects a bad score', () => {
    expect(validateSample({ ...good, score: -0.1 })).to.equal('score: -0.1 must be a finite number ≥ 0');
    expect(validateSample({ ...good, score: Number.NaN })).to.equal('score: NaN must be a finite number ≥ 0');
    expect(validateSample({ ...good, score: Number.POSITIVE_INFINITY })).to.equal('score: Infinity must be a finite number ≥ 0');
  });

  // Each bad field gives its own exact per-row reason naming the proto field.
  it('gives a reason for each kind of bad row', () => {
    const cases: [Partial<Record<keyof TrafficSample, unknown>>, string][] = [
      [{ clientIp: '300.1.2.3' }, "client_ip: '300.1.2.3' is not a valid IPv4 or IPv6 address"],
      [{ clientIp: '' }, 'client_ip: must not be empty'],
      [{ method: '' }, 'method: must not be empty'],
      [{ method: 'GE T' }, "method: 'GE T' is not an HTTP token"],
      [{ path: '' }, 'path: must not be empty'],
      [{ path: '/' + 'a'.repeat(8192) }, 'path: longer than 8192 characters'],
      [{ status: 99 }, 'status: 99 is not an HTTP status code (100..599)'],
      [{ status: 600 }, 'status: 600 is not an HTTP status code (100..599)'],
      [{ status: 200.5 }, 'status: 200.5 is not an HTTP status code (100..599)'],
      [{ requestBytes: -1 }, 'request_bytes: -1 must be a non-negative integer'],
      [{ requestBytes: 2 ** 41 }, 'request_bytes: larger than 1099511627776'],
      [{ malicious: true, attackType: '' }, 'attack_type: must be set when malicious is true'],
      [{ malicious: false, attackType: 'sqli' }, 'attack_type: must be empty when malicious is false'],
      [{ timestampMs: Number.NaN }, 'timestamp: must be a finite number of epoch milliseconds'],
      [{ timestampMs: Infinity }, 'timestamp: must be a finite number of epoch milliseconds'],
      [{ timestampMs: 1e15 }, 'timestamp: must be between 0001-01-01 and 9999-12-31'],
      [{ clientKey: '' }, 'client_key: must not be empty'],
      [{ clientKey: 'k'.repeat(257) }, 'client_key: longer than 256 characters'],
      [{ userAgent: 'u'.repeat(2049) }, 'user_agent: longer than 2048 characters'],
      [{ headers: { 'X-Upper': 'v' } }, "headers: name 'X-Upper' must be a lower-case HTTP token"],
      [{ headers: { accept: 5 } }, 'headers[accept]: value must be a string'],
      [{ headers: [] }, 'headers: must be an object'],
      [{ attackType: 'a'.repeat(65), malicious: true }, 'attack_type: longer than 64 characters'],
      [{ malicious: 'yes' }, 'malicious: must be a boolean'],
      // PostgreSQL text and jsonb cannot hold U+0000: every free-text field refuses it as a row.
      [{ clientKey: 'k\u0000' }, 'client_key: must not contain a NUL character'],
      [{ path: '/a\u0000' }, 'path: must not contain a NUL character'],
      [{ userAgent: 'u\u0000' }, 'user_agent: must not contain a NUL character'],
      [{ headers: { accept: '\u0000' } }, 'headers[accept]: value must not contain a NUL character'],
      [{ malicious: true, attackType: 'sq\u0000li' }, 'attack_type: must not contain a NUL character'],
    ];
    for (const [patch, reason] of cases) {
      expect(validateSample({ ...good, ...patch }), JSON.stringify(patch).slice(0, 80)).to.equal(reason);
    }
  });

  // Too many headers is an oversized row.
  it('rejects too many headers', () => {
    const headers: Record<string, string> = {};
    for (let i = 0; i < 65; i++) headers[`h${i}`] = 'v';
    expect(validateSample({ ...good, headers })).to.equal('headers: more than 64 entries');
  });

  // Non-objects are rejected without throwing.
  it('rejects non-objects', () => {
    expect(validateSample(null)).to.equal('sample must be an object');
    expect(validateSample('x')).to.equal('sample must be an object');
  });
});
