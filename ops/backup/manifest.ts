/**
 * The manifest written beside each archive (`<archive>.manifest.json`). It is
 * written last, after the archive is complete and renamed into place, so a
 * manifest's presence means a finished backup; prune touches nothing without
 * one. It carries what verify checks the archive against (checksum, sizes, key
 * id) and what an operator needs to pick a backup (database, time, versions).
 */
import { createReadStream, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { createHash } from 'node:crypto';
import { z } from 'zod';
import { FORMAT_VERSION } from './archive-format';
import { BackupIntegrityError } from './backup-errors';

export const MANIFEST_SUFFIX = '.manifest.json';
export const ARCHIVE_SUFFIX = '.pgdump.enc';

const hex = (bytes: number) => z.string().regex(new RegExp(`^[0-9a-f]{${bytes * 2}}$`));
const byteCount = z.number().int().nonnegative();

export const manifestSchema = z.object({
  tool: z.literal('shieldx-backup'),
  formatVersion: z.literal(FORMAT_VERSION),
  /** Archive file name, in the manifest's own directory. */
  archive: z.string().min(1).refine((name) => basename(name) === name, 'archive must be a bare file name'),
  database: z.string().min(1),
  serverVersion: z.string().min(1),
  serverVersionNum: z.number().int().positive(),
  pgDumpVersion: z.string().min(1),
  pgDumpMajor: z.number().int().positive(),
  /** When pg_dump started: the snapshot the dump holds is from about then. */
  createdAt: z.string().datetime(),
  completedAt: z.string().datetime(),
  compression: z.enum(['none', 'gzip']),
  cipher: z.literal('aes-256-gcm'),
  chunkSizeBytes: z.number().int().positive(),
  chunkCount: z.number().int().positive(),
  keyId: hex(8),
  sizes: z.object({
    /** Bytes pg_dump wrote (custom format, its own compression off when we gzip). */
    plainBytes: byteCount,
    /** Bytes after our compression stage (= plainBytes when compression is none). */
    compressedBytes: byteCount,
    /** Size of the archive file. */
    encryptedBytes: byteCount,
  }),
  /** SHA-256 of the archive file, hex. */
  sha256: hex(32),
});

export type Manifest = z.infer<typeof manifestSchema>;

export function manifestPathFor(archivePath: string): string {
  return `${archivePath}${MANIFEST_SUFFIX}`;
}

/** Writes the manifest atomically (temp file + rename). */
export function writeManifest(archivePath: string, manifest: Manifest): string {
  const path = manifestPathFor(archivePath);
  const temp = `${path}.partial`;
  writeFileSync(temp, `${JSON.stringify(manifestSchema.parse(manifest), null, 2)}\n`, { mode: 0o600 });
  renameSync(temp, path);
  return path;
}

export type ManifestRead = { ok: true; manifest: Manifest; path: string; archivePath: string } | { ok: false; path: string; problem: string };

/**
 * Reads and validates a manifest; also checks the archive it names exists
 * beside it with the recorded size (cheap: no hashing).
 */
export function readManifest(manifestPath: string): ManifestRead {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(manifestPath, 'utf8'));
  } catch (error) {
    return { ok: false, path: manifestPath, problem: `unreadable or not JSON: ${(error as Error).message}` };
  }
  const parsed = manifestSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    return { ok: false, path: manifestPath, problem: `invalid manifest: ${issue.path.join('.') || '(root)'}: ${issue.message}` };
  }
  const manifest = parsed.data;
  const archivePath = join(dirname(manifestPath), manifest.archive);
  if (manifestPathFor(archivePath) !== manifestPath) {
    return { ok: false, path: manifestPath, problem: `manifest names archive ${manifest.archive}, which does not match its own file name` };
  }
  let size: number;
  try {
    size = statSync(archivePath).size;
  } catch {
    return { ok: false, path: manifestPath, problem: `archive ${manifest.archive} is missing` };
  }
  if (size !== manifest.sizes.encryptedBytes) {
    return { ok: false, path: manifestPath, problem: `archive ${manifest.archive} is ${size} bytes, manifest says ${manifest.sizes.encryptedBytes}` };
  }
  return { ok: true, manifest, path: manifestPath, archivePath };
}

/** SHA-256 of a file, streamed. */
export async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

export interface LocatedManifest {
  readonly manifest: Manifest;
  readonly manifestPath: string;
  readonly archivePath: string;
}

/**
 * The manifest of an archive, given either the archive's path or the
 * manifest's. Validates the manifest only; the archive is checked by reading it.
 */
export function locateManifest(path: string): LocatedManifest {
  const manifestPath = path.endsWith(MANIFEST_SUFFIX) ? path : manifestPathFor(path);
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(manifestPath, 'utf8'));
  } catch (error) {
    const missing = (error as NodeJS.ErrnoException).code === 'ENOENT';
    throw new BackupIntegrityError(
      'MANIFEST_INVALID',
      missing
        ? `no manifest at ${manifestPath}: the backup is incomplete or the manifest was moved (it must sit beside the archive)`
        : `manifest ${manifestPath} is unreadable or not JSON: ${(error as Error).message}`,
    );
  }
  const parsed = manifestSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new BackupIntegrityError('MANIFEST_INVALID', `manifest ${manifestPath} is invalid: ${issue.path.join('.') || '(root)'}: ${issue.message}`);
  }
  const archivePath = join(dirname(manifestPath), parsed.data.archive);
  if (manifestPathFor(archivePath) !== manifestPath) {
    throw new BackupIntegrityError('MANIFEST_INVALID', `manifest ${manifestPath} names archive ${parsed.data.archive}, not the archive beside it`);
  }
  return { manifest: parsed.data, manifestPath, archivePath };
}
