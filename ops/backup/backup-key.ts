/**
 * The backup master key: 32 bytes from `--key-file` (raw bytes or base64 text)
 * or the SHIELDX_BACKUP_KEY environment variable (base64). Never from the
 * command line: argv is readable by every user through /proc and lands in
 * shell history and CI logs.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { BackupUsageError } from './backup-errors';

export const KEY_BYTES = 32;
export const KEY_ENV = 'SHIELDX_BACKUP_KEY';

/** First 8 bytes (16 hex digits) of SHA-256(key): names a key without revealing it. */
export function keyIdOf(key: Buffer): string {
  return createHash('sha256').update(key).digest().subarray(0, 8).toString('hex');
}

function decodeBase64Key(text: string, source: string): Buffer {
  const trimmed = text.trim();
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(trimmed)) {
    throw new BackupUsageError(`${source} is not base64 (expected 32 bytes, base64-encoded: 44 characters)`);
  }
  const key = Buffer.from(trimmed, 'base64');
  if (key.length !== KEY_BYTES) {
    throw new BackupUsageError(`${source} decodes to ${key.length} bytes; an AES-256 key is ${KEY_BYTES} bytes`);
  }
  return key;
}

export interface LoadedKey {
  readonly key: Buffer;
  readonly keyId: string;
  readonly source: string;
  /** Set when the key file can be read by group or others. */
  readonly warning?: string;
}

export function loadKey(keyFile: string | undefined, env: NodeJS.ProcessEnv = process.env): LoadedKey {
  if (keyFile !== undefined) {
    let content: Buffer;
    let mode: number;
    try {
      content = readFileSync(keyFile);
      mode = statSync(keyFile).mode;
    } catch (error) {
      throw new BackupUsageError(`cannot read key file ${keyFile}: ${(error as Error).message}`);
    }
    const key = content.length === KEY_BYTES ? content : decodeBase64Key(content.toString('latin1'), `key file ${keyFile}`);
    const warning = (mode & 0o077) !== 0 ? `key file ${keyFile} is readable by group/others (mode ${(mode & 0o777).toString(8)}): chmod 600 it` : undefined;
    return { key, keyId: keyIdOf(key), source: `file ${keyFile}`, warning };
  }
  const fromEnv = env[KEY_ENV];
  if (fromEnv !== undefined && fromEnv !== '') {
    const key = decodeBase64Key(fromEnv, KEY_ENV);
    return { key, keyId: keyIdOf(key), source: `environment ${KEY_ENV}` };
  }
  throw new BackupUsageError(`no backup key: pass --key-file FILE or set ${KEY_ENV} (base64 of 32 bytes)`);
}

/** Writes a new random key, base64, mode 0600; refuses to overwrite. */
export function generateKeyFile(path: string): LoadedKey {
  const key = randomBytes(KEY_BYTES);
  try {
    writeFileSync(path, `${key.toString('base64')}\n`, { mode: 0o600, flag: 'wx' });
  } catch (error) {
    throw new BackupUsageError(`cannot create key file ${path}: ${(error as Error).message}`);
  }
  return { key, keyId: keyIdOf(key), source: `file ${path}` };
}
