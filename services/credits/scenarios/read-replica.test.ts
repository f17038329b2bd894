/**
 * Credits with a real streaming replica (pg_basebackup -R from a scratch primary, as the PITR tests
 * build clusters) as DATABASE_READ_URL. With the replica's replay paused (a replica as far behind
 * as it gets), a caller never sees its own write undone: GetBalance after Consume, the replay of
 * the same key, GetOperation and the history all show it. The staleness bound is measured.
 */
import { appendFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'chai';
import pg from 'pg';
import type { ConsumeResponse, GetBalanceResponse, GetOperationResponse, ListTransactionsResponse } from '../../../gen/shieldx/credits/v1/credits';
import type { RunningService } from '../../../platform/server';
import { freePort } from '../../../dev/local-servers';
import { Credits, key, payment, startCredits, tenant } from '../../../testing/credits-kit';
import { skipOrFailInCi } from '../../../testing/require-tool';
import { findServerBinDir, ownedDir, runAsClusterUser, startScratchCluster, type ScratchCluster } from '../../../testing/scratch-cluster';

describe('credits with a streaming read replica (DATABASE_READ_URL)', function () {
  this.timeout(180_000);
  let primary: ScratchCluster | undefined;
  let standbyData: string | undefined;
  let standbyUrl = '';
  let service: RunningService | undefined;
  let credits: Credits | undefined;

  const onStandby = async <R extends pg.QueryResultRow>(sql: string) => {
    const client = new pg.Client({ connectionString: standbyUrl });
    await client.connect();
    try {
      return (await client.query<R>(sql)).rows;
    } finally {
      await client.end();
    }
  };

  before(async function () {
    const found = findServerBinDir(['postgres', 'initdb', 'pg_ctl', 'pg_basebackup']);
    if ('missing' in found) skipOrFailInCi(this, found.missing);
    const { binDir } = found as Exclude<typeof found, { missing: string }>;
    primary = await startScratchCluster({ binDir, prefix: 'shieldx-replica-', settings: { max_wal_senders: '4', wal_level: 'replica' } });
    standbyData = join(primary.root, 'standby');
    const port = await freePort();
    runAsClusterUser(join(binDir.dir, 'pg_basebackup'), ['-d', primary.url, '-D', standbyData, '-R', '-X', 'stream', '--no-sync']);
    appendFileSync(join(standbyData, 'postgresql.conf'), `\n# standby\nport = ${port}\nunix_socket_directories = '${ownedDir(join(primary.root, 'standby-sock'))}'\n`);
    runAsClusterUser(join(binDir.dir, 'pg_ctl'), ['-D', standbyData, '-l', join(primary.root, 'standby.log'), '-w', '-t', '60', 'start']);
    standbyUrl = `postgres://postgres@127.0.0.1:${port}/postgres`;
    // Checked often so the test need not wait long for the watch to see the replica.
    service = await startCredits({ DATABASE_URL: primary.url, DATABASE_READ_URL: standbyUrl, DB_HEALTH_CHECK_INTERVAL_MS: '100', DB_READ_MAX_LAG_MS: '5000' });
    credits = new Credits(service);
  });
  after(async () => {
    credits?.close();
    await service?.shutdown();
    if (primary && standbyData) {
      try {
        runAsClusterUser(join(primary.binDir, 'pg_ctl'), ['-D', standbyData, '-m', 'immediate', '-w', 'stop']);
      } catch {
        // not running
      }
    }
    primary?.destroy();
  });

  it('measures a staleness bound within DB_READ_MAX_LAG_MS while the replica keeps up', async () => {
    // Bounded wait: the watch checks every 100 ms.
    let bound: number | undefined;
    for (let i = 0; i < 200 && (bound === undefined || service!.database.readPool() === service!.pool); i++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      bound = service!.database.replicaStalenessMs();
    }
    expect(bound, 'measured staleness bound (ms)').to.be.a('number');
    expect(bound!).to.be.at.most(5000);
    expect(service!.database.readPool()).to.not.equal(service!.pool);
    process.stdout.write(`      measured replica staleness bound: ${bound} ms\n`);
  });

  it('never shows a caller its own write undone while the replica lags', async () => {
    await onStandby('SELECT pg_wal_replay_pause()');
    try {
      const t = tenant('lag');
      await credits!.call('topUp', { tenantId: t, amount: 100n, idempotencyKey: key('top'), reference: '', payment: payment(), metadata: {} });
      const k = key('c');
      const consumed = await credits!.call<object, ConsumeResponse>('consume', { tenantId: t, amount: 30n, idempotencyKey: k, reference: '', metadata: {} });
      expect(consumed.account!.balance).to.equal(70n);
      // The replica has neither write.
      expect(await onStandby(`SELECT 1 FROM credit_accounts WHERE tenant_id = '${t}'`)).to.deep.equal([]);
      expect((await credits!.call<object, GetBalanceResponse>('getBalance', { tenantId: t, consistentRead: false })).account!.balance).to.equal(70n);
      expect((await credits!.call<object, GetBalanceResponse>('getBalance', { tenantId: t, consistentRead: true })).account!.balance).to.equal(70n);
      const replay = await credits!.call<object, ConsumeResponse>('consume', { tenantId: t, amount: 30n, idempotencyKey: k, reference: '', metadata: {} });
      expect(replay.replayed).to.equal(true);
      expect(replay.account!.balance).to.equal(70n);
      const op = await credits!.call<object, GetOperationResponse>('getOperation', { tenantId: t, idempotencyKey: k });
      expect(op.method).to.equal('/shieldx.credits.v1.CreditsService/Consume');
      // History may lag, but only within the bound: with replay paused the watch sends it to the primary
      // once the bound passes (bounded wait), and it then shows both writes.
      let history: ListTransactionsResponse | undefined;
      for (let i = 0; i < 200; i++) {
        history = await credits!.call<object, ListTransactionsResponse>('listTransactions', { tenantId: t, pageSize: 10, pageToken: '', types: [] }).catch(() => undefined);
        if (history?.transactions.length === 2) break;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      expect(history!.transactions.map((x) => x.idempotencyKey)).to.include(k);
    } finally {
      await onStandby('SELECT pg_wal_replay_resume()');
    }
  });
});
