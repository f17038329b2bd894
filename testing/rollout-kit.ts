/**
 * Test support for the rollout suites: a minimal shadow ServiceModule serving
 * the rollout RPCs (everything else UNIMPLEMENTED), evaluations inserted
 * straight into `shadow_evaluations`, and a promise wrapper over the client.
 */
import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import type { Metadata } from '@grpc/grpc-js';
import {
  ShadowServiceClient,
  ShadowServiceService,
  type AbortRolloutRequest,
  type AbortRolloutResponse,
  type CreateRolloutRequest,
  type CreateRolloutResponse,
  type GetRolloutRequest,
  type GetRolloutResponse,
  type ListRolloutsRequest,
  type ListRolloutsResponse,
  type PromoteRolloutRequest,
  type PromoteRolloutResponse,
} from '../gen/shieldx/shadow/v1/shadow';
import { unimplementedService } from '../platform/handlers';
import type { ServiceModule } from '../platform/server';
import { address, bearer, insecure } from './harness';
import type { RunningService } from '../platform/server';
import { rolloutConfigShape } from '../services/shadow/config';
import { startRollouts } from '../services/shadow/rollout/rollout-runtime';
import { rolloutHandlers } from '../services/shadow/rpc/rollout-handlers';

export const rolloutTestModule: ServiceModule<typeof rolloutConfigShape> = {
  name: 'shadow',
  grpcServiceName: 'shieldx.shadow.v1.ShadowService',
  errorDomain: 'shadow.shieldx.io',
  configShape: rolloutConfigShape,
  scopes: {
    CreateRollout: 'shadow:rollout',
    GetRollout: 'shadow:read',
    ListRollouts: 'shadow:read',
    PromoteRollout: 'shadow:rollout',
    AbortRollout: 'shadow:rollout',
    WatchRollout: 'shadow:read',
  },
  async create(ctx) {
    const rollouts = startRollouts(ctx);
    const implementation = rolloutHandlers(rollouts.operations, ctx.handlerOptions, ctx.config.ROLLOUT_WATCH_POLL_MS);
    return {
      definition: ShadowServiceService,
      implementation: { ...unimplementedService(ShadowServiceService, ctx.handlerOptions), ...implementation } as never,
      close: () => rollouts.close(),
    };
  },
};

/** Inserts an evaluation; approved = SUCCEEDED with DECISION_APPROVE_CANARY. */
export async function insertEvaluation(
  db: Pick<pg.Pool, 'query'>,
  kind: 'approved' | 'approved_full' | 'rejected' | 'running',
): Promise<string> {
  const id = randomUUID();
  const succeeded = kind !== 'running';
  const decision = { approved: 'DECISION_APPROVE_CANARY', approved_full: 'DECISION_APPROVE_FULL_DEPLOYMENT', rejected: 'DECISION_REJECT', running: null }[kind];
  await db.query(
    `INSERT INTO shadow_evaluations (id, name, state, rule, selection, result, decision, started_at, completed_at)
     VALUES ($1, 'rollout test', $2, '{}'::jsonb, '{}'::jsonb, $3::jsonb, $4, now(), CASE WHEN $5 THEN now() END)`,
    [id, succeeded ? 'SUCCEEDED' : 'RUNNING', succeeded ? '{}' : null, decision, succeeded],
  );
  return id;
}

export function clientFor(service: RunningService): ShadowServiceClient {
  return new ShadowServiceClient(address(service), insecure);
}

/** Promise wrappers over the generated callback client. */
export function rpc(client: ShadowServiceClient) {
  type Callback<Res> = (err: Error | null, res: Res) => void;
  const call =
    <Req, Res>(fn: (req: Req, md: Metadata, cb: Callback<Res>) => unknown) =>
    (req: Req, metadata: Metadata = bearer()): Promise<Res> =>
      new Promise((resolve, reject) => fn.call(client, req, metadata, (err, res) => (err ? reject(err) : resolve(res))));
  const create = call<CreateRolloutRequest, CreateRolloutResponse>(client.createRollout);
  return {
    /** `webhooks` may be left out (none). */
    create: (req: Omit<CreateRolloutRequest, 'webhooks'> & Partial<Pick<CreateRolloutRequest, 'webhooks'>>, metadata?: Metadata) => create({ webhooks: [], ...req }, metadata),
    get: call<GetRolloutRequest, GetRolloutResponse>(client.getRollout),
    list: call<ListRolloutsRequest, ListRolloutsResponse>(client.listRollouts),
    promote: call<PromoteRolloutRequest, PromoteRolloutResponse>(client.promoteRollout),
    abort: call<AbortRolloutRequest, AbortRolloutResponse>(client.abortRollout),
  };
}
