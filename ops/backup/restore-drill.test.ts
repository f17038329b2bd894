/**
 * Restore drill for the credits ledger: seed it through the real credits
 * service over gRPC (tenants, top-ups with encrypted card data, consumes, a
 * batch, reservations committed, released and still held, a refused consume),
 * back it up with the backup CLI, verify, restore into a new database, and
 * check that every table is identical row for row (ordered by primary key),
 * sequences continue where they stopped, and a credits service pointed at the
 * restored database verifies the audit chain, serves the same balances and
 * keeps working.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import pg from 'pg';
import type {
  CommitReservationResponse,
  GetBalanceResponse,
  ReleaseReservationResponse,
  ReserveResponse,
  TopUpResponse,
  VerifyAuditChainResponse,
  BatchConsumeResponse,
  ConsumeResponse,
} from '../../gen/shieldx/credits/v1/credits';
import { withDatabase } from '../../platform/db';
import type { RunningService } from '../../platform/server';
import { createDatabase, startTestService } from '../../testing/harness';
import { Credits, creditsEnv, failure, key, payment, tenant } from '../../testing/credits-kit';
import { creditsService } from '../../services/credits';
import { main } from './cli';
import { sequenceValues, snapshotDatabase, type TableSnapshot } from './table-snapshot';
import { backupTestServerOrSkip, type BackupTestServer } from '../../testing/backup-server';

const TENANTS = 5;
const LEDGER_TABLES = ['public.credit_accounts', 'public.credit_transactions', 'public.credit_reservations', 'public.credit_audit_logs', 'public.credit_payments', 'public.credit_idempotency_keys'];

async function cli(argv: string[], env: NodeJS.ProcessEnv): Promise<{ code: number; stdout: string; stderr: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(argv, env, (l) => out.push(l), (l) => err.push(l));
  return { code, stdout: out.join('\n'), stderr: err.join('\n') };
}

function startCreditsOn(databaseUrl: string): Promise<RunningService> {
  // Same audit HMAC and payment keys as the source (module constants of the kit): a restore keeps the keys.
  return startTestService(creditsService as never, { ...creditsEnv(), DATABASE_URL: databaseUrl });
}

describe('restore drill: credits ledger backup → restore → identical, audit chain verifies', function () {
  this.timeout(180_000);
  let server: BackupTestServer;
  let source: { url: string; drop: () => Promise<void> };
  let restoredDb: string;
  let restoredUrl: string;
  let dir: string;
  const env: NodeJS.ProcessEnv = { ...process.env, SHIELDX_BACKUP_KEY: '' };
  const tenants: string[] = [];
  let sourceTables: Map<string, TableSnapshot>;
  let sourceSequences: Record<string, string>;
  let sourceAudit: VerifyAuditChainResponse;
  const sourceBalances = new Map<string, GetBalanceResponse>();

  before(async function () {
    server = await backupTestServerOrSkip(this);
    source = await createDatabase(server.serverUrl, 'shieldx_drill_src');
    dir = mkdtempSync(join(tmpdir(), 'shieldx-drill-'));

    const service = await startCreditsOn(source.url);
    const credits = new Credits(service);
    try {
      for (let i = 0; i < TENANTS; i++) {
        const t = tenant(`drill${i}`);
        tenants.push(t);
        for (const amount of [10_000n * BigInt(i + 1), 2_500n]) {
          await credits.call<object, TopUpResponse>('topUp', { tenantId: t, amount, idempotencyKey: key(), reference: `invoice-${i}`, payment: payment(), metadata: { source: 'drill' } });
        }
        for (let n = 0; n < 3; n++) {
          await credits.call<object, ConsumeResponse>('consume', { tenantId: t, amount: 1_234n + BigInt(i), idempotencyKey: key(), reference: `req-${n}`, metadata: { n: String(n) } });
        }
        // A retried consume (same key) replays and writes nothing new.
        const retryKey = key('retry');
        await credits.call('consume', { tenantId: t, amount: 7n, idempotencyKey: retryKey, reference: 'retry', metadata: {} });
        const replay = await credits.call<object, ConsumeResponse>('consume', { tenantId: t, amount: 7n, idempotencyKey: retryKey, reference: 'retry', metadata: {} });
        expect(replay.replayed).to.equal(true);
        // A refused consume leaves a FAILED idempotency record.
        const refused = await failure(credits.call('consume', { tenantId: t, amount: 10_000_000n, idempotencyKey: key('big'), reference: 'too-much', metadata: {} }));
        expect(refused.reason).to.equal('INSUFFICIENT_CREDITS');
        const reserve = (amount: bigint) =>
          credits.call<object, ReserveResponse>('reserve', { tenantId: t, amount, idempotencyKey: key(), reference: 'job', metadata: {}, ttl: { seconds: 3_600n, nanos: 0 } });
        const committed = await reserve(500n);
        await credits.call<object, CommitReservationResponse>('commitReservation', { tenantId: t, reservationId: committed.reservation!.id, amount: 300n, idempotencyKey: key() });
        const released = await reserve(700n);
        await credits.call<object, ReleaseReservationResponse>('releaseReservation', { tenantId: t, reservationId: released.reservation!.id, idempotencyKey: key() });
        await reserve(900n); // still held at backup time
      }
      const batch = await credits.call<object, BatchConsumeResponse>('batchConsume', {
        tenantId: tenants[0],
        idempotencyKey: key('batch'),
        atomic: true,
        items: tenants.map((t, i) => ({ tenantId: t, amount: 11n + BigInt(i), reference: 'batch', metadata: {} })),
      });
      expect(batch.succeeded).to.equal(TENANTS);

      sourceAudit = await credits.call<object, VerifyAuditChainResponse>('verifyAuditChain', { tenantId: '' });
      for (const t of tenants) sourceBalances.set(t, await credits.call<object, GetBalanceResponse>('getBalance', { tenantId: t, consistentRead: true }));
    } finally {
      credits.close();
      // Writes stop before the backup, so "identical" is well defined.
      await service.shutdown();
    }
    sourceTables = await snapshotDatabase(source.url, { includeMigrationTables: true });
    sourceSequences = await sequenceValues(source.url);

    const keyFile = join(dir, 'drill.key');
    expect((await cli(['keygen', '--out', keyFile], env)).code).to.equal(0);
    const made = await cli(['backup', '--db-url', source.url, '--out-dir', join(dir, 'backups'), '--key-file', keyFile, '--json'], env);
    expect(made.code, made.stderr).to.equal(0);
    const archive = (JSON.parse(made.stdout) as { archivePath: string }).archivePath;
    const verified = await cli(['verify', archive, '--key-file', keyFile], env);
    expect(verified.code, verified.stderr).to.equal(0);
    expect(verified.stdout).to.include('TABLE DATA public credit_audit_logs');
    restoredDb = `shieldx_drill_restored_${Date.now().toString(36)}`;
    const restored = await cli(['restore', archive, '--target-db', restoredDb, '--db-url', server.serverUrl, '--key-file', keyFile], env);
    expect(restored.code, restored.stderr).to.equal(0);
    restoredUrl = withDatabase(server.serverUrl, restoredDb);
  });

  after(async () => {
    if (restoredDb) {
      const admin = new pg.Client({ connectionString: server.serverUrl });
      await admin.connect();
      await admin.query(`DROP DATABASE IF EXISTS "${restoredDb}" WITH (FORCE)`).catch(() => undefined);
      await admin.end();
    }
    await source?.drop();
    if (dir) rmSync(dir, { recursive: true, force: true });
    server?.stop();
  });

  // The seed is what the drill claims: every tenant, transactions of each kind, and reservations in each state.
  it('seeded tenants, transactions and reservations in every state', async () => {
    expect(sourceTables.get('public.credit_accounts')!.rows).to.have.length(TENANTS);
    const types = new Set(sourceTables.get('public.credit_transactions')!.rows.map((r) => (JSON.parse(r) as { type: string }).type));
    expect([...types].sort()).to.include.members(['CAPTURE', 'CONSUME', 'RELEASE', 'RESERVE', 'TOP_UP']);
    const states = sourceTables.get('public.credit_reservations')!.rows.map((r) => (JSON.parse(r) as { state: string }).state);
    expect(states.filter((s) => s === 'HELD')).to.have.length(TENANTS);
    expect(states.filter((s) => s === 'COMMITTED')).to.have.length(TENANTS);
    expect(states.filter((s) => s === 'RELEASED')).to.have.length(TENANTS);
    expect(sourceTables.get('public.credit_payments')!.rows).to.have.length(TENANTS * 2);
    expect(sourceAudit.valid).to.equal(true);
    expect(sourceAudit.tenantsChecked).to.equal(BigInt(TENANTS));
  });

  // Balances, transactions, reservations, payments, audit rows, idempotency records and migration bookkeeping are identical row for row.
  it('restores every ledger table identically, ordered by primary key', async () => {
    const restored = await snapshotDatabase(restoredUrl, { includeMigrationTables: true });
    expect([...restored.keys()]).to.deep.equal([...sourceTables.keys()]);
    for (const table of LEDGER_TABLES) {
      expect(restored.get(table)!.rows.length, table).to.be.greaterThan(0);
      expect(restored.get(table), table).to.deep.equal(sourceTables.get(table));
    }
    expect(restored).to.deep.equal(sourceTables);
    // Identity sequences continue where they stopped: the next transaction gets a fresh seq.
    expect(await sequenceValues(restoredUrl)).to.deep.equal(sourceSequences);
  });

  // A credits service on the restored database verifies the whole audit chain, serves the same balances, and takes new writes.
  it('serves the restored ledger: audit chain verifies, balances match, writes continue', async () => {
    const service = await startCreditsOn(restoredUrl);
    const credits = new Credits(service);
    try {
      const audit = await credits.call<object, VerifyAuditChainResponse>('verifyAuditChain', { tenantId: '' });
      expect(audit).to.deep.include({ valid: true, rowsChecked: sourceAudit.rowsChecked, tenantsChecked: sourceAudit.tenantsChecked });
      expect(audit.breaks).to.deep.equal([]);
      for (const t of tenants) {
        const balance = await credits.call<object, GetBalanceResponse>('getBalance', { tenantId: t, consistentRead: true });
        expect(balance.account, t).to.deep.equal(sourceBalances.get(t)!.account);
      }
      const next = await credits.call<object, ConsumeResponse>('consume', { tenantId: tenants[1], amount: 1n, idempotencyKey: key(), reference: 'after-restore', metadata: {} });
      expect(next.account!.balance).to.equal(sourceBalances.get(tenants[1])!.account!.balance - 1n);
      const after = await credits.call<object, VerifyAuditChainResponse>('verifyAuditChain', { tenantId: tenants[1] });
      expect(after.valid).to.equal(true);
      // The migration bookkeeping came with the data: starting the service applied nothing again.
      const migrations = (await snapshotDatabase(restoredUrl, { includeMigrationTables: true })).get('public.pgmigrations_credits');
      expect(migrations).to.deep.equal(sourceTables.get('public.pgmigrations_credits'));
    } finally {
      credits.close();
      await service.shutdown();
    }
  });

  // The audit check can fail: one altered amount in the restored audit log is reported as a break.
  it('would notice a damaged audit chain in the restored copy', async () => {
    const client = new pg.Client({ connectionString: restoredUrl });
    await client.connect();
    try {
      await client.query('ALTER TABLE credit_audit_logs DISABLE TRIGGER credit_audit_logs_no_update_delete');
      await client.query('UPDATE credit_audit_logs SET amount = amount + 1 WHERE tenant_id = $1 AND seq = 2', [tenants[2]]);
    } finally {
      await client.end();
    }
    const service = await startCreditsOn(restoredUrl);
    const credits = new Credits(service);
    try {
      const audit = await credits.call<object, VerifyAuditChainResponse>('verifyAuditChain', { tenantId: '' });
      expect(audit.valid).to.equal(false);
      expect(audit.breaks.map((b) => b.tenantId)).to.deep.equal([tenants[2]]);
    } finally {
      credits.close();
      await service.shutdown();
    }
  });
});
