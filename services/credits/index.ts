/**
 * The credits service module: configuration, wiring, and the thin gRPC
 * handler layer (decode, validate, call the ledger, count). The ledger's rules
 * are in ledger.ts; group commit in consume-batcher.ts; the audit chain in
 * audit-chain.ts; payment encryption in payment-crypto.ts; the cache in
 * balance-cache.ts.
 */
import { z } from 'zod';
import { Status } from '../../gen/google/rpc/status';
import {
  BatchConsumeResponse,
  CommitReservationResponse,
  type ConsumeRequest,
  ConsumeResponse,
  CreditsServiceService,
  type GetOperationResponse,
  OperationState,
  ReleaseReservationResponse,
  ReserveResponse,
  TopUpResponse,
} from '../../gen/shieldx/credits/v1/credits';
import { ConfigError } from '../../platform/config';
import { requestIdStream, unary, type CallContext } from '../../platform/handlers';
import { pageSize as pageSizeFor } from '../../platform/page-size';
import type { ServiceModule } from '../../platform/server';
import { Code, ServiceError } from '../../platform/service-error';
import { toStatusDetails } from '../../platform/status-details';
import { AuditChain } from './domain/audit-chain';
import { BalanceCache } from './store/balance-cache';
import { startJobs } from '../../platform/periodic-jobs';
import { DependencyBreaker, isDatabaseUnavailable } from './store/breakers';
import { ConsumeBatcher } from './consume-batcher';
import { CreditsMetrics } from './credits-metrics';
import { findRecord, probeKey, pruneExpired, RequestHasher, serviceErrorOf } from './store/idempotency';
import { accountProto, Ledger, METHOD } from './ledger';
import { PaymentKeyring, parsePaymentKeys, validatePayment } from './domain/payment-crypto';
import * as v from './rpc/validation';
import { operationNotFound } from './errors';

const int = (min: number, max: number) =>
  z.coerce
    .number({ invalid_type_error: 'must be a number' })
    .int('must be an integer')
    .min(min, `must be at least ${min}`)
    .max(max, `must be at most ${max}`);

const base64Key = (minBytes: number) =>
  z
    .string()
    .regex(/^[A-Za-z0-9+/]+={0,2}$/, 'must be base64')
    .transform((s) => Buffer.from(s, 'base64'))
    .refine((b) => b.length >= minBytes, `must decode to at least ${minBytes} bytes`);

export const creditsConfigShape = {
  /** JSON map keyId → base64 32-byte AES-256 key. */
  CREDITS_PAYMENT_KEYS: z.string().transform((raw, ctx) => {
    const parsed = parsePaymentKeys(raw);
    if (typeof parsed === 'string') {
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: parsed });
      return z.NEVER;
    }
    return parsed;
  }),
  /** Key id used to encrypt new payment data; must be in CREDITS_PAYMENT_KEYS. */
  CREDITS_PAYMENT_ACTIVE_KEY_ID: z.string().min(1),
  /** base64, at least 32 bytes: keys the audit chain HMAC (and request fingerprints). */
  CREDITS_AUDIT_HMAC_KEY: base64Key(32),
  CREDITS_IDEMPOTENCY_TTL_HOURS: int(24, 24 * 365).default(24),
  CREDITS_IDEMPOTENCY_PRUNE_INTERVAL_SECONDS: int(1, 86_400).default(600),
  CREDITS_AUDIT_VERIFY_INTERVAL_SECONDS: int(1, 86_400).default(300),
  CREDITS_INVARIANT_CHECK_INTERVAL_SECONDS: int(1, 86_400).default(60),
  /** The periodic checks above read only what changed since their checkpoints; this often they re-scan everything. */
  CREDITS_FULL_VERIFY_INTERVAL_SECONDS: int(1, 30 * 86_400).default(86_400),
  CREDITS_RESERVATION_SWEEP_INTERVAL_MS: int(10, 3_600_000).default(5_000),
  CREDITS_CACHE_TTL_SECONDS: int(1, 86_400).default(60),
  CREDITS_CACHE_KEY_PREFIX: z.string().max(64).default('credits:'),
  CREDITS_CACHE_LOCAL_ENTRIES: int(0, 1_000_000).default(10_000),
  CREDITS_BATCH_MAX_ITEMS: int(1, 1_000).default(128),
  CREDITS_BATCH_MAX_IN_FLIGHT: int(1, 64).default(4),
  CREDITS_BATCH_MAX_QUEUED: int(1, 1_000_000).default(20_000),
  CREDITS_BATCH_LINGER_MS: int(0, 100).default(0),
  CREDITS_DB_TIMEOUT_MS: int(100, 600_000).default(10_000),
  CREDITS_REDIS_TIMEOUT_MS: int(5, 60_000).default(100),
  CREDITS_BREAKER_RESET_MS: int(100, 600_000).default(5_000),
};

type CreditsShape = typeof creditsConfigShape;

const OPS = {
  GetBalance: 'get_balance',
  Consume: 'consume',
  ConsumeStream: 'consume',
  TopUp: 'top_up',
  Reserve: 'reserve',
  CommitReservation: 'commit_reservation',
  ReleaseReservation: 'release_reservation',
  BatchConsume: 'batch_consume',
  ListTransactions: 'list_transactions',
  GetOperation: 'get_operation',
  VerifyAuditChain: 'verify_audit_chain',
} as const;

/**
 * Requests of one ConsumeStream call being worked on at once (reading pauses beyond it). Large
 * enough to fill several group-commit batches from one caller; the batcher's queue bound
 * (CREDITS_BATCH_MAX_QUEUED) still caps the whole process.
 */
const CONSUME_STREAM_IN_FLIGHT_MAX = 512;

const METHOD_RESULTS: Record<string, (bytes: Uint8Array) => GetOperationResponse['result']> = {
  [METHOD.consume]: (b) => ({ $case: 'consume', value: ConsumeResponse.decode(b) }),
  [METHOD.topUp]: (b) => ({ $case: 'topUp', value: TopUpResponse.decode(b) }),
  [METHOD.reserve]: (b) => ({ $case: 'reserve', value: ReserveResponse.decode(b) }),
  [METHOD.commitReservation]: (b) => ({ $case: 'commitReservation', value: CommitReservationResponse.decode(b) }),
  [METHOD.releaseReservation]: (b) => ({ $case: 'releaseReservation', value: ReleaseReservationResponse.decode(b) }),
  [METHOD.batchConsume]: (b) => ({ $case: 'batchConsume', value: BatchConsumeResponse.decode(b) }),
};

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
    // Late-bound: the cache repairs from the ledger, the ledger writes through the cache.
    let ledgerRef: Ledger | undefined;
    const cache = new BalanceCache(
      ctx.redis,
      redisBreaker,
      metrics,
      logger,
      config.CREDITS_CACHE_KEY_PREFIX,
      config.CREDITS_CACHE_TTL_SECONDS,
      (tenants) => ledgerRef!.accounts(tenants),
      // The near cache needs a real Redis (client tracking); the in-process store of `npm start` has none.
      config.REDIS_URL === undefined ? 0 : config.CREDITS_CACHE_LOCAL_ENTRIES,
    );
    const ledger = new Ledger({
      pool: ctx.pool,
      db,
      cache,
      metrics,
      chain,
      keyring,
      logger,
      idempotencyTtlHours: config.CREDITS_IDEMPOTENCY_TTL_HOURS,
    });
    ledgerRef = ledger;
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

    const jobsController = new AbortController();
    ctx.shutdownSignal.addEventListener('abort', () => jobsController.abort(), { once: true });
    // The periodic checks are incremental (checkpoints per tenant, migrations/credits/0003);
    // every CREDITS_FULL_VERIFY_INTERVAL_SECONDS one of their runs re-scans everything instead.
    // A full run that fails (PostgreSQL away) is retried on the next tick, not a whole interval later.
    const fullRunEvery = (ms: number) => {
      let last = Date.now();
      return { due: () => Date.now() - last >= ms, done: () => (last = Date.now()) };
    };
    const auditFullRun = { ...fullRunEvery(config.CREDITS_FULL_VERIFY_INTERVAL_SECONDS * 1000), valid: true };
    const invariantFullRun = { ...fullRunEvery(config.CREDITS_FULL_VERIFY_INTERVAL_SECONDS * 1000), violations: 0 };
    const stopJobs = startJobs(
      [
        {
          name: 'reservation-expiry',
          intervalMs: config.CREDITS_RESERVATION_SWEEP_INTERVAL_MS,
          run: async () => {
            // Bounded: at most 10 rounds of 200 holds per tick.
            for (let round = 0; round < 10 && !jobsController.signal.aborted; round++) {
              if ((await ledger.expireDue(200)) < 200) break;
            }
          },
        },
        {
          name: 'idempotency-prune',
          intervalMs: config.CREDITS_IDEMPOTENCY_PRUNE_INTERVAL_SECONDS * 1000,
          run: async () => {
            const pruned = await pruneExpired(ctx.pool, 1_000, 20);
            if (pruned > 0) logger.info({ pruned }, 'expired idempotency records pruned');
          },
        },
        {
          name: 'audit-verify',
          intervalMs: config.CREDITS_AUDIT_VERIFY_INTERVAL_SECONDS * 1000,
          firstRunMs: Math.min(5_000, config.CREDITS_AUDIT_VERIFY_INTERVAL_SECONDS * 1000),
          run: async () => {
            const full = auditFullRun.due();
            const result = full ? await ledger.verifyAuditChain(undefined) : await ledger.verifyNewAuditRows();
            // A full run's verdict stands until the next full run: rows it found broken may not move again.
            if (full) {
              auditFullRun.valid = result.valid;
              auditFullRun.done();
            }
            metrics.auditChainValid.set(result.valid && auditFullRun.valid ? 1 : 0);
            metrics.auditChainLastVerified.set(Date.now() / 1000);
            if (!result.valid) logger.error({ full, breaks: result.breaks.slice(0, 10) }, 'audit chain verification failed');
          },
        },
        {
          name: 'invariant-check',
          intervalMs: config.CREDITS_INVARIANT_CHECK_INTERVAL_SECONDS * 1000,
          firstRunMs: Math.min(5_000, config.CREDITS_INVARIANT_CHECK_INTERVAL_SECONDS * 1000),
          run: async () => {
            const full = invariantFullRun.due();
            const violations = full ? await ledger.invariantViolations() : (await ledger.invariantViolationsSinceCheckpoints()).violations;
            if (full) {
              invariantFullRun.violations = violations;
              invariantFullRun.done();
            }
            metrics.invariantViolations.set(Math.max(violations, invariantFullRun.violations));
            if (violations > 0) logger.error({ full, violations }, 'credit accounts violate the balance invariants');
          },
        },
      ],
      jobsController.signal,
      logger,
    );

    /** Runs one operation and counts it in credits_operations_total{op,result}. */
    function counted<Req, Res extends object>(name: keyof typeof OPS, fn: (req: Req, call: CallContext) => Promise<Res>) {
      const op = OPS[name];
      // Hot path: the two success series bound once (prom-client hashes a label object per inc otherwise).
      const succeeded = metrics.operations.labels({ op, result: 'success' });
      const replayed = metrics.operations.labels({ op, result: 'replayed' });
      return async (req: Req, call: CallContext): Promise<Res> => {
        try {
          const res = await fn(req, call);
          ((res as { replayed?: boolean }).replayed ? replayed : succeeded).inc();
          return res;
        } catch (error) {
          metrics.operations.inc({ op, result: ServiceError.from(error).reason.toLowerCase() });
          throw error;
        }
      };
    }

    /** A unary RPC whose calls are counted in credits_operations_total{op,result}. */
    function handler<Req, Res extends object>(name: keyof typeof OPS, fn: (req: Req, call: CallContext) => Promise<Res>) {
      return unary<Req, Res>(`/shieldx.credits.v1.CreditsService/${name}`, ctx.handlerOptions, counted(name, fn));
    }

    /** Consume's rules, shared by the unary RPC and each item of ConsumeStream. */
    const consumeOne = async (req: ConsumeRequest, call: CallContext): Promise<ConsumeResponse> => {
      const { tenantId, amount, key, reference, metadata } = v.movement(req);
      const requestHash = hasher.hash(METHOD.consume, [tenantId, amount, reference, metadata]);
      // The caller's signal: a call that is gone before its batch is cut is dropped, not applied.
      const outcome = await batcher.submit({ tenantId, key, amount, reference, metadata, actor: call.keyId, requestHash }, call.signal);
      if ('error' in outcome) throw outcome.error;
      return outcome.response;
    };
    const consumeStreamItem = counted('ConsumeStream', consumeOne);

    const implementation = {
      getBalance: handler('GetBalance', async (req: { tenantId: string; consistentRead: boolean }) => {
        const tenantId = v.tenantId('tenant_id', req.tenantId);
        const { account, fromCache } = await ledger.balance(tenantId, req.consistentRead);
        metrics.balanceQueries.inc();
        return { account: accountProto(account), fromCache };
      }),

      consume: handler('Consume', consumeOne),

      consumeStream: requestIdStream(CreditsServiceService.consumeStream.path, ctx.handlerOptions, CONSUME_STREAM_IN_FLIGHT_MAX, consumeStreamItem),

      topUp: handler('TopUp', async (req: import('../../gen/shieldx/credits/v1/credits').TopUpRequest, call) => {
        const { tenantId, amount, key, reference, metadata } = v.movement(req);
        const { digits, masked } = validatePayment(req.payment);
        const payment = { ...req.payment!, cardNumber: digits };
        return ledger.topUp({
          tenantId,
          key,
          amount,
          reference,
          metadata,
          payment,
          masked,
          actor: call.keyId,
          requestHash: hasher.hash(METHOD.topUp, [tenantId, amount, reference, metadata, payment]),
        });
      }),

      reserve: handler('Reserve', async (req: import('../../gen/shieldx/credits/v1/credits').ReserveRequest, call) => {
        const { tenantId, amount, key, reference, metadata } = v.movement(req);
        const ttlMs = v.ttlMs('ttl', req.ttl);
        return ledger.reserve({
          tenantId,
          key,
          amount,
          ttlMs,
          reference,
          metadata,
          actor: call.keyId,
          requestHash: hasher.hash(METHOD.reserve, [tenantId, amount, ttlMs, reference, metadata]),
        });
      }),

      commitReservation: handler('CommitReservation', async (req: import('../../gen/shieldx/credits/v1/credits').CommitReservationRequest, call) => {
        const tenantId = v.tenantId('tenant_id', req.tenantId);
        const reservationId = v.reservationId('reservation_id', req.reservationId);
        const key = v.idempotencyKey('idempotency_key', req.idempotencyKey);
        if (req.amount !== undefined && req.amount < 0n) throw ServiceError.invalidArgument('amount', 'must not be negative');
        return ledger.commitReservation({
          tenantId,
          key,
          reservationId,
          amount: req.amount,
          actor: call.keyId,
          requestHash: hasher.hash(METHOD.commitReservation, [tenantId, reservationId, req.amount]),
        });
      }),

      releaseReservation: handler('ReleaseReservation', async (req: import('../../gen/shieldx/credits/v1/credits').ReleaseReservationRequest, call) => {
        const tenantId = v.tenantId('tenant_id', req.tenantId);
        const reservationId = v.reservationId('reservation_id', req.reservationId);
        const key = v.idempotencyKey('idempotency_key', req.idempotencyKey);
        return ledger.releaseReservation({
          tenantId,
          key,
          reservationId,
          actor: call.keyId,
          requestHash: hasher.hash(METHOD.releaseReservation, [tenantId, reservationId]),
        });
      }),

      batchConsume: handler('BatchConsume', async (req: import('../../gen/shieldx/credits/v1/credits').BatchConsumeRequest, call) => {
        const tenantId = v.tenantId('tenant_id', req.tenantId);
        const key = v.idempotencyKey('idempotency_key', req.idempotencyKey);
        if (req.items.length === 0) throw ServiceError.invalidArgument('items', 'must not be empty');
        if (req.items.length > v.BATCH_ITEMS_MAX) throw ServiceError.invalidArgument('items', `must have at most ${v.BATCH_ITEMS_MAX} items`);
        const items = req.items.map((item, i) => ({
          tenantId: v.tenantId(`items[${i}].tenant_id`, item.tenantId),
          amount: v.amount(`items[${i}].amount`, item.amount),
          reference: v.reference(`items[${i}].reference`, item.reference),
          metadata: v.metadata(`items[${i}].metadata`, item.metadata),
        }));
        return ledger.batchConsume({
          tenantId,
          key,
          atomic: req.atomic,
          items,
          actor: call.keyId,
          requestHash: hasher.hash(METHOD.batchConsume, [tenantId, req.atomic, items]),
        });
      }),

      listTransactions: handler('ListTransactions', async (req: import('../../gen/shieldx/credits/v1/credits').ListTransactionsRequest) => {
        const tenantId = v.tenantId('tenant_id', req.tenantId);
        const pageSize = pageSizeFor(req.pageSize);
        const types = v.transactionTypes('types', req.types);
        if (req.startTime && req.endTime && req.startTime.getTime() >= req.endTime.getTime()) {
          throw ServiceError.invalidArgument('end_time', 'must be after start_time');
        }
        const fingerprint = v.filterFingerprint([tenantId, req.startTime?.getTime() ?? null, req.endTime?.getTime() ?? null, [...types].sort()]);
        const afterSeq = v.decodePageToken('page_token', req.pageToken, fingerprint);
        const page = await ledger.listTransactions({ tenantId, pageSize, afterSeq, startTime: req.startTime, endTime: req.endTime, types });
        return {
          transactions: page.transactions,
          nextPageToken: page.more && page.lastSeq !== undefined ? v.encodePageToken(page.lastSeq, fingerprint) : '',
        };
      }),

      getOperation: handler('GetOperation', async (req: import('../../gen/shieldx/credits/v1/credits').GetOperationRequest) => {
        const tenantId = v.tenantId('tenant_id', req.tenantId);
        const key = v.idempotencyKey('idempotency_key', req.idempotencyKey);
        let record = await ledger.guardRead(() => findRecord(ctx.pool, tenantId, key));
        const base: GetOperationResponse = {
          tenantId,
          idempotencyKey: key,
          method: '',
          state: OperationState.OPERATION_STATE_IN_PROGRESS,
          createdAt: undefined,
          completedAt: undefined,
          error: undefined,
          result: undefined,
        };
        if (!record) {
          const holder = await ledger.guardRead(() => probeKey(ctx.pool, tenantId, key));
          if (holder === 'in_flight') return base;
          // Committed between the read and the probe: it exists, read it again.
          if (holder === 'committed') record = await ledger.guardRead(() => findRecord(ctx.pool, tenantId, key));
        }
        if (!record) {
          throw operationNotFound(key);
        }
        base.method = record.method;
        base.createdAt = record.createdAt;
        base.completedAt = record.completedAt ?? undefined;
        if (record.state === 'SUCCEEDED' && record.response) {
          base.state = OperationState.OPERATION_STATE_SUCCEEDED;
          base.result = METHOD_RESULTS[record.method]?.(record.response);
        } else if (record.state === 'FAILED' && record.error) {
          base.state = OperationState.OPERATION_STATE_FAILED;
          base.error = Status.decode(toStatusDetails(serviceErrorOf(record.error, false), creditsService.errorDomain));
        }
        return base;
      }),

      verifyAuditChain: handler('VerifyAuditChain', async (req: { tenantId: string }) => {
        const tenantId = req.tenantId === '' ? undefined : v.tenantId('tenant_id', req.tenantId);
        const result = await ledger.verifyAuditChain(tenantId);
        if (tenantId === undefined) {
          metrics.auditChainValid.set(result.valid ? 1 : 0);
          metrics.auditChainLastVerified.set(Date.now() / 1000);
        }
        return { valid: result.valid, rowsChecked: result.rowsChecked, tenantsChecked: result.tenantsChecked, breaks: result.breaks };
      }),
    };

    return {
      definition: CreditsServiceService,
      implementation: implementation as never,
      async close() {
        jobsController.abort();
        await batcher.close();
        await stopJobs();
        db.shutdown();
        redisBreaker.shutdown();
        await cache.close();
      },
    };
  },
};
