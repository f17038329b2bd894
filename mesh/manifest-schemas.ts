/**
 * Schema validation for the ShieldX manifests, offline, from npm packages:
 * - kubernetes-models (Kubernetes OpenAPI), @kubernetes-models/istio (Istio CRDs) and
 *   @kubernetes-models/prometheus-operator (ServiceMonitor, PrometheusRule) ship a generated JSON
 *   Schema validator per kind: types, enums, patterns, required fields.
 * - Those validators accept unknown fields (the Kubernetes schemas do not forbid them), so a typo
 *   such as `readinesProbe` would pass and silently do nothing. The same packages ship TypeScript
 *   interfaces for every kind; type-checking each document as an object literal of its kind's
 *   interface rejects unknown fields (TypeScript's excess-property check) — the equivalent of
 *   `kubectl --validate=strict`, without a cluster.
 *
 * Only the kinds ShieldX uses are registered: a manifest of any other kind fails with
 * "no schema registered", so adding a kind is a conscious step here.
 */
import path from 'node:path';
import ts from 'typescript';

/** A parsed Kubernetes object (one YAML document). */
export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata?: { name?: string; namespace?: string; labels?: Record<string, string>; [key: string]: unknown };
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  spec?: any;
  [key: string]: unknown;
}

interface KindSchema {
  /** Module that exports the model class and its interface. */
  module: string;
  /** Exported model class name (has a static `validate`-backed instance method). */
  className: string;
  /** Exported TypeScript interface of the object. */
  interfaceName: string;
}

function k8s(group: string, version: string, kind: string): [string, KindSchema] {
  const prefix = group === '' ? 'kubernetes-models' : `kubernetes-models/${group}`;
  const apiVersion = group === '' ? version : `${group}/${version}`;
  return [
    `${apiVersion}/${kind}`,
    { module: `${prefix}/${version}/${kind}`, className: kind, interfaceName: `I${kind}` },
  ];
}

function crd(pkg: string, group: string, version: string, kind: string): [string, KindSchema] {
  return [
    `${group}/${version}/${kind}`,
    { module: `${pkg}/${group}/${version}/${kind}`, className: kind, interfaceName: `I${kind}` },
  ];
}

const ISTIO = '@kubernetes-models/istio';
const PROM_OPERATOR = '@kubernetes-models/prometheus-operator';

export const SCHEMAS: ReadonlyMap<string, KindSchema> = new Map([
  k8s('', 'v1', 'Namespace'),
  k8s('', 'v1', 'ServiceAccount'),
  k8s('', 'v1', 'Service'),
  k8s('', 'v1', 'ConfigMap'),
  k8s('apps', 'v1', 'Deployment'),
  k8s('autoscaling', 'v2', 'HorizontalPodAutoscaler'),
  k8s('policy', 'v1', 'PodDisruptionBudget'),
  k8s('networking.k8s.io', 'v1', 'NetworkPolicy'),
  k8s('rbac.authorization.k8s.io', 'v1', 'Role'),
  k8s('rbac.authorization.k8s.io', 'v1', 'RoleBinding'),
  crd(ISTIO, 'security.istio.io', 'v1beta1', 'PeerAuthentication'),
  crd(ISTIO, 'security.istio.io', 'v1beta1', 'AuthorizationPolicy'),
  crd(ISTIO, 'networking.istio.io', 'v1beta1', 'DestinationRule'),
  crd(ISTIO, 'networking.istio.io', 'v1beta1', 'VirtualService'),
  crd(PROM_OPERATOR, 'monitoring.coreos.com', 'v1', 'ServiceMonitor'),
  crd(PROM_OPERATOR, 'monitoring.coreos.com', 'v1', 'PrometheusRule'),
]);

export function describeObject(obj: K8sObject): string {
  const ns = obj.metadata?.namespace ? `${obj.metadata.namespace}/` : '';
  return `${obj.apiVersion} ${obj.kind} ${ns}${obj.metadata?.name ?? '<unnamed>'}`;
}

/**
 * Validates one object against its kind's JSON Schema. Returns the problems found (empty when
 * valid), each prefixed with the object's identity.
 */
export function validateAgainstSchema(obj: K8sObject): string[] {
  const schema = SCHEMAS.get(`${obj.apiVersion}/${obj.kind}`);
  if (!schema) return [`${describeObject(obj)}: no schema registered for this apiVersion/kind`];
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const mod = require(schema.module) as Record<string, new (data: unknown) => { validate(): void }>;
  const Model = mod[schema.className];
  if (typeof Model !== 'function') {
    return [`${describeObject(obj)}: ${schema.module} exports no ${schema.className}`];
  }
  try {
    new Model(obj).validate();
    return [];
  } catch (err) {
    return [`${describeObject(obj)}: ${(err as Error).message}`];
  }
}

/**
 * Type-checks every object as a literal of its kind's TypeScript interface and returns one
 * message per diagnostic (unknown fields, wrong literal types), naming the object at fault.
 * One TypeScript program for all objects: about a second however many there are.
 */
export function checkUnknownFields(objects: readonly K8sObject[]): string[] {
  const problems: string[] = [];
  const ranges: Array<{ start: number; end: number; obj: K8sObject }> = [];
  let source = '';
  objects.forEach((obj, i) => {
    const schema = SCHEMAS.get(`${obj.apiVersion}/${obj.kind}`);
    if (!schema) {
      problems.push(`${describeObject(obj)}: no schema registered for this apiVersion/kind`);
      return;
    }
    const start = source.length;
    source +=
      `import type { ${schema.interfaceName} as T${i} } from '${schema.module}';\n` +
      `export const o${i}: T${i} = ${JSON.stringify(obj, null, 1)};\n`;
    ranges.push({ start, end: source.length, obj });
  });
  if (ranges.length === 0) return problems;

  // The virtual file sits in mesh/ so that module resolution finds the repository's node_modules.
  const virtualFile = path.join(__dirname, '__manifests_typecheck__.ts');
  const options: ts.CompilerOptions = {
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    types: [],
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.CommonJS,
    moduleResolution: ts.ModuleResolutionKind.Node10,
  };
  const host = ts.createCompilerHost(options);
  const getSourceFile = host.getSourceFile.bind(host);
  const fileExists = host.fileExists.bind(host);
  host.getSourceFile = (fileName, languageVersion, ...rest) =>
    fileName === virtualFile
      ? ts.createSourceFile(fileName, source, languageVersion, true)
      : getSourceFile(fileName, languageVersion, ...rest);
  host.fileExists = (fileName) => fileName === virtualFile || fileExists(fileName);

  const program = ts.createProgram([virtualFile], options, host);
  const diagnostics = ts.getPreEmitDiagnostics(program, program.getSourceFile(virtualFile));
  for (const diagnostic of diagnostics) {
    const message = ts.flattenDiagnosticMessageText(diagnostic.messageText, '\n');
    const at = diagnostic.start ?? -1;
    const owner = ranges.find((r) => at >= r.start && at < r.end);
    let where = '';
    if (owner && diagnostic.file && diagnostic.start !== undefined) {
      // The JSON path of the offending property, read back from the generated literal.
      const line = diagnostic.file.text.slice(diagnostic.start).split('\n', 1)[0];
      where = ` (at ${line.trim().slice(0, 80)})`;
    }
    problems.push(`${owner ? describeObject(owner.obj) : 'manifests'}: ${message}${where}`);
  }
  return problems;
}
