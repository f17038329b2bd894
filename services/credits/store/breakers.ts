/**
 * Circuit breakers (opossum) around PostgreSQL and Redis.
 *
 * Only dependency failures count against a breaker: business outcomes
 * (ServiceError such as INSUFFICIENT_CREDITS) and SQL errors that prove the
 * database answered (constraint violations, serialization failures) are
 * filtered out, so a burst of "insufficient credits" never opens it.
 */
import CircuitBreaker from 'opossum';
import { isQueryReadTimeout } from '../../../platform/db';
import { Code, ServiceError } from '../../../platform/service-error';
import type { BreakerDependency, CreditsMetrics } from '../credits-metrics';

export interface BreakerOptions {
  /** Rejects a call that takes longer (ms); false for none. */
  readonly timeoutMs: number | false;
  readonly resetTimeoutMs: number;
  readonly errorThresholdPercentage: number;
  readonly volumeThreshold: number;
  readonly rollingCountTimeoutMs: number;
}

const NETWORK_ERROR_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN']);

/** True when the error says PostgreSQL could not be reached or dropped us, not that it refused a statement. */
export function isDatabaseUnavailable(error: unknown): boolean {
  if (typeof error !== 'object' || error === null) return false;
  // No answer within the pool's read timeout: the server is not there (or not reachable).
  if (isQueryReadTimeout(error)) return true;
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'string') {
    if (NETWORK_ERROR_CODES.has(code)) return true;
    // 08: connection exception; 57P01-03: shutdown / cannot connect now; 53300: too many connections.
    if (code.startsWith('08') || code === '57P01' || code === '57P02' || code === '57P03' || code === '53300') return true;
  }
  const message = (error as { message?: unknown }).message;
  return (
    typeof message === 'string' &&
    /timeout exceeded when trying to connect|Connection terminated|connection timeout|Client has encountered a connection error|Cannot use a pool after calling end/i.test(
      message,
    )
  );
}


type Work<T> = () => Promise<T>;

/** A breaker that runs arbitrary async work: `breaker.run(() => ...)`. */
export class DependencyBreaker {
  private readonly breaker: CircuitBreaker<[Work<unknown>], unknown>;

  constructor(
    readonly dependency: BreakerDependency,
    options: BreakerOptions,
    metrics: CreditsMetrics,
    countsAsFailure: (error: unknown) => boolean,
  ) {
    this.breaker = new CircuitBreaker((work: Work<unknown>) => work(), {
      timeout: options.timeoutMs,
      resetTimeout: options.resetTimeoutMs,
      errorThresholdPercentage: options.errorThresholdPercentage,
      volumeThreshold: options.volumeThreshold,
      rollingCountTimeout: options.rollingCountTimeoutMs,
      // true = "not a failure of the dependency".
      errorFilter: (error: unknown) => !countsAsFailure(error),
      name: dependency,
    });
    const gauge = metrics.breakerState;
    this.breaker.on('open', () => gauge.set({ dependency }, 2));
    this.breaker.on('halfOpen', () => gauge.set({ dependency }, 1));
    this.breaker.on('close', () => gauge.set({ dependency }, 0));
  }

  on(event: 'close' | 'open' | 'halfOpen', listener: () => void): void {
    if (event === 'close') this.breaker.on('close', listener);
    else if (event === 'open') this.breaker.on('open', listener);
    else this.breaker.on('halfOpen', listener);
  }

  /**
   * Runs `work` through the breaker. When it is open, rejects at once with an
   * error whose `code` is 'EOPENBREAKER'; a timeout rejects with 'ETIMEDOUT'.
   */
  run<T>(work: Work<T>): Promise<T> {
    return this.breaker.fire(work) as Promise<T>;
  }

  shutdown(): void {
    this.breaker.shutdown();
  }
}

export function isBreakerRejection(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return code === 'EOPENBREAKER' || code === 'ETIMEDOUT' || code === 'ESEMLOCKED' || code === 'ESHUTDOWN';
}
