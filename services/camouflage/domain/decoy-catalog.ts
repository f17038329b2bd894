/**
 * The decoy catalog: what the engine can answer with, and to which tiers.
 *
 * Built-in decoys cover every tier (asserted at module load). Operators add custom decoys with
 * RegisterDecoy; they live in a Redis hash (store/decoy-store.ts, behind the DecoyStore port
 * below) so every replica sees them, and a version counter
 * bumped on each registration lets replicas notice and reload their in-memory copy: the version
 * comes back with every bandit state refresh (at least once a second per busy tier, inside the
 * Assess reply), so there is no polling and no extra round trip. ListDecoys answers from the same
 * copy after reading the version (one HGET), so it never misses another replica's registration.
 *
 * The tier rule lives here as the first of its two enforcement points: {@link validateDecoyInput}
 * refuses a decoy that carries a honeytoken or credentials and names the benign tier, and
 * {@link DecoyCatalog.eligible} only lists decoys `mayServe` accepts. The engine checks again with
 * `assertMayServe` before anything is rendered.
 *
 * Validation names each bad field as RegisterDecoy's request does (`decoy.id`, `decoy.name`,
 * `decoy.content_template`, `decoy.headers.<name>`), so the error reaches the client as thrown.
 */
import { invariant } from '../../../platform/invariant';
import { optionalIdempotencyKey } from '../../../platform/idempotency-key';
import { decodePageToken, encodePageToken } from '../../../platform/page-token';
import { pageSize as pageSizeFor } from '../../../platform/page-size';
import { ServiceError } from '../../../platform/service-error';
import { decoyAlreadyExists } from '../errors';
import { TIERS, Tier, isTier, mayServe } from './tiers';

export const DECOY_KINDS = Object.freeze([
  'server_banner',
  'not_found',
  'fake_api',
  'admin_login',
  'config_file',
  'credentials_file',
  'git_config',
  'phpinfo',
  'directory_listing',
  'tarpit',
  'honeypot',
] as const);
export type DecoyKind = (typeof DECOY_KINDS)[number];

/** `shx`: `shx_` + 32 hex (128 bits). `aws`: `AKIA` + 16 base32 chars, the shape of an AWS access key id. */
export type HoneytokenShape = 'shx' | 'aws';

export interface Decoy {
  /** Lower-case kebab id, unique across built-in and custom decoys. */
  readonly id: string;
  readonly kind: DecoyKind;
  readonly description: string;
  /** The tiers this decoy may be served to (further filtered by the tier rule). */
  readonly tiers: readonly Tier[];
  /** True when rendering mints a honeytoken into `{{honeytoken}}`. */
  readonly carriesHoneytoken: boolean;
  /** True when the content looks like credentials (passwords, keys), honeytoken or not. */
  readonly carriesCredentials: boolean;
  readonly honeytokenShape: HoneytokenShape | undefined;
  /** HTTP status, content type and headers the guardian should answer with. */
  readonly status: number;
  readonly contentType: string;
  readonly headers: Readonly<Record<string, string>>;
  /** Body template; `{{honeytoken}}` and `{{honeytoken_secret}}` are filled per decision. */
  readonly template: string;
  readonly builtIn: boolean;
  /** Registration time; 0 for built-ins. */
  readonly createdAtMs: number;
}

/** What RegisterDecoy accepts (defaults in brackets). */
export interface RegisterDecoyInput {
  id: string;
  kind: DecoyKind;
  /** [''] */
  description?: string;
  tiers: Tier[];
  /** [false] */
  carriesHoneytoken?: boolean;
  /** [false] */
  carriesCredentials?: boolean;
  /** ['shx' when carriesHoneytoken] */
  honeytokenShape?: HoneytokenShape;
  /** [200] */
  status?: number;
  /** ['text/html; charset=utf-8'] */
  contentType?: string;
  /** [{}] */
  headers?: Record<string, string>;
  template: string;
}

export const DECOY_ID_PATTERN = /^[a-z0-9][a-z0-9-]{2,62}$/;
export const CUSTOM_DECOYS_MAX = 256;
export const TEMPLATE_CHARS_MAX = 16_384;
/** "Lightweight" made concrete: anything served to benign traffic stays this small. */
export const BENIGN_TEMPLATE_CHARS_MAX = 2_048;
export const DECOY_HEADERS_MAX = 16;
export const DESCRIPTION_CHARS_MAX = 256;
export const PAGE_SIZE_DEFAULT = 50;
export const PAGE_SIZE_MAX = 200;
/** How long a RegisterDecoy idempotency key is remembered. */
export const DECOY_IDEMPOTENCY_TTL_SECONDS = 86_400;

/** Matches any honeytoken placeholder (used for rendering and for validation). */
const PLACEHOLDER = /\{\{\s*(honeytoken(?:_secret)?)\s*\}\}/g;
const PLACEHOLDER_ANY = /\{\{\s*honeytoken/;
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$/;
/** No CR/LF/NUL: a header value with a line break would let a decoy inject response headers. */
const HEADER_VALUE = /^[^\r\n\0]{0,512}$/;
const CONTENT_TYPE = /^[\x20-\x7e]{1,128}$/;

// ---------------------------------------------------------------------------------------------
// Built-in decoys
// ---------------------------------------------------------------------------------------------

function builtIn(d: Omit<Decoy, 'builtIn' | 'createdAtMs' | 'honeytokenShape'> & { honeytokenShape?: HoneytokenShape }): Decoy {
  return Object.freeze({ ...d, honeytokenShape: d.honeytokenShape, builtIn: true, createdAtMs: 0 });
}

const HTML = 'text/html; charset=utf-8';
const TEXT = 'text/plain; charset=utf-8';
const JSON_TYPE = 'application/json';

const DIRECTORY_ROWS = Array.from({ length: 48 }, (_, i) => {
  const name = `backup-2024-${String((i % 12) + 1).padStart(2, '0')}-${String((i % 28) + 1).padStart(2, '0')}.tar.gz`;
  return `<tr><td><a href="${name}">${name}</a></td><td>2024-${String((i % 12) + 1).padStart(2, '0')}-${String((i % 28) + 1).padStart(2, '0')} 03:1${i % 10}</td><td>${(i * 37) % 900 + 100}M</td></tr>`;
}).join('\n');

export const BUILT_IN_DECOYS: readonly Decoy[] = Object.freeze([
  builtIn({
    id: 'nginx-404',
    kind: 'not_found',
    description: 'Plain nginx 404 page',
    tiers: ['benign', 'suspicious'],
    carriesHoneytoken: false,
    carriesCredentials: false,
    status: 404,
    contentType: HTML,
    headers: { server: 'nginx/1.24.0' },
    template: '<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n<center><h1>404 Not Found</h1></center>\r\n<hr><center>nginx/1.24.0</center>\r\n</body>\r\n</html>\r\n',
  }),
  builtIn({
    id: 'apache-403',
    kind: 'server_banner',
    description: 'Apache 403 with a version banner',
    tiers: ['benign', 'suspicious', 'likely_bot'],
    carriesHoneytoken: false,
    carriesCredentials: false,
    status: 403,
    contentType: HTML,
    headers: { server: 'Apache/2.4.57 (Debian)' },
    template:
      '<!DOCTYPE HTML PUBLIC "-//IETF//DTD HTML 2.0//EN">\n<html><head>\n<title>403 Forbidden</title>\n</head><body>\n<h1>Forbidden</h1>\n<p>You don\'t have permission to access this resource.</p>\n<hr>\n<address>Apache/2.4.57 (Debian) Server at localhost Port 80</address>\n</body></html>\n',
  }),
  builtIn({
    id: 'empty-json-api',
    kind: 'fake_api',
    description: 'Empty but valid JSON API answer',
    tiers: ['benign', 'suspicious'],
    carriesHoneytoken: false,
    carriesCredentials: false,
    status: 200,
    contentType: JSON_TYPE,
    headers: { server: 'nginx' },
    template: '{"status":"ok","data":[],"page":1,"total":0}',
  }),
  builtIn({
    id: 'server-status-page',
    kind: 'server_banner',
    description: 'Fake Apache mod_status page',
    tiers: ['suspicious', 'likely_bot'],
    carriesHoneytoken: false,
    carriesCredentials: false,
    status: 200,
    contentType: HTML,
    headers: { server: 'Apache/2.4.57 (Debian)' },
    template:
      '<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 3.2 Final//EN">\n<html><head><title>Apache Status</title></head><body>\n<h1>Apache Server Status for localhost (via 10.0.3.12)</h1>\n<dl><dt>Server Version: Apache/2.4.57 (Debian) OpenSSL/3.0.11</dt>\n<dt>Server MPM: event</dt><dt>Current Time: Monday, 04-Mar-2024 10:21:07 UTC</dt>\n<dt>Server uptime:  41 days 3 hours 12 minutes</dt><dt>Total accesses: 9184412 - Total Traffic: 61.2 GB</dt>\n<dt>31 requests currently being processed, 44 idle workers</dt></dl>\n<table><tr><th>Srv</th><th>Client</th><th>VHost</th><th>Request</th></tr>\n<tr><td>0-0</td><td>10.0.3.7</td><td>intranet.local:443</td><td>GET /admin/reports/export HTTP/1.1</td></tr>\n<tr><td>1-0</td><td>10.0.3.9</td><td>intranet.local:443</td><td>POST /api/v1/billing/sync HTTP/1.1</td></tr>\n</table></body></html>\n',
  }),
  builtIn({
    id: 'admin-login-form',
    kind: 'admin_login',
    description: 'Generic admin console login form',
    tiers: ['suspicious', 'likely_bot', 'attack'],
    carriesHoneytoken: false,
    carriesCredentials: false,
    status: 200,
    contentType: HTML,
    headers: { server: 'nginx', 'set-cookie': 'PHPSESSID=6f1c2b9e4a0d7c3e; path=/; HttpOnly' },
    template:
      '<!doctype html><html><head><title>Administration - Sign in</title></head><body>\n<form method="post" action="/admin/login" autocomplete="off">\n<h2>Administration console</h2>\n<label>Username <input name="username"></label>\n<label>Password <input name="password" type="password"></label>\n<input type="hidden" name="csrf" value="a7f3c1e9b2d4">\n<button type="submit">Sign in</button>\n</form><p><a href="/admin/forgot">Forgot password?</a></p></body></html>\n',
  }),
  builtIn({
    id: 'wp-login-form',
    kind: 'admin_login',
    description: 'WordPress-style login page',
    tiers: ['suspicious', 'likely_bot', 'attack'],
    carriesHoneytoken: false,
    carriesCredentials: false,
    status: 200,
    contentType: HTML,
    headers: { server: 'Apache', 'x-powered-by': 'PHP/7.4.33' },
    template:
      '<!DOCTYPE html><html lang="en-US"><head><title>Log In &lsaquo; Intranet &#8212; WordPress</title></head>\n<body class="login wp-core-ui"><div id="login"><h1><a href="https://wordpress.org/">Powered by WordPress</a></h1>\n<form name="loginform" id="loginform" action="/wp-login.php" method="post">\n<p><label for="user_login">Username or Email Address</label><input type="text" name="log" id="user_login"></p>\n<p><label for="user_pass">Password</label><input type="password" name="pwd" id="user_pass"></p>\n<p class="submit"><input type="submit" name="wp-submit" value="Log In"><input type="hidden" name="redirect_to" value="/wp-admin/"></p>\n</form></div></body></html>\n',
  }),
  builtIn({
    id: 'fake-git-config',
    kind: 'git_config',
    description: 'Exposed .git/config with a deploy token in the remote URL',
    tiers: ['suspicious', 'likely_bot', 'attack'],
    carriesHoneytoken: true,
    carriesCredentials: true,
    honeytokenShape: 'shx',
    status: 200,
    contentType: TEXT,
    headers: { server: 'nginx/1.18.0' },
    template:
      '[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = false\n\tlogallrefupdates = true\n[remote "origin"]\n\turl = https://deploy:{{honeytoken}}@git.intranet.local/platform/billing-api.git\n\tfetch = +refs/heads/*:refs/remotes/origin/*\n[branch "main"]\n\tremote = origin\n\tmerge = refs/heads/main\n',
  }),
  builtIn({
    id: 'fake-dotenv',
    kind: 'config_file',
    description: 'Exposed .env with cloud and database credentials',
    tiers: ['likely_bot', 'attack'],
    carriesHoneytoken: true,
    carriesCredentials: true,
    honeytokenShape: 'aws',
    status: 200,
    contentType: TEXT,
    headers: { server: 'nginx/1.18.0' },
    template:
      'APP_NAME=billing-api\nAPP_ENV=production\nAPP_DEBUG=false\nAPP_URL=https://billing.intranet.local\n\nDB_CONNECTION=pgsql\nDB_HOST=10.0.3.21\nDB_PORT=5432\nDB_DATABASE=billing\nDB_USERNAME=billing_app\nDB_PASSWORD={{honeytoken_secret}}\n\nAWS_ACCESS_KEY_ID={{honeytoken}}\nAWS_SECRET_ACCESS_KEY={{honeytoken_secret}}\nAWS_DEFAULT_REGION=eu-west-1\nAWS_BUCKET=billing-invoices-prod\n',
  }),
  builtIn({
    id: 'fake-phpinfo',
    kind: 'phpinfo',
    description: 'phpinfo() page leaking environment variables',
    tiers: ['likely_bot', 'attack'],
    carriesHoneytoken: true,
    carriesCredentials: true,
    honeytokenShape: 'shx',
    status: 200,
    contentType: HTML,
    headers: { server: 'Apache/2.4.41 (Ubuntu)', 'x-powered-by': 'PHP/7.4.3' },
    template:
      '<!DOCTYPE html><html><head><title>PHP 7.4.3 - phpinfo()</title></head><body><div class="center">\n<table><tr class="h"><td><h1 class="p">PHP Version 7.4.3</h1></td></tr></table>\n<table><tr><td class="e">System </td><td class="v">Linux web-03 5.4.0-150-generic #167-Ubuntu SMP x86_64 </td></tr>\n<tr><td class="e">Server API </td><td class="v">Apache 2.0 Handler </td></tr>\n<tr><td class="e">DOCUMENT_ROOT </td><td class="v">/var/www/billing/public </td></tr></table>\n<h2>Environment</h2><table>\n<tr><td class="e">DB_HOST </td><td class="v">10.0.3.21 </td></tr>\n<tr><td class="e">BILLING_API_TOKEN </td><td class="v">{{honeytoken}} </td></tr>\n<tr><td class="e">REDIS_URL </td><td class="v">redis://10.0.3.30:6379/0 </td></tr>\n</table></div></body></html>\n',
  }),
  builtIn({
    id: 'fake-api-keys-json',
    kind: 'fake_api',
    description: 'Debug API endpoint returning a service key',
    tiers: ['likely_bot', 'attack'],
    carriesHoneytoken: true,
    carriesCredentials: true,
    honeytokenShape: 'shx',
    status: 200,
    contentType: JSON_TYPE,
    headers: { server: 'envoy' },
    template:
      '{"service":"billing-api","version":"2.14.1","debug":true,"upstreams":{"ledger":"http://10.0.3.40:8080","search":"http://10.0.3.41:9200"},"credentials":{"service_account":"svc-billing","api_key":"{{honeytoken}}"}}',
  }),
  builtIn({
    id: 'tarpit-directory-listing',
    kind: 'tarpit',
    description: 'Long directory index of backups that invites crawling',
    tiers: ['likely_bot', 'attack'],
    carriesHoneytoken: false,
    carriesCredentials: false,
    status: 200,
    contentType: HTML,
    headers: { server: 'Apache/2.4.29 (Ubuntu)' },
    template: `<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 3.2 Final//EN">\n<html><head><title>Index of /backup</title></head><body>\n<h1>Index of /backup</h1>\n<table><tr><th>Name</th><th>Last modified</th><th>Size</th></tr>\n${DIRECTORY_ROWS}\n</table><address>Apache/2.4.29 (Ubuntu) Server at localhost Port 80</address></body></html>\n`,
  }),
  builtIn({
    id: 'fake-aws-credentials',
    kind: 'credentials_file',
    description: 'Exposed ~/.aws/credentials',
    tiers: ['attack'],
    carriesHoneytoken: true,
    carriesCredentials: true,
    honeytokenShape: 'aws',
    status: 200,
    contentType: TEXT,
    headers: { server: 'nginx/1.18.0' },
    template: '[default]\naws_access_key_id = {{honeytoken}}\naws_secret_access_key = {{honeytoken_secret}}\nregion = eu-west-1\n',
  }),
  builtIn({
    id: 'honeypot-admin-dashboard',
    kind: 'honeypot',
    description: 'Logged-in admin dashboard with an API key and links to more fake pages',
    tiers: ['attack'],
    carriesHoneytoken: true,
    carriesCredentials: true,
    honeytokenShape: 'shx',
    status: 200,
    contentType: HTML,
    headers: { server: 'nginx', 'set-cookie': 'admin_session=9c41e0b7d25a; path=/admin; HttpOnly' },
    template:
      '<!doctype html><html><head><title>Dashboard - Billing Admin</title></head><body>\n<nav><a href="/admin/users">Users</a> | <a href="/admin/invoices">Invoices</a> | <a href="/admin/exports">Exports</a> | <a href="/admin/settings/api">API</a> | <a href="/admin/backups">Backups</a></nav>\n<h1>Welcome back, ops-admin</h1>\n<section><h2>Integration key</h2><p>Use this key for the nightly export job:</p><pre>{{honeytoken}}</pre></section>\n<section><h2>Recent exports</h2><ul><li><a href="/admin/exports/2024-03-03.csv">2024-03-03.csv</a></li><li><a href="/admin/exports/2024-03-02.csv">2024-03-02.csv</a></li></ul></section>\n</body></html>\n',
  }),
]);

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

function bool(value: unknown, field: string): boolean {
  if (value === undefined) return false;
  if (typeof value !== 'boolean') throw ServiceError.invalidArgument(field, 'must be a boolean');
  return value;
}

/**
 * Checks a RegisterDecoy input and returns the decoy it defines (without `createdAtMs`).
 * Throws INVALID_ARGUMENT naming the field; the tier rule is checked here (first place).
 */
export function validateDecoyInput(raw: unknown): Omit<Decoy, 'createdAtMs'> {
  if (typeof raw !== 'object' || raw === null) throw ServiceError.invalidArgument('decoy', 'must be an object');
  const input = raw as Record<string, unknown>;
  const id = input.id;
  if (typeof id !== 'string' || !DECOY_ID_PATTERN.test(id)) {
    throw ServiceError.invalidArgument('decoy.id', 'must be 3-63 characters of a-z, 0-9 and "-", starting with a letter or digit');
  }
  const kind = input.kind;
  if (typeof kind !== 'string' || !(DECOY_KINDS as readonly string[]).includes(kind)) {
    throw ServiceError.invalidArgument('decoy.kind', `must be one of ${DECOY_KINDS.join(', ')}`);
  }
  const description = input.description ?? '';
  if (typeof description !== 'string' || description.length > DESCRIPTION_CHARS_MAX) {
    throw ServiceError.invalidArgument('decoy.name', `must be a string of at most ${DESCRIPTION_CHARS_MAX} characters`);
  }
  const tiers = input.tiers;
  if (!Array.isArray(tiers) || tiers.length === 0 || tiers.length > TIERS.length) {
    throw ServiceError.invalidArgument('decoy.tiers', 'must list 1-4 tiers');
  }
  for (const tier of tiers) {
    if (!isTier(tier)) throw ServiceError.invalidArgument('decoy.tiers', `has an unknown tier ${JSON.stringify(tier)}; use ${TIERS.join(', ')}`);
  }
  if (new Set(tiers).size !== tiers.length) throw ServiceError.invalidArgument('decoy.tiers', 'must not repeat');
  const orderedTiers = TIERS.filter((tier) => (tiers as string[]).includes(tier));
  const carriesHoneytoken = bool(input.carriesHoneytoken, 'decoy.carries_honeytoken');
  const carriesCredentials = bool(input.carriesCredentials, 'decoy.carries_credentials') || kind === 'credentials_file';
  let honeytokenShape: HoneytokenShape | undefined;
  if (carriesHoneytoken) {
    const shape = input.honeytokenShape ?? 'shx';
    if (shape !== 'shx' && shape !== 'aws') throw ServiceError.invalidArgument('decoy.honeytoken_shape', 'must be "shx" or "aws"');
    honeytokenShape = shape;
  } else if (input.honeytokenShape !== undefined && input.honeytokenShape !== '') {
    throw ServiceError.invalidArgument('decoy.honeytoken_shape', 'needs decoy.carries_honeytoken');
  }
  if ((carriesHoneytoken || carriesCredentials) && orderedTiers.includes('benign')) {
    throw ServiceError.invalidArgument('decoy.tiers', 'a decoy carrying a honeytoken or credentials may not serve the benign tier');
  }
  const template = input.template;
  if (typeof template !== 'string' || template.length === 0 || template.length > TEMPLATE_CHARS_MAX) {
    throw ServiceError.invalidArgument('decoy.content_template', `must be 1-${TEMPLATE_CHARS_MAX} characters`);
  }
  const hasPlaceholder = PLACEHOLDER_ANY.test(template);
  if (carriesHoneytoken && !/\{\{\s*honeytoken\s*\}\}/.test(template)) {
    throw ServiceError.invalidArgument('decoy.content_template', 'must contain {{honeytoken}} (the decoy carries a honeytoken)');
  }
  if (!carriesHoneytoken && hasPlaceholder) {
    throw ServiceError.invalidArgument('decoy.content_template', 'uses {{honeytoken}} but decoy.carries_honeytoken is false');
  }
  if (orderedTiers.includes('benign') && template.length > BENIGN_TEMPLATE_CHARS_MAX) {
    throw ServiceError.invalidArgument('decoy.content_template', `must be at most ${BENIGN_TEMPLATE_CHARS_MAX} characters for a decoy serving the benign tier (lightweight)`);
  }
  const status = input.status ?? 200;
  if (typeof status !== 'number' || !Number.isInteger(status) || status < 100 || status > 599) {
    throw ServiceError.invalidArgument('decoy.status', 'must be an HTTP status code 100-599');
  }
  const contentType = input.contentType ?? HTML;
  if (typeof contentType !== 'string' || !CONTENT_TYPE.test(contentType)) {
    throw ServiceError.invalidArgument('decoy.content_type', 'must be 1-128 printable ASCII characters');
  }
  const rawHeaders = input.headers ?? {};
  if (typeof rawHeaders !== 'object' || rawHeaders === null || Array.isArray(rawHeaders)) {
    throw ServiceError.invalidArgument('decoy.headers', 'must be a map of strings');
  }
  const headerNames = Object.keys(rawHeaders);
  if (headerNames.length > DECOY_HEADERS_MAX) throw ServiceError.invalidArgument('decoy.headers', `must hold at most ${DECOY_HEADERS_MAX} headers`);
  const headers: Record<string, string> = {};
  for (const name of headerNames) {
    const value = (rawHeaders as Record<string, unknown>)[name];
    if (!HEADER_NAME.test(name)) throw ServiceError.invalidArgument('decoy.headers', `has a header name ${JSON.stringify(name.slice(0, 64))} that is not an HTTP token`);
    if (typeof value !== 'string' || !HEADER_VALUE.test(value)) {
      throw ServiceError.invalidArgument(`decoy.headers.${name}`, 'must be at most 512 characters without CR, LF or NUL');
    }
    headers[name.toLowerCase()] = value;
  }
  return Object.freeze({
    id,
    kind: kind as DecoyKind,
    description,
    tiers: Object.freeze(orderedTiers),
    carriesHoneytoken,
    carriesCredentials,
    honeytokenShape,
    status,
    contentType,
    headers: Object.freeze(headers),
    template,
    builtIn: false,
  });
}

// Built-ins obey the same rules as custom decoys, and every tier has at least two choices.
{
  const ids = new Set<string>();
  for (const decoy of BUILT_IN_DECOYS) {
    validateDecoyInput(decoy);
    invariant(!ids.has(decoy.id), `built-in decoy ids are unique (${decoy.id})`);
    ids.add(decoy.id);
  }
  for (const tier of TIERS) {
    invariant(BUILT_IN_DECOYS.filter((decoy) => mayServe(tier, decoy)).length >= 2, `tier ${tier} has at least two built-in decoys`);
  }
}

// ---------------------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------------------

export interface HoneytokenMaterial {
  /** Fills `{{honeytoken}}`: the token the engine watches for. */
  readonly token: string;
  /** Fills `{{honeytoken_secret}}`: decoration (a paired secret), not watched. */
  readonly secret: string;
}

/** Renders a decoy's body. A honeytoken decoy cannot be rendered without material. */
export function renderDecoy(decoy: Decoy, material: HoneytokenMaterial | undefined): string {
  if (!decoy.carriesHoneytoken) return decoy.template;
  invariant(material !== undefined, `honeytoken material for ${decoy.id}`);
  return decoy.template.replace(PLACEHOLDER, (_match, name: string) => (name === 'honeytoken' ? material.token : material.secret));
}

// ---------------------------------------------------------------------------------------------
// Where custom decoys persist (the port; store/decoy-store.ts is the Redis implementation)
// ---------------------------------------------------------------------------------------------

export interface RegisterResult {
  readonly decoy: Decoy;
  /** True when an idempotent retry returned the earlier registration. */
  readonly replayed: boolean;
  readonly catalogVersion: number;
}

/** Where custom decoys live. One implementation today (Redis); the interface keeps the catalog testable and swappable. */
export interface DecoyStore {
  /** All custom decoys (bounded by {@link CUSTOM_DECOYS_MAX}) and the version they are at, in one round trip. */
  load(): Promise<{ readonly version: number; readonly custom: Decoy[] }>;
  /** Adds a custom decoy; DECOY_ALREADY_EXISTS / CATALOG_FULL / IDEMPOTENCY_KEY_REUSED on conflict. */
  register(decoy: Decoy, idempotencyKey: string | undefined): Promise<RegisterResult>;
  /** Monotonic counter bumped by every registration. */
  version(): Promise<number>;
}

// ---------------------------------------------------------------------------------------------
// Catalog (in-memory view used on the hot path)
// ---------------------------------------------------------------------------------------------

export interface ListDecoysRequest {
  /** 0 or omitted → 50; above 200 → 200 (AIP-158 coercion); negative → INVALID_ARGUMENT. */
  pageSize?: number;
  /** Opaque token from a previous page's `nextPageToken`; '' or omitted for the first page. */
  pageToken?: string;
  /** Only decoys listing this tier (filtered before paging, so a page is never over-full). */
  tier?: Tier;
}

export interface DecoyPage {
  readonly decoys: readonly Decoy[];
  /** '' on the last page. */
  readonly nextPageToken: string;
}

/**
 * A ListDecoys cursor is the id of the last decoy served ([id]); a token is bound to the tier
 * filter it was made with (platform/page-token.ts), so a token replayed with another `tier` is
 * refused rather than answering a page of another list.
 */
function parseCursor(cursor: readonly string[]): string | undefined {
  const [afterId] = cursor;
  return cursor.length === 1 && afterId !== undefined && DECOY_ID_PATTERN.test(afterId) ? afterId : undefined;
}

function pageFilter(tier: Tier | undefined): { readonly tier: string } {
  return { tier: tier ?? '' };
}

/** The page limits of ListDecoys (the mesh's rule, platform/page-size.ts, with a smaller maximum). */
const DECOY_PAGE_LIMITS = { defaultSize: PAGE_SIZE_DEFAULT, maxSize: PAGE_SIZE_MAX };

export class DecoyCatalog {
  private byId = new Map<string, Decoy>();
  /** Every decoy (built-in and custom) ordered by id: what ListDecoys pages through. */
  private ordered: readonly Decoy[] = [];
  private byTier = new Map<Tier, readonly Decoy[]>();
  private idsByTier = new Map<Tier, readonly string[]>();
  private loadedVersion = -1;
  private refreshing: Promise<void> | undefined;

  constructor(private readonly store: DecoyStore) {
    this.rebuild([]);
  }

  /** Loads custom decoys from the store (one round trip). Concurrent callers share one load. */
  async refresh(): Promise<void> {
    if (this.refreshing !== undefined) return this.refreshing;
    this.refreshing = (async () => {
      try {
        const { version, custom } = await this.store.load();
        this.rebuild(custom);
        this.loadedVersion = version;
      } finally {
        this.refreshing = undefined;
      }
    })();
    return this.refreshing;
  }

  /** Loads once; later calls are free. */
  async ensureLoaded(): Promise<void> {
    if (this.loadedVersion < 0) await this.refresh();
  }

  /**
   * Brings this replica's copy up to the catalog in Redis: one HGET of the version, and a reload
   * only when it differs. Any other version (lower too: a Redis restored from a backup) means this
   * copy is not Redis'. Twice at most: a load already under way may have started before that
   * version was written.
   */
  async sync(): Promise<void> {
    const version = await this.store.version();
    for (let loads = 0; loads < 2 && version !== this.loadedVersion; loads += 1) await this.refresh();
  }

  /**
   * Called with the version seen in Redis (from the Assess commit reply); starts a background
   * reload when another replica registered something. Errors are left for the next attempt.
   */
  noteVersion(version: number): void {
    if (version > this.loadedVersion && this.refreshing === undefined) {
      this.refresh().catch(() => undefined);
    }
  }

  private rebuild(custom: readonly Decoy[]): void {
    const byId = new Map<string, Decoy>();
    for (const decoy of BUILT_IN_DECOYS) byId.set(decoy.id, decoy);
    for (const decoy of custom.slice(0, CUSTOM_DECOYS_MAX)) if (!byId.has(decoy.id)) byId.set(decoy.id, decoy);
    const byTier = new Map<Tier, readonly Decoy[]>();
    for (const tier of TIERS) {
      // Sorted by id so every replica sees the same arm order.
      const eligible = [...byId.values()].filter((decoy) => mayServe(tier, decoy)).sort((a, b) => (a.id < b.id ? -1 : 1));
      invariant(eligible.length > 0, `tier ${tier} has an eligible decoy`);
      byTier.set(tier, Object.freeze(eligible));
    }
    this.byId = byId;
    this.ordered = Object.freeze([...byId.values()].sort((a, b) => (a.id < b.id ? -1 : 1)));
    this.byTier = byTier;
    this.idsByTier = new Map([...byTier].map(([tier, decoys]) => [tier, Object.freeze(decoys.map((decoy) => decoy.id))]));
  }

  /** Decoys that may serve `tier`, in a stable order (the bandit's arms). */
  eligible(tier: Tier): readonly Decoy[] {
    const list = this.byTier.get(tier);
    invariant(list !== undefined, `eligible list for ${tier}`);
    return list;
  }

  /** The ids of {@link eligible}, same order (the arm list handed to the bandit). */
  eligibleIds(tier: Tier): readonly string[] {
    const ids = this.idsByTier.get(tier);
    invariant(ids !== undefined, `eligible ids for ${tier}`);
    return ids;
  }

  /** Validates and registers a custom decoy, then reloads this replica's view. */
  async register(raw: unknown, idempotencyKey?: string): Promise<RegisterResult> {
    const key = optionalIdempotencyKey(idempotencyKey ?? '');
    const decoy = validateDecoyInput(raw);
    if (BUILT_IN_DECOYS.some((builtInDecoy) => builtInDecoy.id === decoy.id)) {
      throw decoyAlreadyExists(decoy.id, `decoy ${decoy.id} is built in`);
    }
    const result = await this.store.register({ ...decoy, createdAtMs: 0 }, key);
    if (!result.replayed && this.refreshing === undefined && result.catalogVersion === this.loadedVersion + 1) {
      // Nothing else was registered since this replica loaded: add the decoy instead of re-reading them all.
      this.rebuild([...this.byId.values()].filter((known) => !known.builtIn).concat(result.decoy));
      this.loadedVersion = result.catalogVersion;
    } else {
      // Twice at most: a load already under way may have started before this registration.
      for (let loads = 0; loads < 2 && result.catalogVersion > this.loadedVersion; loads += 1) await this.refresh();
    }
    return result;
  }

  /**
   * One page of all decoys (built-in and custom; those listing `tier` if given) ordered by id, from
   * this replica's catalog. One small read (the catalog version) keeps it exact across replicas: the
   * catalog reloads only when another replica registered something since it loaded.
   */
  async list(request: ListDecoysRequest = {}): Promise<DecoyPage> {
    const pageSize = pageSizeFor(request.pageSize ?? 0, 'page_size', DECOY_PAGE_LIMITS);
    const token = request.pageToken ?? '';
    if (typeof token !== 'string') throw ServiceError.invalidArgument('page_token', 'must be a string');
    const tier = request.tier;
    if (tier !== undefined && !isTier(tier)) throw ServiceError.invalidArgument('tier', `must be one of ${TIERS.join(', ')}`);
    const after = decodePageToken(token, pageFilter(tier), parseCursor);
    await this.sync();
    const ordered = tier === undefined ? this.ordered : this.ordered.filter((decoy) => decoy.tiers.includes(tier));
    const start = after === undefined ? 0 : ordered.findIndex((decoy) => decoy.id > after);
    const from = start === -1 ? ordered.length : start;
    const page = ordered.slice(from, from + pageSize);
    const more = from + pageSize < ordered.length;
    const last = page[page.length - 1];
    return { decoys: page, nextPageToken: encodePageToken(more && last !== undefined ? [last.id] : undefined, pageFilter(tier)) };
  }
}
