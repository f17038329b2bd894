import { expect } from 'chai';
import pg from 'pg';
import { openInfrastructure } from './harness';

describe('test infrastructure', function () {
  this.timeout(120_000);

  // A step after embedded PostgreSQL has started fails (here redis-server cannot be started):
  // the embedded server is stopped before the error reaches the caller, not left running.
  it('stops embedded PostgreSQL when a later step fails', async () => {
    const started: { postgres?: string; redis?: string } = {};
    let error: unknown;
    await openInfrastructure({
      redisServer: { binary: '/nonexistent/redis-server' },
      onLocalServer: (kind, url) => (started[kind] = url),
    }).catch((e: unknown) => (error = e));
    expect(String(error)).to.include('cannot start /nonexistent/redis-server');
    expect(started.postgres, 'embedded PostgreSQL was started').to.be.a('string');
    expect(started.redis).to.equal(undefined);
    const client = new pg.Client({ connectionString: started.postgres, connectionTimeoutMillis: 5_000 });
    const connectError = await client.connect().then(
      () => undefined,
      (e: unknown) => e as NodeJS.ErrnoException,
    );
    await client.end().catch(() => undefined);
    expect(connectError?.code, 'embedded PostgreSQL still accepts connections').to.equal('ECONNREFUSED');
  });
});
