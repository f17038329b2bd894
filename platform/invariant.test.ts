import { expect } from 'chai';
import { invariant, InvariantError } from './invariant';
import { Code, ServiceError } from './service-error';

describe('platform invariant', () => {
  // A held invariant is silent; a broken one throws with the rule named, and reaches a caller as INTERNAL.
  it('throws an InvariantError naming the rule, answered as INTERNAL', () => {
    expect(() => invariant(1 + 1 === 2, 'arithmetic')).not.to.throw();
    let thrown: unknown;
    try {
      invariant(false, 'balance must not be negative');
    } catch (error) {
      thrown = error;
    }
    expect(thrown).to.be.instanceOf(InvariantError);
    expect((thrown as Error).message).to.equal('invariant violated: balance must not be negative');
    const wire = ServiceError.from(thrown);
    expect(wire.code).to.equal(Code.INTERNAL);
    expect(wire.message).to.equal('internal error');
  });
});
