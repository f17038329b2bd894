import { expect } from 'chai';
import { idempotencyKey, optionalIdempotencyKey } from './idempotency-key';
import { ServiceError } from './service-error';

function refusal(run: () => unknown): { field: string; description: string } | undefined {
  try {
    run();
  } catch (error) {
    expect(error).to.be.instanceOf(ServiceError);
    return (error as ServiceError).fieldViolations[0];
  }
  return undefined;
}

describe('platform idempotency key', () => {
  // The one rule of the mesh: the same keys are accepted and refused by every service.
  it('accepts 1-128 printable ASCII characters', () => {
    for (const key of ['a', 'order-42:attempt-1', '01J9Z8Q4W5E6R7T8Y9U0I1O2P3', 'x'.repeat(128), '!~{}[]']) {
      expect(idempotencyKey(key), key).to.equal(key);
      expect(optionalIdempotencyKey(key), key).to.equal(key);
    }
  });

  // Spaces, non-ASCII, control characters and over-long keys are refused with the field named.
  it('refuses spaces, non-ASCII, NUL and more than 128 characters, naming the field', () => {
    for (const [key, words] of [
      ['has space', 'printable ASCII without spaces'],
      ['ключ', 'printable ASCII without spaces'],
      ['a\u0000b', 'printable ASCII without spaces'],
      ['tab\there', 'printable ASCII without spaces'],
      ['x'.repeat(129), 'at most 128 characters'],
    ] as const) {
      expect(refusal(() => idempotencyKey(key, 'request.idempotency_key')), key).to.deep.equal({
        field: 'request.idempotency_key',
        description: `must be ${words}`,
      });
      expect(refusal(() => optionalIdempotencyKey(key)), key).to.deep.include({ field: 'idempotency_key' });
    }
  });

  // A required key must be sent; an optional one may be left empty.
  it('requires a key only where the RPC does', () => {
    expect(refusal(() => idempotencyKey(''))).to.deep.equal({ field: 'idempotency_key', description: 'is required' });
    expect(optionalIdempotencyKey('')).to.equal(undefined);
  });
});
