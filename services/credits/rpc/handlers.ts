/**
 * The credits RPCs: decode, validate (validation.ts), call the ledger, encode, count. Thin: the
 * rules are in domain/, the use cases in ledger.ts.
 */
import { Status } from '../../../gen/google/rpc/status';
import {
  BatchConsumeResponse,
  type BatchConsumeRequest,
  type CommitReservationRequest,
  CommitReservationResponse,
  type ConsumeRequest,
  ConsumeResponse,
  CreditsServiceService,
  type GetOperationRequest,
  type GetOperationResponse,
  type ListTransactionsRequest,
  OperationState,
  type ReleaseReservationRequest,
  ReleaseReservationResponse,
  type ReserveRequest,
  ReserveResponse,
  type TopUpRequest,
  TopUpResponse,
} from '../../../gen/shieldx/credits/v1/credits';
import { type HandlerOptions, requestIdStream, unary, type CallContext } from '../../../platform/handlers';
import { pageSize as pageSizeFor } from '../../../platform/page-size';
import { ServiceError } from '../../../platform/service-error';
import { toStatusDetails } from '../../../platform/status-details';
import type { ConsumeBatcher } from '../consume-batcher';
import type { CreditsMetrics } from '../credits-metrics';
import { operationNotFound } from '../errors';
import { type Ledger, METHOD } from '../ledger';
import { serviceErrorOf, type RequestHasher } from '../store/idempotency';
import { validatePayment } from '../domain/payment-crypto';
import { accountProto } from './encode';
import * as v from './validation';

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

export interface HandlerDeps {
  readonly ledger: Ledger;
  readonly batcher: ConsumeBatcher;
  readonly hasher: RequestHasher;
  readonly metrics: CreditsMetrics;
  readonly handlerOptions: HandlerOptions;
  readonly errorDomain: string;
}

/** The CreditsService implementation. */
export function creditsImplementation(deps: HandlerDeps) {
  const { ledger, batcher, hasher, metrics } = deps;
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
    return unary<Req, Res>(`/shieldx.credits.v1.CreditsService/${name}`, deps.handlerOptions, counted(name, fn));
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

    consumeStream: requestIdStream(CreditsServiceService.consumeStream.path, deps.handlerOptions, CONSUME_STREAM_IN_FLIGHT_MAX, consumeStreamItem),

    topUp: handler('TopUp', async (req: TopUpRequest, call) => {
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

    reserve: handler('Reserve', async (req: ReserveRequest, call) => {
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

    commitReservation: handler('CommitReservation', async (req: CommitReservationRequest, call) => {
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

    releaseReservation: handler('ReleaseReservation', async (req: ReleaseReservationRequest, call) => {
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

    batchConsume: handler('BatchConsume', async (req: BatchConsumeRequest, call) => {
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

    listTransactions: handler('ListTransactions', async (req: ListTransactionsRequest) => {
      const tenantId = v.tenantId('tenant_id', req.tenantId);
      const pageSize = pageSizeFor(req.pageSize);
      const types = v.transactionTypes('types', req.types);
      if (req.startTime && req.endTime && req.startTime.getTime() >= req.endTime.getTime()) {
        throw ServiceError.invalidArgument('end_time', 'must be after start_time');
      }
      const filter = { tenantId, startTime: req.startTime, endTime: req.endTime, types };
      const afterSeq = v.transactionsAfterSeq('page_token', req.pageToken, filter);
      const page = await ledger.listTransactions({ tenantId, pageSize, afterSeq, startTime: req.startTime, endTime: req.endTime, types });
      return {
        transactions: page.transactions,
        nextPageToken: v.transactionsPageToken(page.more ? page.lastSeq : undefined, filter),
      };
    }),

    getOperation: handler('GetOperation', async (req: GetOperationRequest) => {
      const tenantId = v.tenantId('tenant_id', req.tenantId);
      const key = v.idempotencyKey('idempotency_key', req.idempotencyKey);
      const record = await ledger.operation(tenantId, key);
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
      if (record === 'in_flight') return base;
      if (!record) throw operationNotFound(key);
      base.method = record.method;
      base.createdAt = record.createdAt;
      base.completedAt = record.completedAt ?? undefined;
      if (record.state === 'SUCCEEDED' && record.response) {
        base.state = OperationState.OPERATION_STATE_SUCCEEDED;
        base.result = METHOD_RESULTS[record.method]?.(record.response);
      } else if (record.state === 'FAILED' && record.error) {
        base.state = OperationState.OPERATION_STATE_FAILED;
        base.error = Status.decode(toStatusDetails(serviceErrorOf(record.error, false), deps.errorDomain));
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

  return implementation;
}
