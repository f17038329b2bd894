/**
 * API-key authentication: `authorization: Bearer <key>`. Only SHA-256 hashes of
 * keys are configured; a presented key is hashed and compared against every
 * configured hash with a constant-time compare, without stopping at the first
 * match, so timing tells nothing about which key (or how much of one) matched.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { ApiKeyConfig } from './config';

/** Scope that grants everything (operators, the dev key). */
export const ADMIN_SCOPE = '*';

export interface Principal {
  readonly keyId: string;
  readonly scopes: ReadonlySet<string>;
}

export type AuthResult =
  | { readonly ok: true; readonly principal: Principal }
  | { readonly ok: false; readonly reason: 'MISSING_CREDENTIALS' | 'INVALID_CREDENTIALS' };

const MAX_AUTHORIZATION_LENGTH = 1024;

export function sha256Hex(key: string): string {
  return createHash('sha256').update(key, 'utf8').digest('hex');
}

/** A fresh random key and its configuration entry (dev start-up and tests). */
export function generateApiKey(id: string, scopes: string[]): { key: string; config: ApiKeyConfig } {
  const key = `shx_${randomBytes(24).toString('base64url')}`;
  return { key, config: { id, sha256: sha256Hex(key), scopes } };
}

export class ApiKeyVerifier {
  private readonly keys: { id: string; hash: Buffer; scopes: ReadonlySet<string> }[];

  constructor(keys: readonly ApiKeyConfig[]) {
    this.keys = keys.map((k) => ({ id: k.id, hash: Buffer.from(k.sha256, 'hex'), scopes: new Set(k.scopes) }));
  }

  /** Checks an `authorization` metadata value. */
  authenticate(authorization: string | undefined): AuthResult {
    if (authorization === undefined || authorization === '') return { ok: false, reason: 'MISSING_CREDENTIALS' };
    if (authorization.length > MAX_AUTHORIZATION_LENGTH) return { ok: false, reason: 'INVALID_CREDENTIALS' };
    const match = /^Bearer\s+(\S+)\s*$/i.exec(authorization);
    if (!match) return { ok: false, reason: 'INVALID_CREDENTIALS' };
    const presented = createHash('sha256').update(match[1]!, 'utf8').digest();
    let found: (typeof this.keys)[number] | undefined;
    for (const key of this.keys) {
      // No early exit: every configured key is compared.
      if (timingSafeEqual(presented, key.hash) && found === undefined) found = key;
    }
    if (!found) return { ok: false, reason: 'INVALID_CREDENTIALS' };
    return { ok: true, principal: { keyId: found.id, scopes: found.scopes } };
  }
}

export function hasScope(principal: Principal, scope: string): boolean {
  return principal.scopes.has(ADMIN_SCOPE) || principal.scopes.has(scope);
}
