import { execFileSync } from 'node:child_process';
import { expect } from 'chai';
import { projectRoot } from '../platform/paths';
import type { RunningService } from '../platform/server';
import { address, startTestService } from '../testing/harness';
import { checkHealth } from '../testing/probe-service';
import { listServices } from '../testing/reflection-client';
import { isServiceName, SERVICE_NAMES, SERVICES, serviceEntry } from './services';

describe('service registry', () => {
  // Each entry loads the module it names (startService takes a module's default ports from its entry).
  it('agrees with every service module', () => {
    expect(SERVICES.map((s) => s.name)).to.deep.equal([...SERVICE_NAMES]);
    for (const entry of SERVICES) {
      const module = entry.load();
      expect(module.name, entry.name).to.equal(entry.name);
      expect(serviceEntry(entry.name)).to.equal(entry);
    }
  });

  it('knows only its own names', () => {
    expect(SERVICE_NAMES.every(isServiceName)).to.equal(true);
    for (const other of ['billing', '', 'Credits', undefined, 5004]) expect(isServiceName(other), String(other)).to.equal(false);
  });

  // The entry point imports the registry before starting telemetry: importing it must not load
  // grpc-js, pg or ioredis, or their instrumentations could not patch them.
  it('loads no service module (nor grpc-js, pg, ioredis) until load() is called', () => {
    const script = [
      "require('./scripts/services');",
      "const loaded = Object.keys(require.cache).filter((f) => /node_modules[\\\\/](@grpc[\\\\/]grpc-js|pg|ioredis)[\\\\/]|[\\\\/]services[\\\\/]/.test(f));",
      'process.stdout.write(JSON.stringify(loaded));',
    ].join('\n');
    const out = execFileSync(process.execPath, ['--import', 'tsx', '-e', script], { cwd: projectRoot(), encoding: 'utf8' });
    expect(JSON.parse(out)).to.deep.equal([]);
  });
});

describe('the registered services', () => {
  // Each service's reflection lists its own API plus health; together, all three.
  it('reflection lists credits, shadow and camouflage plus health', async () => {
    // Started one by one inside try: a service that fails to start must not leak the others
    // (a leaked shadow keeps its rollout controller leading for later suites).
    const services: RunningService[] = [];
    try {
      for (const entry of SERVICES) services.push(await startTestService(entry.load()));
      const listed = await Promise.all(services.map((s) => listServices(address(s))));
      expect(listed[0]).to.deep.equal(['grpc.health.v1.Health', 'shieldx.credits.v1.CreditsService']);
      expect(listed[1]).to.deep.equal(['grpc.health.v1.Health', 'shieldx.shadow.v1.ShadowService']);
      expect(listed[2]).to.deep.equal(['grpc.health.v1.Health', 'shieldx.camouflage.v1.CamouflageService']);
      for (const s of services) expect(await checkHealth(address(s))).to.equal('SERVING');
    } finally {
      await Promise.all(services.map((s) => s.shutdown()));
    }
  });
});
