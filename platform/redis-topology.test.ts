/** REDIS_URL / REDIS_CLUSTER_NODES / REDIS_SENTINELS: parsed and checked at start, a bad value named. */
import { expect } from 'chai';
import { ConfigError, loadConfig, platformConfigSchema } from './config';
import { redisTopology } from './redis';

const base = {
  GRPC_PORT: '1',
  METRICS_PORT: '2',
  DATABASE_URL: 'postgres://x@127.0.0.1/db',
  SHIELDX_API_KEYS: JSON.stringify([{ id: 'k', sha256: 'a'.repeat(64), scopes: ['*'] }]),
};
const topology = (env: Record<string, string>) => redisTopology(loadConfig(platformConfigSchema, { ...base, ...env }));
const refusal = (env: Record<string, string>) => {
  try {
    topology(env);
  } catch (error) {
    if (error instanceof ConfigError) return { variable: error.variable, problem: error.problem };
    throw error;
  }
  throw new Error('accepted');
};

describe('platform redis: topology from configuration', () => {
  it('reads a cluster as a list of seed nodes', () => {
    expect(topology({ REDIS_CLUSTER_NODES: '10.0.0.1:7000, redis-1.redis:7001' })).to.deep.equal({
      kind: 'cluster',
      nodes: [{ host: '10.0.0.1', port: 7000 }, { host: 'redis-1.redis', port: 7001 }],
      password: undefined,
    });
  });
  it('reads Sentinel as sentinels and a master name', () => {
    expect(topology({ REDIS_SENTINELS: '127.0.0.1:26379', REDIS_SENTINEL_MASTER: 'mymaster', REDIS_PASSWORD: 'pw' })).to.deep.equal({
      kind: 'sentinel',
      sentinels: [{ host: '127.0.0.1', port: 26379 }],
      masterName: 'mymaster',
      password: 'pw',
    });
  });
  it('keeps one URL as it was', () => {
    expect(topology({ REDIS_URL: 'redis://127.0.0.1:6380' })).to.deep.equal({ kind: 'single', url: 'redis://127.0.0.1:6380' });
    expect(topology({})).to.equal(undefined);
  });
  it('refuses bad values and mixtures, naming the variable', () => {
    expect(refusal({ REDIS_CLUSTER_NODES: '10.0.0.1' })).to.include({ variable: 'REDIS_CLUSTER_NODES' });
    expect(refusal({ REDIS_CLUSTER_NODES: '10.0.0.1:0' })).to.include({ variable: 'REDIS_CLUSTER_NODES' });
    expect(refusal({ REDIS_SENTINELS: 'a:1,,b:2', REDIS_SENTINEL_MASTER: 'm' })).to.include({ variable: 'REDIS_SENTINELS' });
    expect(refusal({ REDIS_URL: 'redis://x', REDIS_CLUSTER_NODES: 'a:1' })).to.include({ variable: 'REDIS_CLUSTER_NODES' });
    expect(refusal({ REDIS_SENTINELS: 'a:1' })).to.include({ variable: 'REDIS_SENTINEL_MASTER' });
    expect(refusal({ REDIS_SENTINEL_MASTER: 'm' })).to.include({ variable: 'REDIS_SENTINEL_MASTER' });
    expect(refusal({ REDIS_URL: 'redis://x', REDIS_PASSWORD: 'pw' })).to.include({ variable: 'REDIS_PASSWORD' });
  });
});
