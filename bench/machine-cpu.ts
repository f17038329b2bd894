/**
 * Where a bench phase's CPU went, by process, read from Linux's /proc: the
 * service under test, PostgreSQL (all its backends), Redis, the load generator
 * (this process, or a child it waited for, such as pgbench), and the machine as
 * a whole. On a two-core machine every process competes for the same cores, so
 * a throughput figure only explains itself next to what each party spent.
 *
 * Resolution is the kernel's clock tick (10 ms at 100 Hz): fine for phases of seconds. A process
 * that exits between the listing and the read of its figures is missed in that snapshot.
 * Where /proc is not there (not Linux), every figure is NaN and the bench goes on.
 */
import { readdirSync, readFileSync } from 'node:fs';

/** CPU seconds so far, by party. */
export interface CpuSnapshot {
  readonly postgres: number;
  readonly redis: number;
  /** This process plus the children it has waited for (pgbench run with spawnSync). */
  readonly generator: number;
  /** All CPUs, busy time (not idle, not iowait). */
  readonly machine: number;
}

const TICKS_PER_SECOND = 100;

/** utime + stime of one /proc/<pid>/stat line, and the waited-for children's share when asked. */
export function statCpu(text: string, withChildren: boolean): { comm: string; seconds: number } {
  // The command name is in parentheses and may hold spaces: split after the last ')'.
  const close = text.lastIndexOf(')');
  const comm = text.slice(text.indexOf('(') + 1, close);
  const f = text.slice(close + 2).split(' ');
  // Fields from the state (field 3): utime is field 14, stime 15, cutime 16, cstime 17.
  const own = Number(f[11]) + Number(f[12]);
  const children = withChildren ? Number(f[13]) + Number(f[14]) : 0;
  return { comm, seconds: (own + children) / TICKS_PER_SECOND };
}

export function cpuSnapshot(): CpuSnapshot {
  try {
    let postgres = 0;
    let redis = 0;
    for (const pid of readdirSync('/proc')) {
      if (!/^\d+$/.test(pid)) continue;
      let text: string;
      try {
        text = readFileSync(`/proc/${pid}/stat`, 'utf8');
      } catch {
        continue; // gone since the listing
      }
      // With the children it has waited for: a backend that exits (pgbench's, at its end) takes its
      // CPU time with it, into the postmaster's count of reaped children.
      const { comm, seconds } = statCpu(text, true);
      if (comm === 'postgres' || comm.startsWith('postgres:')) postgres += seconds;
      else if (comm === 'redis-server') redis += seconds;
    }
    const generator = statCpu(readFileSync('/proc/self/stat', 'utf8'), true).seconds;
    // /proc/stat "cpu" line: user nice system idle iowait irq softirq steal ...
    const cpu = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
    const machine = (cpu.reduce((a, b) => a + b, 0) - cpu[3]! - cpu[4]!) / TICKS_PER_SECOND;
    return { postgres, redis, generator, machine };
  } catch {
    return { postgres: NaN, redis: NaN, generator: NaN, machine: NaN };
  }
}

/** "machine CPU per op: PostgreSQL 180, Redis 12, generator 210, all 790 µs" for `ops` operations between two snapshots. */
export function formatCpuPerOp(before: CpuSnapshot, after: CpuSnapshot, ops: number, generatorName = 'generator'): string {
  const us = (k: keyof CpuSnapshot) => (((after[k] - before[k]) * 1e6) / Math.max(1, ops)).toFixed(0);
  return `PostgreSQL ${us('postgres')}, Redis ${us('redis')}, ${generatorName} ${us('generator')}, whole machine ${us('machine')} µs CPU each`;
}
