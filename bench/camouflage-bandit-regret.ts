/**
 * Camouflage bandit regret: UCB1 and Thompson sampling on Bernoulli arms, run with the exact
 * selection code that serves traffic (services/camouflage/domain/bandit-math.ts), in memory.
 *
 *   npx tsx bench/camouflage-bandit-regret.ts [--seeds 10] [--horizon 100000]
 *
 * Prints, per arm set and checkpoint n ∈ {10³, 10⁴, 10⁵}: mean cumulative pseudo-regret over
 * the seeds for both policies, the Auer–Cesa-Bianchi–Fischer (2002) Theorem 1 bound for UCB1,
 * and regret / ln n — roughly flat when regret grows logarithmically (linear growth would make
 * it rise ~10× per decade). The same-run comparison it is judged by: UCB1 ≤ bound at every
 * checkpoint, and regret(10n) / regret(n) far below 10.
 */
import { auerUcb1RegretBound } from '../services/camouflage/domain/bandit-math';
import { SimulatedPolicy, averageRegret } from '../services/camouflage/domain/bandit-simulation';
import { benchArgs } from './args';

interface ArmSet {
  readonly name: string;
  readonly means: readonly number[];
}

const ARM_SETS: readonly ArmSet[] = [
  { name: 'spread (0.9, 0.8, 0.5, 0.3, 0.1)', means: [0.9, 0.8, 0.5, 0.3, 0.1] },
  { name: 'close (0.55, 0.5, 0.45, 0.4, 0.35)', means: [0.55, 0.5, 0.45, 0.4, 0.35] },
];

function main(): void {
  const { seeds: seedCount, horizon } = benchArgs({
    seeds: { type: 'number', default: 10, integer: true, min: 1, max: 1_000 },
    horizon: { type: 'number', default: 100_000, integer: true, min: 1, max: 10_000_000 },
  });
  const checkpoints = [1_000, 10_000, 100_000].filter((n) => n <= horizon);
  const seeds = Array.from({ length: seedCount }, (_, i) => i + 1);
  console.log(`camouflage bandit regret — mean cumulative pseudo-regret over ${seedCount} seeds (node ${process.version})`);
  let allUnderBound = true;
  for (const set of ARM_SETS) {
    const started = process.hrtime.bigint();
    const results = new Map<SimulatedPolicy, number[]>();
    for (const policy of ['ucb1', 'thompson'] as const) results.set(policy, averageRegret(set.means, policy, checkpoints, seeds));
    const elapsedMs = Number(process.hrtime.bigint() - started) / 1e6;
    console.log(`\narms ${set.name}`);
    console.log('       n |    UCB1 | UCB1/ln n |  Auer bound | Thompson | TS/ln n');
    console.log('---------+---------+-----------+-------------+----------+--------');
    checkpoints.forEach((n, i) => {
      const ucb1 = results.get('ucb1')?.[i] ?? Number.NaN;
      const thompson = results.get('thompson')?.[i] ?? Number.NaN;
      const bound = auerUcb1RegretBound(set.means, n);
      if (!(ucb1 <= bound)) allUnderBound = false;
      const ln = Math.log(n);
      console.log(
        `${String(n).padStart(8)} | ${ucb1.toFixed(1).padStart(7)} | ${(ucb1 / ln).toFixed(2).padStart(9)} | ${bound.toFixed(1).padStart(11)} | ${thompson.toFixed(1).padStart(8)} | ${(thompson / ln).toFixed(2).padStart(6)}`,
      );
    });
    const ucb1 = results.get('ucb1') ?? [];
    const growth = ucb1.slice(1).map((r, i) => (r / (ucb1[i] as number)).toFixed(2));
    console.log(`UCB1 regret growth per decade of n: ${growth.join(', ')} (linear growth would be 10)   [${elapsedMs.toFixed(0)} ms]`);
  }
  console.log(`\nUCB1 under the Auer et al. bound at every checkpoint: ${allUnderBound ? 'yes' : 'NO'}`);
  if (!allUnderBound) process.exitCode = 1;
}

main();
