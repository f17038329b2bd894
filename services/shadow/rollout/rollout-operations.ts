/**
 * What operators do to rollouts (create, promote, abort, read, watch): the
 * domain behind the rollout RPCs. Mutations are transactions guarded by a row
 * lock and carry idempotency keys; the controller (maybe on another replica)
 * sees the new state on its next tick and applies the weight.
 */
import { createHash, randomUUID } from 'node:crypto';
import type pg from 'pg';
import {
  AbortRolloutRequest,
  AbortRolloutResponse,
  CreateRolloutRequest,
  CreateRolloutResponse,
  PromoteRolloutRequest,
  PromoteRolloutResponse,
  type Rollout,
  type RolloutEvent,
} from '../../../gen/shieldx/shadow/v1/shadow';
import { withTransaction } from '../store/transactions';
import { invariant } from '../../../platform/invariant';
import { ServiceError } from '../../../platform/service-error';
import { evaluationNotApproved, evaluationNotFound, rolloutAlreadyActive, rolloutCanaryNotHealthy, rolloutFinished, rolloutNotAwaitingPromotion, rolloutNotFound } from '../errors';
import { optionalIdempotencyKey } from '../../../platform/idempotency-key';
import { isTerminal, isUuid, parseCreateRollout, type RolloutStateName } from '../domain/rollout-spec';
import {
  claimIdempotencyKey,
  evaluationGate,
  getRollout,
  insertRollout,
  listEvents,
  listRollouts,
  RouteBusyError,
  saveIdempotentResponse,
  toProto,
  transitionIn,
  type RolloutRow,
} from '../store/rollout-store';

export const MAX_EVENTS_PER_ROLLOUT_READ = 1000;
export const MAX_ABORT_REASON_LENGTH = 1000;

interface Codec<T> {
  encode(message: T): { finish(): Uint8Array };
  decode(bytes: Uint8Array): T;
}

function requireRolloutId(id: string): string {
  if (id === '') throw ServiceError.invalidArgument('id', 'is required');
  if (!isUuid(id)) throw ServiceError.invalidArgument('id', 'must be a UUID');
  return id.toLowerCase();
}

export interface WatchUpdate {
  readonly rollout: Rollout;
  readonly event?: RolloutEvent;
}

export class RolloutOperations {
  constructor(
    private readonly pool: pg.Pool,
    /** Called after a committed change, so the local controller acts without waiting a tick. */
    private readonly onChange: () => void = () => undefined,
  ) {}

  /**
   * Runs `fn` in a transaction under idempotency key `key` (if any): the same
   * key with the same request replays the stored response; with a different
   * request it fails with IDEMPOTENCY_KEY_REUSED.
   */
  private async idempotent<Req, Res extends { rollout?: { id: string } | undefined }>(
    key: string | undefined,
    method: string,
    request: Req,
    requestCodec: Codec<Req>,
    responseCodec: Codec<Res>,
    fn: (client: pg.PoolClient) => Promise<Res>,
  ): Promise<Res> {
    const hash = createHash('sha256').update(requestCodec.encode(request).finish()).digest('hex');
    return withTransaction(this.pool, async (client) => {
      if (key !== undefined) {
        const claim = await claimIdempotencyKey(client, key, method, hash);
        if (!claim.claimed) {
          if (!claim.sameRequest || claim.response === null) {
            throw ServiceError.idempotencyKeyReused(key, { metadata: { method } });
          }
          return responseCodec.decode(claim.response);
        }
      }
      const response = await fn(client);
      if (key !== undefined) await saveIdempotentResponse(client, key, responseCodec.encode(response).finish(), response.rollout?.id);
      return response;
    });
  }

  async create(request: CreateRolloutRequest): Promise<CreateRolloutResponse> {
    const spec = parseCreateRollout(request);
    const key = optionalIdempotencyKey(request.idempotencyKey);
    const response = await this.idempotent(key, 'CreateRollout', { ...request, idempotencyKey: '' }, CreateRolloutRequest, CreateRolloutResponse, async (client) => {
      const gate = await evaluationGate(client, spec.evaluationId);
      if (gate === 'not_found') {
        throw evaluationNotFound(spec.evaluationId);
      }
      if (gate === 'not_approved') {
        throw evaluationNotApproved(spec.evaluationId);
      }
      let row: RolloutRow;
      try {
        row = await insertRollout(client, randomUUID(), spec);
      } catch (error) {
        if (error instanceof RouteBusyError) {
          throw rolloutAlreadyActive(spec.target);
        }
        throw error;
      }
      return { rollout: toProto(row, await listEvents(client, row.id)) };
    });
    this.onChange();
    return response;
  }

  async get(id: string): Promise<Rollout> {
    const rolloutId = requireRolloutId(id);
    const row = await getRollout(this.pool, rolloutId);
    if (!row) throw rolloutNotFound(rolloutId);
    return toProto(row, await listEvents(this.pool, row.id, 0n, MAX_EVENTS_PER_ROLLOUT_READ));
  }

  /**
   * Newest first, `limit` rollouts after `beforeSeq` (keyset on `seq`); events are left out of
   * list pages (GetRollout has them). `lastSeq` is the cursor of the next page, undefined on the last.
   */
  async list(limit: number, state: RolloutStateName | undefined, beforeSeq: bigint | undefined): Promise<{ rollouts: Rollout[]; lastSeq: bigint | undefined }> {
    const rows = await listRollouts(this.pool, { state, beforeSeq, limit: limit + 1 });
    const page = rows.slice(0, limit);
    return { rollouts: page.map((row) => toProto(row)), lastSeq: rows.length > limit ? page[page.length - 1]!.seq : undefined };
  }

  /**
   * Passes the manual gate: AWAITING_PROMOTION → SUCCEEDED at 100 %. Only when the canary's latest
   * analysis (the controller keeps analysing at the gate) was healthy: a canary that started failing
   * there is not shipped (ROLLOUT_CANARY_NOT_HEALTHY; it is rolled back, or held without auto rollback).
   */
  async promote(request: PromoteRolloutRequest): Promise<PromoteRolloutResponse> {
    const id = requireRolloutId(request.id);
    const key = optionalIdempotencyKey(request.idempotencyKey);
    const response = await this.idempotent(key, 'PromoteRollout', { ...request, idempotencyKey: '' }, PromoteRolloutRequest, PromoteRolloutResponse, async (client) => {
      const row = await getRollout(client, id, { forUpdate: true });
      if (!row) throw rolloutNotFound(id);
      if (isTerminal(row.state)) throw rolloutFinished(row.id, row.state);
      if (row.state !== 'AWAITING_PROMOTION') {
        throw rolloutNotAwaitingPromotion(id, row.state);
      }
      if (row.lastVerdict !== 'ANALYSIS_VERDICT_HEALTHY') throw rolloutCanaryNotHealthy(id, row.lastVerdict ?? 'ANALYSIS_VERDICT_UNSPECIFIED');
      const next = await transitionIn(client, row, {
        to: 'SUCCEEDED',
        step: row.steps.length - 1,
        canaryWeight: 100,
        reason: 'PROMOTED_BY_OPERATOR',
        inconclusiveCount: 0,
        restartStepClock: false,
        progressed: true,
      });
      // The row is locked: nobody can have moved it.
      invariant(next, `rollout ${id} does not change under its row lock`);
      return { rollout: toProto(next, await listEvents(client, id, 0n, MAX_EVENTS_PER_ROLLOUT_READ)) };
    });
    this.onChange();
    return response;
  }

  /** Stops a live rollout: all traffic back to stable. */
  async abort(request: AbortRolloutRequest): Promise<AbortRolloutResponse> {
    const id = requireRolloutId(request.id);
    const key = optionalIdempotencyKey(request.idempotencyKey);
    if (request.reason.length > MAX_ABORT_REASON_LENGTH) throw ServiceError.invalidArgument('reason', `must be at most ${MAX_ABORT_REASON_LENGTH} characters`);
    const response = await this.idempotent(key, 'AbortRollout', { ...request, idempotencyKey: '' }, AbortRolloutRequest, AbortRolloutResponse, async (client) => {
      const row = await getRollout(client, id, { forUpdate: true });
      if (!row) throw rolloutNotFound(id);
      if (isTerminal(row.state)) throw rolloutFinished(row.id, row.state);
      const next = await transitionIn(client, row, {
        to: 'ABORTED',
        step: row.currentStep,
        canaryWeight: 0,
        reason: request.reason === '' ? 'ABORTED_BY_OPERATOR' : `ABORTED_BY_OPERATOR: ${request.reason}`,
        inconclusiveCount: row.inconclusiveCount,
        restartStepClock: false,
      });
      invariant(next, `rollout ${id} does not change under its row lock`);
      return { rollout: toProto(next, await listEvents(client, id, 0n, MAX_EVENTS_PER_ROLLOUT_READ)) };
    });
    this.onChange();
    return response;
  }

  /**
   * Sends the rollout (with its history), then one update per new event, until
   * the rollout has finished and its last event was sent, or `signal` fires
   * (client gone, server stopping). Polls the event table every `pollMs`:
   * no LISTEN, so it works through PgBouncer transaction pooling.
   */
  async watch(id: string, send: (update: WatchUpdate) => Promise<void>, signal: AbortSignal, pollMs: number): Promise<void> {
    const rolloutId = requireRolloutId(id);
    let row = await getRollout(this.pool, rolloutId);
    if (!row) throw rolloutNotFound(rolloutId);
    const history = await listEvents(this.pool, rolloutId, 0n, MAX_EVENTS_PER_ROLLOUT_READ);
    let lastSequence = history.length > 0 ? history[history.length - 1]!.sequence : 0n;
    await send({ rollout: toProto(row, history) });
    while (!(isTerminal(row.state) && lastSequence >= row.version)) {
      if (!(await sleep(pollMs, signal))) return;
      row = await getRollout(this.pool, rolloutId);
      if (!row) return;
      // Each transition writes one event whose sequence is the rollout's new version: nothing to read until it moves.
      if (row.version <= lastSequence) continue;
      const events = await listEvents(this.pool, rolloutId, lastSequence, 100);
      for (const event of events) {
        if (signal.aborted) return;
        // The rollout as of this event (state and weight), so updates read in order.
        const rollout = { ...toProto(row), state: event.toState, currentStep: event.step, canaryWeight: event.canaryWeight, updatedAt: event.time };
        await send({ rollout, event });
        lastSequence = event.sequence;
      }
    }
  }
}

/** Resolves true after `ms`, false at once if `signal` fires first. */
function sleep(ms: number, signal: AbortSignal): Promise<boolean> {
  if (signal.aborted) return Promise.resolve(false);
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve(true);
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      resolve(false);
    };
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
