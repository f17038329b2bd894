/**
 * IPv4/IPv6 address and CIDR parsing, and a CIDR set matcher.
 *
 * Why hand-written instead of `net.BlockList`: the sample validator, the rule
 * validator and the replay must agree *exactly* on what an address is (one
 * parser, one normalisation), the validator needs precise error messages
 * ("prefix length 33 exceeds 32"), and the matcher must handle 10,000 CIDRs
 * against 100,000 distinct addresses in milliseconds — a linear scan like
 * `BlockList.check` is O(addresses × CIDRs). Here a set is one hash set per
 * prefix length present, so a lookup costs at most 33 (IPv4) / 129 (IPv6)
 * probes whatever the list size.
 *
 * Normalisation: an IPv4-mapped IPv6 address (`::ffff:192.0.2.1`) is treated as
 * the IPv4 address it carries, both in samples and in CIDRs (a mapped CIDR with
 * prefix ≥ 96 becomes the IPv4 CIDR with prefix − 96), because a dual-stack
 * proxy may log either spelling for the same client. Zone ids (`fe80::1%eth0`)
 * and IPv4 octets with leading zeros (`010.0.0.1`, octal in some parsers) are
 * rejected: they are ambiguous in logs and never needed for public clients.
 */

/** A parsed address: IPv4 as an unsigned 32-bit number, IPv6 as a 128-bit bigint. */
export type ParsedIp = { readonly version: 4; readonly value: number } | { readonly version: 6; readonly value: bigint };

/** A parsed, normalised CIDR: network address with host bits clear, and its prefix length. */
export type ParsedCidr =
  | { readonly version: 4; readonly network: number; readonly prefix: number }
  | { readonly version: 6; readonly network: bigint; readonly prefix: number };

const IPV4_MAPPED_PREFIX = 0xffffn << 32n;
const IPV4_MAPPED_MASK = ((1n << 128n) - 1n) ^ ((1n << 32n) - 1n);
const IPV6_ALL_ONES = (1n << 128n) - 1n;
const ADDRESS_LENGTH_MAX = 45; // longest textual IPv6 with an embedded IPv4 tail

/** Parses a dotted-quad IPv4 address; returns the unsigned value or -1 when invalid. */
export function parseIpv4(text: string): number {
  const length = text.length;
  if (length < 7 || length > 15) return -1;
  let value = 0;
  let octet = 0;
  let digits = 0;
  let parts = 0;
  for (let i = 0; i <= length; i++) {
    const code = i < length ? text.charCodeAt(i) : 46; // virtual trailing '.'
    if (code === 46) {
      if (digits === 0 || octet > 255) return -1;
      value = value * 256 + octet;
      parts++;
      octet = 0;
      digits = 0;
      continue;
    }
    if (code < 48 || code > 57) return -1;
    if (digits > 0 && octet === 0) return -1; // leading zero: "01"
    octet = octet * 10 + (code - 48);
    digits++;
    if (digits > 3) return -1;
  }
  return parts === 4 ? value : -1;
}

/** Parses an IPv6 address (RFC 4291 text forms, optional embedded IPv4 tail); null when invalid. */
export function parseIpv6(text: string): bigint | null {
  if (text.length < 2 || text.length > ADDRESS_LENGTH_MAX) return null;
  const doubleColon = text.indexOf('::');
  if (doubleColon !== -1 && text.indexOf('::', doubleColon + 1) !== -1) return null;
  const head = doubleColon === -1 ? text : text.slice(0, doubleColon);
  const tail = doubleColon === -1 ? '' : text.slice(doubleColon + 2);
  const headGroups = head === '' ? [] : head.split(':');
  const tailGroups = tail === '' ? [] : tail.split(':');
  const groups: number[] = [];
  const all = [...headGroups, ...tailGroups];
  const parsedHead: number[] = [];
  const parsedTail: number[] = [];
  for (let i = 0; i < all.length; i++) {
    const group = all[i];
    const isLast = i === all.length - 1;
    const target = i < headGroups.length ? parsedHead : parsedTail;
    if (isLast && group.includes('.')) {
      const v4 = parseIpv4(group);
      if (v4 < 0) return null;
      target.push(Math.floor(v4 / 65536), v4 % 65536);
      continue;
    }
    if (!/^[0-9a-fA-F]{1,4}$/.test(group)) return null;
    target.push(parseInt(group, 16));
  }
  const explicit = parsedHead.length + parsedTail.length;
  if (doubleColon === -1) {
    if (explicit !== 8) return null;
    groups.push(...parsedHead);
  } else {
    if (explicit > 7) return null; // '::' stands for at least one zero group
    groups.push(...parsedHead);
    for (let i = 0; i < 8 - explicit; i++) groups.push(0);
    groups.push(...parsedTail);
  }
  let value = 0n;
  for (const g of groups) value = (value << 16n) | BigInt(g);
  return value;
}

/**
 * Parses an IPv4 or IPv6 address. IPv4-mapped IPv6 addresses come back as IPv4
 * so that a client logged either way matches the same rules.
 */
export function parseIp(text: string): ParsedIp | null {
  if (typeof text !== 'string') return null;
  if (text.includes(':')) {
    const v6 = parseIpv6(text);
    if (v6 === null) return null;
    if ((v6 & IPV4_MAPPED_MASK) === IPV4_MAPPED_PREFIX) return { version: 4, value: Number(v6 & 0xffffffffn) };
    return { version: 6, value: v6 };
  }
  const v4 = parseIpv4(text);
  return v4 < 0 ? null : { version: 4, value: v4 };
}

/** Dotted-quad text of an unsigned 32-bit IPv4 value. */
export function formatIpv4(value: number): string {
  return `${value >>> 24}.${(value >>> 16) & 255}.${(value >>> 8) & 255}.${value & 255}`;
}

/** RFC 5952 text (lower case, longest zero run compressed) of a 128-bit IPv6 value. */
export function formatIpv6(value: bigint): string {
  const groups: number[] = [];
  for (let i = 7; i >= 0; i--) groups.push(Number((value >> BigInt(i * 16)) & 0xffffn));
  let bestStart = -1;
  let bestLength = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength && j - i >= 2) {
      bestStart = i;
      bestLength = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart === -1) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLength).join(':')}`;
}

function ipv4Mask(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

function ipv6Mask(prefix: number): bigint {
  return IPV6_ALL_ONES ^ ((1n << BigInt(128 - prefix)) - 1n);
}

/**
 * Parses `address/prefix` (or a bare address = /32 or /128). Returns the CIDR
 * or a human-readable reason. Host bits set (`10.0.0.1/8`) is an error rather
 * than silently widened: in a blocklist it is almost always a typo, and the
 * message suggests the network the author probably meant.
 */
export function parseCidr(text: string): ParsedCidr | string {
  if (typeof text !== 'string' || text.length === 0) return 'must be a non-empty CIDR such as 203.0.113.0/24';
  if (text.length > ADDRESS_LENGTH_MAX + 4) return `'${text.slice(0, 60)}…' is too long to be a CIDR`;
  const slash = text.indexOf('/');
  const addressText = slash === -1 ? text : text.slice(0, slash);
  const prefixText = slash === -1 ? null : text.slice(slash + 1);
  const isV6 = addressText.includes(':');
  const bits = isV6 ? 128 : 32;
  let prefix = bits;
  if (prefixText !== null) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(prefixText)) return `'${text}' has an invalid prefix length '${prefixText}'`;
    prefix = Number(prefixText);
    if (prefix > bits) return `'${text}' has prefix length ${prefix} which exceeds ${bits}`;
  }
  if (isV6) {
    const address = parseIpv6(addressText);
    if (address === null) return `'${text}' is not a valid IPv6 CIDR`;
    const mask = ipv6Mask(prefix);
    const network = address & mask;
    if (network !== address) return `'${text}' has host bits set (did you mean ${formatIpv6(network)}/${prefix}?)`;
    if (prefix >= 96 && (network & IPV4_MAPPED_MASK) === IPV4_MAPPED_PREFIX) {
      return { version: 4, network: Number(network & 0xffffffffn), prefix: prefix - 96 };
    }
    return { version: 6, network, prefix };
  }
  const address = parseIpv4(addressText);
  if (address < 0) return `'${text}' is not a valid IPv4 or IPv6 CIDR`;
  const network = (address & ipv4Mask(prefix)) >>> 0;
  if (network !== address) return `'${text}' has host bits set (did you mean ${formatIpv4(network)}/${prefix}?)`;
  return { version: 4, network, prefix };
}

/**
 * A set of CIDRs answering "is this address inside any of them" in at most one
 * hash probe per distinct prefix length.
 */
export class CidrMatcher {
  private readonly v4ByPrefix = new Map<number, Set<number>>();
  private readonly v6ByPrefix = new Map<number, Set<bigint>>();
  private readonly v4Prefixes: number[];
  private readonly v4Masks: number[];
  private readonly v6Prefixes: number[];
  private readonly v6Masks: bigint[];

  constructor(cidrs: readonly ParsedCidr[]) {
    for (const cidr of cidrs) {
      if (cidr.version === 4) {
        let set = this.v4ByPrefix.get(cidr.prefix);
        if (!set) this.v4ByPrefix.set(cidr.prefix, (set = new Set()));
        set.add(cidr.network);
      } else {
        let set = this.v6ByPrefix.get(cidr.prefix);
        if (!set) this.v6ByPrefix.set(cidr.prefix, (set = new Set()));
        set.add(cidr.network);
      }
    }
    // Shortest prefixes first: broad blocks (/8) catch most hits in one probe.
    this.v4Prefixes = [...this.v4ByPrefix.keys()].sort((a, b) => a - b);
    this.v4Masks = this.v4Prefixes.map(ipv4Mask);
    this.v6Prefixes = [...this.v6ByPrefix.keys()].sort((a, b) => a - b);
    this.v6Masks = this.v6Prefixes.map(ipv6Mask);
  }

  /** True when `ip` lies inside any CIDR of the set. */
  contains(ip: ParsedIp): boolean {
    if (ip.version === 4) {
      for (let i = 0; i < this.v4Prefixes.length; i++) {
        const set = this.v4ByPrefix.get(this.v4Prefixes[i])!;
        if (set.has((ip.value & this.v4Masks[i]) >>> 0)) return true;
      }
      return false;
    }
    for (let i = 0; i < this.v6Prefixes.length; i++) {
      const set = this.v6ByPrefix.get(this.v6Prefixes[i])!;
      if (set.has(ip.value & this.v6Masks[i])) return true;
    }
    return false;
  }
}
