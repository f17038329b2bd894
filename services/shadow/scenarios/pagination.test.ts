/**
 * ListEvaluations and ListRollouts share one page-size rule (AIP-158): 0 is
 * the default (50), a size above the maximum (500) is coerced to the maximum,
 * a negative size is INVALID_ARGUMENT naming `page_size`. Proven over real
 * gRPC against more rows than the maximum, so a clamp is visible.
 */
import { expect } from 'chai';
import { randomUUID } from 'node:crypto';
import { status as grpcStatus } from '@grpc/grpc-js';
import { EvaluationState, RolloutState, ShadowServiceClient, type ListEvaluationsResponse, type ListRolloutsResponse } from '../../../gen/shieldx/shadow/v1/shadow';
import { errorDetails } from '../../../platform/grpc-errors';
import type { RunningService } from '../../../platform/server';
import { address, bearer, insecure, startTestService } from '../../../testing/harness';
import { DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE } from '../../../platform/page-size';
import { shadowService } from '..';

/** Rows inserted of each kind: more than one maximum page. */
const ROWS = MAX_PAGE_SIZE + 2;

describe('shadow list page sizes', function () {
  this.timeout(60_000);
  let service: RunningService;
  let client: ShadowServiceClient;
  const tag = `pagination-${randomUUID().slice(0, 8)}`;

  const listEvaluations = (pageSize: number) =>
    new Promise<ListEvaluationsResponse>((resolve, reject) =>
      client.listEvaluations({ pageSize, pageToken: '', state: EvaluationState.EVALUATION_STATE_UNSPECIFIED }, bearer(), (e, r) => (e ? reject(e) : resolve(r))),
    );
  const listRollouts = (pageSize: number) =>
    new Promise<ListRolloutsResponse>((resolve, reject) =>
      client.listRollouts({ pageSize, pageToken: '', state: RolloutState.ROLLOUT_STATE_UNSPECIFIED }, bearer(), (e, r) => (e ? reject(e) : resolve(r))),
    );

  before(async () => {
    service = await startTestService(shadowService, { ROLLOUT_CONTROLLER: 'off' });
    client = new ShadowServiceClient(address(service), insecure);
    // FAILED evaluations (no worker picks them up) and finished rollouts with their weight applied (no controller acts on them).
    await service.pool.query(
      `INSERT INTO shadow_evaluations (id, name, state, rule, selection, completed_at)
       SELECT gen_random_uuid(), $1, 'FAILED', '{}'::jsonb, '{}'::jsonb, now() FROM generate_series(1, $2)`,
      [tag, ROWS],
    );
    await service.pool.query(
      `INSERT INTO shadow_rollouts (id, evaluation_id, namespace, virtual_service, host, stable_subset, canary_subset, route_name,
         steps, step_duration_ms, max_error_rate, max_p99_latency_ms, min_requests, max_inconclusive, analysis_window_ms,
         auto_rollback, manual_promotion, state, canary_weight, applied_weight)
       SELECT gen_random_uuid(), (SELECT id FROM shadow_evaluations WHERE name = $1 LIMIT 1), 'pagination', $1 || '-' || i, 'h.example', 'stable', 'canary', 'primary',
         '{100}', 60000, 0.01, 500, 100, 3, 60000, true, false, 'ABORTED', 0, 0
         FROM generate_series(1, $2) AS i`,
      [tag, ROWS],
    );
  });

  after(async () => {
    client?.close();
    await service?.pool.query(`DELETE FROM shadow_rollouts WHERE namespace = 'pagination' AND virtual_service LIKE $1`, [`${tag}-%`]);
    await service?.pool.query(`DELETE FROM shadow_evaluations WHERE name = $1`, [tag]);
    await service?.shutdown();
  });

  /** One page of either RPC as ids + next token. */
  const rpcs: [string, (pageSize: number) => Promise<{ ids: string[]; nextPageToken: string }>][] = [
    ['ListEvaluations', async (size) => {
      const r = await listEvaluations(size);
      return { ids: r.evaluations.map((e) => e.id), nextPageToken: r.nextPageToken };
    }],
    ['ListRollouts', async (size) => {
      const r = await listRollouts(size);
      return { ids: r.rollouts.map((e) => e.id), nextPageToken: r.nextPageToken };
    }],
  ];

  for (const [rpc, list] of rpcs) {
    // page_size 0 → the default; the maximum → exactly that many; maximum + 1 → coerced to the maximum (the same page); negative → INVALID_ARGUMENT on page_size.
    it(`${rpc}: 0 is the default, above the maximum is the maximum, negative is refused`, async () => {
      const byDefault = await list(0);
      expect(byDefault.ids).to.have.length(DEFAULT_PAGE_SIZE);
      expect(byDefault.nextPageToken).to.not.equal('');

      const max = await list(MAX_PAGE_SIZE);
      expect(max.ids).to.have.length(MAX_PAGE_SIZE);
      expect(max.nextPageToken).to.not.equal('');

      const above = await list(MAX_PAGE_SIZE + 1);
      expect(above).to.deep.equal(max);

      let error: unknown;
      await list(-1).then(
        () => expect.fail('page_size -1 was accepted'),
        (e: unknown) => (error = e),
      );
      const details = errorDetails(error);
      expect([details?.code, details?.reason, details?.fieldViolations.map((v) => v.field)]).to.deep.equal([grpcStatus.INVALID_ARGUMENT, 'INVALID_ARGUMENT', ['page_size']]);
    });
  }
});
