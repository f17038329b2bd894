/**
 * Traffic routing for canary rollouts: the controller decides a canary weight,
 * a `TrafficRouter` makes the target Istio VirtualService show it.
 *
 * Writes are idempotent: the controller always passes the weights derived from
 * the rollout's persisted state, so re-applying after a crash (or twice) is
 * harmless, and a router that finds the weights already in place writes nothing.
 *
 * Two routers: the file router below (the local default: it keeps VirtualService
 * manifests in a directory, e.g. for GitOps or `kubectl apply`), and the
 * Kubernetes API router in traffic-router-kubernetes.ts.
 */
import { mkdir, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Document, isMap, parseAllDocuments, stringify } from 'yaml';
import type { RouteTarget } from '../domain/rollout-spec';

/** Percentages; always integers that sum to 100 (Istio rejects anything else). */
export interface TrafficWeights {
  readonly stable: number;
  readonly canary: number;
}

/**
 * What makes a write safe from a paused ex-leader: the lease epoch the write was decided in,
 * and a check of that epoch against the database, asked right before the write lands.
 */
export interface WriteFence {
  readonly epoch: number;
  isCurrent(): Promise<boolean>;
}

/** Annotation on the VirtualService: the lease epoch of the controller write that last set its weights. */
export const EPOCH_ANNOTATION = 'shieldx.io/rollout-epoch';

export interface TrafficRouter {
  /** "file" or "kubernetes", for logs. */
  readonly kind: string;
  /**
   * Makes the target route send `weights` to the stable and canary subsets; touches nothing else
   * (but the epoch annotation of a fenced write). Resolves true when it wrote, false when the
   * weights were already in place. With a fence, throws RouterFencedError instead of writing
   * when the fence's epoch is no longer current or the object was written in a newer epoch.
   */
  setWeights(target: RouteTarget, weights: TrafficWeights, fence?: WriteFence): Promise<boolean | void>;
}

/** A write from a lease epoch that is no longer current (a successor leads): refused, nothing written. */
export class RouterFencedError extends Error {
  override readonly name = 'RouterFencedError';
  constructor(
    readonly target: RouteTarget,
    readonly epoch: number,
    why: string,
  ) {
    super(`VirtualService ${target.namespace}/${target.virtualService}: write of lease epoch ${epoch} refused: ${why}`);
  }
}

/** The epoch annotation of a VirtualService (0 when absent or not a number). */
export function writtenEpoch(virtualService: unknown): number {
  const metadata = isObject(virtualService) && isObject(virtualService.metadata) ? virtualService.metadata : undefined;
  const annotations = metadata && isObject(metadata.annotations) ? metadata.annotations : undefined;
  const value = Number(annotations?.[EPOCH_ANNOTATION]);
  return Number.isSafeInteger(value) && value > 0 ? value : 0;
}

/** Throws RouterFencedError when `virtualService` was written in an epoch newer than the fence's. */
export function assertNotNewer(virtualService: unknown, target: RouteTarget, fence: WriteFence | undefined): void {
  if (!fence) return;
  const written = writtenEpoch(virtualService);
  if (written > fence.epoch) throw new RouterFencedError(target, fence.epoch, `the VirtualService was written in the newer epoch ${written}`);
}

/** Asks the fence right before a write. */
export async function assertCurrent(target: RouteTarget, fence: WriteFence | undefined): Promise<void> {
  if (fence && !(await fence.isCurrent())) throw new RouterFencedError(target, fence.epoch, 'the lease epoch is no longer current');
}

/** The VirtualService lacks what the rollout needs (route, subset): retrying cannot help, an operator must. */
export class RouterConfigError extends Error {
  override readonly name = 'RouterConfigError';
  constructor(
    readonly target: RouteTarget,
    readonly problem: string,
  ) {
    super(`VirtualService ${target.namespace}/${target.virtualService}: ${problem}`);
  }
}

export function weightsFor(canaryWeight: number): TrafficWeights {
  assertWeights({ stable: 100 - canaryWeight, canary: canaryWeight });
  return { stable: 100 - canaryWeight, canary: canaryWeight };
}

function assertWeights(weights: TrafficWeights): void {
  const ok =
    Number.isInteger(weights.stable) &&
    Number.isInteger(weights.canary) &&
    weights.stable >= 0 &&
    weights.canary >= 0 &&
    weights.stable + weights.canary === 100;
  if (!ok) throw new RangeError(`weights must be integers in 0..100 summing to 100, got ${JSON.stringify(weights)}`);
}

/** Position of one weight to set: indices into spec.http[i].route[j]. */
export interface WeightEdit {
  readonly httpIndex: number;
  readonly routeIndex: number;
  readonly weight: number;
}

type Json = Record<string, unknown>;
const isObject = (value: unknown): value is Json => typeof value === 'object' && value !== null && !Array.isArray(value);

/**
 * The edits that give `target`'s route `weights`: every destination of the
 * named HTTP route whose subset is the stable or canary subset. Throws
 * RouterConfigError when the route or either subset is missing, or the route
 * sends traffic to a third destination (its weight would break the sum).
 * Returns an empty list when the weights are already in place.
 */
export function planWeightEdits(virtualService: unknown, target: RouteTarget, weights: TrafficWeights): WeightEdit[] {
  assertWeights(weights);
  const spec = isObject(virtualService) ? virtualService.spec : undefined;
  const http = isObject(spec) ? spec.http : undefined;
  if (!Array.isArray(http)) throw new RouterConfigError(target, 'has no spec.http routes');
  const httpIndex = http.findIndex((route) => isObject(route) && route.name === target.routeName);
  if (httpIndex < 0) throw new RouterConfigError(target, `has no http route named "${target.routeName}"`);
  const destinations = (http[httpIndex] as Json).route;
  if (!Array.isArray(destinations)) throw new RouterConfigError(target, `http route "${target.routeName}" has no route list`);

  const edits: WeightEdit[] = [];
  const seen = { stable: false, canary: false };
  destinations.forEach((entry, routeIndex) => {
    const destination = isObject(entry) && isObject(entry.destination) ? entry.destination : undefined;
    const subset = destination?.subset;
    let weight: number;
    if (subset === target.stableSubset) {
      weight = weights.stable;
      seen.stable = true;
    } else if (subset === target.canarySubset) {
      weight = weights.canary;
      seen.canary = true;
    } else {
      throw new RouterConfigError(target, `http route "${target.routeName}" also routes to subset "${String(subset)}"`);
    }
    if ((entry as Json).weight !== weight) edits.push({ httpIndex, routeIndex, weight });
  });
  if (!seen.stable) throw new RouterConfigError(target, `http route "${target.routeName}" has no destination with subset "${target.stableSubset}"`);
  if (!seen.canary) throw new RouterConfigError(target, `http route "${target.routeName}" has no destination with subset "${target.canarySubset}"`);
  return edits;
}

/** A copy of `virtualService` with the weights set; everything else untouched. */
export function withWeights<T>(virtualService: T, target: RouteTarget, weights: TrafficWeights): { object: T; changed: boolean } {
  const edits = planWeightEdits(virtualService, target, weights);
  if (edits.length === 0) return { object: virtualService, changed: false };
  const copy = structuredClone(virtualService) as Json;
  const http = (copy.spec as Json).http as Json[];
  for (const edit of edits) ((http[edit.httpIndex]!.route as Json[])[edit.routeIndex]!).weight = edit.weight;
  return { object: copy as T, changed: true };
}

/** The VirtualService a file router creates when the target has no manifest yet. */
export function newVirtualService(target: RouteTarget, weights: TrafficWeights, apiVersion = 'networking.istio.io/v1'): Json {
  return {
    apiVersion,
    kind: 'VirtualService',
    metadata: { name: target.virtualService, namespace: target.namespace },
    spec: {
      hosts: [target.host],
      http: [
        {
          name: target.routeName,
          route: [
            { destination: { host: target.host, subset: target.stableSubset }, weight: weights.stable },
            { destination: { host: target.host, subset: target.canarySubset }, weight: weights.canary },
          ],
        },
      ],
    },
  };
}

/**
 * Keeps one manifest per VirtualService, `<dir>/<namespace>.<name>.yaml`. An
 * existing file may hold several YAML documents: the VirtualService with the
 * target's name and namespace is edited in place through the `yaml` Document
 * API, so comments, key order and every other route and field survive. The
 * file is replaced atomically (write to a temporary file, rename).
 */
export class FileTrafficRouter implements TrafficRouter {
  readonly kind = 'file';

  constructor(readonly directory: string) {}

  pathFor(target: RouteTarget): string {
    return join(this.directory, `${target.namespace}.${target.virtualService}.yaml`);
  }

  async setWeights(target: RouteTarget, weights: TrafficWeights, fence?: WriteFence): Promise<boolean> {
    assertWeights(weights);
    const path = this.pathFor(target);
    const text = await readIfExists(path);
    let output: string;
    if (text === undefined) {
      const created = newVirtualService(target, weights);
      if (fence) (created.metadata as Json).annotations = { [EPOCH_ANNOTATION]: String(fence.epoch) };
      output = stringify(created);
    } else {
      const documents = parseAllDocuments(text);
      if (!Array.isArray(documents)) throw new RouterConfigError(target, `${path} is not YAML`);
      const document = documents.find((doc) => {
        if (doc.errors.length > 0 || !isMap(doc.contents)) return false;
        const value = doc.toJS() as Json;
        const metadata = isObject(value.metadata) ? value.metadata : {};
        return value.kind === 'VirtualService' && metadata.name === target.virtualService && (metadata.namespace ?? target.namespace) === target.namespace;
      });
      if (document === undefined) throw new RouterConfigError(target, `${path} holds no such VirtualService`);
      const current = document.toJS();
      assertNotNewer(current, target, fence);
      const edits = planWeightEdits(current, target, weights);
      if (edits.length === 0) return false;
      for (const edit of edits) (document as Document).setIn(['spec', 'http', edit.httpIndex, 'route', edit.routeIndex, 'weight'], edit.weight);
      if (fence) (document as Document).setIn(['metadata', 'annotations', EPOCH_ANNOTATION], String(fence.epoch));
      // Every document after the first needs its `---` separator.
      documents.forEach((doc, index) => {
        if (index > 0 && doc.directives) doc.directives.docStart = true;
      });
      output = documents.map((doc) => doc.toString()).join('');
    }
    await mkdir(this.directory, { recursive: true });
    const temporary = `${path}.${process.pid}.${Date.now()}.tmp`;
    await writeFile(temporary, output, 'utf8');
    try {
      // Compare-and-swap, as close to the rename as a file system allows: the epoch is still ours
      // (database), and the file is still what this write was computed from (nobody, e.g. a
      // successor, wrote it meanwhile). A process frozen between this check and the rename can
      // still land a stale write; the leader's drift correction puts its weight back on its next tick.
      await assertCurrent(target, fence);
      if ((await readIfExists(path)) !== text) {
        throw new RouterFencedError(target, fence?.epoch ?? 0, 'the manifest changed while the write was prepared');
      }
    } catch (error) {
      await unlink(temporary).catch(() => undefined);
      throw error;
    }
    await rename(temporary, path);
    return true;
  }
}

async function readIfExists(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    return undefined;
  }
}
