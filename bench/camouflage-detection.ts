/**
 * Detection on the labelled corpus (bench/fixtures/camouflage-corpus.ts), each request scored
 * statically (a fresh session: no behaviour), with the WAF (libddwaf) on and off in one run:
 * detection per attack class and the false-positive rate on ordinary traffic at each tier
 * threshold, and the scoring time p50/p99 (the CPU half of Assess: validation, normalisation,
 * detectors, WAF; Redis excluded).   npx tsx bench/camouflage-detection.ts
 */
import { ThreatScorer } from '../services/camouflage/domain/threat-scoring';
import { DdwafRunner } from '../services/camouflage/waf/ddwaf';
import { browserRequest } from '../testing/camouflage-kit';
import { CORPUS } from './fixtures/camouflage-corpus';

const THRESHOLDS = [{ name: '>=SUSPICIOUS(3)', level: 3 }, { name: '>=LIKELY_BOT(6)', level: 6 }, { name: '>=ATTACK(9)', level: 9 }];
const ROUNDS = 200;
const inputs = CORPUS.map((c) => ({ cls: c.class, input: browserRequest({ ...c.request, headers: { ...browserRequest().headers, ...(c.request.headers ?? {}) } }) }));

function run(label: string, scorer: ThreatScorer): void {
  const levels = inputs.map((c) => ({ cls: c.cls, level: scorer.scoreStatic(c.input).threatLevel }));
  console.log(`\n== WAF ${label}`);
  const classes = [...new Set(levels.filter((l) => l.cls !== '').map((l) => l.cls))];
  for (const t of THRESHOLDS) {
    const per = classes.map((cls) => { const of = levels.filter((l) => l.cls === cls); return `${cls} ${of.filter((l) => l.level >= t.level).length}/${of.length}`; });
    const attacks = levels.filter((l) => l.cls !== ''); const ordinary = levels.filter((l) => l.cls === '');
    const det = attacks.filter((l) => l.level >= t.level).length; const fp = ordinary.filter((l) => l.level >= t.level).length;
    console.log(`${t.name.padEnd(16)} detection ${((100 * det) / attacks.length).toFixed(1)}% (${det}/${attacks.length})  FP ${((100 * fp) / ordinary.length).toFixed(1)}% (${fp}/${ordinary.length})  | ${per.join(', ')}`);
  }
  const times: number[] = [];
  for (let r = 0; r < ROUNDS; r++) for (const c of inputs) { const t = process.hrtime.bigint(); scorer.prepare(c.input); times.push(Number(process.hrtime.bigint() - t) / 1e3); }
  times.sort((a, b) => a - b);
  console.log(`scoring p50 ${times[Math.floor(times.length * 0.5)]!.toFixed(1)} µs  p99 ${times[Math.floor(times.length * 0.99)]!.toFixed(1)} µs  (${times.length} runs)`);
}

run('off', new ThreatScorer());
run('on', new ThreatScorer({ waf: new DdwafRunner().run }));
