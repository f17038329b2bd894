/**
 * Mocha root hooks: one real PostgreSQL and one real Redis for the whole run
 * (see test/harness.ts), torn down at the end.
 */
import { startTestInfrastructure, stopTestInfrastructure } from './harness';

export const mochaHooks = {
  async beforeAll(this: Mocha.Context) {
    this.timeout(120_000);
    await startTestInfrastructure();
  },
  async afterAll(this: Mocha.Context) {
    this.timeout(60_000);
    await stopTestInfrastructure();
  },
};
