/**
 * The credits service module (wiring only): builds the settings' objects, the store, the ledger,
 * the batcher, the periodic jobs and the RPC handlers, and returns the ServiceModule the launchers
 * load (scripts/services.ts). The rules are in domain/, the rows in store/, the wire in rpc/.
 */
import { CreditsServiceService } from '../../gen/shieldx/credits/v1/credits';
import { ConfigError } from '../../platform/config';
import type { ServiceModule } from '../../platform/server';
import { type CreditsShape, creditsConfigShape } from './config';
import { ConsumeBatcher } from './consume-batcher';
import { CreditsMetrics } from './credits-metrics';
import { AuditChain } from './domain/audit-chain';
import { PaymentKeyring } from './domain/payment-crypto';
import { startCreditsJobs } from './jobs';
import { Ledger } from './ledger';
import { creditsImplementation } from './rpc/handlers';
import { readAccounts } from './store/accounts';
import { BalanceCache } from './store/balance-cache';
import { DependencyBreaker, isDatabaseUnavailable } from './store/breakers';
import { Database } from './store/database';
import { RequestHasher } from './store/idempotency';

export { creditsConfigShape } from './config';

export const creditsService: ServiceModule<CreditsShape> = {
  name: 'credits',
  grpcServiceName: 'shieldx.credits.v1.CreditsService',
  errorDomain: 'credits.shieldx.io',
  configShape: creditsConfigShape,
  scopes: {
    GetBalance: 'credits:read',
    ListTransactions: 'credits:read',
    GetOperation: 'credits:read',
    VerifyAuditChain: 'credits:audit',
    Consume: 'credits:write',
    ConsumeStream: 'credits:write',
    TopUp: 'credits:write',
    Reserve: 'credits:write',
    CommitReservation: 'credits:write',
    ReleaseReservation: 'credits:write',
    BatchConsume: 'credits:write',
  },
  async create(ctx) {
    const { config, logger } = ctx;
    if (!(config.CREDITS_PAYMENT_ACTIVE_KEY_ID in config.CREDITS_PAYMENT_KEYS)) {
      throw new ConfigError('CREDITS_PAYMENT_ACTIVE_KEY_ID', 'must name a key configured in CREDITS_PAYMENT_KEYS');
    }
    const keyring = new PaymentKeyring(config.CREDITS_PAYMENT_KEYS, config.CREDITS_PAYMENT_ACTIVE_KEY_ID);
    const chain = new AuditChain(config.CREDITS_AUDIT_HMAC_KEY);
    // A key of its own, derived from the audit key, so the two uses never share a key.
    const hasher = new RequestHasher(chain.deriveKey('idempotency-request-hash'));
    const metrics = new CreditsMetrics(ctx.registry);
    const db = new DependencyBreaker(
      'postgres',
      {
        timeoutMs: config.CREDITS_DB_TIMEOUT_MS,
        resetTimeoutMs: config.CREDITS_BREAKER_RESET_MS,
        errorThresholdPercentage: 50,
        volumeThreshold: 5,
        rollingCountTimeoutMs: 10_000,
      },
      metrics,
      isDatabaseUnavailable,
    );
    const redisBreaker = new DependencyBreaker(
      'redis',
      {
        timeoutMs: config.CREDITS_REDIS_TIMEOUT_MS,
        resetTimeoutMs: Math.min(config.CREDITS_BREAKER_RESET_MS, 2_000),
        errorThresholdPercentage: 50,
        volumeThreshold: 3,
        rollingCountTimeoutMs: 10_000,
      },
      metrics,
      () => true,
    );
    const database = new Database(ctx.pool, db);
    // The cache repairs from PostgreSQL (through the same breaker); the ledger writes through the cache.
    const cache = new BalanceCache(
      ctx.redis,
      redisBreaker,
      metrics,
      logger,
      config.CREDITS_CACHE_KEY_PREFIX,
      config.CREDITS_CACHE_TTL_SECONDS,
      (tenants) => readAccounts(database.query, tenants),
      // The near cache needs a real Redis (client tracking); the in-process store of `npm start` has none.
      // In Redis Cluster mode the cache turns it off itself (balance-cache.ts says why).
      config.REDIS_URL === undefined && config.REDIS_CLUSTER_NODES === undefined && config.REDIS_SENTINELS === undefined
        ? 0
        : config.CREDITS_CACHE_LOCAL_ENTRIES,
    );
    const ledger = new Ledger({
      database,
      readPool: ctx.readPool,
      cache,
      metrics,
      chain,
      keyring,
      logger,
      idempotencyTtlHours: config.CREDITS_IDEMPOTENCY_TTL_HOURS,
    });
    const batcher = new ConsumeBatcher(
      (items, committed) => ledger.consumeMany(items, committed),
      {
        maxBatchItems: config.CREDITS_BATCH_MAX_ITEMS,
        maxInFlight: config.CREDITS_BATCH_MAX_IN_FLIGHT,
        maxQueuedItems: config.CREDITS_BATCH_MAX_QUEUED,
        lingerMs: config.CREDITS_BATCH_LINGER_MS,
      },
      metrics,
      logger,
      ledger.gate,
    );

    const jobs = startCreditsJobs({ ledger, pool: ctx.pool, metrics, logger, shutdownSignal: ctx.shutdownSignal }, config);
    const implementation = creditsImplementation({ ledger, batcher, hasher, metrics, handlerOptions: ctx.handlerOptions, errorDomain: creditsService.errorDomain });

    return {
      definition: CreditsServiceService,
      implementation: implementation as never,
      async close() {
        jobs.abort();
        await batcher.close();
        await jobs.stopped();
        db.shutdown();
        redisBreaker.shutdown();
        await cache.close();
      },
    };
  },
};
