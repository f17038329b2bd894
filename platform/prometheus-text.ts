/**
 * Reading a service's /metrics (Prometheus text exposition) in the tests and
 * the benches: samples picked by exact metric name and a subset of their
 * labels, so a caller states what it wants instead of a regex (which a label
 * order, an extra label or a `_bucket` suffix would break or fool). The
 * services themselves never read metrics back.
 */

export interface MetricSample {
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

/** GET http://127.0.0.1:<metricsPort>/metrics; fails unless the endpoint answers 200. */
export async function scrapeMetrics(service: { readonly metricsPort: number }): Promise<string> {
  const response = await fetch(`http://127.0.0.1:${service.metricsPort}/metrics`);
  if (response.status !== 200) throw new Error(`/metrics answered ${response.status}`);
  return response.text();
}

const SAMPLE_LINE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?$/;
const LABEL_PAIR = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

function unescapeLabel(value: string): string {
  return value.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
}

function parseValue(raw: string): number {
  if (raw === '+Inf') return Infinity;
  if (raw === '-Inf') return -Infinity;
  return Number(raw);
}

/** Every sample of `name` (exactly: not its `_bucket`/`_sum`/`_count`) whose labels include all of `labels`. */
export function metricSamples(text: string, name: string, labels: Readonly<Record<string, string>> = {}): MetricSample[] {
  const samples: MetricSample[] = [];
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const match = SAMPLE_LINE.exec(line);
    if (!match || match[1] !== name) continue;
    const own: Record<string, string> = {};
    for (const [, key, value] of (match[2] ?? '').matchAll(LABEL_PAIR)) own[key!] = unescapeLabel(value!);
    if (Object.entries(labels).every(([k, v]) => own[k] === v)) samples.push({ labels: own, value: parseValue(match[3]!) });
  }
  return samples;
}

/**
 * The value of the one sample of `name` whose labels include all of `labels`;
 * undefined when there is none. Labels that match several samples are a
 * mistake in the test, and throw.
 */
export function metricValue(text: string, name: string, labels: Readonly<Record<string, string>> = {}): number | undefined {
  const samples = metricSamples(text, name, labels);
  if (samples.length > 1) throw new Error(`${name} ${JSON.stringify(labels)} matches ${samples.length} samples: name more labels`);
  return samples[0]?.value;
}
