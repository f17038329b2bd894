import { expect } from 'chai';
import { CidrMatcher, formatIpv6, parseCidr, parseIp, parseIpv4, parseIpv6, type ParsedCidr } from './ip-address';

describe('shadow ip-address', () => {
  // Dotted quads parse to their unsigned value; leading zeros, out-of-range octets and wrong shapes do not.
  it('parses IPv4 strictly', () => {
    expect(parseIpv4('0.0.0.0')).to.equal(0);
    expect(parseIpv4('255.255.255.255')).to.equal(0xffffffff);
    expect(parseIpv4('203.0.113.9')).to.equal(((203 * 256 + 0) * 256 + 113) * 256 + 9);
    for (const bad of ['256.1.1.1', '1.2.3', '1.2.3.4.5', '01.2.3.4', '1..2.3', '1.2.3.4 ', 'a.b.c.d', '']) {
      expect(parseIpv4(bad), bad).to.equal(-1);
    }
  });

  // IPv6 text forms ('::' compression, embedded IPv4, full form) parse to the same 128-bit value; malformed ones do not.
  it('parses IPv6 forms', () => {
    expect(parseIpv6('::')).to.equal(0n);
    expect(parseIpv6('::1')).to.equal(1n);
    expect(parseIpv6('2001:db8::1')).to.equal(parseIpv6('2001:0db8:0000:0000:0000:0000:0000:0001'));
    expect(parseIpv6('64:ff9b::192.0.2.33')).to.equal((0x64n << 112n) | (0xff9bn << 96n) | 0xc0000221n);
    for (const bad of ['1:2:3:4:5:6:7:8:9', '2001:db8:::1', '1::2::3', '12345::', 'g::1', '1:2:3:4:5:6:7:8::', 'fe80::1%eth0']) {
      expect(parseIpv6(bad), bad).to.equal(null);
    }
  });

  // IPv4-mapped IPv6 addresses are the IPv4 client they carry.
  it('normalises IPv4-mapped IPv6 to IPv4', () => {
    expect(parseIp('::ffff:203.0.113.9')).to.deep.equal(parseIp('203.0.113.9'));
    expect(parseIp('::ffff:cb00:7109')).to.deep.equal(parseIp('203.0.113.9'));
    expect(parseIp('2001:db8::1')?.version).to.equal(6);
    expect(parseIp('nope')).to.equal(null);
  });

  // RFC 5952 formatting compresses the longest zero run only.
  it('formats IPv6 canonically', () => {
    expect(formatIpv6(parseIpv6('2001:0db8:0:0:1:0:0:1')!)).to.equal('2001:db8::1:0:0:1');
    expect(formatIpv6(0n)).to.equal('::');
    expect(formatIpv6(parseIpv6('1:2:3:4:5:6:7:8')!)).to.equal('1:2:3:4:5:6:7:8');
  });

  // A bare address is a host route; a mapped CIDR with prefix ≥ 96 becomes IPv4.
  it('parses CIDRs with defaults and mapped normalisation', () => {
    expect(parseCidr('192.0.2.7')).to.deep.equal({ version: 4, network: parseIpv4('192.0.2.7'), prefix: 32 });
    expect(parseCidr('::ffff:203.0.113.0/120')).to.deep.equal({ version: 4, network: parseIpv4('203.0.113.0'), prefix: 24 });
    expect(parseCidr('0.0.0.0/0')).to.deep.equal({ version: 4, network: 0, prefix: 0 });
    expect((parseCidr('2001:db8::/32') as ParsedCidr).prefix).to.equal(32);
  });

  // The matcher answers membership across prefix lengths, both families, /0 and host routes.
  it('matches addresses against a CIDR set', () => {
    const set = new CidrMatcher(
      ['10.0.0.0/8', '203.0.113.7', '2001:db8:bad::/48', '::ffff:198.51.100.0/120'].map((c) => parseCidr(c) as ParsedCidr),
    );
    const hit = (ip: string): boolean => set.contains(parseIp(ip)!);
    expect(hit('10.255.1.2')).to.equal(true);
    expect(hit('11.0.0.1')).to.equal(false);
    expect(hit('203.0.113.7')).to.equal(true);
    expect(hit('203.0.113.8')).to.equal(false);
    expect(hit('2001:db8:bad:1::5')).to.equal(true);
    expect(hit('2001:db8:bae::5')).to.equal(false);
    expect(hit('198.51.100.44')).to.equal(true);
    expect(hit('::ffff:10.1.1.1')).to.equal(true);
    const all = new CidrMatcher([parseCidr('0.0.0.0/0') as ParsedCidr]);
    expect(all.contains(parseIp('1.2.3.4')!)).to.equal(true);
    expect(all.contains(parseIp('::1')!)).to.equal(false);
  });
});
