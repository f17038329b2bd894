import { expect } from 'chai';
import { Code, ServiceError } from '../../platform/service-error';
import { toStatus } from '../../platform/status-details';
import { invalidArgument, invariant, serviceErrorFrom } from './errors';

describe('camouflage errors', () => {
  // A Redis failure is UNAVAILABLE / REDIS_UNAVAILABLE and keeps neither its cause nor the command's
  // arguments (they may hold minted honeytokens); only the first line of its message survives.
  it('reports a Redis failure as REDIS_UNAVAILABLE without the command', () => {
    const reply = Object.assign(new Error('ERR boom\nat line 2'), { name: 'ReplyError', command: { name: 'evalsha', args: ['shx_secret_token'] } });
    const error = serviceErrorFrom(reply);
    expect(error).to.include({ code: Code.UNAVAILABLE, reason: 'REDIS_UNAVAILABLE', message: 'redis: ReplyError: ERR boom' });
    expect(error.cause).to.equal(undefined);
    expect(JSON.stringify(toStatus(error, 'camouflage.shieldx.io'))).not.to.include('shx_secret_token');
    expect(serviceErrorFrom(new Error('connect ECONNREFUSED 127.0.0.1:6379')).reason).to.equal('REDIS_UNAVAILABLE');
  });

  // A bug (a broken invariant, anything not a ServiceError) is INTERNAL with a generic message; its text stays in the cause.
  it('reports a broken invariant as INTERNAL without its text', () => {
    let thrown: unknown;
    try {
      invariant(false, 'tiers cover 0..10');
    } catch (error) {
      thrown = error;
    }
    const error = serviceErrorFrom(thrown);
    expect(error).to.include({ code: Code.INTERNAL, reason: 'INTERNAL', message: 'internal error' });
    expect((error.cause as Error).message).to.equal('invariant violated: tiers cover 0..10');
    expect(serviceErrorFrom('a string').code).to.equal(Code.INTERNAL);
    expect(serviceErrorFrom(undefined).code).to.equal(Code.INTERNAL);
  });

  // A ServiceError passes through untouched; invalidArgument names the field in BadRequest and ErrorInfo, message as given.
  it('passes ServiceErrors through and names the field of a bad argument', () => {
    const bad = invalidArgument('clientIp', 'clientIp must be an IPv4 or IPv6 address');
    expect(serviceErrorFrom(bad)).to.equal(bad);
    expect(bad).to.be.instanceOf(ServiceError);
    expect(bad).to.include({ code: Code.INVALID_ARGUMENT, reason: 'INVALID_ARGUMENT', message: 'clientIp must be an IPv4 or IPv6 address' });
    expect(bad.fieldViolations).to.deep.equal([{ field: 'clientIp', description: 'clientIp must be an IPv4 or IPv6 address' }]);
    expect(bad.metadata).to.deep.equal({ field: 'clientIp' });
  });
});
