import { expect } from 'chai';
import { randomUUID } from 'node:crypto';
import { CamouflageServiceClient, type AssessRequest, type AssessResponse } from '../../../gen/shieldx/camouflage/v1/camouflage';
import type { RunningService } from '../../../platform/server';
import { address, bearer, insecure, startTestService, testKeys } from '../../../testing/harness';
import { startRedisCluster, type TestRedisCluster } from '../../../testing/redis-cluster';
import { requireTool } from '../../../testing/require-tool';
import { camouflageService } from '../index';

function request(overrides: Partial<AssessRequest> = {}): AssessRequest {
  return {
    clientIp: '198.51.100.20', method: 'GET', path: '/.env', query: '', headers: { host: '192.0.2.1' },
    userAgent: 'sqlmap/1.7', tlsFingerprint: '', sessionKey: `s-${randomUUID()}`, timestamp: new Date(), previousStatus: 0, policy: 0,
    ...overrides,
  };
}

describe('camouflage on a Redis Cluster (3 masters + 3 replicas)', function () {
  this.timeout(120_000);
  let cluster: TestRedisCluster;
  let service: RunningService | undefined;

  before(async function () {
    requireTool(this, 'redis-server', 'Debian package `redis-server`');
    requireTool(this, 'redis-cli', 'Debian package `redis-tools`');
    cluster = await startRedisCluster();
  });
  after(async () => {
    await service?.shutdown();
    await cluster?.stop();
  });

  it('starts against the cluster and answers Assess', async () => {
    service = await startTestService(camouflageService, { REDIS_URL: '', REDIS_CLUSTER_NODES: cluster.seeds });
    const client = new CamouflageServiceClient(address(service), insecure);
    const answer = await new Promise<{ error: unknown; response?: AssessResponse }>((resolve) =>
      client.assess(request(), bearer(testKeys.camouflage), (error, response) => resolve({ error, response })),
    );
    client.close();
    expect(answer.error).to.equal(null);
    expect(answer.response?.decisionId).to.be.a('string');
  });
});
