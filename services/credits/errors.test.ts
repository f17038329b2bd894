import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'chai';
import { Code, ServiceError } from '../../platform/service-error';
import * as errors from './errors';
import { CREDITS_REASONS, PLATFORM_REASONS } from './errors';

const PROTO_DIR = join(__dirname, '../../proto/shieldx/credits/v1');

/**
 * The reasons the proto's comments document: the "Error reasons (...):" list (up to its full stop)
 * and every "reason X" / "error_reason X" written elsewhere in a comment.
 */
function documentedReasons(): Set<string> {
  const reasons = new Set<string>();
  for (const file of readdirSync(PROTO_DIR).filter((f) => f.endsWith('.proto'))) {
    const comments = readFileSync(join(PROTO_DIR, file), 'utf8')
      .split('\n')
      .map((line) => /\/\/(.*)$/.exec(line)?.[1] ?? '')
      .join(' ');
    const list = /Error reasons \([^)]*\):(.*?)\.(\s|$)/.exec(comments);
    if (list) for (const name of list[1]!.match(/\b[A-Z][A-Z0-9_]{2,}\b/g) ?? []) reasons.add(name);
    for (const match of comments.matchAll(/\b(?:error_)?reason ([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)\b/g)) reasons.add(match[1]!);
  }
  return reasons;
}

describe('credits errors', () => {
  it('lists exactly the reasons the proto documents (its own, plus the platform ones it answers with)', () => {
    const documented = documentedReasons();
    expect(documented.size).to.be.greaterThan(0);
    expect([...new Set([...CREDITS_REASONS, ...PLATFORM_REASONS])].sort()).to.deep.equal([...documented].sort());
  });

  it('keeps its own reasons apart from the ones platform/service-error.ts builds', () => {
    const own = new Set<string>(CREDITS_REASONS);
    expect(PLATFORM_REASONS.filter((r) => own.has(r))).to.deep.equal([]);
    expect(new Set(CREDITS_REASONS).size).to.equal(CREDITS_REASONS.length);
    expect(ServiceError.invalidArgument('x', 'y').reason).to.equal('INVALID_ARGUMENT');
    expect(ServiceError.idempotencyKeyReused('k').reason).to.equal('IDEMPOTENCY_KEY_REUSED');
    expect(ServiceError.operationInProgress().reason).to.equal('OPERATION_IN_PROGRESS');
  });

  it('builds every listed reason with a factory', () => {
    const built = [
      errors.tenantNotFound('t'),
      errors.insufficientCredits(1n, 2n),
      errors.reservationNotFound('r'),
      errors.reservationExpired('r'),
      errors.reservationFinalized('r', 'COMMITTED'),
      errors.operationNotFound('k'),
      errors.balanceLimitExceeded(1n),
      errors.concurrentModification(),
      errors.writersOverloaded(),
      errors.consumeQueueFull(),
      errors.databaseUnavailable(),
      errors.serverShuttingDown(),
      errors.batchAborted(),
    ];
    for (const error of built) expect(error).to.be.instanceOf(ServiceError);
    expect([...new Set(built.map((e) => e.reason))].sort()).to.deep.equal([...CREDITS_REASONS].sort());
  });

  it('keeps the words and metadata callers see', () => {
    const insufficient = errors.insufficientCredits(12n, 20n);
    expect(insufficient.code).to.equal(Code.FAILED_PRECONDITION);
    expect(insufficient.metadata).to.deep.equal({ available: '12', requested: '20' });
    expect(errors.reservationFinalized('r', 'RELEASED').message).to.equal('the reservation is already released');
    const capture = errors.captureAboveHold(5n);
    expect(capture.reason).to.equal('INVALID_ARGUMENT');
    expect(capture.message).to.equal('amount: must be at most the held amount (5)');
    expect(capture.fieldViolations).to.deep.equal([{ field: 'amount', description: 'must be at most the held amount (5)' }]);
    expect(capture.metadata).to.deep.equal({ field: 'amount', held: '5' });
  });
});
