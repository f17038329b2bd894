/**
 * The rollout RPCs: decode and validate the request fields that are the wire's (page size, page
 * token, state filter), call the rollout operations (rollout/rollout-operations.ts), encode.
 */
import {
  RolloutState,
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
  type ShadowServiceServer,
  type WatchRolloutRequest,
  type WatchRolloutResponse,
} from '../../../gen/shieldx/shadow/v1/shadow';
import { serverStream, unary, type HandlerOptions } from '../../../platform/handlers';
import { pageSize } from '../../../platform/page-size';
import { decodePageToken, encodePageToken } from '../../../platform/page-token';
import { ServiceError } from '../../../platform/service-error';
import type { RolloutStateName } from '../domain/rollout-spec';
import type { RolloutOperations } from '../rollout/rollout-operations';
import { stateFromProto } from '../store/rollout-store';

export type RolloutMethods = 'createRollout' | 'getRollout' | 'listRollouts' | 'promoteRollout' | 'abortRollout' | 'watchRollout';

const INT8_MAX = 2n ** 63n - 1n;

/** A ListRollouts cursor: the `seq` of the last rollout served, a positive int8; undefined for anything else. */
export function parseRolloutCursor(cursor: readonly string[]): bigint | undefined {
  if (cursor.length !== 1 || !/^[1-9][0-9]{0,18}$/.test(cursor[0]!)) return undefined;
  const seq = BigInt(cursor[0]!);
  return seq <= INT8_MAX ? seq : undefined;
}

function stateFilter(state: RolloutState): RolloutStateName | undefined {
  if (state === RolloutState.ROLLOUT_STATE_UNSPECIFIED) return undefined;
  const name = stateFromProto(state);
  if (name === undefined) throw ServiceError.invalidArgument('state', 'is not a rollout state');
  return name;
}

export function rolloutHandlers(operations: RolloutOperations, handlerOptions: HandlerOptions, watchPollMs: number): Pick<ShadowServiceServer, RolloutMethods> {
  const methods = ShadowServiceService;
  return {
    createRollout: unary<CreateRolloutRequest, CreateRolloutResponse>(methods.createRollout.path, handlerOptions, (request) => operations.create(request)),
    getRollout: unary<GetRolloutRequest, GetRolloutResponse>(methods.getRollout.path, handlerOptions, async (request) => ({
      rollout: await operations.get(request.id),
    })),
    listRollouts: unary<ListRolloutsRequest, ListRolloutsResponse>(methods.listRollouts.path, handlerOptions, async (request) => {
      const limit = pageSize(request.pageSize);
      const state = stateFilter(request.state);
      // The token is bound to the filter: a token of another state's listing is refused.
      const filter = { state: state ?? null };
      const beforeSeq = decodePageToken(request.pageToken, filter, parseRolloutCursor);
      const page = await operations.list(limit, state, beforeSeq);
      return { rollouts: page.rollouts, nextPageToken: encodePageToken(page.lastSeq === undefined ? undefined : [page.lastSeq.toString()], filter) };
    }),
    promoteRollout: unary<PromoteRolloutRequest, PromoteRolloutResponse>(methods.promoteRollout.path, handlerOptions, (request) => operations.promote(request)),
    abortRollout: unary<AbortRolloutRequest, AbortRolloutResponse>(methods.abortRollout.path, handlerOptions, (request) => operations.abort(request)),
    watchRollout: serverStream<WatchRolloutRequest, WatchRolloutResponse>(methods.watchRollout.path, handlerOptions, (request, send, ctx) =>
      operations.watch(request.id, (update) => send({ rollout: update.rollout, event: update.event }), ctx.signal, watchPollMs),
    ),
  };
}
