/**
 * Sets canary weights on an Istio VirtualService through the Kubernetes API
 * (@kubernetes/client-node, CustomObjectsApi on networking.istio.io
 * `virtualservices`).
 *
 * Read-modify-replace with optimistic concurrency: GET the object, change only
 * the weights of the named HTTP route, and PUT the whole object back carrying
 * the `metadata.resourceVersion` it was read at. If anyone edited the object
 * in between, the API server answers 409 Conflict instead of letting us
 * clobber their edit; we re-read and retry, a bounded number of times.
 * Fencing: a write carries the lease epoch it was decided in. Each attempt
 * refuses (RouterFencedError) an object stamped with a newer epoch, asks the
 * database that the epoch is still current right before its PUT, and stamps the
 * object with its epoch; the PUT carries the resourceVersion read in that same
 * attempt. So a 409 caused by a successor's write ends in a refusal on the
 * re-read, never in re-applying our stale weights.
 * Why not a JSON merge patch: it would replace the whole `http` list (merge
 * patch cannot address list items), overwriting a concurrent edit of another
 * route; a JSON patch by index could hit the wrong route if the list changed.
 */
import { ApiException, CustomObjectsApi, KubeConfig } from '@kubernetes/client-node';
import type { RouteTarget } from '../domain/rollout-spec';
import { assertCurrent, assertNotNewer, EPOCH_ANNOTATION, RouterConfigError, withWeights, type TrafficRouter, type TrafficWeights, type WriteFence } from './traffic-router';

export const ISTIO_NETWORKING_GROUP = 'networking.istio.io';
export const VIRTUAL_SERVICES_PLURAL = 'virtualservices';
/** Field manager recorded in managedFields for our writes. */
export const FIELD_MANAGER = 'shieldx-rollout-controller';

export interface KubernetesRouterOptions {
  /** networking.istio.io version: "v1" (Istio ≥ 1.22) or "v1beta1". */
  readonly apiVersion?: string;
  /** GET + PUT attempts before giving up on repeated conflicts. */
  readonly maxAttempts?: number;
}

/** Repeated 409s: someone keeps editing the object; the controller retries next tick. */
export class RouterConflictError extends Error {
  override readonly name = 'RouterConflictError';
  constructor(
    readonly target: RouteTarget,
    readonly attempts: number,
  ) {
    super(`VirtualService ${target.namespace}/${target.virtualService}: still conflicting after ${attempts} attempts`);
  }
}

/** In a pod: the service account; elsewhere: $KUBECONFIG or ~/.kube/config. */
export function defaultKubeConfig(): KubeConfig {
  const config = new KubeConfig();
  config.loadFromDefault();
  return config;
}

export class KubernetesTrafficRouter implements TrafficRouter {
  readonly kind = 'kubernetes';
  private readonly api: CustomObjectsApi;
  private readonly version: string;
  private readonly maxAttempts: number;

  constructor(kubeConfig: KubeConfig, options: KubernetesRouterOptions = {}) {
    this.api = kubeConfig.makeApiClient(CustomObjectsApi);
    this.version = options.apiVersion ?? 'v1';
    this.maxAttempts = options.maxAttempts ?? 5;
    if (!Number.isInteger(this.maxAttempts) || this.maxAttempts < 1 || this.maxAttempts > 20) {
      throw new RangeError('maxAttempts must be an integer in 1..20');
    }
  }

  async setWeights(target: RouteTarget, weights: TrafficWeights, fence?: WriteFence): Promise<boolean> {
    const coordinates = {
      group: ISTIO_NETWORKING_GROUP,
      version: this.version,
      namespace: target.namespace,
      plural: VIRTUAL_SERVICES_PLURAL,
      name: target.virtualService,
    };
    for (let attempt = 1; attempt <= this.maxAttempts; attempt++) {
      let current: Record<string, unknown>;
      try {
        current = (await this.api.getNamespacedCustomObject(coordinates)) as Record<string, unknown>;
      } catch (error) {
        if (error instanceof ApiException && error.code === 404) throw new RouterConfigError(target, 'not found');
        throw error;
      }
      const metadata = current.metadata as { resourceVersion?: string } | undefined;
      if (!metadata?.resourceVersion) throw new RouterConfigError(target, 'the API server returned no metadata.resourceVersion');
      assertNotNewer(current, target, fence);
      const { object, changed } = withWeights(current, target, weights);
      if (!changed) return false;
      if (fence) {
        const meta = (object as { metadata: { annotations?: Record<string, string> } }).metadata;
        meta.annotations = { ...(meta.annotations ?? {}), [EPOCH_ANNOTATION]: String(fence.epoch) };
      }
      await assertCurrent(target, fence);
      try {
        // `object` still carries the resourceVersion we read: a stale one gets 409.
        await this.api.replaceNamespacedCustomObject({ ...coordinates, body: object, fieldManager: FIELD_MANAGER });
        return true;
      } catch (error) {
        if (error instanceof ApiException && error.code === 409) continue;
        throw error;
      }
    }
    throw new RouterConflictError(target, this.maxAttempts);
  }
}
