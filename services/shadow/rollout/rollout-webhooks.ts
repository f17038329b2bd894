/**
 * Rollout webhooks (Flagger's webhook types): an HTTP POST of a JSON body describing the rollout
 * to each configured URL.
 *
 * - Gates (pre-rollout, confirm-traffic-increase, confirm-promotion): the rollout moves on only
 *   when every gate of the moment answers 2xx; otherwise it holds and asks again an interval
 *   later (the progress deadline ends a gate that never opens).
 * - Notifications (rollback, post-rollout): sent once a rollout finished; never block anything.
 *
 * Each call is retried with exponential backoff on what may be transient (network error, timeout,
 * 5xx, 429), at most WEBHOOK_MAX_ATTEMPTS attempts, each bounded by the webhook's timeout; any
 * other answer is final. Redirects are not followed (a gate must answer itself).
 */
import { AnalysisSnapshot } from '../../../gen/shieldx/shadow/v1/shadow';
import type { WebhookSpec, WebhookTypeName } from '../domain/rollout-spec';
import type { RolloutRow } from '../store/rollout-store';

export const WEBHOOK_MAX_ATTEMPTS = 3;
export const WEBHOOK_BACKOFF_MS = 200;
export const WEBHOOK_BACKOFF_MAX_MS = 2_000;

export interface WebhookOutcome {
  readonly ok: boolean;
  readonly attempts: number;
  /** HTTP status of the last answer, when there was one. */
  readonly status?: number;
  /** Why the last attempt failed without an answer. */
  readonly error?: string;
}

/** The JSON body of a webhook call (snake_case, like the proto's JSON names). */
export interface WebhookPayload {
  readonly rollout_id: string;
  readonly webhook: string;
  /** e.g. "confirm-traffic-increase". */
  readonly type: string;
  /** The rollout's state, e.g. "PROGRESSING". */
  readonly phase: string;
  readonly target: { namespace: string; virtual_service: string; host: string; stable_subset: string; canary_subset: string; route_name: string };
  readonly canary_weight: number;
  readonly stable_weight: number;
  /** Index into steps of the current step. */
  readonly step: number;
  readonly steps: readonly number[];
  /** The step a gate would let the rollout take (index and weight), when it is one. */
  readonly next_step?: { index: number; canary_weight: number };
  /** The latest analysis (AnalysisSnapshot as proto JSON), when there is one. */
  readonly analysis: unknown;
}

export function webhookTypeName(type: WebhookTypeName): string {
  return type.toLowerCase().replace(/_/g, '-');
}

export function webhookPayload(row: RolloutRow, hook: WebhookSpec, analysis: AnalysisSnapshot | undefined, nextStep?: number): WebhookPayload {
  const { target } = row;
  return {
    rollout_id: row.id,
    webhook: hook.name,
    type: webhookTypeName(hook.type),
    phase: row.state,
    target: {
      namespace: target.namespace,
      virtual_service: target.virtualService,
      host: target.host,
      stable_subset: target.stableSubset,
      canary_subset: target.canarySubset,
      route_name: target.routeName,
    },
    canary_weight: row.canaryWeight,
    stable_weight: 100 - row.canaryWeight,
    step: row.currentStep,
    steps: [...row.steps],
    ...(nextStep === undefined ? {} : { next_step: { index: nextStep, canary_weight: row.steps[nextStep]! } }),
    analysis: analysis === undefined ? null : AnalysisSnapshot.toJSON(analysis),
  };
}

const retriable = (status: number) => status >= 500 || status === 429;

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

/** POSTs `payload` to the webhook, retrying what may be transient; never throws. */
export async function callWebhook(
  hook: WebhookSpec,
  payload: WebhookPayload,
  options: { signal?: AbortSignal; maxAttempts?: number; backoffMs?: number } = {},
): Promise<WebhookOutcome> {
  const maxAttempts = options.maxAttempts ?? WEBHOOK_MAX_ATTEMPTS;
  const body = JSON.stringify(payload);
  let last: WebhookOutcome = { ok: false, attempts: 0, error: 'not attempted' };
  for (let attempt = 1; attempt <= maxAttempts; attempt += 1) {
    if (options.signal?.aborted) return { ...last, attempts: attempt - 1, error: last.error ?? 'cancelled' };
    if (attempt > 1) {
      await sleep(Math.min(WEBHOOK_BACKOFF_MAX_MS, (options.backoffMs ?? WEBHOOK_BACKOFF_MS) * 2 ** (attempt - 2)), options.signal);
      if (options.signal?.aborted) return { ...last, attempts: attempt - 1 };
    }
    const timeout = AbortSignal.timeout(hook.timeoutMs);
    try {
      const response = await fetch(hook.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'user-agent': 'shieldx-rollout-controller' },
        body,
        redirect: 'manual',
        signal: options.signal ? AbortSignal.any([timeout, options.signal]) : timeout,
      });
      await response.body?.cancel().catch(() => undefined);
      if (response.status >= 200 && response.status < 300) return { ok: true, attempts: attempt, status: response.status };
      last = { ok: false, attempts: attempt, status: response.status };
      if (!retriable(response.status)) return last;
    } catch (error) {
      last = { ok: false, attempts: attempt, error: timeout.aborted ? `no answer within ${hook.timeoutMs} ms` : (error as Error).message };
    }
  }
  return last;
}
