import { expect } from 'chai';
import { benchArgs, parseNumber } from './args';

const OPTIONS = {
  duration: { type: 'number', env: 'BENCH_DURATION_SECONDS', default: 10, min: 0 },
  concurrency: { type: 'numbers', env: 'BENCH_CONCURRENCY', default: [16, 32, 64], integer: true, min: 1 },
  client: { type: 'string', env: 'BENCH_CLIENT', default: 'grpc-js', choices: ['grpc-js', 'h2'] },
  phases: { type: 'list', env: 'BENCH_PHASES', default: ['closed', 'open'], choices: ['closed', 'open', 'balance'] },
  'skip-pgbench': { type: 'boolean' },
  verbose: { type: 'boolean', env: 'BENCH_VERBOSE' },
} as const;

const parse = (argv: string[], env: NodeJS.ProcessEnv = {}) => benchArgs(OPTIONS, { argv, env });

describe('bench arguments', () => {
  // Nothing given: every default, typed (numbers as numbers, lists as arrays, booleans false).
  it('gives the defaults', () => {
    const args = parse([]);
    expect(args).to.deep.include({ duration: 10, concurrency: [16, 32, 64], client: 'grpc-js', phases: ['closed', 'open'], 'skip-pgbench': false, verbose: false });
    expect(args.positionals).to.deep.equal([]);
  });

  // The flag wins over its environment variable, which wins over the default; both flag spellings work.
  it('takes the flag, else the environment variable, else the default', () => {
    const env = { BENCH_DURATION_SECONDS: '3', BENCH_CONCURRENCY: '4, 8', BENCH_CLIENT: 'h2', BENCH_PHASES: 'balance', BENCH_VERBOSE: 'true' };
    expect(parse([], env)).to.deep.include({ duration: 3, concurrency: [4, 8], client: 'h2', phases: ['balance'], verbose: true });
    expect(parse(['--duration', '1.5', '--concurrency=2', '--client', 'grpc-js', '--phases', 'closed,balance'], env)).to.deep.include({
      duration: 1.5,
      concurrency: [2],
      client: 'grpc-js',
      phases: ['closed', 'balance'],
    });
    // Exported but empty counts as unset.
    expect(parse([], { BENCH_DURATION_SECONDS: '' }).duration).to.equal(10);
  });

  it('reads boolean flags', () => {
    expect(parse(['--skip-pgbench'])['skip-pgbench']).to.equal(true);
    expect(parse([], { BENCH_VERBOSE: '0' }).verbose).to.equal(false);
    expect(() => parse([], { BENCH_VERBOSE: 'yes please' })).to.throw('BENCH_VERBOSE must be true or false');
  });

  // A mistyped flag must stop the bench, not run it with the default it meant to change.
  it('refuses an unknown flag, a flag without its value and a stray argument', () => {
    expect(() => parse(['--durration', '5'])).to.throw(/Unknown option '--durration'/);
    expect(() => parse(['--duration'])).to.throw(/--duration.*argument missing/);
    expect(() => parse(['5'])).to.throw(/Unexpected argument '5'/);
    expect(benchArgs({}, { argv: ['10000', '100'], env: {}, positionals: true }).positionals).to.deep.equal(['10000', '100']);
  });

  // Values of the wrong kind fail with the flag or variable named, instead of becoming NaN.
  it('refuses values of the wrong kind', () => {
    expect(() => parse(['--duration', 'ten'])).to.throw('--duration must be a number, not "ten"');
    expect(() => parse(['--duration=-1'])).to.throw('--duration must be at least 0');
    expect(() => parse([], { BENCH_CONCURRENCY: '16,x' })).to.throw('BENCH_CONCURRENCY must be a number, not "x"');
    expect(() => parse(['--concurrency', '1.5'])).to.throw('--concurrency must be an integer');
    expect(() => parse(['--client', 'curl'])).to.throw('--client: unknown value "curl" (grpc-js, h2)');
    expect(() => parse(['--phases', 'closed,opne'])).to.throw('--phases: unknown value "opne" (closed, open, balance)');
    expect(() => parse(['--phases', ','])).to.throw('--phases must list at least one value');
    expect(() => parseNumber('6000000', 'size', { max: 5_000_000 })).to.throw('size must be at most 5000000');
    expect(() => parseNumber('', 'size')).to.throw('size must be a number');
  });
});
