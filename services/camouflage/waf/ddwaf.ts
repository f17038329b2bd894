/**
 * libddwaf (Datadog's WAF engine, through npm `@datadog/native-appsec`: prebuilt binaries, no
 * install script) with Datadog's recommended ruleset vendored in `ruleset/` (Apache-2.0 OR
 * BSD-3-Clause, see ruleset/LICENSE; AppSec rules 1.18.0 from dd-trace 6.21.0, built on the OWASP
 * CRS and Datadog's own rules). Loaded once at start; each request runs in a fresh context,
 * synchronously, within `timeoutMicros`.
 *
 * The request is given to the WAF the way a web framework would hand it to the application, with
 * the same normalisation as the project's own detectors (threat-signals.ts `normaliseForScan`:
 * percent incl. double, `%u`, overlong UTF-8, HTML entities, NFKC) on every key and value:
 * `server.request.uri.raw`, `.method`, `.query` (name → values), `.headers.no_cookies`,
 * `.cookies` (name → values), `.body` (parsed: request-body.ts), `.body.filenames`,
 * `http.client_ip`. Each match comes back as a {@link WafMatch} naming the address and key path
 * (`query.q`, `header:user-agent`, `cookie.theme`, `body.user.name`).
 */
import { DDWAF } from '@datadog/native-appsec';
import { normaliseForScan, type PreparedRequest } from '../domain/threat-signals';
import type { WafMatch, WafOutcome } from '../domain/waf-signals';
import recommended from './ruleset/recommended.json';

export const WAF_TIMEOUT_MICROS_DEFAULT = 5_000;
export const RULESET_VERSION = String((recommended as { metadata?: { rules_version?: string } }).metadata?.rules_version ?? 'unknown');

interface DdwafEvent {
  readonly rule?: { readonly id?: string; readonly name?: string; readonly tags?: Record<string, string> };
  readonly rule_matches?: readonly {
    readonly parameters?: readonly { readonly address?: string; readonly key_path?: readonly (string | number)[]; readonly value?: string; readonly highlight?: readonly string[] }[];
  }[];
}

const ADDRESS_LOCATION: Readonly<Record<string, string>> = Object.freeze({
  'server.request.uri.raw': 'path',
  'server.request.query': 'query',
  'server.request.headers.no_cookies': 'header',
  'server.request.cookies': 'cookie',
  'server.request.body': 'body',
  'server.request.body.filenames': 'body[filename]',
  'server.request.method': 'method',
  'http.client_ip': 'client_ip',
});

function locationOf(address: string, keyPath: readonly (string | number)[]): string {
  const base = ADDRESS_LOCATION[address] ?? address;
  // Query and cookie values are passed as name → [values]: the trailing index says nothing a reader needs.
  const keys = (base === 'query' || base === 'cookie') && keyPath.length > 1 ? keyPath.slice(0, -1) : keyPath;
  if (keys.length === 0) return base;
  if (base === 'header') return `header:${String(keys[0])}`;
  return `${base}.${keys.map(String).join('.')}`;
}

function addToMulti(map: Record<string, string[]>, name: string, value: string): void {
  const list = map[name];
  if (list === undefined) map[name] = [value];
  else list.push(value);
}

function normaliseDeep(value: unknown, depth: number): unknown {
  if (typeof value === 'string') return normaliseForScan(value, false);
  if (depth > 32 || value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return value.map((item) => normaliseDeep(item, depth + 1));
  const out: Record<string, unknown> = {};
  for (const [key, item] of Object.entries(value as Record<string, unknown>)) out[normaliseForScan(key, false)] = normaliseDeep(item, depth + 1);
  return out;
}

/** The WAF's addresses for one request. */
export function wafAddresses(req: PreparedRequest): Record<string, unknown> {
  const input = req.input;
  const rawQuery = input.query.startsWith('?') ? input.query.slice(1) : input.query;
  const query: Record<string, string[]> = {};
  if (rawQuery !== '') {
    for (const pair of rawQuery.split('&')) {
      if (pair === '') continue;
      const eq = pair.indexOf('=');
      addToMulti(query, normaliseForScan(eq === -1 ? pair : pair.slice(0, eq), true), eq === -1 ? '' : normaliseForScan(pair.slice(eq + 1), true));
    }
  }
  const headers: Record<string, string> = {};
  const cookies: Record<string, string[]> = {};
  for (const [name, value] of req.headers) {
    if (name === 'cookie') {
      for (const crumb of value.split(/;\s*/)) {
        if (crumb === '') continue;
        const eq = crumb.indexOf('=');
        addToMulti(cookies, normaliseForScan(eq === -1 ? crumb : crumb.slice(0, eq), false), eq === -1 ? '' : normaliseForScan(crumb.slice(eq + 1), false));
      }
    } else {
      headers[name] = normaliseForScan(value, name === 'referer');
    }
  }
  if (req.userAgent !== '') headers['user-agent'] = normaliseForScan(req.userAgent, false);
  const addresses: Record<string, unknown> = {
    'server.request.uri.raw': rawQuery === '' ? input.path : `${input.path}?${rawQuery}`,
    'server.request.method': req.method,
    'server.request.query': query,
    'server.request.headers.no_cookies': headers,
    'server.request.cookies': cookies,
    'http.client_ip': input.clientIp,
  };
  const body = req.body;
  if (body !== undefined && body.structured !== undefined) {
    addresses['server.request.body'] = normaliseDeep(body.structured, 0);
    if (body.kind === 'multipart') {
      const filenames = body.fields.filter((f) => f.location.endsWith('[filename]')).map((f) => normaliseForScan(f.text, false));
      if (filenames.length > 0) addresses['server.request.body.filenames'] = filenames;
    }
  }
  return addresses;
}

export interface DdwafRunnerOptions {
  /** Budget of one run, in microseconds (default 5 000). */
  readonly timeoutMicros?: number;
}

/** libddwaf with the vendored ruleset; `run` is what ThreatScorer's `waf` option takes. */
export class DdwafRunner {
  readonly version: string;
  readonly rulesetVersion = RULESET_VERSION;
  readonly rulesLoaded: number;
  private readonly waf: DDWAF;
  private readonly timeoutMicros: number;

  constructor(options: DdwafRunnerOptions = {}) {
    this.timeoutMicros = options.timeoutMicros ?? WAF_TIMEOUT_MICROS_DEFAULT;
    this.waf = new DDWAF(recommended, 'shieldx/camouflage/recommended');
    this.version = DDWAF.version();
    const rules = this.waf.diagnostics.rules;
    this.rulesLoaded = rules !== undefined && 'loaded' in rules ? rules.loaded.length : 0;
    if (this.rulesLoaded === 0) throw new Error('libddwaf loaded no rule from the vendored ruleset');
    // Warm up: the first run compiles lazily and would time out on a real request.
    const context = this.waf.createContext();
    try {
      context.run({ ephemeral: { 'server.request.uri.raw': '/', 'server.request.query': { q: ['warm up'] } } }, 1_000_000);
    } finally {
      context.dispose();
    }
  }

  readonly run = (req: PreparedRequest): WafOutcome => {
    const context = this.waf.createContext();
    try {
      const result = context.run({ ephemeral: wafAddresses(req) }, this.timeoutMicros);
      const matches: WafMatch[] = [];
      for (const event of (result.events ?? []) as DdwafEvent[]) {
        const tags = event.rule?.tags ?? {};
        const parameter = event.rule_matches?.[0]?.parameters?.[0];
        matches.push({
          ruleId: event.rule?.id ?? 'unknown',
          ruleName: event.rule?.name ?? '',
          type: tags.type ?? 'unknown',
          category: tags.category ?? '',
          highConfidence: tags.confidence === '1',
          location: locationOf(parameter?.address ?? '', parameter?.key_path ?? []),
          matched: parameter?.highlight?.[0] ?? parameter?.value ?? '',
        });
      }
      const outcome: WafOutcome = { matches, timedOut: result.timeout, durationMicros: Math.round((result.duration ?? 0) / 1_000) };
      return result.errorCode !== undefined && result.errorCode < 0 ? { ...outcome, error: `libddwaf error ${result.errorCode}` } : outcome;
    } catch (thrown) {
      return { matches: [], timedOut: false, durationMicros: 0, error: thrown instanceof Error ? thrown.message : String(thrown) };
    } finally {
      context.dispose();
    }
  };

  dispose(): void {
    this.waf.dispose();
  }
}
