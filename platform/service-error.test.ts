import { expect } from 'chai';
import { Code, ServiceError } from './service-error';
import { decodeStatusDetails, toStatusDetails } from './status-details';

describe('platform service-error', () => {
  // Every service refuses a reused idempotency key the same way: FAILED_PRECONDITION / IDEMPOTENCY_KEY_REUSED, one
  // message saying what to do, the key under `idempotency_key` and its field under `field` and in the BadRequest,
  // and it reaches a client unchanged through the grpc-status-details-bin trailer.
  it('builds IDEMPOTENCY_KEY_REUSED with the key and its field', () => {
    const error = ServiceError.idempotencyKeyReused('key-1', { metadata: { method: 'CreateRollout' } });
    expect(error).to.include({ code: Code.FAILED_PRECONDITION, reason: 'IDEMPOTENCY_KEY_REUSED' });
    expect(error.message).to.match(/^idempotency_key was already used for a different request; .*new key/);
    expect(error.metadata).to.deep.equal({ method: 'CreateRollout', field: 'idempotency_key', idempotency_key: 'key-1' });
    expect(error.fieldViolations.map((v) => v.field)).to.deep.equal(['idempotency_key']);

    const details = decodeStatusDetails(toStatusDetails(error, 'shadow.shieldx.io'))!;
    expect(details).to.include({ code: Code.FAILED_PRECONDITION, reason: 'IDEMPOTENCY_KEY_REUSED', message: error.message, domain: 'shadow.shieldx.io' });
    expect(details.metadata).to.deep.equal(error.metadata);
    expect(details.fieldViolations).to.deep.equal(error.fieldViolations);

    // Extra metadata adds context but cannot hide the key or its field (the proto field, in every service).
    const named = ServiceError.idempotencyKeyReused('key-2', { metadata: { field: 'x', idempotency_key: 'y', method: 'Consume' } });
    expect(named.message).to.equal(error.message);
    expect(named.metadata).to.deep.equal({ field: 'idempotency_key', idempotency_key: 'key-2', method: 'Consume' });
    expect(named.fieldViolations[0]!.field).to.equal('idempotency_key');
  });

  // A duplicate that arrives while the first call under its key still runs is refused the same way by every service:
  // ABORTED / OPERATION_IN_PROGRESS (retry later; not a conflict), one message, through the trailer unchanged.
  it('builds OPERATION_IN_PROGRESS', () => {
    const error = ServiceError.operationInProgress();
    expect(error).to.include({ code: Code.ABORTED, reason: 'OPERATION_IN_PROGRESS' });
    expect(error.message).to.equal('an earlier call with this idempotency_key has not finished; retry');
    expect(error.fieldViolations).to.deep.equal([]);

    const details = decodeStatusDetails(toStatusDetails(error, 'credits.shieldx.io'))!;
    expect(details).to.include({ code: Code.ABORTED, reason: 'OPERATION_IN_PROGRESS', message: error.message, domain: 'credits.shieldx.io' });
  });
});
