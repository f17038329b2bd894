import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { closeSync, constants, mkdtempSync, openSync, rmSync } from 'node:fs';
import { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';

const FIXTURE = join(__dirname, '..', 'testing', 'fixtures', 'stalled-stdout-logger.ts');

/**
 * Runs the fixture with its stdout on a FIFO whose reader (returned as an fd) does not read until
 * the test says so: a hung log shipper, or `npm start | less` left alone. Resolves once it has
 * logged `mib` MiB (the pipe holds 64 KiB), with its report.
 */
async function loggingIntoStalledPipe(mib: number, use: (child: ChildProcess, report: () => string, reader: number) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'stalled-stdout-'));
  const fifo = join(dir, 'stdout');
  execFileSync('mkfifo', [fifo]);
  // The reader is opened first, so that the writer's open does not block.
  const reader = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
  const writer = openSync(fifo, constants.O_WRONLY);
  const child = spawn(process.execPath, ['--expose-gc', '--import', 'tsx', FIXTURE], {
    env: { ...process.env, LOG_MIB: String(mib), LOG_LEVEL: 'info' },
    stdio: ['ignore', writer, 'pipe'],
  });
  closeSync(writer);
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  try {
    while (!/logged \d+ MiB/.test(stderr) && child.exitCode === null) await new Promise((r) => setTimeout(r, 100));
    expect(child.exitCode, stderr).to.equal(null);
    await use(child, () => stderr, reader);
  } finally {
    child.kill('SIGKILL');
    try {
      closeSync(reader);
    } catch {
      // already closed by a socket the test put on it
    }
    rmSync(dir, { recursive: true, force: true });
  }
}

function exitWithin(child: ChildProcess, ms: number): Promise<number | string | null> {
  if (child.exitCode !== null) return Promise.resolve(child.exitCode);
  return Promise.race([
    new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code))),
    new Promise<string>((resolve) => setTimeout(() => resolve(`still running ${ms} ms after SIGTERM`), ms)),
  ]);
}

describe('logger with a stdout nobody reads', function () {
  this.timeout(60_000);

  // Unbounded, pino kept every line (80 MB of heap here) and retried the full pipe forever at exit.
  it('bounds what it holds in memory, and still exits on SIGTERM', async () => {
    await loggingIntoStalledPipe(64, async (child, report) => {
      const heap = Number(/heap (\d+)/.exec(report())?.[1]);
      expect(heap, report()).to.be.lessThan(48 * 1024 * 1024);
      child.kill('SIGTERM');
      expect(await exitWithin(child, 20_000), report()).to.equal(0);
    });
  });

  it('says how many lines it dropped once stdout is read again', async () => {
    await loggingIntoStalledPipe(32, async (_child, report, reader) => {
      const socket = new Socket({ fd: reader, readable: true, writable: false });
      let out = '';
      socket.on('data', (d: Buffer) => (out += d.toString()));
      try {
        const deadline = Date.now() + 20_000;
        while (!out.includes('log lines dropped') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
        const warning = out.split('\n').find((l) => l.includes('log lines dropped'));
        expect(warning, report()).to.be.a('string');
        const parsed = JSON.parse(warning!) as { level: string; service: string; dropped: number };
        expect(parsed).to.include({ level: 'warn', service: 'stalled-stdout' });
        // 32 MiB of 1 KiB lines, of which the 16 MiB bound and the pipe hold fewer than 17,000.
        expect(parsed.dropped).to.be.within(15_000, 32 * 1024);
      } finally {
        socket.destroy();
      }
    });
  });
});
