/**
 * Alerting and observability assets: the Prometheus rule file (ops/alerts/shieldx.rules.yml), its
 * promtool unit tests, the PrometheusRule manifest generated from it, the runbooks the alerts link
 * to, and the Grafana dashboard.
 *
 * promtool (Debian package `prometheus`) checks and unit-tests the rules. Without promtool on PATH
 * those tests are skipped with a reason, except under CI=true, where a missing promtool fails.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { parse } from 'yaml';
import { type K8sObject, validateAgainstSchema } from '../mesh/manifest-schemas';
import { requireTool } from '../testing/require-tool';
import {
  PROMETHEUS_RULE_FILE,
  readRuleFile,
  renderPrometheusRule,
  RULES_FILE,
} from './alerts/sync-prometheus-rule';

const REPO = path.resolve(__dirname, '..');
const RULES_TEST_FILE = path.join(REPO, 'ops', 'alerts', 'shieldx.rules.test.yml');
const RUNBOOKS = path.join(REPO, 'docs', 'runbooks');
const DASHBOARD = path.join(REPO, 'ops', 'dashboards', 'shieldx-overview.json');
const RUNBOOK_URL_PREFIX = 'https://github.com/shieldx/mesh/blob/main/docs/runbooks/';

/** The seed's alerts and how long each condition must hold before it fires (undefined: at once). */
const EXPECTED_ALERTS: Record<string, string | undefined> = {
  CreditsServiceDown: '5m',
  ShadowServiceDown: '5m',
  CamouflageServiceDown: '5m',
  PgBouncerPoolExhausted: '5m',
  NegativeBalanceDetected: undefined,
  AuditLogIntegrityFailure: undefined,
  DatabaseConnectionPoolExhausted: '5m',
  HighErrorRate: '10m',
  HighLatency: '10m',
  CanaryRollback: undefined,
  HoneytokenReplayed: undefined,
  LowCacheHitRate: '15m',
};

/**
 * The metric names the services export (the contract with the services' authors). Histograms
 * are listed by base name; `_bucket`, `_sum` and `_count` are accepted for them.
 */
const COUNTERS_AND_GAUGES = [
  'up',
  // pgbouncer_exporter's, scraped from PgBouncer (not registered by the services).
  'pgbouncer_pools_client_waiting_connections',
  'grpc_server_started_total',
  'grpc_server_handled_total',
  'credits_operations_total',
  'credits_balance_queries_total',
  'credits_transactions_total',
  'credits_cache_requests_total',
  'credits_cache_local_hits_total',
  'credits_circuit_breaker_state',
  'credits_audit_chain_valid',
  'credits_audit_chain_last_verified_timestamp_seconds',
  'credits_balance_invariant_violations',
  'db_pool_connections',
  'db_pool_max_connections',
  'canary_rollbacks_total',
  'shadow_evaluations_active',
  'shadow_evaluations_total',
  'camouflage_assessments_total',
  'camouflage_honeytoken_alerts_total',
];
const HISTOGRAMS = [
  'grpc_server_handling_seconds',
  'shadow_evaluation_duration_seconds',
  'camouflage_assess_duration_seconds',
];
const KNOWN_METRICS = new Set([
  ...COUNTERS_AND_GAUGES,
  ...HISTOGRAMS.flatMap((h) => [`${h}_bucket`, `${h}_sum`, `${h}_count`]),
]);
/** Series Prometheus itself adds to every scrape target; no service registers them. */
const SCRAPE_SERIES = new Set(['up', 'pgbouncer_pools_client_waiting_connections']);

type MetricType = 'Counter' | 'Gauge' | 'Histogram' | 'Summary';
/** `new Counter(`, `new prom.Gauge<'x'>(`, …: every place a prom-client metric is constructed. */
const METRIC_CONSTRUCTION = /\bnew\s+(?:\w+\.)?(Counter|Gauge|Histogram|Summary)\s*(?:<[^>()]*>)?\s*\(/g;
/** What must follow the construction: an object literal whose first property is the literal `name`. */
const LITERAL_NAME = /^\s*\{\s*name\s*:\s*(['"`])([a-zA-Z_:][a-zA-Z0-9_:]*)\1/;

/**
 * The prom-client metrics a TypeScript source constructs, by name, and the line of every
 * construction whose name could not be read (not a literal, or not the first property): those
 * make the cross-check fail rather than be skipped silently.
 */
export function metricRegistrationsIn(source: string): { metrics: Map<string, MetricType>; unreadable: number[] } {
  const metrics = new Map<string, MetricType>();
  const unreadable: number[] = [];
  if (!/from\s+['"]prom-client['"]|require\(\s*['"]prom-client['"]\s*\)/.test(source)) return { metrics, unreadable };
  for (const m of source.matchAll(METRIC_CONSTRUCTION)) {
    const after = source.slice((m.index ?? 0) + m[0].length);
    const name = LITERAL_NAME.exec(after);
    if (name) metrics.set(name[2]!, m[1] as MetricType);
    else unreadable.push(source.slice(0, m.index).split('\n').length);
  }
  return { metrics, unreadable };
}

/** The TypeScript sources under `dir` (recursively), without tests and test support files. */
function sourcesUnder(dir: string): string[] {
  return readdirSync(dir).flatMap((entry) => {
    const full = path.join(dir, entry);
    if (statSync(full).isDirectory()) return sourcesUnder(full);
    return /\.ts$/.test(entry) && !/\.test(-support)?\.ts$|-test-(support|kit)\.ts$|\.d\.ts$/.test(entry) ? [full] : [];
  });
}

/** Every metric registered in services/ and platform/, with where each was found. */
function registeredMetrics(): { metrics: Map<string, { type: MetricType; file: string }>; unreadable: string[] } {
  const metrics = new Map<string, { type: MetricType; file: string }>();
  const unreadable: string[] = [];
  for (const file of [...sourcesUnder(path.join(REPO, 'services')), ...sourcesUnder(path.join(REPO, 'platform'))]) {
    const found = metricRegistrationsIn(readFileSync(file, 'utf8'));
    for (const [name, type] of found.metrics) metrics.set(name, { type, file: path.relative(REPO, file) });
    unreadable.push(...found.unreadable.map((line) => `${path.relative(REPO, file)}:${line}`));
  }
  return { metrics, unreadable };
}

const PROMQL_KEYWORDS = new Set(['and', 'or', 'unless', 'bool', 'offset', 'inf', 'nan', 'Inf', 'NaN']);

/**
 * The metric names a PromQL expression reads: identifiers that are not functions, aggregations,
 * keywords, label names or parts of strings, durations or modifiers.
 */
export function metricNamesIn(expr: string): string[] {
  const s = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'/g, '""') // string literals
    .replace(/\{[^}]*\}/g, ' ') // label matchers
    .replace(/\[[^\]]*\]/g, ' ') // range and subquery selectors
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ')
    .replace(/\boffset\s+-?\w+/g, ' ')
    .replace(/\b\d+(\.\d+)?(e[+-]?\d+)?(ms|[smhdwy])?\b/g, ' ');
  const names: string[] = [];
  for (const m of s.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*/g)) {
    const rest = s.slice((m.index ?? 0) + m[0].length);
    if (/^\s*\(/.test(rest)) continue; // function or aggregation
    if (PROMQL_KEYWORDS.has(m[0])) continue;
    names.push(m[0]);
  }
  return [...new Set(names)];
}

/** Runs promtool; returns its combined output, or throws with that output on a non-zero exit. */
function promtool(binary: string, args: string[]): string {
  try {
    return execFileSync(binary, args, { cwd: REPO, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; message: string };
    throw new Error(`promtool ${args.join(' ')} failed:\n${e.stdout ?? ''}${e.stderr ?? ''}${e.message}`);
  }
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = any;

interface Rule {
  alert?: string;
  record?: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

const ruleFile = readRuleFile();
const alertRules: Rule[] = ruleFile.groups.flatMap((g) => g.rules as unknown as Rule[]).filter((r) => r.alert);

interface DashboardPanel {
  id: number;
  type: string;
  title: string;
  datasource?: { uid?: string };
  gridPos: { x: number; y: number; w: number; h: number };
  targets?: Array<{ expr: string; datasource?: { uid?: string } }>;
}
const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as Json;
const dashboardPanels = dashboard.panels as DashboardPanel[];
const dashboardExprs: string[] = [
  ...dashboardPanels.flatMap((p) => (p.targets ?? []).map((t) => t.expr)),
  ...(dashboard.annotations?.list ?? []).map((a: Json) => a.expr).filter(Boolean),
];
/** Grafana's variables replaced by values PromQL accepts, for checking a panel's query. */
function withoutGrafanaVariables(expr: string): string {
  return expr
    .replaceAll('$__rate_interval', '5m')
    .replaceAll('$__interval', '1m')
    .replaceAll('$__range', '1h')
    .replace(/\$\{?(job|version)\}?/g, '.*');
}

describe('alert rules (ops/alerts/shieldx.rules.yml)', function () {
  it('defines exactly the seed’s alerts, each with its hold time', function () {
    expect(alertRules.map((r) => r.alert).sort()).to.deep.equal(Object.keys(EXPECTED_ALERTS).sort());
    for (const rule of alertRules) {
      const want = EXPECTED_ALERTS[rule.alert!];
      if (want === undefined) expect(rule.for ?? '0s', `${rule.alert} fires at once`).to.match(/^0[smh]?$|^0s$/);
      else expect(rule.for, `${rule.alert} for`).to.equal(want);
    }
  });

  it('gives every alert a severity, a summary, a description and a runbook link', function () {
    for (const rule of alertRules) {
      expect(rule.labels?.severity, `${rule.alert} severity`).to.be.oneOf(['critical', 'warning']);
      for (const key of ['summary', 'description', 'runbook_url']) {
        expect(rule.annotations?.[key], `${rule.alert} ${key}`).to.be.a('string').that.is.not.empty;
      }
    }
  });

  // Each alert's runbook link resolves to a file in docs/runbooks/ that is about that alert.
  it('links every alert to a runbook that exists in docs/runbooks/', function () {
    for (const rule of alertRules) {
      const url = rule.annotations!.runbook_url;
      expect(url.startsWith(RUNBOOK_URL_PREFIX), `${rule.alert} runbook_url ${url}`).to.equal(true);
      const file = path.join(RUNBOOKS, url.slice(RUNBOOK_URL_PREFIX.length));
      expect(existsSync(file), `${rule.alert}: ${path.relative(REPO, file)} exists`).to.equal(true);
      expect(readFileSync(file, 'utf8').split('\n')[0], `${rule.alert} runbook title`).to.equal(`# ${rule.alert}`);
    }
  });

  it('has runbooks for failover, restore and point-in-time recovery', function () {
    for (const name of ['failover.md', 'restore.md', 'pitr.md', 'README.md']) {
      const file = path.join(RUNBOOKS, name);
      expect(existsSync(file), name).to.equal(true);
      expect(readFileSync(file, 'utf8').length, name).to.be.greaterThan(500);
    }
  });

  // The rules read only metrics the services promise to export: a renamed metric would leave an
  // alert that can never fire.
  it('reads only metrics the services export', function () {
    for (const rule of alertRules) {
      const unknown = metricNamesIn(rule.expr).filter((m) => !KNOWN_METRICS.has(m));
      expect(unknown, `${rule.alert} reads unknown metrics`).to.deep.equal([]);
      expect(metricNamesIn(rule.expr), `${rule.alert} reads some metric`).not.to.be.empty;
    }
  });

  // The list above is the contract; this holds the services to it: each name is read from the
  // prom-client constructions in services/ and platform/, so renaming or dropping a metric there
  // fails here instead of leaving an alert or panel that silently never matches.
  it('lists only metrics the services actually register, with their types', function () {
    const { metrics, unreadable } = registeredMetrics();
    expect(unreadable, 'metric constructions whose name is not a literal first property').to.deep.equal([]);
    expect(metrics.size, 'metrics found in services/ and platform/').to.be.greaterThan(20);
    for (const name of COUNTERS_AND_GAUGES.filter((n) => !SCRAPE_SERIES.has(n))) {
      expect(metrics.get(name)?.type, `${name} is registered as a counter or gauge`).to.be.oneOf(['Counter', 'Gauge']);
    }
    for (const name of HISTOGRAMS) {
      expect(metrics.get(name)?.type, `${name} is registered as a histogram`).to.equal('Histogram');
    }
  });

  it('the registration reader finds literal names and reports the ones it cannot read', function () {
    const source = [
      "import { Counter, Gauge, Histogram } from 'prom-client';",
      "const a = new Counter({ name: 'a_total', help: 'x' });",
      'const b = new Gauge<"l">({',
      "  name: 'b_state',",
      '});',
      "const c = new client.Histogram({ name: 'c_seconds', buckets: [1] });",
      "const d = new Counter({ help: 'name second', name: 'd_total' });",
      'const e = new Gauge({ name: NAME });',
    ].join('\n');
    const { metrics, unreadable } = metricRegistrationsIn(source);
    expect([...metrics]).to.deep.equal([
      ['a_total', 'Counter'],
      ['b_state', 'Gauge'],
      ['c_seconds', 'Histogram'],
    ]);
    expect(unreadable).to.deep.equal([7, 8]);
    expect(metricRegistrationsIn("const x = new Counter({ name: 'not_prom' });").metrics.size, 'not prom-client').to.equal(0);
  });

  it('the metric-name reader finds names and ignores functions, labels and durations', function () {
    expect(
      metricNamesIn('sum by (job) (rate(a_total{x="y", le="+Inf"}[5m])) / ignoring(state) b offset 10m > 0.5'),
    ).to.deep.equal(['a_total', 'b']);
    expect(metricNamesIn('absent(up{job="credits"}) or time() - c_seconds > 1e3')).to.deep.equal(['up', 'c_seconds']);
  });

  // Every alert has a promtool case where it fires with checked labels/annotations, and one
  // where it must stay silent.
  it('has promtool cases that fire and that do not fire for every alert', function () {
    const tests = parse(readFileSync(RULES_TEST_FILE, 'utf8')) as Json;
    expect(tests.rule_files).to.deep.equal([path.basename(RULES_FILE)]);
    const fires = new Set<string>();
    const silent = new Set<string>();
    for (const t of tests.tests) {
      for (const c of t.alert_rule_test ?? []) {
        if ((c.exp_alerts ?? []).length > 0) {
          fires.add(c.alertname);
          for (const a of c.exp_alerts) {
            expect(a.exp_labels?.severity, `${c.alertname} case checks severity`).to.be.a('string');
            expect(a.exp_annotations, `${c.alertname} case checks annotations`).to.include.keys(
              'summary',
              'description',
              'runbook_url',
            );
          }
        } else {
          silent.add(c.alertname);
        }
      }
    }
    for (const alert of Object.keys(EXPECTED_ALERTS)) {
      expect(fires.has(alert), `${alert}: a case where it fires`).to.equal(true);
      expect(silent.has(alert), `${alert}: a case where it does not fire`).to.equal(true);
    }
  });
});

describe('PrometheusRule manifest (mesh/k8s/base/monitoring/prometheus-rule.yaml)', function () {
  const manifest = parse(readFileSync(PROMETHEUS_RULE_FILE, 'utf8')) as K8sObject;

  it('carries exactly the rules of the plain rule file', function () {
    expect(manifest.kind).to.equal('PrometheusRule');
    expect(manifest.spec.groups).to.deep.equal(ruleFile.groups);
  });

  it('is what sync-prometheus-rule.ts generates (run `npx tsx ops/alerts/sync-prometheus-rule.ts`)', function () {
    expect(readFileSync(PROMETHEUS_RULE_FILE, 'utf8')).to.equal(renderPrometheusRule());
  });

  it('validates against the prometheus-operator schema', function () {
    expect(validateAgainstSchema(manifest)).to.deep.equal([]);
  });
});

describe('Grafana dashboard (ops/dashboards/shieldx-overview.json)', function () {
  it('has a uid, a Prometheus data-source variable, unique panel ids and a valid layout', function () {
    expect(dashboard.uid).to.equal('shieldx-overview');
    const ds = dashboard.templating.list.find((v: Json) => v.name === 'datasource');
    expect(ds).to.deep.include({ type: 'datasource', query: 'prometheus' });
    const ids = dashboardPanels.map((p) => p.id);
    expect(new Set(ids).size, 'unique panel ids').to.equal(ids.length);
    for (const p of dashboardPanels) {
      expect(p.gridPos.x + p.gridPos.w, `${p.title} fits the 24-column grid`).to.be.at.most(24);
      if (p.type === 'row') continue;
      expect(p.datasource?.uid, `${p.title} data source`).to.equal('${datasource}');
      expect(p.targets, `${p.title} queries`).to.be.an('array').that.is.not.empty;
    }
  });

  it('queries only metrics the services export, and shows every metric the alerts read', function () {
    const shown = new Set<string>();
    for (const expr of dashboardExprs) {
      const names = metricNamesIn(withoutGrafanaVariables(expr));
      expect(names.filter((m) => !KNOWN_METRICS.has(m)), `unknown metrics in ${expr}`).to.deep.equal([]);
      names.forEach((m) => shown.add(m));
    }
    const alerted = new Set(alertRules.flatMap((r) => metricNamesIn(r.expr)));
    expect([...alerted].filter((m) => !shown.has(m)), 'alerted metrics missing from the dashboard').to.deep.equal([]);
  });
});

describe('promtool', function () {
  let binary: string | undefined;
  before(function () {
    binary = requireTool(this, 'promtool', 'the Debian package `prometheus`');
  });

  it('check rules: the rule file is valid (syntax, PromQL, templates)', function () {
    expect(promtool(binary!, ['check', 'rules', path.relative(REPO, RULES_FILE)])).to.match(/SUCCESS: 12 rules found/);
  });

  it('test rules: every firing and non-firing case passes', function () {
    expect(promtool(binary!, ['test', 'rules', path.relative(REPO, RULES_TEST_FILE)])).to.include('SUCCESS');
  });

  // The dashboard's queries are PromQL too: check them by loading them as recording rules.
  it('check rules: every dashboard query is valid PromQL', function () {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'shieldx-dashboard-'));
    try {
      const file = path.join(dir, 'dashboard.rules.yml');
      const rules = dashboardExprs.map((expr, i) => ({
        record: `shieldx_dashboard:query_${i}`,
        expr: withoutGrafanaVariables(expr),
      }));
      writeFileSync(file, JSON.stringify({ groups: [{ name: 'dashboard', rules }] }));
      expect(promtool(binary!, ['check', 'rules', file])).to.include(`SUCCESS: ${rules.length} rules found`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
