import { expect } from 'chai';
import { generateTraffic, mulberry32, streamTraffic } from './traffic-generator';
import { validateSample } from './traffic-sample';

describe('shadow traffic-generator', () => {
  const samples = generateTraffic({ count: 50_000, seed: 7 });

  // Same seed and options → byte-identical traffic; another seed → different traffic.
  it('is deterministic per seed', () => {
    const again = generateTraffic({ count: 2000, seed: 7 });
    expect(JSON.stringify(again)).to.equal(JSON.stringify(samples.slice(0, 2000)));
    expect(JSON.stringify(generateTraffic({ count: 2000, seed: 8 }))).not.to.equal(JSON.stringify(again));
  });

  // The PRNG is the reference mulberry32: first outputs for seeds 1 and 42 match an independent Python port.
  it('uses the reference mulberry32 PRNG', () => {
    const one = mulberry32(1);
    expect([one(), one(), one()]).to.deep.equal([0.6270739405881613, 0.002735721180215478, 0.5274470399599522]);
    const answer = mulberry32(42);
    expect([answer(), answer(), answer()]).to.deep.equal([0.6011037519201636, 0.44829055899754167, 0.8524657934904099]);
    for (let i = 0; i < 10_000; i++) {
      const x = one();
      expect(x >= 0 && x < 1).to.equal(true);
    }
  });

  // Every generated sample passes ingest validation, so demo data and benches never contain bad rows.
  it('produces only valid samples, in timestamp order, starting at startTimeMs', () => {
    expect(samples).to.have.length(50_000);
    const start = Date.UTC(2025, 0, 1);
    let previous = -Infinity;
    for (const s of samples) {
      const reason = validateSample(s);
      if (reason !== null) expect.fail(`${reason} in ${JSON.stringify(s)}`);
      expect(s.timestampMs).to.be.at.least(previous);
      previous = s.timestampMs;
    }
    expect(samples[0].timestampMs).to.be.at.least(start);
    const custom = generateTraffic({ count: 10, seed: 1, startTimeMs: 1_000_000 });
    expect(custom[0].timestampMs).to.be.within(1_000_000, 1_001_000);
  });

  // The default mix is realistic: ~17% malicious with every attack family present, IPv6 clients and scanner UAs included.
  it('contains every scenario of the default mix', () => {
    const types = new Map<string, number>();
    for (const s of samples) types.set(s.attackType, (types.get(s.attackType) ?? 0) + 1);
    const malicious = samples.filter((s) => s.malicious).length / samples.length;
    expect(malicious).to.be.within(0.1, 0.25);
    for (const t of ['', 'scanner', 'credential_stuffing', 'dos', 'sqli', 'xss', 'path_traversal']) {
      expect(types.get(t) ?? 0, t).to.be.above(0);
    }
    expect(samples.some((s) => s.clientIp.includes(':'))).to.equal(true);
    expect(samples.some((s) => /nikto|sqlmap|nuclei/i.test(s.userAgent))).to.equal(true);
    expect(samples.some((s) => s.path === '/.env' && s.malicious)).to.equal(true);
  });

  // Credential stuffing is POST /login spread over many IPs with few attempts each (invisible to a per-IP limit).
  it('spreads credential stuffing over many IPs', () => {
    const stuffing = samples.filter((s) => s.attackType === 'credential_stuffing');
    expect(stuffing.every((s) => s.method === 'POST')).to.equal(true);
    const perIp = new Map<string, number>();
    for (const s of stuffing) perIp.set(s.clientIp, (perIp.get(s.clientIp) ?? 0) + 1);
    expect(perIp.size).to.be.above(100);
    expect(Math.max(...perIp.values())).to.be.at.most(12);
  });

  // A DoS burst comes from one key at a far higher rate than any benign client.
  it('produces DoS bursts from a single key', () => {
    const perKey = new Map<string, number>();
    for (const s of samples) if (s.attackType === 'dos') perKey.set(s.clientKey, (perKey.get(s.clientKey) ?? 0) + 1);
    const benignPerKey = new Map<string, number>();
    for (const s of samples) if (!s.malicious) benignPerKey.set(s.clientKey, (benignPerKey.get(s.clientKey) ?? 0) + 1);
    expect(Math.max(...perKey.values())).to.be.above(Math.max(...benignPerKey.values()));
  });

  // Benign look-alikes exist (suspicious-looking searches, staff admin pages), so rules can have false positives.
  it('includes benign look-alikes', () => {
    expect(samples.some((s) => !s.malicious && s.path.includes('union+jack'))).to.equal(true);
    expect(samples.some((s) => !s.malicious && s.path === '/admin/dashboard')).to.equal(true);
    expect(samples.some((s) => !s.malicious && s.userAgent.includes('Googlebot'))).to.equal(true);
  });

  // The mix option controls the scenarios: scanners only → all malicious; benign only → none.
  it('honours the mix', () => {
    const scanners = generateTraffic({
      count: 500,
      seed: 3,
      mix: { benignBrowsing: 0, apiClient: 0, credentialStuffing: 0, dosBurst: 0, injection: 0, scanner: 1 },
    });
    expect(scanners.every((s) => s.malicious && s.attackType === 'scanner')).to.equal(true);
    const benign = generateTraffic({ count: 500, seed: 3, mix: { scanner: 0, credentialStuffing: 0, dosBurst: 0, injection: 0 } });
    expect(benign.every((s) => !s.malicious)).to.equal(true);
  });

  // Bad options fail fast with a clear RangeError.
  it('validates options', () => {
    expect(() => generateTraffic({ count: -1 })).to.throw(RangeError, 'count must be an integer');
    expect(() => generateTraffic({ count: 1, seed: 1.5 })).to.throw(RangeError, 'seed must be an integer');
    expect(() => generateTraffic({ count: 1, requestsPerSecond: 0 })).to.throw(RangeError, 'requestsPerSecond');
    expect(() => generateTraffic({ count: 1, mix: { scanner: -1 } })).to.throw(RangeError, 'mix.scanner');
    expect(() =>
      generateTraffic({ count: 1, mix: { benignBrowsing: 0, apiClient: 0, scanner: 0, credentialStuffing: 0, dosBurst: 0, injection: 0 } }),
    ).to.throw(RangeError, 'at least one positive weight');
  });

  // The streaming form yields the same samples as the array form (for streamed ingest of demo data).
  it('streams the same samples', () => {
    const streamed = [...streamTraffic({ count: 300, seed: 7 })];
    expect(JSON.stringify(streamed)).to.equal(JSON.stringify(samples.slice(0, 300)));
  });
});
