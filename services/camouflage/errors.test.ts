import { expect } from 'chai';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { invariant } from '../../platform/invariant';
import { Code, ServiceError } from '../../platform/service-error';
import { toStatus } from '../../platform/status-details';
import {
  CAMOUFLAGE_REASONS,
  PLATFORM_REASONS,
  catalogFull,
  decisionNotFound,
  decoyAlreadyExists,
  outcomeAlreadyRecorded,
  redisUnavailable,
  serviceErrorFrom,
} from './errors';

const PROTO_DIR = join(__dirname, '../../proto/shieldx/camouflage/v1');

/** Comment lines of every camouflage proto, and the enum value names they declare. */
function readProtos(): { comments: string[]; enumValues: Set<string> } {
  const comments: string[] = [];
  const enumValues = new Set<string>();
  for (const file of readdirSync(PROTO_DIR).filter((name) => name.endsWith('.proto'))) {
    for (const line of readFileSync(join(PROTO_DIR, file), 'utf8').split('\n')) {
      const trimmed = line.trim();
      if (trimmed.startsWith('//')) comments.push(trimmed.slice(2).trim());
      const value = /^([A-Z][A-Z0-9_]*)\s*=\s*\d+;/.exec(trimmed);
      if (value) enumValues.add(value[1]!);
    }
  }
  return { comments, enumValues };
}

const UPPER_SNAKE = /\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b/g;

/** The reasons of the "Error reasons (...):" paragraph: the list clients are told to branch on. */
function documentedReasons(comments: readonly string[]): string[] {
  const start = comments.findIndex((line) => line.startsWith('Error reasons'));
  expect(start, 'the proto has an "Error reasons" paragraph').to.be.at.least(0);
  const reasons: string[] = [];
  for (const line of comments.slice(start + 1)) {
    if (line === '') break;
    const found = line.match(UPPER_SNAKE) ?? [];
    if (found.length === 0) break;
    reasons.push(...found);
  }
  return reasons;
}

describe('camouflage errors', () => {
  // The typed list is the proto's list: camouflage's own reasons plus the platform's INVALID_ARGUMENT, which the
  // proto names among them; IDEMPOTENCY_KEY_REUSED is platform-wide too and the proto names it where it arises.
  it('lists exactly the reasons the proto documents', () => {
    const { comments, enumValues } = readProtos();
    const documented = documentedReasons(comments);
    expect(new Set(documented).size, 'no reason documented twice').to.equal(documented.length);
    const platformInList = documented.filter((reason) => (PLATFORM_REASONS as readonly string[]).includes(reason));
    expect(platformInList).to.deep.equal(['INVALID_ARGUMENT']);
    const own = documented.filter((reason) => !platformInList.includes(reason));
    expect([...own].sort()).to.deep.equal([...CAMOUFLAGE_REASONS].sort());

    // Every reason a proto comment mentions anywhere (e.g. "FAILED_PRECONDITION IDEMPOTENCY_KEY_REUSED") is one we answer.
    const known = new Set<string>([...CAMOUFLAGE_REASONS, ...PLATFORM_REASONS]);
    const mentioned = new Set(comments.flatMap((line) => line.match(UPPER_SNAKE) ?? []));
    const codes = new Set(Object.keys(Code));
    const unknown = [...mentioned].filter((word) => !codes.has(word) && !enumValues.has(word) && !known.has(word));
    expect(unknown, 'reasons mentioned in the proto that errors.ts does not list').to.deep.equal([]);
  });

  // Each factory builds the reason its name says, with its canonical code.
  it('builds each reason with its code', () => {
    const cases: [ServiceError, Code, string][] = [
      [decisionNotFound('d-1', 'decision d-1 expired'), Code.NOT_FOUND, 'DECISION_NOT_FOUND'],
      [outcomeAlreadyRecorded('d-1'), Code.ALREADY_EXISTS, 'OUTCOME_ALREADY_RECORDED'],
      [decoyAlreadyExists('nginx-404', 'decoy nginx-404 is built in'), Code.ALREADY_EXISTS, 'DECOY_ALREADY_EXISTS'],
      [catalogFull(256), Code.RESOURCE_EXHAUSTED, 'CATALOG_FULL'],
      [redisUnavailable('boom'), Code.UNAVAILABLE, 'REDIS_UNAVAILABLE'],
    ];
    for (const [error, code, reason] of cases) expect(error, reason).to.include({ code, reason });
    expect(decisionNotFound('d-1', 'x').metadata).to.deep.equal({ decisionId: 'd-1' });
    // The id is the request's proto field.
    expect(decoyAlreadyExists('nginx-404', 'taken').fieldViolations).to.deep.equal([{ field: 'decoy.id', description: 'taken' }]);
    expect(decoyAlreadyExists('nginx-404', 'taken').metadata).to.deep.equal({ decoyId: 'nginx-404', field: 'decoy.id' });
    expect(catalogFull(256).message).to.equal('the catalog holds at most 256 custom decoys');
  });

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

  // A ServiceError passes through untouched (a bad argument keeps its proto field name and message).
  it('passes ServiceErrors through', () => {
    const bad = ServiceError.invalidArgument('client_ip', 'must be an IPv4 or IPv6 address');
    expect(serviceErrorFrom(bad)).to.equal(bad);
    expect(bad).to.include({ code: Code.INVALID_ARGUMENT, reason: 'INVALID_ARGUMENT', message: 'client_ip: must be an IPv4 or IPv6 address' });
    expect(bad.fieldViolations).to.deep.equal([{ field: 'client_ip', description: 'must be an IPv4 or IPv6 address' }]);
  });

  // A Redis Cluster failing over: ioredis gives up with a plain Error ("Too many Cluster redirections.
  // Last error: ReplyError: CLUSTERDOWN ...") that used to surface as INTERNAL; it is UNAVAILABLE, a retry may work.
  it('maps a cluster or sentinel mid-failover to REDIS_UNAVAILABLE', () => {
    for (const message of [
      'Too many Cluster redirections. Last error: ReplyError: CLUSTERDOWN The cluster is down',
      'Too many Cluster redirections. Last error: Error: Connection is closed.',
      'TRYAGAIN Multiple keys request during rehashing of slot',
      'Failed to refresh slots cache.',
      'All sentinels are unreachable. Retrying from scratch after 10ms.',
    ]) {
      const mapped = serviceErrorFrom(new Error(message));
      expect(mapped.reason, message).to.equal('REDIS_UNAVAILABLE');
      expect(mapped.code, message).to.equal(Code.UNAVAILABLE);
    }
    expect(serviceErrorFrom(new Error('some bug')).reason).to.equal('INTERNAL');
  });
});
