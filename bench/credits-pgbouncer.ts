/**
 * Consume throughput through PgBouncer against direct connections, in one run:
 * `npx tsx bench/credits-pgbouncer.ts [--rounds 2] [--duration 8] [--concurrency 32] [--replicas 2]`.
 *
 * Each round runs bench/credits.ts's closed-loop unary Consume phase twice, on fresh databases:
 * once with `--replicas N` services connected directly, once with the same replicas behind
 * PgBouncer in transaction pooling (`--pgbouncer`), alternating which goes first so a drift of the
 * shared machine does not favour one side. Prints each figure and the ratio per round, then the
 * spread over the rounds.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { benchArgs } from './args';

const args = benchArgs({
  rounds: { type: 'number', env: 'BENCH_ROUNDS', default: 2, integer: true, min: 1, max: 10 },
  duration: { type: 'number', env: 'BENCH_DURATION_SECONDS', default: 8, min: 1 },
  concurrency: { type: 'number', env: 'BENCH_CONCURRENCY', default: 32, integer: true, min: 1 },
  replicas: { type: 'number', env: 'BENCH_REPLICAS', default: 2, integer: true, min: 1, max: 4 },
});

interface Figure {
  readonly perSecond: number;
  readonly line: string;
}

function consumeFigure(pgbouncer: boolean): Figure {
  const flags = ['--phases', 'closed', '--skip-pgbench', '--concurrency', String(args.concurrency), '--duration', String(args.duration), '--replicas', String(args.replicas)];
  if (pgbouncer) flags.push('--pgbouncer');
  const run = spawnSync(process.execPath, ['--import', 'tsx', join(__dirname, 'credits.ts'), ...flags], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  if (run.status !== 0) throw new Error(`bench/credits.ts ${flags.join(' ')} failed (${run.status}): ${run.stderr.slice(-2000)}`);
  const line = run.stdout.split("\n").find((l) => l.includes("Consume (gRPC)") && l.includes(`closed c=${args.concurrency} `));
  if (!line) throw new Error(`no closed-loop Consume figure in the output of bench/credits.ts:\n${run.stdout.slice(-3000)}`);
  return { perSecond: Number(/(\d+) req\/s/.exec(line)![1]), line: line.trim() };
}

const ratios: number[] = [];
for (let round = 1; round <= args.rounds; round++) {
  const order = round % 2 === 1 ? [false, true] : [true, false];
  const figures = new Map<boolean, Figure>();
  for (const pgbouncer of order) figures.set(pgbouncer, consumeFigure(pgbouncer));
  const direct = figures.get(false)!;
  const pooled = figures.get(true)!;
  const ratio = pooled.perSecond / direct.perSecond;
  ratios.push(ratio);
  console.log(`round ${round} (${args.replicas} replicas, c=${args.concurrency}, ${args.duration} s):`);
  console.log(`  direct     ${direct.line}`);
  console.log(`  pgbouncer  ${pooled.line}`);
  console.log(`  through PgBouncer / direct: ${ratio.toFixed(2)}x`);
}
console.log(`ratio over ${args.rounds} round(s): min ${Math.min(...ratios).toFixed(2)}x, max ${Math.max(...ratios).toFixed(2)}x`);
