import { readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { processAlive, serviceEnv } from './harness';
import { checkHealth } from './probe-service';
import { scrapeMetrics } from '../platform/prometheus-text';
import { ServiceStartError, spawnServiceProcess } from './service-process';

describe('service process (tests and benches)', function () {
  this.timeout(60_000);

  // On ports 0 the ports come from the service's own log; node flags reach the service process;
  // stdout goes to the file as well; stop() ends it with a clean exit.
  it('starts on the ports it logs, with its node flags, and stops', async () => {
    const logFile = join(tmpdir(), `shieldx-service-process-${process.pid}.log`);
    const service = await spawnServiceProcess('credits', {
      env: serviceEnv({ LOG_LEVEL: 'info' }),
      nodeArgs: ['--stack-size=2000'],
      stdoutFile: logFile,
    });
    try {
      expect(service.grpcPort).to.be.greaterThan(0);
      expect(service.metricsPort).to.be.greaterThan(0);
      expect(await checkHealth(`127.0.0.1:${service.grpcPort}`)).to.equal('SERVING');
      expect(await scrapeMetrics(service)).to.include('grpc_server_started_total');
      expect(readFileSync(`/proc/${service.process.pid}/cmdline`, 'utf8').split('\0')).to.include('--stack-size=2000');
      await service.stop();
      expect(await service.exited).to.equal(0);
      expect(processAlive(service.process.pid!)).to.equal(false);
      expect(readFileSync(logFile, 'utf8')).to.include('"credits listening"');
      expect(service.stdout().some((line) => line.includes('"credits listening"'))).to.equal(true);
    } finally {
      await service.stop();
      rmSync(logFile, { force: true });
    }
  });

  // A service that exits before listening rejects at once with what it wrote to stderr.
  it('rejects with the service stderr when it exits before listening', async () => {
    let error: unknown;
    await spawnServiceProcess('credits', { env: serviceEnv({ GRPC_PORT: 'not-a-port' }) }).catch((e: unknown) => (error = e));
    expect(String(error)).to.match(/credits exited with 2 before listening: invalid configuration: GRPC_PORT must be a port number/);
  });

  // A process that exits cleanly (code 0) before listening has not started either: the same rejection, saying so,
  // without a dangling ": " when it wrote nothing to stderr (`node --version` prints to stdout and exits 0).
  it('rejects when the process exits cleanly before listening', async () => {
    let error: unknown;
    await spawnServiceProcess('credits', { env: serviceEnv(), nodeArgs: ['--version'] }).catch((e: unknown) => (error = e));
    expect(error).to.be.instanceOf(ServiceStartError);
    expect((error as Error).message).to.equal('credits exited with 0 before listening');
  });

  // A service that does not listen in time is killed, not left running behind the error.
  it('leaves no process behind when the service does not start in time', async () => {
    let error: unknown;
    await spawnServiceProcess('credits', { env: serviceEnv(), startTimeoutMs: 200 }).catch((e: unknown) => (error = e));
    expect(error).to.be.instanceOf(ServiceStartError);
    expect(String(error)).to.match(/credits did not start in 0.2 s/);
    const { pid } = error as ServiceStartError;
    expect(pid).to.be.a('number');
    expect(processAlive(pid!), `service process ${pid} still running`).to.equal(false);
  });
});
