/**
 * The page-token codec of every List RPC (AIP-158): an opaque base64url of
 * `{"v":2,"c":[cursor...],"f":"<filter fingerprint>","m":"<mac>"}`.
 *
 * - Versioned (`v`), so the format can change without misreading old tokens.
 * - Bound to its query: the fingerprint of the request's filters is inside, so a token replayed
 *   with other filters is refused instead of returning a wrong page.
 * - The cursor (the position after the last row served) is strings only, and the caller's
 *   `parseCursor` must accept it: a token that was edited or forged is INVALID_ARGUMENT naming the
 *   field, never INTERNAL after a database round trip.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { ServiceError } from './service-error';

/**
 * v2: authenticated. `m` is an HMAC-SHA256 (128 bits kept) of the version, cursor and fingerprint
 * under a key every replica of a deployment derives alike (setPageTokenSecret, called at start
 * from PAGE_TOKEN_SECRET, or from the deployment's SHIELDX_API_KEYS when that is unset): a token
 * edited or forged by a caller is refused before its cursor is read, and a token made by one
 * replica is read by any other. v1 tokens (unauthenticated) are no longer accepted.
 */
const VERSION = 2;
let macKey: Buffer = createHash('sha256').update('shieldx page tokens: unconfigured').digest();

/** The secret page tokens are authenticated with (the key is derived from it; never logged). */
export function setPageTokenSecret(secret: string): void {
  macKey = createHmac('sha256', 'shieldx page tokens v2').update(secret).digest();
}

function mac(cursor: readonly string[], fingerprint: string): string {
  return createHmac('sha256', macKey).update(JSON.stringify([VERSION, cursor, fingerprint])).digest('base64url').slice(0, 22);
}
const TOKEN_LENGTH_MAX = 1024;
const CURSOR_PARTS_MAX = 8;

/** A short, stable fingerprint of the filters a query was made with (their JSON, in order). */
export function filterFingerprint(filter: unknown): string {
  return createHash('sha256')
    .update(JSON.stringify(filter, (_key, value: unknown) => (typeof value === 'bigint' ? value.toString() : value)))
    .digest('base64url')
    .slice(0, 16);
}

/** The token for the page after `cursor`; '' when there is no next page (`cursor` undefined). */
export function encodePageToken(cursor: readonly string[] | undefined, filter: unknown): string {
  if (cursor === undefined) return '';
  const f = filterFingerprint(filter);
  return Buffer.from(JSON.stringify({ v: VERSION, c: cursor, f, m: mac(cursor, f) })).toString('base64url');
}

/**
 * The cursor a token holds, read with `parseCursor` (which returns undefined for a cursor it does
 * not accept); undefined for '' (the first page). Throws INVALID_ARGUMENT naming `field` for
 * anything not made by `encodePageToken` with the same filter.
 */
export function decodePageToken<T>(
  token: string,
  filter: unknown,
  parseCursor: (cursor: readonly string[]) => T | undefined,
  field = 'page_token',
): T | undefined {
  if (token === '') return undefined;
  const bad = () => ServiceError.invalidArgument(field, 'is not a page token returned by this query');
  if (token.length > TOKEN_LENGTH_MAX || !/^[A-Za-z0-9_-]+$/.test(token)) throw bad();
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(token, 'base64url').toString('utf8'));
  } catch {
    throw bad();
  }
  // JSON.parse accepts any JSON value: reading fields of null would throw a TypeError (INTERNAL).
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw bad();
  const { v, c, f, m } = parsed as { v?: unknown; c?: unknown; f?: unknown; m?: unknown };
  if (v !== VERSION || f !== filterFingerprint(filter)) throw bad();
  if (!Array.isArray(c) || c.length === 0 || c.length > CURSOR_PARTS_MAX || !c.every((part) => typeof part === 'string')) throw bad();
  const expected = Buffer.from(mac(c as string[], f));
  if (typeof m !== 'string' || m.length !== expected.length || !timingSafeEqual(Buffer.from(m), expected)) throw bad();
  const cursor = parseCursor(c as string[]);
  if (cursor === undefined) throw bad();
  return cursor;
}
