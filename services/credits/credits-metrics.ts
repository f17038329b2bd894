/**
 * The credits service's own Prometheus metrics. Names are fixed: the alert
 * rules in ops/alerts are written against them.
 */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

export type BreakerDependency = 'postgres' | 'redis';

export class CreditsMetrics {
  readonly operations: Counter<'op' | 'result'>;
  readonly balanceQueries: Counter;
  readonly transactions: Counter<'type'>;
  readonly cacheRequests: Counter<'result'>;
  readonly nearCacheHits: Counter;
  readonly breakerState: Gauge<'dependency'>;
  readonly auditChainValid: Gauge;
  readonly auditChainLastVerified: Gauge;
  readonly invariantViolations: Gauge;
  readonly consumeBatchSize: Histogram;
  readonly consumeAbandoned: Counter;
  readonly consumeBatches: Counter<'path'>;

  constructor(registry: Registry) {
    const registers = [registry];
    this.operations = new Counter({
      name: 'credits_operations_total',
      help: 'Credits RPCs by operation and result (success, replayed, or the lower-case error reason).',
      labelNames: ['op', 'result'],
      registers,
    });
    this.balanceQueries = new Counter({ name: 'credits_balance_queries_total', help: 'GetBalance calls answered.', registers });
    this.transactions = new Counter({
      name: 'credits_transactions_total',
      help: 'Committed ledger transactions by type.',
      labelNames: ['type'],
      registers,
    });
    this.cacheRequests = new Counter({
      name: 'credits_cache_requests_total',
      help: 'Balance cache lookups by result (hit or miss; a Redis failure counts as a miss).',
      labelNames: ['result'],
      registers,
    });
    this.nearCacheHits = new Counter({
      name: 'credits_cache_local_hits_total',
      help: 'Balance cache hits answered from process memory (the near cache), without a Redis round trip; also counted as hits above.',
      registers,
    });
    this.breakerState = new Gauge({
      name: 'credits_circuit_breaker_state',
      help: 'Circuit breaker state per dependency: 0 closed, 1 half-open, 2 open.',
      labelNames: ['dependency'],
      registers,
    });
    this.breakerState.set({ dependency: 'postgres' }, 0);
    this.breakerState.set({ dependency: 'redis' }, 0);
    this.auditChainValid = new Gauge({
      name: 'credits_audit_chain_valid',
      help: '1 when the last periodic verification of every audit hash chain succeeded, 0 when a chain is broken.',
      registers,
    });
    this.auditChainValid.set(1);
    this.auditChainLastVerified = new Gauge({
      name: 'credits_audit_chain_last_verified_timestamp_seconds',
      help: 'Unix time of the last completed audit chain verification.',
      registers,
    });
    this.invariantViolations = new Gauge({
      name: 'credits_balance_invariant_violations',
      help: 'Accounts whose balance or available balance is negative, or whose balance or reserved amount disagrees with the ledger.',
      registers,
    });
    this.consumeAbandoned = new Counter({
      name: 'credits_consume_abandoned_total',
      help: 'Queued consumes dropped unapplied because their caller had gone (cancelled, or past its deadline) before their batch was cut.',
      registers,
    });
    this.consumeBatchSize = new Histogram({
      name: 'credits_consume_batch_size',
      help: 'Consume calls applied per group-commit transaction.',
      buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256],
      registers,
    });
    this.consumeBatches = new Counter({
      name: 'credits_consume_batches_total',
      help:
        'Consume batches by path: fast (one round trip from the states this instance last committed), fallback ' +
        '(fast path refused: an account changed elsewhere, a key was reused, a deadlock; then run transactionally), ' +
        'transactional (account states not known here).',
      labelNames: ['path'],
      registers,
    });
  }
}
