/**
 * PostgreSQL through the circuit breaker: every read and transaction of the ledger runs here, so
 * "PostgreSQL is not there" (breaker open, refused, dropped) is always DATABASE_UNAVAILABLE.
 * Built once and handed to whatever reads (the ledger, the balance cache's repair loader).
 */
import type pg from 'pg';
import { withTransaction } from '../../../platform/db';
import { ServiceError } from '../../../platform/service-error';
import { databaseUnavailable } from '../errors';
import { type DependencyBreaker, isBreakerRejection, isDatabaseUnavailable } from './breakers';

const RETRYABLE_SQLSTATES = new Set(['40P01', '40001']);
const TRANSACTION_ATTEMPTS_MAX = 3;

export class Database {
  constructor(
    readonly pool: pg.Pool,
    private readonly breaker: DependencyBreaker,
  ) {}

  /** Runs `work` through the breaker; maps "PostgreSQL is not there" to DATABASE_UNAVAILABLE. */
  async guard<T>(work: () => Promise<T>): Promise<T> {
    try {
      return await this.breaker.run(work);
    } catch (error) {
      if (error instanceof ServiceError) throw error;
      if (isBreakerRejection(error) || isDatabaseUnavailable(error)) throw databaseUnavailable(error);
      throw error;
    }
  }

  /** One pooled query through the breaker. */
  readonly query = <R extends pg.QueryResultRow>(sql: string, params: unknown[] = []): Promise<pg.QueryResult<R>> =>
    this.guard(() => this.pool.query<R>(sql, params));

  /** One transaction, retried on deadlock / serialization failure (bounded). */
  async transaction<T>(fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        // withTransaction destroys a connection that broke mid-transaction instead of reusing it.
        return await this.guard(() => withTransaction(this.pool, fn));
      } catch (error) {
        const code = (error as { code?: string }).code;
        if (attempt < TRANSACTION_ATTEMPTS_MAX && code !== undefined && RETRYABLE_SQLSTATES.has(code)) continue;
        throw error;
      }
    }
  }
}
