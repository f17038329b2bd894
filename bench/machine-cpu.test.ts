import { expect } from 'chai';
import { cpuSnapshot, formatCpuPerOp, statCpu } from './machine-cpu';

describe('bench machine CPU accounting', () => {
  // A command name may hold spaces and parentheses: the fields are read after the last ')'.
  it('reads utime + stime (and the waited-for children on request) from a /proc stat line', () => {
    // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime cutime cstime ...
    const line = '4242 (postgres: a (b) c) S 1 4242 4242 0 -1 4194560 10 0 0 0 250 50 700 300 20 0 1 0 100 0 0';
    expect(statCpu(line, false)).to.deep.equal({ comm: 'postgres: a (b) c', seconds: 3 });
    expect(statCpu(line, true)).to.deep.equal({ comm: 'postgres: a (b) c', seconds: 13 });
  });

  it('sees this process spend CPU, and prints it per operation', () => {
    const before = cpuSnapshot();
    // Spin until this process has used 150 ms of CPU (not wall time: the machine may be busy).
    const start = process.cpuUsage();
    let spins = 0;
    for (let used = 0; used < 150_000; spins += 1) {
      const u = process.cpuUsage(start);
      used = u.user + u.system;
    }
    const after = cpuSnapshot();
    expect(spins).to.be.greaterThan(0);
    // 150 ms of CPU, read at the kernel's 10 ms resolution.
    expect(after.generator - before.generator).to.be.within(0.12, 0.5);
    expect(after.machine - before.machine).to.be.at.least(after.generator - before.generator - 0.02);
    // PostgreSQL and Redis belong to other tests running meanwhile: only their format is checked.
    const line = formatCpuPerOp(before, after, 10);
    expect(line).to.match(/^PostgreSQL -?\d+, Redis -?\d+, generator (1[0-9]{4}|[2-9][0-9]{4}|[0-9]{6}), whole machine \d+ µs CPU each$/);
  });
});
