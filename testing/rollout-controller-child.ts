/**
 * A rollout controller in its own process, for the fencing test
 * (services/shadow/scenarios/rollout-safety.test.ts): a real process the test can
 * freeze with SIGSTOP in the middle of a traffic write and thaw later.
 *
 * Env: DATABASE_URL, ROUTER_DIR (file router), LEASE_NAME, HOLDER, PAUSE_AT_CANARY (a canary
 * weight). When the controller writes that weight, the child prints {"event":"writing"} and
 * waits a second before handing the write to the file router — the test stops it there — then
 * prints {"event":"wrote"} or {"event":"refused","error":...}.
 */
import pg from 'pg';
import pino from 'pino';
import { Registry } from 'prom-client';
import { PrometheusClient } from '../services/shadow/rollout/rollout-analysis';
import { createControllerMetrics, RolloutController } from '../services/shadow/rollout/rollout-controller';
import { FileTrafficRouter, type TrafficRouter, type TrafficWeights } from '../services/shadow/rollout/traffic-router';
import type { RouteTarget } from '../services/shadow/domain/rollout-spec';
import { PgLease } from '../services/shadow/store/rollout-lease';

const env = (name: string): string => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is required`);
  return value;
};
const say = (message: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(message)}\n`);

class PausingRouter implements TrafficRouter {
  readonly kind = 'file';
  private paused = false;
  constructor(
    private readonly inner: FileTrafficRouter,
    private readonly pauseAt: number,
  ) {}
  async setWeights(target: RouteTarget, weights: TrafficWeights, ...rest: unknown[]): Promise<boolean | void> {
    const pausing = weights.canary === this.pauseAt && !this.paused;
    if (pausing) {
      this.paused = true;
      say({ event: 'writing', canary: weights.canary });
      await new Promise((resolve) => setTimeout(resolve, 1_000));
    }
    try {
      const result = await (this.inner.setWeights as (...args: unknown[]) => Promise<boolean | void>)(target, weights, ...rest);
      if (pausing) say({ event: 'wrote', canary: weights.canary });
      return result;
    } catch (error) {
      if (pausing) say({ event: 'refused', canary: weights.canary, error: String(error) });
      throw error;
    }
  }
}

const pool = new pg.Pool({ connectionString: env('DATABASE_URL'), max: 4 });
const lease = new PgLease(pool, env('LEASE_NAME'), env('HOLDER'), 2);
const controller = new RolloutController({
  pool,
  router: new PausingRouter(new FileTrafficRouter(env('ROUTER_DIR')), Number(env('PAUSE_AT_CANARY'))),
  prometheus: new PrometheusClient({ baseUrl: 'http://127.0.0.1:1', timeoutMs: 500 }),
  lease,
  logger: pino({ level: 'silent' }),
  metrics: createControllerMetrics(new Registry()),
  tickMs: 100,
});
controller.start();
say({ event: 'started' });
process.on('SIGTERM', () => {
  void controller.close().finally(() => pool.end().finally(() => process.exit(0)));
});
