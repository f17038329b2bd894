import { execFileSync } from 'node:child_process';
import { expect } from 'chai';
import { projectRoot } from '../platform/paths';
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
