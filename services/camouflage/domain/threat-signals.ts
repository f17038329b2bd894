/**
 * Threat signals: the individual, explainable observations that add up to a threat level.
 *
 * Scoring is additive like OWASP CRS anomaly scoring: each detector that fires contributes a
 * signal `{name, points, detail}`; the level is the clamped sum (see threat-scoring.ts). Points
 * follow CRS severities loosely: an unambiguous attack payload (log4shell, shellshock) is worth
 * almost the whole scale on its own, a classic injection or a scanner user agent pushes a request
 * into the "likely bot" tier, a probe of a secret file into "suspicious", and weak hints (scripted
 * client, missing Accept-Language) only matter in combination.
 *
 * Normalisation before matching ({@link normaliseForScan}), in the path, the query (parameter
 * names and values alike), every header value (cookie names and values, the Referer's query) and
 * the body: percent-decoding at most twice (double encoding), `%uXXXX`, overlong UTF-8
 * (`%c0%af` → `/`), HTML character references (`&#58;`, `&#x3c;`, `&lt;`), Unicode NFKC (full-width
 * `＜script＞` → `<script>`); the patterns are case-insensitive.
 *
 * Cost: every pattern is compiled once at module load. Every field is scanned up to its own
 * validated limit ({@link PATH_CHARS_MAX}, {@link QUERY_CHARS_MAX}, {@link HEADER_VALUE_CHARS_MAX},
 * {@link BODY_EXCERPT_CHARS_MAX}; at most ~110 000 characters per request in all), so filler in
 * one field cannot push a payload in another out of the scan; a field longer than
 * {@link SCAN_PART_CHARS_MAX} (what ordinary traffic never sends) is itself the signal
 * `oversized-input`. The detectors run on one joined string and only look for the location
 * (path/query/header) of a hit once something fired, which is the rare case.
 *
 * Known gap: no base64 unwrapping.
 */
import { PROFILE_FIXED_POINT } from './session-profile';
import type { ProfileConfig, SessionSnapshot } from './session-profile';
import { parseBody, type ParsedBody } from './request-body';

/** What the guardian sends for each request it wants assessed. */
export interface AssessInput {
  /** IPv4 or IPv6 address of the client as the guardian sees it. */
  clientIp: string;
  /** HTTP method, e.g. `GET`. */
  method: string;
  /** Request target path as received (percent-encoded), e.g. `/wp-login.php`. */
  path: string;
  /** Raw query string without or with the leading `?`. */
  query: string;
  /**
   * Request headers. Names are case-insensitive: names differing only in case are one field, see
   * {@link prepareRequest} for how their values are combined.
   */
  headers: Record<string, string>;
  /** User-Agent; when empty the `user-agent` header is used. */
  userAgent: string;
  /** JA3 hash / JA3 string / JA4 fingerprint of the client's TLS hello, when terminated by the guardian. */
  tlsFingerprint?: string;
  /** The session (cookie) or client (IP, API key hash) whose behaviour is profiled. */
  sessionKey: string;
  /** When the guardian received the request, Unix epoch milliseconds. Drives all decay. */
  timestampMs: number;
  /**
   * HTTP status of this session's previous response, if the guardian knows it (100-599). Assess
   * has no other way to learn what the application answered, and the 404 / auth-failure ratios
   * need it; a guardian that cannot report it simply omits it and those two signals stay silent.
   */
  previousStatus?: number;
  /** Optional first bytes of the request body (form posts, JSON), scanned for payloads and honeytokens. */
  bodyExcerpt?: string;
  /** The body's Content-Type (how {@link bodyExcerpt} is parsed: request-body.ts); raw text when absent. */
  bodyContentType?: string;
  /** The body's full length as received; larger than the excerpt means the rest was not sent (`body-overflow`). */
  bodyLength?: number;
}

export interface ThreatSignal {
  /** Stable kebab-case identifier, e.g. `scanner-user-agent`. */
  readonly name: string;
  /** Points added to the threat level (positive integers). */
  readonly points: number;
  /** Human explanation: what matched and where. Never contains a token or credential. */
  readonly detail: string;
}

// ---------------------------------------------------------------------------------------------
// Input bounds (enforced by validation in threat-scoring.ts)
// ---------------------------------------------------------------------------------------------

export const PATH_CHARS_MAX = 8_192;
export const QUERY_CHARS_MAX = 16_384;
export const HEADER_COUNT_MAX = 128;
export const HEADER_NAME_CHARS_MAX = 256;
export const HEADER_VALUE_CHARS_MAX = 16_384;
export const HEADERS_TOTAL_CHARS_MAX = 65_536;
export const USER_AGENT_CHARS_MAX = 4_096;
/** The body scanned: a guardian's capture beyond it is cut here (and raises `body-overflow`), never refused. */
export const BODY_BYTES_MAX = 65_536;
export const BODY_EXCERPT_CHARS_MAX = BODY_BYTES_MAX;
export const BODY_CONTENT_TYPE_CHARS_MAX = 1_024;
export const SESSION_KEY_CHARS_MAX = 256;
export const TLS_FINGERPRINT_CHARS_MAX = 1_024;
/**
 * A field (path, query parameter, header value, body) longer than this raises `oversized-input`;
 * it is scanned in full all the same (up to its validated limit), so filler cannot hide a payload.
 */
export const SCAN_PART_CHARS_MAX = 4_096;
/** Longest HTTP method token accepted (RFC 9110 §9.1 allows any token). */
export const METHOD_CHARS_MAX = 32;

/** Points per signal, in one table so the scale can be reviewed and tuned in one place. */
export const SIGNAL_POINTS = Object.freeze({
  scannerUserAgent: 6,
  headlessBrowser: 2,
  scriptedClient: 1,
  emptyUserAgent: 2,
  sensitiveFileProbe: 5,
  backupFileProbe: 4,
  adminSurfaceProbe: 3,
  cmsPath: 1,
  sqlInjection: 9,
  sqlKeywordHint: 3,
  nosqlInjection: 5,
  xss: 9,
  scriptCallHint: 3,
  pathTraversal: 6,
  commandInjection: 6,
  shellshock: 9,
  log4shell: 9,
  templateInjection: 5,
  ssrfProbe: 5,
  crlfInjection: 5,
  browserMissingAccept: 1,
  browserMissingAcceptLanguage: 1,
  hostIsIpLiteral: 1,
  missingHost: 1,
  lengthHeaderConflict: 4,
  transferEncodingObfuscated: 3,
  clientHintsMismatch: 2,
  forwardedLoopback: 2,
  urlOverrideHeader: 2,
  unusualMethod: 2,
  nonOriginFormTarget: 2,
  oversizedInput: 1,
  bodyOverflow: 1,
  xmlExternalEntity: 6,
  knownBadTlsFingerprint: 6,
  honeytokenReplayed: 10,
});

// ---------------------------------------------------------------------------------------------
// Patterns (compiled once)
// ---------------------------------------------------------------------------------------------

/** Offensive tools that announce themselves in the User-Agent (default configurations). */
const SCANNER_UA =
  /\b(?:nikto|sqlmap|nmap|masscan|zgrab|zmap|nuclei|gobuster|dirbuster|dirb|wpscan|ffuf|fuzz faster u fool|hydra|feroxbuster|wfuzz|acunetix|netsparker|nessus|openvas|w3af|arachni|skipfish|whatweb|commix|xsstrike|jorgee|zmeu|morfeus|l9explore|l9tcpid|projectdiscovery|havij|sqlninja|bbqsql|joomscan|droopescan|cmsmap|wapiti|webinspect|appscan|burpcollaborator|interact\.sh|metasploit)\b/i;
/** Libraries and CLIs: legitimate automation exists, so this is only a weak hint. */
const SCRIPTED_UA =
  /^(?:curl|wget|python-requests|python-urllib|python-httpx|aiohttp|go-http-client|java\/|okhttp|libwww-perl|lwp-|php\/|ruby|axios|node-fetch|undici|postmanruntime|httpie|scrapy|colly|apache-httpclient|winhttp|powershell|fasthttp|reqwest|rest-client)\b/i;
const HEADLESS_UA = /\b(?:headlesschrome|phantomjs|puppeteer|playwright|selenium|electron\/)\b/i;
const BROWSER_UA = /^Mozilla\/5\.0 \(.*\b(?:Chrome|Firefox|Safari|Edg|OPR)\//;
const CRAWLER_UA = /bot\b|crawl|spider|slurp|preview|lighthouse|facebookexternalhit/i;

/** Secret files and repository metadata: asking for these is never ordinary browsing. */
const SENSITIVE_FILE_PATH =
  /(?:^|\/)(?:\.env(?:[._~-][\w.~-]*)?(?=$|\/)|\.git(?:\/|$)|\.svn\/|\.hg\/|\.bzr\/|\.aws\/|\.ssh\/|\.docker\/config\.json|\.kube\/config|\.npmrc|\.pypirc|\.netrc|\.htpasswd|\.htaccess|\.ds_store|\.vscode\/sftp\.json|\.bash_history|id_(?:rsa|dsa|ecdsa|ed25519)(?:\.pub)?(?=$|\/)|wp-config\.php|config\/(?:database|secrets)\.yml|web\.config|appsettings(?:\.\w+)?\.json|server\.key|privkey\.pem|etc\/(?:passwd|shadow)|proc\/self\/environ)/i;
/** Backups and dumps left in the web root. */
const BACKUP_FILE_PATH =
  /\.(?:bak|backup|old|orig|save|swp|swo|sql|sqlite3?|dump|tmp)$|~$|(?:^|\/)(?:backup|backups|db|database|dump|site|www|htdocs|web|wwwroot|public_html)\.(?:zip|tar|tar\.gz|tgz|rar|7z|gz|bz2)$/i;
/** Admin consoles, debug endpoints, well-known exploit targets and web shells. */
const ADMIN_SURFACE_PATH =
  /(?:^|\/)(?:xmlrpc\.php|phpmyadmin|pma\/|myadmin\/|adminer(?:\.php)?(?=$|\/)|phpinfo(?:\.php)?|info\.php$|server-status|server-info|actuator(?=$|\/)|jolokia|jmx-console|manager\/html|host-manager|_profiler|telescope(?=$|\/)|debug\/(?:pprof|vars)|__debug__|elmah\.axd|trace\.axd|cgi-bin\/|hnap1|boaform|goform\/|vendor\/phpunit|eval-stdin\.php|solr\/admin|owa\/auth|remote\/login|dana-na\/|api\/jsonws|shell\.php|cmd\.php|c99\.php|r57\.php|webshell)/i;

/**
 * Ordinary WordPress / CMS surface: every WordPress site serves it to its own users and editors,
 * so alone it is only a hint (1 point, never SUSPICIOUS by itself).
 */
const CMS_PATH = /(?:^|\/)(?:wp-admin(?=$|\/)|wp-login\.php|wp-content\/(?:plugins|themes|uploads)\/|wp-includes\/|wp-json(?=$|\/)|administrator\/index\.php|user\/login(?=$|\/))/i;

const SQLI =
  /\bunion\b[\s/*(]+(?:all[\s/*]+)?(?:distinct[\s/*]+)?select\b|\bselect\b[\s\S]{1,100}?\bfrom\b[\s\S]{0,100}?\b(?:information_schema|mysql\.user|pg_catalog|sysobjects|sqlite_master)\b|['"`)]\s*(?:(?:or|and)\b|\|\||&&)\s*['"(]?\s*[\w'"]+\s*['")]?\s*(?:=|<|>|\blike\b)|\b(?:or|and)\s+\d+\s*=\s*\d+|\b(?:sleep|pg_sleep|benchmark)\s*\(\s*\d|\bwaitfor\s+delay\s*['"]|\b(?:extractvalue|updatexml|load_file)\s*\(|\binto\s+(?:out|dump)file\b|\bxp_cmdshell\b/i;
/** SQL-ish fragments that English and ordinary forms also produce (`; update the docs`, `rock 'n' -- roll`): a hint only. */
const SQL_HINT = /;\s*(?:drop|truncate|alter|insert|delete|update|exec|shutdown)\s+(?:table|database|from|into|[\w.]+\s+set\b|xp_)|'\s*(?:--|#|\/\*)/i;
const NOSQLI = /\[\s*\$(?:ne|gt|lt|gte|lte|regex|where|in|nin|exists)\s*\]|"\$(?:where|ne|gt|regex|expr)"\s*:/i;
const XSS =
  /<\s*(?:script|iframe|svg|img|body|object|embed|details|video|audio|math|input|marquee)\b[^>]*?(?:>|\bon\w+\s*=|\bsrc\s*=)|\bjavascript\s*:|\bon(?:error|load|mouseover|focus|click|toggle|animationstart|pointerover)\s*=|<\s*\/\s*script|\bsrcdoc\s*=/i;
/** Script calls without markup (`alert(1)`, `document.cookie`): forum posts about JavaScript have them too, so a hint only. */
const SCRIPT_CALL_HINT = /\bdocument\s*\.\s*(?:cookie|domain|write)\b|\b(?:alert|prompt|confirm)\s*\(/i;
const PATH_TRAVERSAL =
  /(?:^|[/\\=\n])\.\.(?:[/\\;\n]|$)|%2e%2e(?:[/\\%]|$)|\.\.%(?:2f|5c|c0%af|c1%9c)|\/etc\/(?:passwd|shadow|hosts|issue)\b|\b(?:boot|win)\.ini\b|\/proc\/self\/|c:\\+windows\\/i;
const SHELL_WORDS =
  'cat|ls|id|whoami|uname|wget|curl|nc|ncat|netcat|bash|sh|zsh|python[23]?|perl|php|ruby|ping|nslookup|sleep|echo|chmod|rm|powershell|cmd(?:\\.exe)?';
const COMMAND_INJECTION = new RegExp(
  `(?:[;&|\`]|\\$\\()\\s*(?:${SHELL_WORDS})\\b(?!\\s*=)|\\/bin\\/(?:ba)?sh\\b|\\$\\{ifs\\}|\\bcmd\\.exe\\b|\\bpowershell(?:\\.exe)?\\s+-`,
  'i',
);
const SHELLSHOCK = /\(\s*\)\s*\{\s*:?\s*;?\s*\}\s*;/;
const TEMPLATE_INJECTION =
  /\{\{\s*\d+\s*[*+]\s*\d+\s*\}\}|\$\{\s*\d+\s*[*+]\s*\d+\s*\}|#\{\s*\d+\s*[*+]\s*\d+\s*\}|<%=?\s*\d+\s*\*\s*\d+|\{\{[^}]{0,64}(?:__class__|__globals__|__subclasses__|__builtins__|config\.items|request\.application|lipsum|cycler|joiner)[^}]{0,64}\}\}|\{%\s*(?:import|include)\b|\$\{\s*T\s*\(\s*java\.lang|freemarker\.template\.utility\.execute/i;
const SSRF_PROBE = /169\.254\.169\.254|metadata\.google\.internal|\b(?:gopher|dict|file):\/\//i;
const CRLF = /[\r\n]/;
const JNDI = /\$\{\s*jndi\s*:|\bjndi\s*:\s*(?:ldaps?|rmi|dns|iiop|corba|nds|nis|http)\b/i;
/** An innermost `${...}` lookup (no nested `${` or `}` inside). */
const LOG4J_LOOKUP = /\$\{([^${}]*)\}/g;
const PERCENT_BYTE = /%[0-9a-fA-F]{2}/;
const PERCENT_BYTE_GLOBAL = /%([0-9a-fA-F]{2})/g;
const PLUS_GLOBAL = /\+/g;
const HOST_IP_LITERAL = /^(?:\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-fA-F:.]+\])(?::\d{1,5})?$/;
const LOOPBACK_VALUE = /(?:^|[\s,])(?:127\.\d{1,3}\.\d{1,3}\.\d{1,3}|localhost|::1|0\.0\.0\.0)(?=$|[\s,:])/i;

const ORDINARY_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'OPTIONS', 'PATCH']);
const FORWARDED_HEADERS = ['x-forwarded-for', 'x-real-ip', 'x-client-ip', 'x-originating-ip', 'true-client-ip', 'forwarded'] as const;
const URL_OVERRIDE_HEADERS = ['x-original-url', 'x-rewrite-url'] as const;

interface InjectionDetector {
  readonly name: string;
  readonly points: number;
  readonly pattern: RegExp;
  readonly label: string;
  /** A hint that stays silent when this stronger detector fired on the same request. */
  readonly hintOf?: string;
}

/** Checked in this order over the joined scan text; each fires at most once per request. */
const INJECTION_DETECTORS: readonly InjectionDetector[] = Object.freeze([
  { name: 'sql-injection', points: SIGNAL_POINTS.sqlInjection, pattern: SQLI, label: 'SQL injection pattern' },
  { name: 'nosql-injection', points: SIGNAL_POINTS.nosqlInjection, pattern: NOSQLI, label: 'NoSQL operator injection' },
  { name: 'xss', points: SIGNAL_POINTS.xss, pattern: XSS, label: 'cross-site scripting pattern' },
  { name: 'sql-keyword-hint', points: SIGNAL_POINTS.sqlKeywordHint, pattern: SQL_HINT, label: 'SQL statement or comment fragment', hintOf: 'sql-injection' },
  { name: 'script-call-hint', points: SIGNAL_POINTS.scriptCallHint, pattern: SCRIPT_CALL_HINT, label: 'script call without markup', hintOf: 'xss' },
  { name: 'path-traversal', points: SIGNAL_POINTS.pathTraversal, pattern: PATH_TRAVERSAL, label: 'path traversal pattern' },
  { name: 'command-injection', points: SIGNAL_POINTS.commandInjection, pattern: COMMAND_INJECTION, label: 'shell command injection' },
  { name: 'shellshock', points: SIGNAL_POINTS.shellshock, pattern: SHELLSHOCK, label: 'Shellshock function definition (CVE-2014-6271)' },
  { name: 'template-injection', points: SIGNAL_POINTS.templateInjection, pattern: TEMPLATE_INJECTION, label: 'server-side template injection probe' },
  { name: 'ssrf-probe', points: SIGNAL_POINTS.ssrfProbe, pattern: SSRF_PROBE, label: 'SSRF target (cloud metadata / non-http scheme)' },
]);

// ---------------------------------------------------------------------------------------------
// Normalisation
// ---------------------------------------------------------------------------------------------

/** A request after validation: lower-cased header names, decoded scan texts, bounded. */
export interface PreparedRequest {
  readonly input: AssessInput;
  readonly method: string;
  /** Header map with lower-cased names; names that differed only in case share one combined value. */
  readonly headers: ReadonlyMap<string, string>;
  readonly userAgent: string;
  /** Path, percent-decoded (up to twice). */
  readonly decodedPath: string;
  /** Query, `+` as space and percent-decoded (up to twice). */
  readonly decodedQuery: string;
  /** Bounded scan parts, in order: path, query, body, each header. */
  readonly scanParts: readonly ScanPart[];
  /** The scan parts joined by `\n` (what the injection patterns run over). */
  readonly scanText: string;
  /** The body parsed as its content type says (undefined: no body). */
  readonly body: ParsedBody | undefined;
  /** True when some field (or query parameter) was longer than {@link SCAN_PART_CHARS_MAX} (it was scanned all the same). */
  readonly truncated: boolean;
}

export interface ScanPart {
  /** `path`, `query`, `body` or `header:<name>`. */
  readonly location: string;
  readonly text: string;
}

/** Percent-decodes, tolerating malformed escapes (decoded byte-wise as Latin-1 then). */
export function percentDecode(value: string, plusAsSpace: boolean): string {
  let text = plusAsSpace && value.includes('+') ? value.replace(PLUS_GLOBAL, ' ') : value;
  if (!text.includes('%')) return text;
  try {
    text = decodeURIComponent(text);
  } catch {
    text = text.replace(PERCENT_BYTE_GLOBAL, (_match, hex: string) => String.fromCharCode(parseInt(hex, 16)));
  }
  return text;
}

/** `%uXXXX` (IIS-style Unicode escapes). */
const PERCENT_U_GLOBAL = /%u([0-9a-fA-F]{4})/g;
/** Overlong UTF-8 (2- and 3-byte forms of ASCII, e.g. `%c0%af` = `/`): invalid UTF-8 that some decoders accept. */
const OVERLONG_2_GLOBAL = /%c([01])%([89ab][0-9a-f])/gi;
const OVERLONG_3_GLOBAL = /%e0%([89][0-9a-f])%([89ab][0-9a-f])/gi;
const ENTITY_GLOBAL = /&(?:#(\d{1,7})|#x([0-9a-f]{1,6})|(lt|gt|quot|apos|amp|colon|sol|bsol|lpar|rpar|semi|equals|tab|newline|nbsp|num|period|comma|excl|lsqb|rsqb|lcub|rcub|grave|vert|dollar|percnt|ast|plus|quest|commat|hat|lowbar));?/gi;
const NAMED_ENTITIES: Readonly<Record<string, string>> = Object.freeze({
  lt: '<', gt: '>', quot: '"', apos: "'", amp: '&', colon: ':', sol: '/', bsol: '\\', lpar: '(', rpar: ')', semi: ';', equals: '=',
  tab: '\t', newline: '\n', nbsp: ' ', num: '#', period: '.', comma: ',', excl: '!', lsqb: '[', rsqb: ']', lcub: '{', rcub: '}',
  grave: '`', vert: '|', dollar: '$', percnt: '%', ast: '*', plus: '+', quest: '?', commat: '@', hat: '^', lowbar: '_',
});
const NON_ASCII = /[^\x00-\x7f]/;

function fromCodePoint(code: number): string {
  return code > 0 && code <= 0x10ffff && !(code >= 0xd800 && code <= 0xdfff) ? String.fromCodePoint(code) : '';
}

/** Decodes HTML character references (numeric, and the named ones that spell syntax), once. */
export function decodeHtmlEntities(value: string): string {
  if (!value.includes('&')) return value;
  return value.replace(ENTITY_GLOBAL, (whole, dec: string | undefined, hex: string | undefined, name: string | undefined) => {
    if (dec !== undefined) return fromCodePoint(Number(dec)) || whole;
    if (hex !== undefined) return fromCodePoint(parseInt(hex, 16)) || whole;
    return NAMED_ENTITIES[(name ?? '').toLowerCase()] ?? whole;
  });
}

function percentDecodeEvasive(value: string, plusAsSpace: boolean): string {
  let text = value;
  if (text.includes('%')) {
    text = text
      .replace(PERCENT_U_GLOBAL, (_m, hex: string) => fromCodePoint(parseInt(hex, 16)))
      .replace(OVERLONG_3_GLOBAL, (_m, b2: string, b3: string) => String.fromCharCode(((parseInt(b2, 16) & 0x3f) << 6) | (parseInt(b3, 16) & 0x3f)))
      .replace(OVERLONG_2_GLOBAL, (_m, b1: string, b2: string) => String.fromCharCode(((0xc0 | Number(b1)) & 0x1f) << 6 | (parseInt(b2, 16) & 0x3f)));
  }
  return percentDecode(text, plusAsSpace);
}

/**
 * What the detectors match against: percent-decoded at most twice (double encoding, `%u`, overlong
 * UTF-8 included), HTML character references decoded (twice: `&amp;lt;`), then Unicode NFKC
 * (full-width and other compatibility forms fold to ASCII). Bounded: two passes of each, linear.
 */
export function normaliseForScan(value: string, plusAsSpace: boolean): string {
  let text = percentDecodeEvasive(value, plusAsSpace);
  if (text.includes('%')) text = percentDecodeEvasive(text, false);
  if (text.includes('&')) text = decodeHtmlEntities(decodeHtmlEntities(text));
  if (NON_ASCII.test(text)) {
    text = text.normalize('NFKC');
    if (text.includes('%')) text = percentDecodeEvasive(text, false);
  }
  return text;
}

/** Decodes at most twice: double encoding (`%252e`) is a classic filter evasion. */
function decodeForScan(value: string, plusAsSpace: boolean): string {
  return normaliseForScan(value, plusAsSpace);
}

/** A header value as the application would read it: cookies and Referer's query decoded like a query. */
function normaliseHeaderValue(name: string, value: string): string {
  if (name === 'referer' || name === 'referrer') {
    const q = value.indexOf('?');
    return q === -1 ? normaliseForScan(value, false) : `${normaliseForScan(value.slice(0, q), false)}?${normaliseForScan(value.slice(q + 1), true)}`;
  }
  return normaliseForScan(value, false);
}

/**
 * Builds the normalised view of an already validated input.
 *
 * Header names are lower-cased. Names that differ only in case (`User-Agent` and `user-agent`) are
 * one field whose values are joined with ", " as RFC 9110 §5.3 combines repeated field lines, so
 * no value escapes the detectors: keeping one of them would let an attacker hide a payload or a
 * scanner User-Agent behind a harmless twin. The names are taken in code-unit order, not in map
 * order (protobuf leaves a map's order undefined), so the same request always scores the same.
 */
export function prepareRequest(input: AssessInput): PreparedRequest {
  const headers = new Map<string, string>();
  for (const name of Object.keys(input.headers).sort()) {
    const key = name.toLowerCase();
    const value = input.headers[name] as string;
    const earlier = headers.get(key);
    headers.set(key, earlier === undefined ? value : `${earlier}, ${value}`);
  }
  const userAgent = input.userAgent !== '' ? input.userAgent : (headers.get('user-agent') ?? '');
  const rawQuery = input.query.startsWith('?') ? input.query.slice(1) : input.query;
  const decodedPath = decodeForScan(input.path, false);
  const decodedQuery = decodeForScan(rawQuery, true);

  const parts: ScanPart[] = [];
  let truncated = false;
  // Every field is scanned in full: validation bounds each one (and so the whole request), and a
  // total budget would let filler in one field push a payload in another out of the scan.
  const add = (location: string, text: string, rawLength: number = text.length): void => {
    if (text === '') return;
    if (rawLength > SCAN_PART_CHARS_MAX) truncated = true;
    parts.push({ location, text });
  };
  add('path', decodedPath);
  add('query', decodedQuery);
  // A long query parameter is the overflow signal, whatever the length of the others.
  if (rawQuery.length > SCAN_PART_CHARS_MAX) {
    for (const pair of rawQuery.split('&')) if (pair.length > SCAN_PART_CHARS_MAX) truncated = true;
  }
  const body = input.bodyExcerpt === undefined || input.bodyExcerpt === '' ? undefined : parseBody(input.bodyExcerpt, input.bodyContentType);
  // Raw text is decoded like a form (what most untyped posts are); parsed fields are already decoded by their parser.
  if (body !== undefined) for (const field of body.fields) add(field.location, normaliseForScan(field.text, body.kind === 'text'), field.text.length);
  if (input.userAgent !== '' && !headers.has('user-agent')) add('header:user-agent', normaliseForScan(input.userAgent, false), input.userAgent.length);
  for (const [name, value] of headers) add(`header:${name}`, normaliseHeaderValue(name, value), value.length);

  let scanText = '';
  for (const part of parts) scanText += part.text + '\n';
  return {
    input,
    method: input.method.toUpperCase(),
    headers,
    userAgent,
    decodedPath,
    decodedQuery,
    scanParts: parts,
    scanText,
    body,
    truncated,
  };
}

// ---------------------------------------------------------------------------------------------
// Static detectors (need only the request)
// ---------------------------------------------------------------------------------------------

function clip(text: string, chars: number = 48): string {
  const oneLine = text.replace(/[\r\n\t]+/g, ' ');
  return oneLine.length > chars ? `${oneLine.slice(0, chars)}…` : oneLine;
}

function locate(parts: readonly ScanPart[], pattern: RegExp): { location: string; match: string } {
  for (const part of parts) {
    const found = pattern.exec(part.text);
    if (found !== null) return { location: part.location, match: found[0] };
  }
  return { location: 'request', match: '' };
}

export function detectUserAgentSignals(req: PreparedRequest, out: ThreatSignal[]): void {
  const ua = req.userAgent;
  if (ua.trim() === '') {
    out.push({ name: 'empty-user-agent', points: SIGNAL_POINTS.emptyUserAgent, detail: 'request has no User-Agent' });
    return;
  }
  const scanner = SCANNER_UA.exec(ua);
  if (scanner !== null) {
    out.push({ name: 'scanner-user-agent', points: SIGNAL_POINTS.scannerUserAgent, detail: `User-Agent names scanner "${scanner[0]}"` });
    return;
  }
  const headless = HEADLESS_UA.exec(ua);
  if (headless !== null) {
    out.push({ name: 'headless-browser', points: SIGNAL_POINTS.headlessBrowser, detail: `User-Agent reveals automation "${headless[0]}"` });
    return;
  }
  const scripted = SCRIPTED_UA.exec(ua);
  if (scripted !== null) {
    out.push({ name: 'scripted-client', points: SIGNAL_POINTS.scriptedClient, detail: `User-Agent is an HTTP library or CLI "${scripted[0]}"` });
  }
}

export function detectPathSignals(req: PreparedRequest, out: ThreatSignal[]): void {
  const path = req.decodedPath;
  const sensitive = SENSITIVE_FILE_PATH.exec(path);
  if (sensitive !== null) {
    out.push({ name: 'sensitive-file-probe', points: SIGNAL_POINTS.sensitiveFileProbe, detail: `path probes secret/metadata file "${clip(sensitive[0])}"` });
  } else {
    const backup = BACKUP_FILE_PATH.exec(path);
    if (backup !== null) {
      out.push({ name: 'backup-file-probe', points: SIGNAL_POINTS.backupFileProbe, detail: `path probes backup/dump file "${clip(backup[0])}"` });
    }
  }
  const admin = ADMIN_SURFACE_PATH.exec(path);
  if (admin !== null) {
    out.push({ name: 'admin-surface-probe', points: SIGNAL_POINTS.adminSurfaceProbe, detail: `path probes admin/debug surface "${clip(admin[0])}"` });
  } else {
    const cms = CMS_PATH.exec(path);
    if (cms !== null) out.push({ name: 'cms-path', points: SIGNAL_POINTS.cmsPath, detail: `CMS admin or asset path "${clip(cms[0])}" (ordinary for a CMS site)` });
  }
  if (!path.startsWith('/') && path !== '*') {
    out.push({ name: 'non-origin-form-target', points: SIGNAL_POINTS.nonOriginFormTarget, detail: `request target is not a path (proxy probe?) "${clip(path)}"` });
  }
}

/** Strips log4j lookups (`${lower:j}`, `${::-n}`, `${env:X:-d}`) innermost first, bounded passes. */
function deobfuscateLog4j(text: string): string {
  let current = text;
  for (let pass = 0; pass < 4; pass += 1) {
    let changed = false;
    const next = current.replace(LOG4J_LOOKUP, (whole, body: string) => {
      const trimmed = body.trim().toLowerCase();
      if (trimmed.startsWith('jndi:')) return whole; // keep the payload visible
      changed = true;
      const fallback = body.lastIndexOf(':-');
      if (fallback !== -1) return body.slice(fallback + 2);
      const colon = body.indexOf(':');
      if (colon !== -1 && /^(?:lower|upper)$/i.test(body.slice(0, colon).trim())) return body.slice(colon + 1);
      return '';
    });
    current = next;
    if (!changed) break;
  }
  return current;
}

export function detectInjectionSignals(req: PreparedRequest, out: ThreatSignal[]): void {
  const text = req.scanText;
  const fired = new Set<string>();
  for (const detector of INJECTION_DETECTORS) {
    if (detector.hintOf !== undefined && fired.has(detector.hintOf)) continue;
    if (!detector.pattern.test(text)) continue;
    fired.add(detector.name);
    const where = locate(req.scanParts, detector.pattern);
    out.push({ name: detector.name, points: detector.points, detail: `${detector.label} in ${where.location}: "${clip(where.match)}"` });
  }
  if (text.includes('${') || /jndi/i.test(text)) {
    const normalised = text.includes('${') ? deobfuscateLog4j(text) : text;
    if (JNDI.test(normalised)) {
      const where = req.scanParts.find((part) => JNDI.test(part.text.includes('${') ? deobfuscateLog4j(part.text) : part.text));
      out.push({ name: 'log4shell-jndi', points: SIGNAL_POINTS.log4shell, detail: `JNDI lookup (Log4Shell, CVE-2021-44228) in ${where?.location ?? 'request'}` });
    }
  }
  // CRLF only counts where the application would put it into a header or log line: path and query.
  if (CRLF.test(req.decodedPath) || CRLF.test(req.decodedQuery)) {
    out.push({ name: 'crlf-injection', points: SIGNAL_POINTS.crlfInjection, detail: 'CR/LF characters in path or query (header/log injection)' });
  }
}

export function detectHeaderSignals(req: PreparedRequest, out: ThreatSignal[]): void {
  const h = req.headers;
  const ua = req.userAgent;
  const browser = BROWSER_UA.test(ua) && !CRAWLER_UA.test(ua) && !SCANNER_UA.test(ua);
  if (browser) {
    if (!h.has('accept')) {
      out.push({ name: 'browser-missing-accept', points: SIGNAL_POINTS.browserMissingAccept, detail: 'browser User-Agent without an Accept header' });
    }
    if (!h.has('accept-language')) {
      out.push({ name: 'browser-missing-accept-language', points: SIGNAL_POINTS.browserMissingAcceptLanguage, detail: 'browser User-Agent without Accept-Language' });
    }
    const hints = h.get('sec-ch-ua');
    if (hints !== undefined && /chrom|edge/i.test(hints) && !/Chrome\//.test(ua)) {
      out.push({ name: 'client-hints-mismatch', points: SIGNAL_POINTS.clientHintsMismatch, detail: 'Sec-CH-UA claims Chromium but the User-Agent does not' });
    }
  }
  const host = h.get('host');
  if (host === undefined || host === '') {
    out.push({ name: 'missing-host', points: SIGNAL_POINTS.missingHost, detail: 'no Host header' });
  } else if (HOST_IP_LITERAL.test(host)) {
    out.push({ name: 'host-is-ip-literal', points: SIGNAL_POINTS.hostIsIpLiteral, detail: `Host is an IP literal "${clip(host, 40)}" (address sweep)` });
  }
  const transferEncoding = h.get('transfer-encoding');
  if (transferEncoding !== undefined) {
    if (h.has('content-length')) {
      out.push({ name: 'length-header-conflict', points: SIGNAL_POINTS.lengthHeaderConflict, detail: 'both Content-Length and Transfer-Encoding (request smuggling)' });
    } else if (transferEncoding.trim().toLowerCase() !== 'chunked') {
      out.push({ name: 'transfer-encoding-obfuscated', points: SIGNAL_POINTS.transferEncodingObfuscated, detail: `unusual Transfer-Encoding "${clip(transferEncoding, 32)}"` });
    }
  }
  for (const name of FORWARDED_HEADERS) {
    const value = h.get(name);
    if (value !== undefined && LOOPBACK_VALUE.test(value)) {
      out.push({ name: 'forwarded-for-loopback', points: SIGNAL_POINTS.forwardedLoopback, detail: `${name} claims a loopback origin (access-control bypass)` });
      break;
    }
  }
  for (const name of URL_OVERRIDE_HEADERS) {
    if (h.has(name)) {
      out.push({ name: 'url-override-header', points: SIGNAL_POINTS.urlOverrideHeader, detail: `${name} header (front-end routing bypass)` });
      break;
    }
  }
  if (!ORDINARY_METHODS.has(req.method)) {
    out.push({ name: 'unusual-method', points: SIGNAL_POINTS.unusualMethod, detail: `HTTP method ${clip(req.method, 16)}` });
  }
  const input = req.input;
  if (input.bodyLength !== undefined && input.bodyExcerpt !== undefined && input.bodyLength > Buffer.byteLength(input.bodyExcerpt, 'utf8')) {
    out.push({ name: 'body-overflow', points: SIGNAL_POINTS.bodyOverflow, detail: `body of ${input.bodyLength} bytes, only its first ${BODY_BYTES_MAX} or fewer scanned` });
  }
  if (req.body?.xmlEntityDeclared === true) {
    out.push({ name: 'xml-external-entity', points: SIGNAL_POINTS.xmlExternalEntity, detail: 'XML body declares entities in its DOCTYPE (XXE)' });
  }
  if (req.truncated) {
    out.push({ name: 'oversized-input', points: SIGNAL_POINTS.oversizedInput, detail: `a field or query parameter is longer than ${SCAN_PART_CHARS_MAX} characters (scanned in full)` });
  }
}

/** Known-bad TLS fingerprints, keyed by lower-case JA3 hash / JA4 string, valued by a label. */
export type TlsFingerprintList = ReadonlyMap<string, string>;

/**
 * A small seed list only. Attribution of JA3 hashes differs between public sources (the first
 * two are listed as Cobalt Strike / Metasploit defaults by several threat-intel lists), and JA3
 * collides across clients sharing a TLS stack; production should load a maintained feed such as
 * abuse.ch SSLBL's JA3 list through the engine's `badTlsFingerprints` option.
 */
export const DEFAULT_BAD_TLS_FINGERPRINTS: TlsFingerprintList = new Map([
  ['72a589da586844d7f0818ce684948eea', 'Cobalt Strike / Metasploit default client (public JA3 lists)'],
  ['a0e9f5d64349fb13191bc781f81f42e1', 'Cobalt Strike default client (public JA3 lists)'],
]);

export function detectTlsSignals(req: PreparedRequest, list: TlsFingerprintList, out: ThreatSignal[]): void {
  const fingerprint = req.input.tlsFingerprint;
  if (fingerprint === undefined || fingerprint === '') return;
  const label = list.get(fingerprint.toLowerCase());
  if (label !== undefined) {
    out.push({ name: 'known-bad-tls-fingerprint', points: SIGNAL_POINTS.knownBadTlsFingerprint, detail: `TLS fingerprint listed as ${label}` });
  }
}

// ---------------------------------------------------------------------------------------------
// Behavioural detectors (need the session profile)
// ---------------------------------------------------------------------------------------------

/**
 * Thresholds of the behavioural signals, in human units. Rates are sustained rates (a 60 s
 * half-life counter, see session-profile.ts), so a browser loading 50 assets at once does not
 * trip them; only keeping it up does.
 */
export const BEHAVIOUR_THRESHOLDS = Object.freeze({
  /** Sustained requests per second → points. */
  ratePerSecond: [
    { atLeast: 15, points: 3 },
    { atLeast: 5, points: 2 },
    { atLeast: 2, points: 1 },
  ],
  /** Distinct paths in the sliding window → points. */
  distinctPaths: [
    { atLeast: 250, points: 3 },
    { atLeast: 120, points: 2 },
    { atLeast: 50, points: 1 },
  ],
  /** Minimum (decayed) number of reported statuses before the 404 ratio counts. */
  statusSamplesMin: 8,
  /** Share of 404 among reported statuses (whole percent) → points. */
  notFoundPercent: [
    { atLeast: 80, points: 3 },
    { atLeast: 50, points: 2 },
    { atLeast: 30, points: 1 },
  ],
  /** Decayed count of 401/403 answers → points (credential stuffing / brute force). */
  authFailures: [
    { atLeast: 20, points: 3 },
    { atLeast: 5, points: 2 },
  ],
  /** The remembered level carries as floor(decayed earlier level × 4/5). */
  earlierLevelCarry: { numerator: 4, denominator: 5 },
});

interface Step {
  readonly atLeast: number;
  readonly points: number;
}

/**
 * The thresholds compiled to the integers the profile stores (thousandths), so that JavaScript
 * and the Lua in the Assess script compare exactly the same integers and always agree.
 */
export interface BehaviourRules {
  readonly rateCounterMilli: readonly Step[];
  readonly distinctPaths: readonly Step[];
  readonly statusSamplesMinMilli: number;
  readonly notFoundPercent: readonly Step[];
  readonly authFailuresMilli: readonly Step[];
  /** carry points = floor(earlierLevelMilli × carryNumerator / carryDenominator). */
  readonly carryNumerator: number;
  readonly carryDenominator: number;
}

export function compileBehaviourRules(profile: Pick<ProfileConfig, 'rateHalfLifeSeconds'>): BehaviourRules {
  const t = BEHAVIOUR_THRESHOLDS;
  return Object.freeze({
    // rate ≥ R  ⇔  counter · ln2 / H ≥ R  ⇔  counterMilli ≥ R · H · 1000 / ln2
    rateCounterMilli: t.ratePerSecond.map((s) => ({ atLeast: Math.ceil((s.atLeast * profile.rateHalfLifeSeconds * PROFILE_FIXED_POINT) / Math.LN2), points: s.points })),
    distinctPaths: t.distinctPaths.map((s) => ({ ...s })),
    statusSamplesMinMilli: t.statusSamplesMin * PROFILE_FIXED_POINT,
    notFoundPercent: t.notFoundPercent.map((s) => ({ ...s })),
    authFailuresMilli: t.authFailures.map((s) => ({ atLeast: s.atLeast * PROFILE_FIXED_POINT, points: s.points })),
    carryNumerator: t.earlierLevelCarry.numerator,
    carryDenominator: t.earlierLevelCarry.denominator * PROFILE_FIXED_POINT,
  });
}

function stepPoints(value: number, steps: readonly Step[]): number {
  for (const step of steps) if (value >= step.atLeast) return step.points;
  return 0;
}

function notFoundPoints(s: SessionSnapshot, rules: BehaviourRules): number {
  if (s.statusReportsMilli < rules.statusSamplesMinMilli) return 0;
  for (const step of rules.notFoundPercent) if (s.notFoundMilli * 100 >= s.statusReportsMilli * step.atLeast) return step.points;
  return 0;
}

export function detectBehaviourSignals(snapshot: SessionSnapshot, rules: BehaviourRules, out: ThreatSignal[]): void {
  const ratePoints = stepPoints(snapshot.rateCounterMilli, rules.rateCounterMilli);
  if (ratePoints > 0) {
    out.push({ name: 'request-rate', points: ratePoints, detail: `sustained ${snapshot.ratePerSecond.toFixed(1)} requests/s in this session` });
  }
  const diversityPoints = stepPoints(snapshot.distinctPaths, rules.distinctPaths);
  if (diversityPoints > 0) {
    out.push({ name: 'path-diversity', points: diversityPoints, detail: `${snapshot.distinctPaths} distinct paths in the last ${snapshot.pathWindowSeconds} s` });
  }
  const nfPoints = notFoundPoints(snapshot, rules);
  if (nfPoints > 0) {
    const percent = Math.round((snapshot.notFoundMilli * 100) / snapshot.statusReportsMilli);
    out.push({ name: 'not-found-ratio', points: nfPoints, detail: `${percent}% of recent responses were 404` });
  }
  const authPoints = stepPoints(snapshot.authFailuresMilli, rules.authFailuresMilli);
  if (authPoints > 0) {
    out.push({ name: 'auth-failures', points: authPoints, detail: `${(snapshot.authFailuresMilli / PROFILE_FIXED_POINT).toFixed(1)} recent 401/403 responses (decayed count)` });
  }
}

/**
 * The session's memory: a decayed share of the highest level it reached before. It is not simply
 * added (that would feed on itself and ratchet a session upwards); it only tops the current sum
 * up to floor(0.8 × earlier level), so the level is max(current evidence, remembered level × 0.8)
 * and, because 0.8 < 1, a quiet session always falls back.
 */
export function earlierLevelSignal(snapshot: SessionSnapshot, rules: BehaviourRules, pointsSoFar: number): ThreatSignal | undefined {
  const remembered = Math.floor((snapshot.earlierLevelMilli * rules.carryNumerator) / rules.carryDenominator);
  const points = remembered - pointsSoFar;
  if (points <= 0) return undefined;
  return {
    name: 'earlier-level',
    points,
    detail: `session reached level ${(snapshot.earlierLevelMilli / PROFILE_FIXED_POINT).toFixed(1)} earlier (decayed, half-life ${snapshot.levelHalfLifeSeconds} s)`,
  };
}

/** `if v >= a then p = p + x elseif v >= b then ... end` — straight-line code, no Lua tables. */
function luaStepChain(variable: string, steps: readonly Step[]): string {
  if (steps.length === 0) return '';
  return `${steps.map((step, i) => `${i === 0 ? 'if' : 'elseif'} ${variable} >= ${step.atLeast} then behaviour = behaviour + ${step.points}`).join(' ')} end`;
}

/**
 * The same rules as Lua, for the Assess script: a block that sets `local behaviour` from the
 * locals of the profile fragment (rc, distinct, sn, s4, sa) and `local carry` from `lvd`.
 * Generated from {@link BehaviourRules} so the numbers exist once, as straight-line comparisons
 * (table constructors and closures would run on every call); the engine asserts on every request
 * that the level Lua computed equals the one JavaScript computes from the returned snapshot.
 */
export function behaviourRulesLua(rules: BehaviourRules): string {
  const notFound = rules.notFoundPercent
    .map((step, i) => `${i === 0 ? 'if' : 'elseif'} s4 * 100 >= sn * ${step.atLeast} then behaviour = behaviour + ${step.points}`)
    .join(' ');
  return `
local behaviour = 0
${luaStepChain('rc', rules.rateCounterMilli)}
${luaStepChain('distinct', rules.distinctPaths)}
${luaStepChain('sa', rules.authFailuresMilli)}
if sn >= ${rules.statusSamplesMinMilli} then ${notFound} end end
local carry = math.floor(lvd * ${rules.carryNumerator} / ${rules.carryDenominator})
`;
}
