/**
 * The deployment manifests (mesh/istio, mesh/k8s) and the Dockerfile: every YAML document parses,
 * validates against its kind's Kubernetes / Istio / prometheus-operator schema (and has no field
 * the schema does not know), and keeps the promises the canary-rollout issue makes: gRPC probes,
 * pod security on every container, HPA/PDB numbers, STRICT mTLS, ISTIO_MUTUAL, `grpc` port names,
 * pinned images, secrets only by reference, callers restricted by identity and by network.
 *
 * The same checks run on the source files and on each overlay rendered by `kubectl kustomize`
 * (what a cluster would receive). Without kubectl on PATH the rendering is skipped with a reason,
 * except under CI=true, where a missing kubectl fails.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { parseAllDocuments, visit } from 'yaml';
import type { z } from 'zod';
import { serviceConfigSchema, type ServiceModule } from '../platform/server';
import { SERVICES as SERVICE_ENTRIES } from '../scripts/services';
import { requireTool } from '../testing/require-tool';
import {
  checkUnknownFields,
  describeObject,
  type K8sObject,
  validateAgainstSchema,
} from './manifest-schemas';

const REPO = path.resolve(__dirname, '..');
const MESH = path.join(REPO, 'mesh');
const OVERLAYS = path.join(MESH, 'k8s', 'overlays');
const NAMESPACE = 'shieldx';

interface ServiceSpec {
  grpcPort: number;
  /** JSON over HTTP (Connect): the same callers as gRPC. */
  httpPort: number;
  metricsPort: number;
  /** Service accounts (namespace shieldx) allowed to call the gRPC port. */
  callers: string[];
  hpa: { min: number; max: number; cpu: number; memory: number };
  pdbMinAvailable: number;
  secretEnv: string[];
  /**
   * Secret keys a production deployment may set (a read replica, a Redis Cluster or Sentinel, ...):
   * referenced with `optional: true`, so a Secret without them leaves the variable unset.
   */
  optionalSecretEnv: string[];
  /** Needs a Kubernetes API token (the shadow rollout controller). */
  kubeApi: boolean;
}

/** Redis Cluster or Sentinel instead of REDIS_URL (docs/configuration.md): optional Secret keys of every service. */
const REDIS_TOPOLOGY_ENV = ['REDIS_CLUSTER_NODES', 'REDIS_SENTINELS', 'REDIS_SENTINEL_MASTER', 'REDIS_PASSWORD'];

/** What the issue and the design fix; the manifests must say the same. */
const SERVICES: Record<string, ServiceSpec> = {
  credits: {
    grpcPort: 5004,
    httpPort: 8004,
    metricsPort: 9004,
    callers: ['orchestrator', 'guardian'],
    hpa: { min: 3, max: 10, cpu: 70, memory: 80 },
    pdbMinAvailable: 2,
    secretEnv: [
      'DATABASE_URL',
      'REDIS_URL',
      'SHIELDX_API_KEYS',
      'CREDITS_PAYMENT_KEYS',
      'CREDITS_PAYMENT_ACTIVE_KEY_ID',
      'CREDITS_AUDIT_HMAC_KEY',
      'PAGE_TOKEN_SECRET',
    ],
    optionalSecretEnv: ['DATABASE_READ_URL', ...REDIS_TOPOLOGY_ENV],
    kubeApi: false,
  },
  shadow: {
    grpcPort: 5005,
    httpPort: 8005,
    metricsPort: 9005,
    callers: ['shieldx-operator'],
    hpa: { min: 2, max: 8, cpu: 75, memory: 85 },
    pdbMinAvailable: 1,
    secretEnv: ['DATABASE_URL', 'REDIS_URL', 'SHIELDX_API_KEYS', 'PAGE_TOKEN_SECRET'],
    // SHADOW_LISTEN_DATABASE_URL: LISTEN on a direct connection when DATABASE_URL is PgBouncer.
    optionalSecretEnv: ['DATABASE_READ_URL', 'SHADOW_LISTEN_DATABASE_URL', ...REDIS_TOPOLOGY_ENV],
    kubeApi: true,
  },
  camouflage: {
    grpcPort: 5006,
    httpPort: 8006,
    metricsPort: 9006,
    callers: ['guardian'],
    hpa: { min: 2, max: 8, cpu: 70, memory: 80 },
    pdbMinAvailable: 1,
    secretEnv: ['DATABASE_URL', 'REDIS_URL', 'SHIELDX_API_KEYS', 'PAGE_TOKEN_SECRET'],
    // No DATABASE_READ_URL: camouflage reads nothing that may lag from PostgreSQL.
    optionalSecretEnv: [...REDIS_TOPOLOGY_ENV],
    kubeApi: false,
  },
};
const SERVICE_NAMES = Object.keys(SERVICES);
/** Variables that carry credentials or keys: only ever from a Secret. */
const ALL_SECRET_ENV = new Set(Object.values(SERVICES).flatMap((service) => [...service.secretEnv, ...service.optionalSecretEnv]));
const REQUIRED_PLAIN_ENV = [
  'SHIELDX_SERVICE',
  'GRPC_PORT',
  'METRICS_PORT',
  'LOG_LEVEL',
  'OTEL_SERVICE_NAME',
  'OTEL_EXPORTER_OTLP_ENDPOINT',
];
/** The service modules the pods run (SHIELDX_SERVICE selects one, as scripts/start-service.ts does). */
const SERVICE_MODULES: Record<string, ServiceModule<z.ZodRawShape>> = Object.fromEntries(
  SERVICE_ENTRIES.map((entry) => [entry.name, entry.load()]),
);

/**
 * The variables a service refuses to start without: every key of the schema startService builds
 * (serviceConfigSchema) whose validator rejects `undefined`, i.e. has neither a default nor `.optional()`.
 */
function requiredConfigKeys(svc: string): string[] {
  // With the default ports the production entry point (scripts/service-process-main.ts) passes.
  const entry = SERVICE_ENTRIES.find((e) => e.name === svc)!;
  const shape: z.ZodRawShape = serviceConfigSchema(SERVICE_MODULES[svc], { grpc: entry.defaultGrpcPort, metrics: entry.defaultMetricsPort }).shape;
  return Object.keys(shape)
    .filter((key) => shape[key].safeParse(undefined).success === false)
    .sort();
}

const PROMETHEUS_PRINCIPAL = 'cluster.local/ns/monitoring/sa/prometheus-k8s';
const CLUSTER_SCOPED = new Set(['Namespace']);

// ---------------------------------------------------------------------------------------------
// Loading

function yamlFilesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir)) {
    const full = path.join(dir, entry);
    if (statSync(full).isDirectory()) out.push(...yamlFilesUnder(full));
    else if (/\.ya?ml$/.test(entry)) out.push(full);
  }
  return out.sort();
}

/** Plain scalars that YAML 1.1 (Kubernetes' parser) reads as booleans but YAML 1.2 as strings. */
const YAML11_BOOLEANS = /^(y|Y|yes|Yes|YES|n|N|no|No|NO|on|On|ON|off|Off|OFF)$/;

/**
 * Parses a multi-document YAML text. Throws on any syntax error or warning, and on an unquoted
 * `yes`/`no`/`on`/`off`/`y`/`n`: Kubernetes' parser (YAML 1.1) turns those into booleans where
 * this YAML 1.2 parser keeps strings, so the file would not mean what the checks saw.
 */
function parseDocuments(text: string, source: string): K8sObject[] {
  const objects: K8sObject[] = [];
  for (const doc of parseAllDocuments(text, { prettyErrors: true })) {
    const issues = [...doc.errors, ...doc.warnings];
    if (issues.length > 0) {
      throw new Error(`${source}: ${issues.map((e) => e.message).join('; ')}`);
    }
    visit(doc, {
      Scalar(_key, node) {
        if (node.type === 'PLAIN' && typeof node.value === 'string' && YAML11_BOOLEANS.test(node.value)) {
          throw new Error(`${source}: quote "${node.value}": Kubernetes would read it as a boolean`);
        }
      },
    });
    const value = doc.toJS() as K8sObject | null;
    if (value === null || value === undefined) continue; // comment-only document
    if (typeof value !== 'object' || !value.apiVersion || !value.kind) {
      throw new Error(`${source}: a document without apiVersion/kind`);
    }
    objects.push(value);
  }
  return objects;
}

const isKustomization = (file: string) => path.basename(file) === 'kustomization.yaml';

/** Every manifest file in mesh/istio and mesh/k8s/base (kustomization files aside). */
const SOURCE_FILES = [
  ...yamlFilesUnder(path.join(MESH, 'istio')),
  ...yamlFilesUnder(path.join(MESH, 'k8s', 'base')),
].filter((f) => !isKustomization(f));

function loadSourceObjects(): K8sObject[] {
  return SOURCE_FILES.flatMap((f) => parseDocuments(readFileSync(f, 'utf8'), path.relative(REPO, f)));
}

function renderOverlay(kubectl: string, overlayDir: string): K8sObject[] {
  const out = execFileSync(kubectl, ['kustomize', overlayDir], {
    encoding: 'utf8',
    maxBuffer: 32 * 1024 * 1024,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return parseDocuments(out, `kubectl kustomize ${path.relative(REPO, overlayDir)}`);
}

/**
 * The files a kustomization pulls in, following directories that hold their own
 * kustomization.yaml (as kustomize does), so a manifest left out of every kustomization is found.
 */
function filesReachableFrom(kustomizationDir: string, seen = new Set<string>()): Set<string> {
  if (seen.has(kustomizationDir)) return seen;
  seen.add(kustomizationDir);
  const file = path.join(kustomizationDir, 'kustomization.yaml');
  const [k] = parseAllDocuments(readFileSync(file, 'utf8')).map((d) => d.toJS());
  for (const entry of (k.resources ?? []) as string[]) {
    const target = path.resolve(kustomizationDir, entry);
    if (existsSync(path.join(target, 'kustomization.yaml'))) filesReachableFrom(target, seen);
    else seen.add(target);
  }
  return seen;
}

// ---------------------------------------------------------------------------------------------
// Small accessors

const ofKind = (objects: K8sObject[], kind: string) => objects.filter((o) => o.kind === kind);

function named(objects: K8sObject[], kind: string, name: string): K8sObject {
  const found = objects.filter((o) => o.kind === kind && o.metadata?.name === name);
  expect(found, `exactly one ${kind} ${name}`).to.have.lengthOf(1);
  return found[0];
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Container = any;

function containersOf(deployment: K8sObject): Container[] {
  const spec = deployment.spec.template.spec;
  return [...(spec.initContainers ?? []), ...spec.containers];
}

function envOf(container: Container): Map<string, Container> {
  return new Map((container.env ?? []).map((e: Container) => [e.name, e]));
}

/**
 * The variables a container is sure to receive: `env` entries with a non-empty value (the config
 * loader treats an empty one as unset) or a non-optional `valueFrom`, and the keys of ConfigMaps
 * it loads with a non-optional `envFrom`. (A Secret's keys are not in this repository, so a
 * variable only an `envFrom` Secret would supply cannot be shown to be set.)
 */
function providedEnv(container: Container, objects: K8sObject[]): Set<string> {
  const names = new Set<string>();
  for (const e of container.env ?? []) {
    if (typeof e.value === 'string' ? e.value !== '' : e.valueFrom !== undefined) {
      const ref = e.valueFrom?.secretKeyRef ?? e.valueFrom?.configMapKeyRef;
      if (ref?.optional !== true) names.add(e.name);
    }
  }
  for (const from of container.envFrom ?? []) {
    const ref = from.configMapRef;
    if (!ref || ref.optional === true) continue;
    const cm = objects.find((o) => o.kind === 'ConfigMap' && o.metadata?.name === ref.name);
    for (const key of Object.keys((cm?.data ?? {}) as Record<string, string>)) names.add(`${from.prefix ?? ''}${key}`);
  }
  return names;
}

/** Every image reference must carry a tag other than `latest`, or a digest. */
function imageIsPinned(image: string): boolean {
  if (image.includes('@sha256:')) return true;
  const lastSegment = image.split('/').pop() ?? '';
  const colon = lastSegment.lastIndexOf(':');
  if (colon < 0) return false; // untagged means :latest
  return lastSegment.slice(colon + 1) !== 'latest';
}

// ---------------------------------------------------------------------------------------------
// The checks, run on every set of objects (sources, and each rendered overlay)

interface SuiteOptions {
  /** The issue's exact autoscaling numbers (base and production; staging lowers the ceilings). */
  exactScaling: boolean;
}

function manifestChecks(load: () => K8sObject[], options: SuiteOptions): void {
  let objects: K8sObject[] = [];
  before(function () {
    objects = load();
  });

  // Schema: types, enums, patterns and required fields of every document, per its kind.
  it('every object validates against its kind’s JSON schema', function () {
    expect(objects.length).to.be.greaterThan(20);
    expect(objects.flatMap(validateAgainstSchema)).to.deep.equal([]);
  });

  // Schema, strict: no field the kind does not define (a misspelt field would be ignored silently).
  it('no object has a field its kind does not define', function () {
    expect(checkUnknownFields(objects)).to.deep.equal([]);
  });

  it('every namespaced object is in the shieldx namespace, and no Secret is shipped', function () {
    for (const o of objects) {
      if (CLUSTER_SCOPED.has(o.kind)) continue;
      expect(o.metadata?.namespace, describeObject(o)).to.equal(NAMESPACE);
    }
    expect(ofKind(objects, 'Secret'), 'Secrets are created outside this repository').to.deep.equal([]);
  });

  it('the namespace enforces the restricted pod security profile and sidecar injection', function () {
    const ns = named(objects, 'Namespace', NAMESPACE);
    expect(ns.metadata?.labels).to.include({
      'istio-injection': 'enabled',
      'pod-security.kubernetes.io/enforce': 'restricted',
    });
  });

  it('each service has a stable and a canary Deployment that differ only in track', function () {
    const deployments = ofKind(objects, 'Deployment');
    expect(deployments.map((d) => d.metadata?.name).sort()).to.deep.equal(
      SERVICE_NAMES.flatMap((s) => [s, `${s}-canary`]).sort(),
    );
    for (const svc of SERVICE_NAMES) {
      const stable = named(objects, 'Deployment', svc);
      const canary = named(objects, 'Deployment', `${svc}-canary`);
      for (const [d, track] of [[stable, 'stable'], [canary, 'canary']] as const) {
        const want = { app: svc, version: track };
        expect(d.spec.selector.matchLabels, describeObject(d)).to.deep.equal(want);
        expect(d.spec.template.metadata.labels, describeObject(d)).to.include(want);
      }
      // The HPA owns the stable count; the canary is off until a release scales it.
      expect(stable.spec, `${svc}: replicas belong to the HPA`).not.to.have.property('replicas');
      expect(canary.spec.replicas, `${svc}-canary replicas`).to.be.within(0, 1);

      // Same pod spec except the track: a canary must test what stable will run.
      const normalise = (d: K8sObject) =>
        JSON.parse(
          JSON.stringify(d.spec.template)
            .replace(/"version":"(stable|canary)"/g, '"version":"TRACK"')
            .replace(/shieldx\.track=(stable|canary)/g, 'shieldx.track=TRACK'),
        );
      expect(normalise(canary), `${svc}-canary pod template drifted from ${svc}`).to.deep.equal(
        normalise(stable),
      );
      const rest = (d: K8sObject) => {
        const { template: _t, replicas: _r, selector: _s, ...others } = d.spec;
        return others;
      };
      expect(rest(canary)).to.deep.equal(rest(stable));
    }
  });

  it('every pod and container runs non-root, read-only, unprivileged, with RuntimeDefault seccomp', function () {
    for (const d of ofKind(objects, 'Deployment')) {
      const pod = d.spec.template.spec;
      const podSc = pod.securityContext ?? {};
      expect(podSc.runAsNonRoot, `${describeObject(d)} pod runAsNonRoot`).to.equal(true);
      expect(podSc.runAsUser, `${describeObject(d)} pod runAsUser`).to.be.a('number').above(0);
      expect(podSc.seccompProfile?.type, `${describeObject(d)} pod seccomp`).to.equal('RuntimeDefault');
      expect(pod.hostNetwork ?? false).to.equal(false);
      expect(pod.hostPID ?? false).to.equal(false);
      for (const c of containersOf(d)) {
        const where = `${describeObject(d)} container ${c.name}`;
        const sc = c.securityContext ?? {};
        expect(sc.allowPrivilegeEscalation, `${where} allowPrivilegeEscalation`).to.equal(false);
        expect(sc.readOnlyRootFilesystem, `${where} readOnlyRootFilesystem`).to.equal(true);
        expect(sc.runAsNonRoot ?? podSc.runAsNonRoot, `${where} runAsNonRoot`).to.equal(true);
        expect(sc.runAsUser ?? podSc.runAsUser, `${where} runAsUser`).to.be.above(0);
        expect(sc.privileged ?? false, `${where} privileged`).to.equal(false);
        expect(sc.capabilities?.drop, `${where} capabilities.drop`).to.include('ALL');
        expect(sc.capabilities?.add ?? [], `${where} capabilities.add`).to.deep.equal([]);
        expect(
          (sc.seccompProfile ?? podSc.seccompProfile)?.type,
          `${where} seccompProfile`,
        ).to.equal('RuntimeDefault');
      }
    }
  });

  it('readiness, liveness and startup probes are native gRPC health checks on the grpc port', function () {
    for (const d of ofKind(objects, 'Deployment')) {
      const svc = d.spec.template.metadata.labels.app as string;
      const [main] = d.spec.template.spec.containers;
      const grpcPort = main.ports.find((p: Container) => p.name === 'grpc');
      expect(grpcPort?.containerPort, `${describeObject(d)} grpc port`).to.equal(SERVICES[svc].grpcPort);
      const metricsPort = main.ports.find((p: Container) => p.name === 'http-metrics');
      expect(metricsPort?.containerPort).to.equal(SERVICES[svc].metricsPort);
      const httpPort = main.ports.find((p: Container) => p.name === 'http');
      expect(httpPort?.containerPort, `${describeObject(d)} http port`).to.equal(SERVICES[svc].httpPort);
      for (const probe of ['readinessProbe', 'livenessProbe', 'startupProbe']) {
        const p = main[probe];
        expect(p, `${describeObject(d)} ${probe}`).to.be.an('object');
        expect(Object.keys(p).filter((k) => ['grpc', 'httpGet', 'tcpSocket', 'exec'].includes(k)))
          .to.deep.equal(['grpc']);
        expect(p.grpc.port, `${describeObject(d)} ${probe} port`).to.equal(SERVICES[svc].grpcPort);
      }
    }
  });

  it('every container has CPU and memory requests and limits, and a pinned image', function () {
    for (const d of ofKind(objects, 'Deployment')) {
      for (const c of containersOf(d)) {
        const where = `${describeObject(d)} container ${c.name}`;
        for (const kind of ['requests', 'limits']) {
          expect(c.resources?.[kind], `${where} resources.${kind}`).to.include.keys('cpu', 'memory');
        }
        expect(imageIsPinned(c.image), `${where} image ${c.image} must have a tag (not latest) or digest`)
          .to.equal(true);
      }
    }
  });

  it('secrets are referenced by name only, never written as values', function () {
    const credentialInUrl = /:\/\/[^/\s:@]+:[^/\s@]+@/;
    const secretishName = /(KEY|SECRET|PASSWORD|TOKEN|CREDENTIAL)/i;
    for (const d of ofKind(objects, 'Deployment')) {
      const svc = d.spec.template.metadata.labels.app as string;
      const [main] = d.spec.template.spec.containers;
      const env = envOf(main);
      for (const name of SERVICES[svc].secretEnv) {
        expect(env.get(name)?.valueFrom?.secretKeyRef, `${describeObject(d)} ${name}`).to.deep.include({
          name: `${svc}-secrets`,
          key: name,
        });
        expect(env.get(name).valueFrom.secretKeyRef.optional, `${describeObject(d)} ${name} is a required Secret key`).to.not.equal(true);
      }
      for (const name of SERVICES[svc].optionalSecretEnv) {
        expect(env.get(name)?.valueFrom?.secretKeyRef, `${describeObject(d)} ${name} (optional Secret key)`).to.deep.equal({
          name: `${svc}-secrets`,
          key: name,
          optional: true,
        });
      }
      for (const c of containersOf(d)) {
        expect(c.envFrom ?? [], `${describeObject(d)}: no bulk envFrom`).to.deep.equal([]);
        for (const e of c.env ?? []) {
          const where = `${describeObject(d)} env ${e.name}`;
          if (ALL_SECRET_ENV.has(e.name) || secretishName.test(e.name)) {
            expect(e, `${where} must come from a Secret`).not.to.have.property('value');
            expect(e.valueFrom, where).to.have.property('secretKeyRef');
          }
          if (typeof e.value === 'string') {
            expect(credentialInUrl.test(e.value), `${where} holds a credential`).to.equal(false);
          }
        }
      }
    }
    for (const cm of ofKind(objects, 'ConfigMap')) {
      for (const [k, v] of Object.entries((cm.data ?? {}) as Record<string, string>)) {
        expect(ALL_SECRET_ENV.has(k) || secretishName.test(k), `${describeObject(cm)} key ${k}`).to.equal(false);
        expect(credentialInUrl.test(v), `${describeObject(cm)} ${k} holds a credential`).to.equal(false);
      }
    }
  });

  it('each container is configured for its own service through the fixed variables', function () {
    for (const d of ofKind(objects, 'Deployment')) {
      const svc = d.spec.template.metadata.labels.app as string;
      const [main] = d.spec.template.spec.containers;
      expect(main.name).to.equal(svc);
      const env = envOf(main);
      for (const name of REQUIRED_PLAIN_ENV) expect(env.has(name), `${describeObject(d)} ${name}`).to.equal(true);
      expect(env.get('SHIELDX_SERVICE').value).to.equal(svc);
      expect(env.get('OTEL_SERVICE_NAME').value).to.equal(svc);
      expect(env.get('GRPC_PORT').value).to.equal(String(SERVICES[svc].grpcPort));
      expect(env.get('METRICS_PORT').value).to.equal(String(SERVICES[svc].metricsPort));
      expect(env.get('HTTP_PORT').value).to.equal(String(SERVICES[svc].httpPort));
    }
  });

  // A variable the config schema requires (no default) but the pod never receives stops the
  // process at start with `invalid configuration: <VAR> is required`: pods that never get ready.
  it('every Deployment sets each configuration variable its service requires (no default in its zod shape)', function () {
    for (const d of ofKind(objects, 'Deployment')) {
      const svc = d.spec.template.metadata.labels.app as string;
      const [main] = d.spec.template.spec.containers;
      const provided = providedEnv(main, objects);
      const missing = requiredConfigKeys(svc).filter((key) => !provided.has(key));
      expect(missing, `${describeObject(d)}: required configuration missing from env`).to.deep.equal([]);
    }
  });

  it('each service runs as its own ServiceAccount; only shadow mounts an API token', function () {
    const accounts = new Map(ofKind(objects, 'ServiceAccount').map((sa) => [sa.metadata?.name, sa]));
    expect(accounts.has('shieldx-operator'), 'the shadow callers’ identity').to.equal(true);
    for (const d of ofKind(objects, 'Deployment')) {
      const svc = d.spec.template.metadata.labels.app as string;
      const pod = d.spec.template.spec;
      expect(pod.serviceAccountName, describeObject(d)).to.equal(svc);
      expect(accounts.has(svc), `ServiceAccount ${svc}`).to.equal(true);
      expect(pod.automountServiceAccountToken, `${describeObject(d)} token`).to.equal(SERVICES[svc].kubeApi);
    }
  });

  it('HorizontalPodAutoscalers scale the stable Deployments on CPU and memory', function () {
    const hpas = ofKind(objects, 'HorizontalPodAutoscaler');
    expect(hpas).to.have.lengthOf(SERVICE_NAMES.length);
    for (const svc of SERVICE_NAMES) {
      const hpa = named(objects, 'HorizontalPodAutoscaler', svc);
      const want = SERVICES[svc].hpa;
      expect(hpa.spec.scaleTargetRef).to.deep.equal({ apiVersion: 'apps/v1', kind: 'Deployment', name: svc });
      expect(hpa.spec.minReplicas, `${svc} minReplicas`).to.equal(want.min);
      if (options.exactScaling) expect(hpa.spec.maxReplicas, `${svc} maxReplicas`).to.equal(want.max);
      else expect(hpa.spec.maxReplicas).to.be.within(want.min, want.max);
      const targets = Object.fromEntries(
        hpa.spec.metrics.map((m: Container) => {
          expect(m.type).to.equal('Resource');
          expect(m.resource.target.type).to.equal('Utilization');
          return [m.resource.name, m.resource.target.averageUtilization];
        }),
      );
      expect(targets, `${svc} HPA targets`).to.deep.equal({ cpu: want.cpu, memory: want.memory });
    }
  });

  it('PodDisruptionBudgets keep the issue’s minimum of stable pods', function () {
    for (const svc of SERVICE_NAMES) {
      const pdb = named(objects, 'PodDisruptionBudget', svc);
      expect(pdb.spec.minAvailable, `${svc} minAvailable`).to.equal(SERVICES[svc].pdbMinAvailable);
      expect(pdb.spec.selector.matchLabels).to.deep.equal({ app: svc, version: 'stable' });
      // The budget must leave room for a drain: fewer guaranteed pods than the HPA minimum,
      // or exactly as many would block every node drain.
      expect(pdb.spec.minAvailable).to.be.below(named(objects, 'HorizontalPodAutoscaler', svc).spec.minReplicas);
    }
  });

  it('Services select both tracks and name their gRPC port `grpc`', function () {
    for (const svc of SERVICE_NAMES) {
      const s = named(objects, 'Service', svc);
      expect(s.spec.selector, `${svc} selector`).to.deep.equal({ app: svc });
      const grpc = s.spec.ports.find((p: Container) => p.port === SERVICES[svc].grpcPort);
      expect(grpc, `${svc} gRPC port`).to.deep.include({ name: 'grpc', appProtocol: 'grpc', targetPort: 'grpc' });
      const metrics = s.spec.ports.find((p: Container) => p.port === SERVICES[svc].metricsPort);
      expect(metrics?.name, `${svc} metrics port`).to.equal('http-metrics');
      const http = s.spec.ports.find((p: Container) => p.port === SERVICES[svc].httpPort);
      expect(http, `${svc} JSON/HTTP port`).to.deep.include({ name: 'http', appProtocol: 'http', targetPort: 'http' });
    }
  });

  it('NetworkPolicies admit only the mesh callers and allow egress only to named destinations', function () {
    for (const svc of SERVICE_NAMES) {
      const np = named(objects, 'NetworkPolicy', svc);
      const want = SERVICES[svc];
      expect(np.spec.podSelector.matchLabels).to.deep.equal({ app: svc });
      expect(np.spec.policyTypes).to.have.members(['Ingress', 'Egress']);
      const grpcRules = np.spec.ingress.filter((r: Container) =>
        (r.ports ?? []).some((p: Container) => p.port === want.grpcPort),
      );
      expect(grpcRules, `${svc}: one ingress rule for gRPC`).to.have.lengthOf(1);
      // JSON over HTTP is the same API: the same rule, the same callers.
      expect(grpcRules[0].ports.map((p: Container) => p.port), `${svc}: gRPC and JSON/HTTP ports`).to.have.members([want.grpcPort, want.httpPort]);
      const callers = grpcRules[0].from.map((f: Container) => {
        expect(f, `${svc}: callers are pods in this namespace, nothing wider`).to.have.keys('podSelector');
        return f.podSelector.matchLabels.app;
      });
      expect(callers, `${svc} gRPC callers`).to.have.members(want.callers);
      for (const rule of np.spec.ingress) {
        expect(rule.from, `${svc}: every ingress rule names its sources`).to.be.an('array').that.is.not.empty;
        expect(rule.ports, `${svc}: every ingress rule names its ports`).to.be.an('array').that.is.not.empty;
      }
      const egressPorts = new Set<string>();
      for (const rule of np.spec.egress) {
        expect(rule.ports, `${svc}: every egress rule names its ports`).to.be.an('array').that.is.not.empty;
        for (const p of rule.ports) egressPorts.add(`${p.protocol}/${p.port}`);
        if (!rule.to) {
          // Only the API server (no selectable pod) is reached by port alone, and only by shadow.
          expect(want.kubeApi, `${svc}: an egress rule without destinations`).to.equal(true);
          expect(rule.ports.map((p: Container) => p.port)).to.have.members([443, 6443]);
        }
      }
      for (const p of ['UDP/53', 'TCP/53', 'TCP/5432', 'TCP/6379', 'TCP/15012']) {
        expect(egressPorts.has(p), `${svc} egress ${p}`).to.equal(true);
      }
    }
  });

  it('the rollout controller may only patch VirtualServices and hold its leader Lease', function () {
    const role = named(objects, 'Role', 'shadow-rollout-controller');
    const flat = (role.rules as Container[]).map((r) => ({
      groups: [...r.apiGroups].sort(),
      resources: [...r.resources].sort(),
      verbs: [...r.verbs].sort(),
      names: r.resourceNames,
    }));
    expect(flat).to.deep.equal([
      {
        groups: ['networking.istio.io'],
        resources: ['virtualservices'],
        verbs: ['get', 'list', 'patch', 'update', 'watch'],
        names: undefined,
      },
      { groups: ['coordination.k8s.io'], resources: ['leases'], verbs: ['create', 'get', 'update'], names: undefined },
    ]);
    const binding = named(objects, 'RoleBinding', 'shadow-rollout-controller');
    expect(binding.roleRef).to.deep.equal({
      apiGroup: 'rbac.authorization.k8s.io',
      kind: 'Role',
      name: 'shadow-rollout-controller',
    });
    expect(binding.subjects).to.deep.equal([{ kind: 'ServiceAccount', name: 'shadow', namespace: NAMESPACE }]);
  });

  it('mutual TLS is STRICT for the whole namespace, with no port exception', function () {
    const pas = ofKind(objects, 'PeerAuthentication');
    const namespaceWide = pas.filter((p) => !p.spec?.selector);
    expect(namespaceWide, 'one namespace-wide PeerAuthentication').to.have.lengthOf(1);
    for (const pa of pas) {
      expect(pa.spec.mtls.mode, describeObject(pa)).to.equal('STRICT');
      for (const [port, setting] of Object.entries((pa.spec.portLevelMtls ?? {}) as Record<string, Container>)) {
        expect(setting.mode, `${describeObject(pa)} port ${port}`).to.equal('STRICT');
      }
    }
  });

  it('DestinationRules use ISTIO_MUTUAL and define stable/canary subsets that match the pods', function () {
    for (const svc of SERVICE_NAMES) {
      const dr = named(objects, 'DestinationRule', svc);
      expect(dr.spec.host).to.equal(`${svc}.${NAMESPACE}.svc.cluster.local`);
      expect(dr.spec.trafficPolicy.tls.mode, `${svc} tls`).to.equal('ISTIO_MUTUAL');
      const subsets = Object.fromEntries(dr.spec.subsets.map((s: Container) => [s.name, s]));
      expect(Object.keys(subsets)).to.have.members(['stable', 'canary']);
      for (const [track, deployment] of [['stable', svc], ['canary', `${svc}-canary`]]) {
        const subset = subsets[track];
        expect(subset.labels).to.deep.equal({ version: track });
        const podLabels = named(objects, 'Deployment', deployment).spec.template.metadata.labels;
        expect(podLabels, `${deployment} pods carry subset ${track}'s labels`).to.include(subset.labels);
        const tls = subset.trafficPolicy?.tls?.mode;
        expect(tls === undefined || tls === 'ISTIO_MUTUAL', `${svc} subset ${track} tls`).to.equal(true);
      }
    }
  });

  // Credits pins a tenant to one replica (its consume fast path needs it); the header is the one the README tells callers to send.
  it('routes credits calls by the x-shieldx-tenant header', function () {
    const dr = named(objects, 'DestinationRule', 'credits');
    expect(dr.spec.trafficPolicy.loadBalancer).to.deep.equal({ consistentHash: { httpHeaderName: 'x-shieldx-tenant' } });
    expect(readFileSync(path.join(__dirname, '..', 'README.md'), 'utf8')).to.include('-H "x-shieldx-tenant: acme"');
  });

  // The one plain-text exception: Prometheus' API (a sidecar for certificates only), for shadow.
  it('no DestinationRule weakens TLS except the one for Prometheus’ API', function () {
    for (const dr of ofKind(objects, 'DestinationRule')) {
      const modes = [dr.spec.trafficPolicy?.tls?.mode, ...(dr.spec.subsets ?? []).map((s: Container) => s.trafficPolicy?.tls?.mode)]
        .filter((m) => m !== undefined);
      if (dr.spec.host === 'prometheus-k8s.monitoring.svc.cluster.local') {
        expect(modes, describeObject(dr)).to.deep.equal(['DISABLE']);
        expect(dr.spec.exportTo, `${describeObject(dr)} applies to this namespace only`).to.deep.equal(['.']);
      } else {
        expect(dr.spec.host, describeObject(dr)).to.match(/\.shieldx\.svc\.cluster\.local$/);
        expect(modes.every((m) => m === 'ISTIO_MUTUAL'), `${describeObject(dr)} tls ${modes}`).to.equal(true);
      }
    }
  });

  it('VirtualServices route 100 % to stable and 0 % to canary on the `primary` route', function () {
    for (const svc of SERVICE_NAMES) {
      const vs = named(objects, 'VirtualService', svc);
      const host = `${svc}.${NAMESPACE}.svc.cluster.local`;
      expect(vs.spec.hosts).to.deep.equal([host]);
      expect(vs.spec.http).to.have.lengthOf(1);
      const [primary] = vs.spec.http;
      expect(primary.name).to.equal('primary');
      const weights = Object.fromEntries(
        primary.route.map((r: Container) => {
          expect(r.destination.host).to.equal(host);
          expect(r.destination.port.number).to.equal(SERVICES[svc].grpcPort);
          return [r.destination.subset, r.weight];
        }),
      );
      expect(weights, `${svc} weights`).to.deep.equal({ stable: 100, canary: 0 });
    }
  });

  it('AuthorizationPolicies admit each service’s callers by identity, and Prometheus to /metrics only', function () {
    for (const svc of SERVICE_NAMES) {
      const ap = named(objects, 'AuthorizationPolicy', svc);
      const want = SERVICES[svc];
      expect(ap.spec.action ?? 'ALLOW').to.equal('ALLOW');
      expect(ap.spec.selector.matchLabels).to.deep.equal({ app: svc });
      const byPort = new Map<string, string[]>();
      for (const rule of ap.spec.rules) {
        // A rule without `from` admits anyone: never.
        expect(rule.from, `${svc}: every rule names its sources`).to.be.an('array').that.is.not.empty;
        const principals = rule.from.flatMap((f: Container) => {
          expect(f.source, `${svc}: sources by principal only`).to.have.keys('principals');
          return f.source.principals;
        });
        const ports = rule.to.flatMap((t: Container) => t.operation.ports);
        expect(ports, `${svc}: every rule names its ports`).to.be.an('array').that.is.not.empty;
        for (const port of ports) byPort.set(port, [...(byPort.get(port) ?? []), ...principals]);
      }
      expect(byPort.get(String(want.grpcPort)), `${svc} gRPC principals`).to.have.members(
        want.callers.map((sa) => `cluster.local/ns/${NAMESPACE}/sa/${sa}`),
      );
      expect(byPort.get(String(want.httpPort)), `${svc} JSON/HTTP principals`).to.have.members(
        want.callers.map((sa) => `cluster.local/ns/${NAMESPACE}/sa/${sa}`),
      );
      expect(byPort.get(String(want.metricsPort)), `${svc} metrics principals`).to.deep.equal([PROMETHEUS_PRINCIPAL]);
      expect([...byPort.keys()]).to.have.members([String(want.grpcPort), String(want.httpPort), String(want.metricsPort)]);
    }
  });

  it('Prometheus scrapes every service as its own job and loads the ShieldX alert rules', function () {
    const [sm] = ofKind(objects, 'ServiceMonitor');
    expect(sm, 'a ServiceMonitor').to.be.an('object');
    expect(sm.spec.jobLabel).to.equal('app.kubernetes.io/name');
    for (const svc of SERVICE_NAMES) {
      const s = named(objects, 'Service', svc);
      expect(s.metadata?.labels, `Service ${svc} labels`).to.include({
        ...sm.spec.selector.matchLabels,
        'app.kubernetes.io/name': svc,
      });
    }
    expect(sm.spec.endpoints.map((e: Container) => e.port)).to.deep.equal(['http-metrics']);
    const [rule] = ofKind(objects, 'PrometheusRule');
    const alerts = rule.spec.groups.flatMap((g: Container) => g.rules.map((r: Container) => r.alert));
    expect(alerts).to.include.members(['CreditsServiceDown', 'NegativeBalanceDetected', 'CanaryRollback']);
  });
}

// ---------------------------------------------------------------------------------------------

describe('mesh manifests', function () {
  // Parsing and every file's place in a kustomization, before anything else looks at content.
  describe('files', function () {
    it('every YAML file parses into objects with apiVersion and kind, with no YAML 1.1 boolean trap', function () {
      expect(SOURCE_FILES.length).to.be.greaterThan(10);
      for (const file of SOURCE_FILES) {
        expect(parseDocuments(readFileSync(file, 'utf8'), file).length, file).to.be.greaterThan(0);
      }
    });

    // Guards the check above against passing vacuously (e.g. if the schema stopped rejecting undefined).
    it('reads the required variables from the services’ config schemas', function () {
      expect(requiredConfigKeys('credits')).to.deep.equal([
        'CREDITS_AUDIT_HMAC_KEY',
        'CREDITS_PAYMENT_ACTIVE_KEY_ID',
        'CREDITS_PAYMENT_KEYS',
        'DATABASE_URL',
        'SHIELDX_API_KEYS',
      ]);
      for (const svc of ['shadow', 'camouflage']) {
        expect(requiredConfigKeys(svc), svc).to.deep.equal(['DATABASE_URL', 'SHIELDX_API_KEYS']);
      }
    });

    it('every manifest file is included by the base kustomization', function () {
      const reachable = filesReachableFrom(path.join(MESH, 'k8s', 'base'));
      const orphans = SOURCE_FILES.filter((f) => !reachable.has(f)).map((f) => path.relative(REPO, f));
      expect(orphans).to.deep.equal([]);
    });
  });

  describe('sources (mesh/istio + mesh/k8s/base)', function () {
    manifestChecks(loadSourceObjects, { exactScaling: true });
  });

  const overlays = readdirSync(OVERLAYS).filter((d) => existsSync(path.join(OVERLAYS, d, 'kustomization.yaml')));

  it('there is a production overlay', function () {
    expect(overlays).to.include('production');
  });

  for (const overlay of overlays) {
    describe(`overlay ${overlay}, rendered by kubectl kustomize`, function () {
      let rendered: K8sObject[] = [];
      before(function () {
        const kubectl = requireTool(this, 'kubectl', 'the Debian package `kubernetes-client`');
        rendered = renderOverlay(kubectl, path.join(OVERLAYS, overlay));
      });

      manifestChecks(() => rendered, { exactScaling: overlay === 'production' });

      it('pins the image and names the environment', function () {
        for (const d of ofKind(rendered, 'Deployment')) {
          for (const c of containersOf(d)) expect(imageIsPinned(c.image), c.image).to.equal(true);
        }
        const [cm] = ofKind(rendered, 'ConfigMap');
        expect(cm.metadata?.name).to.match(/^shieldx-config-[a-z0-9]+$/);
        expect((cm.data as Record<string, string>).DEPLOYMENT_ENVIRONMENT).to.equal(overlay);
        for (const d of ofKind(rendered, 'Deployment')) {
          const env = envOf(d.spec.template.spec.containers[0]);
          expect(env.get('LOG_LEVEL').valueFrom.configMapKeyRef.name, 'hashed ConfigMap name').to.equal(
            cm.metadata?.name,
          );
        }
      });
    });
  }
});

describe('Dockerfile', function () {
  const dockerfile = readFileSync(path.join(REPO, 'Dockerfile'), 'utf8');
  // Instructions with line continuations joined, comments dropped.
  const instructions = dockerfile
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
  const args = new Map<string, string>();
  for (const l of instructions) {
    const m = /^ARG\s+(\w+)=(\S+)/.exec(l);
    if (m) args.set(m[1], m[2]);
  }
  const stages: Array<{ image: string; name?: string; lines: string[] }> = [];
  for (const l of instructions) {
    const from = /^FROM\s+(\S+)(?:\s+AS\s+(\S+))?/i.exec(l);
    if (from) {
      const image = from[1].replace(/\$\{(\w+)\}|\$(\w+)/g, (_, a, b) => args.get(a ?? b) ?? '');
      stages.push({ image, name: from[2], lines: [] });
    } else if (stages.length > 0) {
      stages[stages.length - 1].lines.push(l);
    }
  }
  const final = stages[stages.length - 1];

  it('is multi-stage, and every base image is pinned (never :latest)', function () {
    expect(stages.length).to.be.at.least(2);
    for (const s of stages) {
      if (stages.some((other) => other.name === s.image)) continue; // FROM an earlier stage
      expect(imageIsPinned(s.image), `FROM ${s.image}`).to.equal(true);
    }
  });

  it('builds with npm ci + npm run build, and installs only production dependencies for runtime', function () {
    const all = stages.flatMap((s) => s.lines).join('\n');
    expect(all).to.match(/RUN npm ci\b/);
    expect(all).to.match(/RUN npm run build\b/);
    expect(all).to.match(/npm ci [^\n]*--omit=dev/);
    expect(final.lines.join('\n')).not.to.match(/RUN npm (ci|install)(?![^\n]*--omit=dev)/);
  });

  it('ships dist/, the descriptor set and the migrations, and starts the selected service', function () {
    const copies = final.lines.filter((l) => l.startsWith('COPY')).join('\n');
    expect(copies).to.match(/\/app\/dist\s+\.\/dist/);
    expect(copies).to.include('gen/descriptors.binpb');
    expect(copies).to.match(/COPY\s+migrations\b/);
    expect(copies).to.match(/node_modules/);
    const entry = final.lines.find((l) => /^(ENTRYPOINT|CMD)\b/.test(l));
    expect(entry).to.include('"node"').and.to.include('dist/scripts/start-service.js');
  });

  it('runs as a numeric non-root user', function () {
    const users = final.lines.filter((l) => l.startsWith('USER'));
    expect(users, 'final stage USER').to.have.lengthOf.at.least(1);
    const [uid, gid] = users[users.length - 1].split(/\s+/)[1].split(':');
    expect(uid).to.match(/^\d+$/);
    expect(Number(uid)).to.be.above(0);
    if (gid !== undefined) expect(gid).to.match(/^\d+$/);
    // The same UID the pods declare, so runAsNonRoot can be checked against the image.
    const deployment = parseDocuments(
      readFileSync(path.join(MESH, 'k8s', 'base', 'credits', 'deployment.yaml'), 'utf8'),
      'credits deployment',
    )[0];
    expect(deployment.spec.template.spec.securityContext.runAsUser).to.equal(Number(uid));
  });

  it('bakes in no secret and keeps local state out of the build context', function () {
    for (const l of instructions) {
      const m = /^(ENV|ARG)\s+(\w+)/.exec(l);
      if (m) expect(m[2], l).not.to.match(/KEY|SECRET|PASSWORD|TOKEN|DATABASE_URL|REDIS_URL/i);
    }
    const ignore = readFileSync(path.join(REPO, '.dockerignore'), 'utf8').split('\n').map((l) => l.trim());
    for (const entry of ['node_modules', '.git', '.data', 'dist', '.env', '.env.*']) {
      expect(ignore, `.dockerignore ${entry}`).to.include(entry);
    }
  });
});
