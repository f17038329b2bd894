import { expect } from 'chai';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { Code, ServiceError } from '../../platform/service-error';
import { projectPath } from '../../platform/paths';
import {
  PLATFORM_REASONS,
  SHADOW_REASONS,
  evaluationNotApproved,
  evaluationNotFound,
  ingestLimitExceeded,
  invalidRule,
  noSamples,
  rolloutAlreadyActive,
  rolloutCanaryNotHealthy,
  rolloutFinished,
  rolloutNotAwaitingPromotion,
  rolloutNotFound,
} from './errors';

const PROTO_DIR = projectPath('proto/shieldx/shadow/v1');

/**
 * The reasons a proto file documents: the comment block that starts
 * `// Error reasons (google.rpc.ErrorInfo, ...):` and lists them, comma-separated, up to a full stop.
 */
function documentedReasons(text: string): string[] {
  const lines = text.split('\n');
  const start = lines.findIndex((line) => /^\/\/ Error reasons \(google\.rpc\.ErrorInfo/.test(line));
  if (start < 0) return [];
  let list = '';
  for (const line of lines.slice(start + 1)) {
    if (!line.startsWith('//')) break;
    list += ` ${line.slice(2)}`;
    if (line.trimEnd().endsWith('.')) break;
  }
  return list
    .replace(/\.\s*$/, '')
    .split(',')
    .map((reason) => reason.trim())
    .filter((reason) => reason !== '');
}

describe('shadow errors', () => {
  // The typed list (errors.ts) and the proto's documented list are the same reasons: a reason added
  // in code without documenting it, or documented and never built, fails here. The mesh-wide
  // reasons (INVALID_ARGUMENT, IDEMPOTENCY_KEY_REUSED, OPERATION_IN_PROGRESS) are documented in the
  // proto too but built by ServiceError's factories: they are PLATFORM_REASONS.
  it('lists exactly the reasons documented in proto/shieldx/shadow/v1', () => {
    const documented = readdirSync(PROTO_DIR)
      .filter((name) => name.endsWith('.proto'))
      .flatMap((name) => documentedReasons(readFileSync(join(PROTO_DIR, name), 'utf8')));
    expect(documented, 'the proto documents its reasons').to.include('INVALID_RULE');
    expect([...documented].sort()).to.deep.equal([...SHADOW_REASONS, ...PLATFORM_REASONS].sort());
    expect(new Set(documented).size, 'no reason documented twice').to.equal(documented.length);
  });

  it('keeps shadow reasons and mesh-wide reasons apart', () => {
    expect(SHADOW_REASONS.filter((reason) => (PLATFORM_REASONS as readonly string[]).includes(reason))).to.deep.equal([]);
  });

  // Every factory builds a ServiceError with its reason, code and metadata.
  it('builds each reason with its code', () => {
    const built: [ServiceError, Code, string][] = [
      [invalidRule('rule.header_pattern.patterns[0]', 'must be a non-empty regular expression'), Code.INVALID_ARGUMENT, 'INVALID_RULE'],
      [evaluationNotFound('e-1'), Code.NOT_FOUND, 'EVALUATION_NOT_FOUND'],
      [evaluationNotApproved('e-1'), Code.FAILED_PRECONDITION, 'EVALUATION_NOT_APPROVED'],
      [rolloutNotFound('r-1'), Code.NOT_FOUND, 'ROLLOUT_NOT_FOUND'],
      [rolloutNotAwaitingPromotion('r-1', 'PROGRESSING'), Code.FAILED_PRECONDITION, 'ROLLOUT_NOT_AWAITING_PROMOTION'],
      [rolloutFinished('r-1', 'SUCCEEDED'), Code.FAILED_PRECONDITION, 'ROLLOUT_FINISHED'],
      [rolloutAlreadyActive({ namespace: 'ns', virtualService: 'vs', routeName: 'primary' }), Code.FAILED_PRECONDITION, 'ROLLOUT_ALREADY_ACTIVE'],
      [rolloutCanaryNotHealthy('r-1', 'ANALYSIS_VERDICT_UNHEALTHY'), Code.FAILED_PRECONDITION, 'ROLLOUT_CANARY_NOT_HEALTHY'],
      [ingestLimitExceeded('samples', 'too many', 10), Code.RESOURCE_EXHAUSTED, 'INGEST_LIMIT_EXCEEDED'],
      [noSamples('demo'), Code.FAILED_PRECONDITION, 'NO_SAMPLES'],
    ];
    expect(built.map(([, , reason]) => reason).sort()).to.deep.equal([...SHADOW_REASONS].sort());
    for (const [error, code, reason] of built) {
      expect(error, reason).to.be.instanceOf(ServiceError);
      expect([error.code, error.reason], reason).to.deep.equal([code, reason]);
    }
    expect(ingestLimitExceeded('streams', 'busy', 4).metadata).to.deep.equal({ limit: 'streams', max: '4' });
    expect(rolloutFinished('r-1', 'ABORTED')).to.include({ message: 'rollout r-1 has finished (ABORTED)' });
  });

  // INVALID_RULE is an INVALID_ARGUMENT shaped exactly like ServiceError.invalidArgument, only its reason differs.
  it('shapes INVALID_RULE like every other bad field', () => {
    const rule = invalidRule('rule.rate_limit.max_requests', 'must be a positive integer');
    const plain = ServiceError.invalidArgument('rule.rate_limit.max_requests', 'must be a positive integer');
    expect([rule.code, rule.message, rule.fieldViolations, rule.metadata]).to.deep.equal([plain.code, plain.message, plain.fieldViolations, plain.metadata]);
  });
});
