/**
 * The read side shared by verify and restore: file → SHA-256 → decrypt (each
 * chunk authenticated before release) → gunzip → consumer, then every figure
 * in the manifest checked against what was read. The consumer only ever sees
 * authenticated bytes; whether the whole file is intact is known when this
 * resolves, so a consumer with side effects (pg_restore) must not be allowed
 * to finish before then.
 */
import { createReadStream } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { DecryptStream } from './archive-format';
import { BackupIntegrityError } from './backup-errors';
import { keyIdOf } from './backup-key';
import { Meter } from './child-process';
import type { Manifest } from './manifest';

export interface ReadSummary {
  readonly chunkCount: number;
  readonly plainBytes: number;
  readonly compressedBytes: number;
  readonly encryptedBytes: number;
  readonly sha256: string;
}

/** Refuses a key that is not the manifest's before reading a byte. */
export function assertKeyMatches(manifest: Manifest, key: Buffer): void {
  const keyId = keyIdOf(key);
  if (keyId !== manifest.keyId) {
    throw new BackupIntegrityError(
      'WRONG_KEY',
      `backup was encrypted with key id ${manifest.keyId}, the supplied key has id ${keyId}: use the key recorded for this backup`,
    );
  }
}

export async function readArchive(
  archivePath: string,
  manifest: Manifest,
  key: Buffer,
  consume: (plaintext: AsyncIterable<Buffer>) => Promise<void>,
): Promise<ReadSummary> {
  assertKeyMatches(manifest, key);
  const file = new Meter(true);
  const decrypt = new DecryptStream({
    key,
    onHeader: (header) => {
      if (header.compression !== manifest.compression || header.chunkSize !== manifest.chunkSizeBytes) {
        throw new BackupIntegrityError(
          'MANIFEST_MISMATCH',
          `archive header (compression ${header.compression}, chunk ${header.chunkSize} B) does not match its manifest ` +
            `(compression ${manifest.compression}, chunk ${manifest.chunkSizeBytes} B): wrong manifest for this archive`,
        );
      }
    },
  });
  const plain = new Meter();
  try {
    if (manifest.compression === 'gzip') await pipeline(createReadStream(archivePath), file, decrypt, createGunzip(), plain, consume);
    else await pipeline(createReadStream(archivePath), file, decrypt, plain, consume);
  } catch (error) {
    if (error instanceof BackupIntegrityError) throw error;
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new BackupIntegrityError('MANIFEST_INVALID', `archive ${archivePath} is missing`);
    if (typeof code === 'string' && code.startsWith('Z_')) {
      // Only authenticated bytes reach gunzip, so this is a bad archive written with our key, not tampering in transit.
      throw new BackupIntegrityError('TAMPERED', `archive decrypted but its compressed stream is corrupt (${(error as Error).message})`);
    }
    throw error;
  }
  const summary: ReadSummary = {
    chunkCount: decrypt.chunkCount,
    plainBytes: plain.bytes,
    compressedBytes: decrypt.plaintextBytes,
    encryptedBytes: file.bytes,
    sha256: file.digest(),
  };
  if (summary.sha256 !== manifest.sha256) {
    throw new BackupIntegrityError(
      'CHECKSUM_MISMATCH',
      `archive SHA-256 ${summary.sha256} does not match the manifest's ${manifest.sha256}: the archive is not the one this manifest describes`,
    );
  }
  const expected = manifest.sizes;
  const mismatches = [
    summary.encryptedBytes !== expected.encryptedBytes && `file ${summary.encryptedBytes} B vs ${expected.encryptedBytes} B`,
    summary.compressedBytes !== expected.compressedBytes && `compressed ${summary.compressedBytes} B vs ${expected.compressedBytes} B`,
    summary.plainBytes !== expected.plainBytes && `dump ${summary.plainBytes} B vs ${expected.plainBytes} B`,
    summary.chunkCount !== manifest.chunkCount && `${summary.chunkCount} chunks vs ${manifest.chunkCount}`,
  ].filter(Boolean);
  if (mismatches.length > 0) {
    throw new BackupIntegrityError('MANIFEST_MISMATCH', `archive does not match its manifest: ${mismatches.join(', ')}`);
  }
  return summary;
}
