import { expect } from 'chai';
import {
  EvaluationWorkerPool,
  executePlanParallel,
  partitionKeys,
} from '../evaluation/evaluation-workers';
import { buildKeyIndex, executePlan, planReplay, replayRule, timeOrder } from './replay';
import { compileRule, type RuleConfig } from './rules';
import { toSampleColumns } from './sample-columns';
import { generateTraffic } from './traffic-generator';
import type { TrafficSample } from './traffic-sample';

/** A minimal valid sample; only what a test cares about is passed. */
function sample(timestampMs: number, clientIp = '198.51.100.1', extra: Partial<TrafficSample> = {}): TrafficSample {
  return {
    timestampMs,
    clientKey: clientIp,
    clientIp,
    method: 'GET',
    path: '/',
    status: 200,
    userAgent: 'test',
    headers: {},
    requestBytes: 100,
    malicious: false,
    attackType: '',
    ...extra,
  };
}

function replay(rule: RuleConfig, samples: TrafficSample[]): { predictions: number[]; scores: number[] } {
  const columns = toSampleColumns(samples, rule.type === 'header_pattern' ? [rule.header] : []);
  const out = replayRule(rule, columns);
  return { predictions: [...out.predictions], scores: [...out.scores] };
}

const perTen = (maxRequests: number): RuleConfig => ({
  type: 'rate_limit',
  maxRequests,
  windowSeconds: 10,
  keyBy: 'client_ip',
});

describe('shadow replay: rate limit (sliding log over every attempt)', () => {
  // Hand-computed: limit 2 per 10 s, window (t − 10 s, t]; the request at exactly t − 10 s is out, blocked ones count.
  it('replays a hand-computed sequence across window boundaries', () => {
    const times = [0, 1000, 2000, 9999, 10000, 10001, 20001];
    // in-window counts: 1, 2, 3, 4, 4 (t=0 left), 5, 1
    const { predictions, scores } = replay(perTen(2), times.map((t) => sample(t)));
    expect(predictions).to.deep.equal([0, 0, 1, 1, 1, 1, 0]);
    expect(scores).to.deep.equal([1 / 3, 2 / 3, 1, 4 / 3, 4 / 3, 5 / 3, 1 / 3]);
  });

  // Exactly one window apart is outside the window; one millisecond less is inside.
  it('treats the window as half-open (t − window, t]', () => {
    expect(replay(perTen(1), [sample(0), sample(10000)]).predictions).to.deep.equal([0, 0]);
    expect(replay(perTen(1), [sample(0), sample(9999)]).predictions).to.deep.equal([0, 1]);
  });

  // Blocked attempts stay in the log: a client that keeps hammering stays blocked (limit 1 per 10 s).
  it('counts blocked attempts toward the window', () => {
    // t=12000 sees t=5000 (blocked) in (2000, 12000] → count 2 → blocked.
    expect(replay(perTen(1), [sample(0), sample(5000), sample(12000), sample(22001)]).predictions).to.deep.equal([0, 1, 1, 0]);
  });

  // Requests with equal timestamps count in input order: the third of three is the one over a limit of 2.
  it('orders ties by input position', () => {
    expect(replay(perTen(2), [sample(5), sample(5), sample(5)]).predictions).to.deep.equal([0, 0, 1]);
  });

  // Each key has its own window; interleaving keys changes nothing.
  it('keeps keys independent', () => {
    const samples = [sample(0, '10.0.0.1'), sample(1, '10.0.0.2'), sample(2, '10.0.0.1'), sample(3, '10.0.0.2'), sample(4, '10.0.0.1')];
    expect(replay(perTen(2), samples).predictions).to.deep.equal([0, 0, 0, 0, 1]);
  });

  // client_key groups requests of one API key across IPs; client_ip does not.
  it('keys by client_key or client_ip as configured', () => {
    const samples = [
      sample(0, '10.0.0.1', { clientKey: 'ak_1' }),
      sample(1, '10.0.0.2', { clientKey: 'ak_1' }),
      sample(2, '10.0.0.3', { clientKey: 'ak_1' }),
    ];
    const byKey: RuleConfig = { type: 'rate_limit', maxRequests: 2, windowSeconds: 10, keyBy: 'client_key' };
    expect(replay(byKey, samples).predictions).to.deep.equal([0, 0, 1]);
    expect(replay(perTen(2), samples).predictions).to.deep.equal([0, 0, 0]);
  });

  // Out-of-order input is replayed in time order but reported by input index (integer and fractional timestamps).
  it('replays unsorted input in timestamp order', () => {
    const sorted = [0, 1000, 2000, 9999, 10000, 10001, 20001];
    const permutation = [3, 0, 6, 1, 5, 2, 4];
    const expected = [0, 0, 1, 1, 1, 1, 0];
    const shuffled = permutation.map((i) => sample(sorted[i]));
    expect(replay(perTen(2), shuffled).predictions).to.deep.equal(permutation.map((i) => expected[i]));
    const fractional = permutation.map((i) => sample(sorted[i] + 0.25));
    expect(replay(perTen(2), fractional).predictions).to.deep.equal(permutation.map((i) => expected[i]));
  });

  // timeOrder returns null for sorted input and a stable order otherwise (ties by index), on both sort paths.
  it('computes a stable time order', () => {
    expect(timeOrder(new Float64Array([1, 1, 2]))).to.equal(null);
    expect([...timeOrder(new Float64Array([5, 3, 5, 3]))!]).to.deep.equal([1, 3, 0, 2]);
    expect([...timeOrder(new Float64Array([5.5, 3.5, 5.5, 3.5]))!]).to.deep.equal([1, 3, 0, 2]);
    expect([...timeOrder(new Float64Array([1e15, 0, 1e15, 0]))!]).to.deep.equal([1, 3, 0, 2]); // too wide to pack
  });
});

describe('shadow replay: stateless rules and composites', () => {
  // The blocklist matches IPv4, IPv6 and IPv4-mapped clients, nothing else.
  it('matches a CIDR blocklist', () => {
    const rule: RuleConfig = { type: 'ip_blocklist', cidrs: ['203.0.113.0/24', '2001:db8:bad::/48'] };
    const samples = ['203.0.113.200', '203.0.114.1', '2001:db8:bad:1::9', '2001:db8::9', '::ffff:203.0.113.5'].map((ip, i) =>
      sample(i, ip),
    );
    expect(replay(rule, samples).predictions).to.deep.equal([1, 0, 1, 0, 1]);
  });

  // Path patterns respect case_insensitive; a 0/1 rule scores exactly its prediction.
  it('matches path patterns with and without case folding', () => {
    const samples = [sample(0, undefined, { path: '/.ENV' }), sample(1, undefined, { path: '/.env' }), sample(2, undefined, { path: '/home' })];
    expect(replay({ type: 'path_pattern', patterns: ['^/\\.env'] }, samples).predictions).to.deep.equal([0, 1, 0]);
    const ci = replay({ type: 'path_pattern', patterns: ['^/\\.env'], caseInsensitive: true }, samples);
    expect(ci.predictions).to.deep.equal([1, 1, 0]);
    expect(ci.scores).to.deep.equal([1, 1, 0]);
  });

  // user-agent reads the sample's UA ('' matches ^$); another header that is absent never matches.
  it('matches header patterns, absent headers never match', () => {
    const samples = [
      sample(0, undefined, { userAgent: 'sqlmap/1.8', headers: { 'x-debug': '1' } }),
      sample(1, undefined, { userAgent: '' }),
      sample(2, undefined, { userAgent: 'Mozilla/5.0' }),
    ];
    expect(replay({ type: 'header_pattern', header: 'User-Agent', patterns: ['sqlmap', '^$'] }, samples).predictions).to.deep.equal([
      1, 1, 0,
    ]);
    expect(replay({ type: 'header_pattern', header: 'x-debug', patterns: ['.*'] }, samples).predictions).to.deep.equal([1, 0, 0]);
  });

  // any = max of child scores and all = min; every rule fires iff its score ≥ 1.
  it('folds composites by max/min with fires ⇔ score ≥ 1', () => {
    const samples = [
      sample(0, '203.0.113.1', { path: '/a' }),
      sample(1, '203.0.113.1', { path: '/.env' }),
      sample(2, '203.0.113.1', { path: '/.env' }),
      sample(3, '10.0.0.1', { path: '/.env' }),
    ];
    const rl: RuleConfig = perTen(2);
    const env: RuleConfig = { type: 'path_pattern', patterns: ['\\.env'] };
    const any = replay({ type: 'any', rules: [rl, env] }, samples);
    expect(any.scores).to.deep.equal([1 / 3, 1, 1, 1]);
    expect(any.predictions).to.deep.equal([0, 1, 1, 1]);
    const all = replay({ type: 'all', rules: [rl, env] }, samples);
    expect(all.scores).to.deep.equal([0, 2 / 3, 1, 1 / 3]);
    expect(all.predictions).to.deep.equal([0, 0, 1, 0]);
    const nested = replay({ type: 'all', rules: [{ type: 'any', rules: [rl, env] }, { type: 'ip_blocklist', cidrs: ['203.0.113.0/24'] }] }, samples);
    expect(nested.predictions).to.deep.equal([0, 1, 1, 0]);
    for (let i = 0; i < samples.length; i++) expect(nested.predictions[i]).to.equal(nested.scores[i] >= 1 ? 1 : 0);
  });

  // Candidate and baseline share identical leaves: one match table and one window job serve both.
  it('shares work between rules with equal leaves', () => {
    const columns = toSampleColumns([sample(0), sample(1)]);
    const block: RuleConfig = { type: 'ip_blocklist', cidrs: ['198.51.100.0/24'] };
    const plan = planReplay(
      [compileRule({ type: 'any', rules: [block, perTen(5)] }), compileRule({ type: 'all', rules: [block, perTen(5)] })],
      columns,
    );
    expect(plan.matchJobs).to.have.length(1);
    expect(plan.windowJobs).to.have.length(1);
    const [a, b] = executePlan(plan, columns);
    expect([...a.predictions]).to.deep.equal([1, 1]);
    expect([...b.predictions]).to.deep.equal([0, 0]);
  });

  // Zero samples replay to empty outputs.
  it('handles an empty sample set', () => {
    const out = replayRule({ type: 'any', rules: [perTen(1), { type: 'path_pattern', patterns: ['x'] }] }, toSampleColumns([]));
    expect(out.predictions.length).to.equal(0);
    expect(out.fired).to.equal(0);
  });
});

describe('shadow replay: graded scores', () => {
  // A pattern rule scores the number of its patterns that match; it still fires iff that is ≥ 1.
  it('scores a pattern rule by its match count', () => {
    const samples = [
      sample(0, undefined, { path: '/admin/.env' }),
      sample(1, undefined, { path: '/.env' }),
      sample(2, undefined, { path: '/admin' }),
      sample(3, undefined, { path: '/home' }),
    ];
    const out = replay({ type: 'path_pattern', patterns: ['\\.env', '^/admin', 'env$'] }, samples);
    expect(out.scores).to.deep.equal([3, 2, 1, 0]);
    expect(out.predictions).to.deep.equal([1, 1, 1, 0]);
    // In `any` the larger count wins (max), in `all` the smaller (min).
    const env: RuleConfig = { type: 'path_pattern', patterns: ['\\.env', 'env$'] };
    const admin: RuleConfig = { type: 'path_pattern', patterns: ['^/admin'] };
    expect(replay({ type: 'any', rules: [admin, env] }, samples).scores).to.deep.equal([2, 2, 1, 0]);
    expect(replay({ type: 'all', rules: [admin, env] }, samples).scores).to.deep.equal([1, 0, 0, 0]);
  });

  // A score rule scores the sample's own score / min_score (0 without one) and fires at ≥ min_score.
  it("scores a score rule by the sample's score", () => {
    const samples = [
      sample(0, undefined, { score: 0.9 }),
      sample(1, undefined, { score: 0.5 }),
      sample(2, undefined, { score: 0.1 }),
      sample(3),
    ];
    const out = replay({ type: 'score', minScore: 0.5 }, samples);
    expect(out.scores).to.deep.equal([0.9 / 0.5, 1, 0.1 / 0.5, 0]);
    expect(out.predictions).to.deep.equal([1, 1, 0, 0]);
  });
});

describe('shadow replay: worker threads give identical results', function () {
  this.timeout(60000);
  const pools: EvaluationWorkerPool[] = [];
  after(async () => {
    await Promise.all(pools.map((p) => p.close()));
  });

  const rules: RuleConfig[] = [
    {
      type: 'any',
      rules: [
        { type: 'rate_limit', maxRequests: 20, windowSeconds: 10, keyBy: 'client_ip' },
        { type: 'path_pattern', patterns: ['\\.env', "'\\s*or\\s", '<script', '\\.\\./'], caseInsensitive: true },
        { type: 'header_pattern', header: 'user-agent', patterns: ['sqlmap', 'nikto', 'nuclei'], caseInsensitive: true },
        { type: 'ip_blocklist', cidrs: ['198.51.100.0/24', '203.0.113.0/24', '2001:db8:bad::/48'] },
      ],
    },
    {
      type: 'all',
      rules: [
        { type: 'rate_limit', maxRequests: 5, windowSeconds: 2, keyBy: 'client_key' },
        { type: 'any', rules: [{ type: 'path_pattern', patterns: ['^/api/'] }, { type: 'rate_limit', maxRequests: 50, windowSeconds: 30, keyBy: 'client_ip' }] },
      ],
    },
  ];
  // Unsorted on purpose (every 7th sample moved back 3 s), so the time-order path is exercised too.
  const samples = generateTraffic({ count: 40_000, seed: 99, requestsPerSecond: 400 }).map((s, i) =>
    i % 7 === 0 ? { ...s, timestampMs: s.timestampMs - 3000 } : s,
  );
  const columns = toSampleColumns(samples);
  const compiled = rules.map((r) => compileRule(r));
  const single = executePlan(planReplay(compiled, columns), columns);

  // Keys are cut into contiguous ranges and never split, whatever the part count.
  it('partitions keys without splitting any key', () => {
    const index = buildKeyIndex(columns.clientIp.ids, columns.clientIp.values.length, timeOrder(columns.timestampMs));
    for (const parts of [1, 2, 3, 4, 8]) {
      const bounds = partitionKeys(index, parts);
      expect(bounds).to.have.length(parts + 1);
      expect(bounds[0]).to.equal(0);
      expect(bounds[parts]).to.equal(index.keyCount);
      for (let p = 0; p < parts; p++) expect(bounds[p + 1]).to.be.at.least(bounds[p]);
    }
  });

  // 1, 2 and 4 workers (with the main thread's share, and with other partition counts) reproduce the single-threaded replay exactly.
  it('matches the single-threaded replay for 1, 2 and 4 workers', async () => {
    expect(single[0].fired).to.be.above(1000); // the rules actually fire
    expect(single[1].fired).to.be.above(0);
    for (const size of [1, 2, 4]) {
      const pool = new EvaluationWorkerPool(size);
      pools.push(pool);
      for (const parts of size === 2 ? [undefined, 2, 4] : [undefined]) {
        const parallel = await executePlanParallel(planReplay(compiled, columns), columns, pool, parts);
        for (let r = 0; r < rules.length; r++) {
          expect(parallel[r].fired, `rule ${r}, ${size} workers, ${parts ?? 'default'} parts`).to.equal(single[r].fired);
          expect(Buffer.from(parallel[r].predictions).equals(Buffer.from(single[r].predictions))).to.equal(true);
          expect(Buffer.from(parallel[r].scores.buffer).equals(Buffer.from(single[r].scores.buffer))).to.equal(true);
        }
      }
    }
  });

  // A task that fails in a worker rejects its promise and the pool keeps working afterwards.
  it('reports worker task errors and stays usable', async () => {
    const pool = pools[0];
    const broken = { kind: 'match', leaf: { type: 'path_pattern', patterns: ['('] }, values: ['x'], out: new Uint8Array(1), offset: 0 };
    let failure: unknown;
    try {
      await pool.run(broken as Parameters<EvaluationWorkerPool['run']>[0]);
    } catch (error) {
      failure = error;
    }
    expect(String(failure)).to.match(/evaluation worker failed: .*invalid regular expression/);
    const again = await executePlanParallel(planReplay(compiled, columns), columns, pool);
    expect(again[0].fired).to.equal(single[0].fired);
  });
});
