/**
 * Honeytokens: unique fake secrets minted into decoys, watched for in every later request.
 *
 * Each decision that serves a honeytoken decoy mints one token, recorded in Redis as
 * `<prefix>ht:<token>` → {decision, decoy, tier, shape, minted at} with a long TTL (90 days by
 * default: stolen credentials are often tried weeks later). A request carrying a known token is
 * level 10, raises a {@link HoneytokenAlert}, and credits the decoy that leaked it (its pull's
 * reward is topped up to the full 1.0, once per token; see store/decision-store.ts).
 *
 * Shapes (both found by one precompiled regex, {@link HONEYTOKEN_PATTERN}):
 * - `shx_` + 32 lower-case hex = 128 random bits; what our own fake API keys and deploy tokens use.
 * - `AKIA` + 16 characters of [A-Z2-7]: the shape of an AWS access key id, 80 random bits (all the
 *   20-character shape can hold; 2^80 is still unguessable). An attacker using the pair signs
 *   requests with SigV4, whose Authorization header carries the key id in clear
 *   (`Credential=AKIA…/date/region/…`), which is where we see it. The paired secret is decoration
 *   (it never travels in clear) and is not stored.
 * Caveat: if the attacker tries the fake AWS key against AWS itself we do not see it; only use
 * against something behind a guardian is detected.
 */
import { randomFillSync } from 'node:crypto';
import { invariant } from '../../../platform/invariant';
import type { HoneytokenMaterial, HoneytokenShape } from './decoy-catalog';
import type { PreparedRequest } from './threat-signals';
import { TIER_POLICIES, Tier, isTier } from './tiers';

/** Both token shapes; global flag for matchAll. Word boundaries keep longer strings from matching. */
export const HONEYTOKEN_PATTERN = /\b(?:shx_[0-9a-f]{32}|AKIA[A-Z2-7]{16})\b/g;
/** Bound on candidate tokens looked up per request (each is one HGETALL inside the Assess script). */
export const HONEYTOKENS_PER_REQUEST_MAX = 4;
/** Default honeytoken lifetime: 90 days. */
export const HONEYTOKEN_TTL_SECONDS_DEFAULT = 90 * 86_400;
const BASIC_AUTH_CHARS_MAX = 1_024;
const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

export interface MintedHoneytoken {
  readonly shape: HoneytokenShape;
  readonly token: string;
}

/**
 * Cryptographically random bytes drawn from a pooled buffer: the engine mints a candidate token
 * for every tier a request can reach, and one `randomFillSync` per 4 KiB instead of one per
 * token keeps that cheap. Bytes are never handed out twice.
 */
class RandomPool {
  private readonly pool = Buffer.alloc(4_096);
  private offset = this.pool.length;

  take(count: number): Buffer {
    invariant(count > 0, 'random draw of at least 1 byte');
    invariant(count <= 64, 'random draw of at most 64 bytes');
    if (this.offset + count > this.pool.length) {
      randomFillSync(this.pool);
      this.offset = 0;
    }
    const out = Buffer.from(this.pool.subarray(this.offset, this.offset + count));
    this.pool.fill(0, this.offset, this.offset + count);
    this.offset += count;
    return out;
  }
}

const randomPool = new RandomPool();

/**
 * Mints a token for a decoy served to `tier`. Refuses benign tiers: the third guard of the tier
 * rule, at the very place a secret comes into existence.
 */
export function mintHoneytoken(shape: HoneytokenShape, tier: Tier): MintedHoneytoken {
  invariant(TIER_POLICIES[tier].mayServeSecrets, `no honeytoken may be minted for tier ${tier}`);
  if (shape === 'shx') return { shape, token: `shx_${randomPool.take(16).toString('hex')}` };
  const bytes = randomPool.take(10); // 80 bits → 16 base32 characters
  let bits = 0;
  let value = 0;
  let id = 'AKIA';
  for (const byte of bytes) {
    value = ((value << 8) | byte) & 0xffff;
    bits += 8;
    while (bits >= 5) {
      id += BASE32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  invariant(id.length === 20, 'AWS-shaped token has 20 characters');
  return { shape, token: id };
}

/**
 * The material a decoy template is rendered with: the token, plus a paired 40-character secret
 * (what an AWS secret key or a database password looks like). The secret is decoration — it is
 * not stored and not watched — so it is drawn only for the decoy actually served.
 */
export function honeytokenMaterial(minted: MintedHoneytoken): HoneytokenMaterial {
  return { token: minted.token, secret: randomPool.take(30).toString('base64') };
}

/** For logs and alerts: enough to correlate, never the usable token. */
export function redactToken(token: string): string {
  return `${token.slice(0, 8)}…`;
}

export interface FoundToken {
  readonly token: string;
  /** Where it was: `path`, `query`, `body`, `header:<name>`. */
  readonly location: string;
}

function collect(text: string, location: string, found: Map<string, FoundToken>): void {
  if (found.size >= HONEYTOKENS_PER_REQUEST_MAX) return;
  if (!text.includes('shx_') && !text.includes('AKIA')) return; // cheap prefilter: almost always exits here
  for (const match of text.matchAll(HONEYTOKEN_PATTERN)) {
    if (!found.has(match[0])) found.set(match[0], { token: match[0], location });
    if (found.size >= HONEYTOKENS_PER_REQUEST_MAX) return;
  }
}

/**
 * Every candidate token in a request: raw and decoded path and query, body excerpt, every header
 * value, and the decoded credentials of `Authorization: Basic` (where a stolen deploy token from
 * a fake git config ends up). At most {@link HONEYTOKENS_PER_REQUEST_MAX}.
 */
export function findHoneytokens(req: PreparedRequest): FoundToken[] {
  const found = new Map<string, FoundToken>();
  const input = req.input;
  collect(input.path, 'path', found);
  collect(req.decodedPath, 'path', found);
  collect(input.query, 'query', found);
  collect(req.decodedQuery, 'query', found);
  // Parsed fields first (they name where: `body.password`), then the raw body (what a parser missed).
  for (const field of req.body?.fields ?? []) collect(field.text, field.location, found);
  if (input.bodyExcerpt !== undefined) collect(input.bodyExcerpt, 'body', found);
  for (const [name, value] of req.headers) {
    collect(value, `header:${name}`, found);
    if (name !== 'authorization') continue;
    // Each credential on its own: `Authorization` twins differing in case arrive joined with ", "
    // (prepareRequest), and base64 has no comma. Bounded by the header value's length.
    for (const credentials of value.split(',')) {
      const basic = /^\s*basic\s+/i.exec(credentials);
      if (basic === null) continue;
      const encoded = credentials.slice(basic[0].length, basic[0].length + BASIC_AUTH_CHARS_MAX);
      collect(Buffer.from(encoded, 'base64').toString('latin1'), 'header:authorization (basic)', found);
    }
  }
  if (input.userAgent !== '' && !req.headers.has('user-agent')) collect(input.userAgent, 'header:user-agent', found);
  return [...found.values()];
}

/** What Redis knows about a minted token. */
export interface HoneytokenRecord {
  readonly decisionId: string;
  readonly decoyId: string;
  readonly tier: Tier;
  readonly shape: HoneytokenShape;
  readonly mintedAtMs: number;
}

export function parseHoneytokenRecord(record: Readonly<Record<string, string>> | null): HoneytokenRecord | undefined {
  if (record === null) return undefined;
  const tier = record.t;
  const shape = record.s;
  if (record.d === undefined || record.o === undefined || !isTier(tier) || (shape !== 'shx' && shape !== 'aws')) return undefined;
  return { decisionId: record.d, decoyId: record.o, tier, shape, mintedAtMs: Number(record.m) || 0 };
}

/**
 * Emitted when a minted honeytoken comes back. The engine's `onHoneytokenAlert` callback receives
 * it; the gRPC layer logs it and counts it in a metric. Contains no usable token.
 */
export interface HoneytokenAlert {
  /** First 8 characters of the token plus an ellipsis. */
  readonly tokenPrefix: string;
  readonly shape: HoneytokenShape;
  /** Decision that minted (and served) the token, and its decoy and tier. */
  readonly originDecisionId: string;
  readonly originDecoyId: string;
  readonly originTier: Tier;
  readonly mintedAtMs: number;
  /** The Assess request that carried it. */
  readonly decisionId: string;
  readonly seenAtMs: number;
  readonly clientIp: string;
  readonly sessionKey: string;
  readonly location: string;
  /** True the first time this token is seen (the only time the decoy is credited). */
  readonly firstUse: boolean;
  /** Reward added to the origin decoy's arm by this sighting (0 after the first use). */
  readonly creditedReward: number;
}
