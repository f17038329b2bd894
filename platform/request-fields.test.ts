import { expect } from 'chai';
import { checkRequestFields, TEXT_LENGTH_MAX } from './request-fields';
import { Code, ServiceError } from './service-error';

function refusal(message: unknown): { field: string; description: string } | undefined {
  try {
    checkRequestFields(message);
  } catch (error) {
    expect(error).to.be.instanceOf(ServiceError);
    expect((error as ServiceError).code).to.equal(Code.INVALID_ARGUMENT);
    return (error as ServiceError).fieldViolations[0];
  }
  return undefined;
}

describe('platform request fields', () => {
  // Ordinary requests pass: text, dates, durations, bytes, maps, oneofs, bigints.
  it('accepts ordinary requests', () => {
    expect(
      refusal({
        tenantId: 'acme',
        amount: 25n,
        note: 'ünïcode ✓ 😀',
        at: new Date('2026-12-07T00:00:00Z'),
        ttl: { seconds: 60n, nanos: 5 },
        raw: new Uint8Array([0, 1, 2]),
        metadata: { route: '/x' },
        rule: { $case: 'pathPattern', value: { patterns: ['^/admin'] } },
      }),
    ).to.equal(undefined);
  });

  // Each bad input is refused with the proto field path (snake_case, indexes, oneof member, map key).
  it('refuses NUL, lone surrogates, over-long text, bad times and durations, naming the field', () => {
    for (const [message, field, description] of [
      [{ name: 'n\u0000' }, 'name', 'must not contain NUL characters'],
      [{ items: [{ clientKey: 'ok' }, { clientKey: '\uD800' }] }, 'items[1].client_key', 'must be valid UTF-8 text'],
      [{ reference: 'x'.repeat(TEXT_LENGTH_MAX + 1) }, 'reference', `must be at most ${TEXT_LENGTH_MAX} characters`],
      [{ metadata: { route: 'a\u0000b' } }, 'metadata.route', 'must not contain NUL characters'],
      [{ metadata: { 'k\u0000': 'v' } }, 'metadata', 'key must not contain NUL characters'],
      [{ rule: { $case: 'headerPattern', value: { header: '\u0000' } } }, 'rule.header_pattern.header', 'must not contain NUL characters'],
      [{ endTime: new Date(Number.NaN) }, 'end_time', 'must be a timestamp between 0001-01-01 and 9999-12-31'],
      [{ endTime: new Date(253_402_300_800_000) }, 'end_time', 'must be a timestamp between 0001-01-01 and 9999-12-31'],
      [{ endTime: new Date(-62_135_596_800_001) }, 'end_time', 'must be a timestamp between 0001-01-01 and 9999-12-31'],
      [{ ttl: { seconds: 315_576_000_001n, nanos: 0 } }, 'ttl', 'must be a duration within ±10,000 years'],
      [{ ttl: { seconds: 1n, nanos: 1_000_000_000 } }, 'ttl', 'must have nanos within ±999,999,999'],
      [{ ttl: { seconds: 1n, nanos: -1 } }, 'ttl', 'must have seconds and nanos of the same sign'],
    ] as const) {
      expect(refusal(message), field).to.deep.equal({ field, description });
    }
  });

  // The edges themselves are accepted: the first and last representable instants, the longest duration.
  it('accepts the range edges', () => {
    expect(refusal({ at: new Date(-62_135_596_800_000) })).to.equal(undefined);
    expect(refusal({ at: new Date(253_402_300_799_999) })).to.equal(undefined);
    expect(refusal({ ttl: { seconds: -315_576_000_000n, nanos: -999_999_999 } })).to.equal(undefined);
  });
});
