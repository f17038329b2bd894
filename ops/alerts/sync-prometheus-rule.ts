/**
 * Keeps the PrometheusRule manifest (mesh/k8s/base/monitoring/prometheus-rule.yaml) in step with
 * the plain rule file (ops/alerts/shieldx.rules.yml), which is the source of truth: the plain file
 * is what `promtool check rules` / `promtool test rules` prove, the manifest is what a
 * prometheus-operator cluster loads. Generating one from the other means they cannot drift apart
 * unnoticed; ops/alerts.test.ts fails when the committed manifest differs from the generated one.
 *
 *   npx tsx ops/alerts/sync-prometheus-rule.ts          # rewrite the manifest
 */
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parse, stringify } from 'yaml';

const REPO_ROOT = path.resolve(__dirname, '..', '..');
export const RULES_FILE = path.join(REPO_ROOT, 'ops', 'alerts', 'shieldx.rules.yml');
export const PROMETHEUS_RULE_FILE = path.join(
  REPO_ROOT,
  'mesh',
  'k8s',
  'base',
  'monitoring',
  'prometheus-rule.yaml',
);

/** The shape of a Prometheus rule file, as far as this script needs it. */
export interface RuleFile {
  groups: Array<{ name: string; rules: Array<Record<string, unknown>> }>;
}

const HEADER = [
  '# GENERATED from ops/alerts/shieldx.rules.yml by ops/alerts/sync-prometheus-rule.ts: do not edit.',
  '# Change the plain rule file (and its promtool tests), then run',
  '#   npx tsx ops/alerts/sync-prometheus-rule.ts',
  '# Prometheus must select this object: its ruleSelector has to match the label',
  '# shieldx.io/alerts: "true" and its ruleNamespaceSelector the shieldx namespace.',
  '',
].join('\n');

export function readRuleFile(file: string = RULES_FILE): RuleFile {
  const doc = parse(readFileSync(file, 'utf8')) as RuleFile;
  if (!doc || !Array.isArray(doc.groups) || doc.groups.length === 0) {
    throw new Error(`${file}: expected a rule file with at least one group under "groups"`);
  }
  return doc;
}

/** Wraps the plain rule file's groups, unchanged, in a monitoring.coreos.com/v1 PrometheusRule. */
export function buildPrometheusRule(rules: RuleFile): Record<string, unknown> {
  return {
    apiVersion: 'monitoring.coreos.com/v1',
    kind: 'PrometheusRule',
    metadata: {
      name: 'shieldx-alerts',
      namespace: 'shieldx',
      labels: {
        'app.kubernetes.io/name': 'shieldx',
        'shieldx.io/alerts': 'true',
      },
    },
    spec: { groups: rules.groups },
  };
}

export function renderPrometheusRule(rules: RuleFile = readRuleFile()): string {
  // lineWidth 0: never fold long PromQL or annotation lines, so the text stays greppable.
  return HEADER + stringify(buildPrometheusRule(rules), { lineWidth: 0 });
}

function main(): number {
  writeFileSync(PROMETHEUS_RULE_FILE, renderPrometheusRule());
  process.stdout.write(`wrote ${path.relative(process.cwd(), PROMETHEUS_RULE_FILE)}\n`);
  return 0;
}

if (require.main === module) {
  process.exitCode = main();
}
