import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { processAlive } from '../testing/harness';
import { startRedisServer } from './local-servers';

describe('local servers: startRedisServer', function () {
  this.timeout(20_000);
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'shieldx-fake-redis-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  /** An executable standing in for redis-server, running `body` under /bin/sh. */
  function fakeRedis(body: string): string {
    const path = join(dir, 'redis-server');
    writeFileSync(path, `#!/bin/sh\n${body}\n`);
    chmodSync(path, 0o755);
    return path;
  }

  const rejection = (promise: Promise<{ stop(): Promise<void> }>) =>
    promise.then(
      async (server) => {
        await server.stop();
        return new Error('started');
      },
      (error: Error) => error,
    );

  // A redis-server that never says it is ready is killed when the wait times out, not left running.
  it('kills the child when it is not ready in time', async () => {
    const pidFile = join(dir, 'pid');
    const binary = fakeRedis(`echo $$ > '${pidFile}'\nexec sleep 60`);
    const error = await rejection(startRedisServer({ binary, readyTimeoutMs: 1500 }));
    expect(error.message).to.match(/did not start within 1500 ms/);
    expect(existsSync(pidFile), 'the fake server ran').to.equal(true);
    const pid = Number(readFileSync(pidFile, 'utf8'));
    expect(processAlive(pid), `process ${pid} still running`).to.equal(false);
  });

  // One that exits (bad configuration, port taken) fails at once with its output, not after the timeout.
  it('reports a child that exits before it is ready, with its output', async () => {
    const binary = fakeRedis(`echo "FATAL CONFIG FILE ERROR" >&2\nexit 1`);
    const error = await rejection(startRedisServer({ binary, readyTimeoutMs: 60_000 }));
    expect(error.message).to.match(/exited \(1\) before it was ready/);
    expect(error.message).to.include('FATAL CONFIG FILE ERROR');
  });
});
