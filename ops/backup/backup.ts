/**
 * `backup`: pg_dump (custom format) → gzip → AES-256-GCM chunks → file, all
 * streamed. The archive is written as `<name>.partial`, fsynced and renamed
 * only after pg_dump exited 0; the manifest is written after that. A failed
 * dump leaves no archive and no manifest behind.
 *
 * Compression: pg_dump's custom format compresses each table's data on its
 * own (zlib) but leaves the table of contents plain. We run pg_dump with
 * `--compress=0` and gzip the whole stream instead, so it is compressed once
 * (never twice), the manifest can record the true dump size next to the
 * compressed one, and the compression runs in Node's thread pool beside the
 * encryption. zstd is not in Node 20's zlib; brotli compresses a little
 * better but several times slower at useful levels. `--compression none`
 * keeps pg_dump's own compression and stores its output as it is.
 */
import { closeSync, createWriteStream, fsyncSync, mkdirSync, openSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { DEFAULT_CHUNK_BYTES, EncryptStream, type Compression } from './archive-format';
import { PgToolError } from './backup-errors';
import { keyIdOf } from './backup-key';
import { killTool, Meter, startTool } from './child-process';
import { ARCHIVE_SUFFIX, writeManifest, type Manifest } from './manifest';
import { connectionForTool, databaseOf, serverVersion, toolsForServer } from './pg-tools';

export interface BackupOptions {
  /** Connection URL of the database to dump. */
  readonly databaseUrl: string;
  readonly outDir: string;
  readonly key: Buffer;
  readonly compression?: Compression;
  readonly chunkSize?: number;
  readonly env?: NodeJS.ProcessEnv;
}

export interface BackupResult {
  readonly archivePath: string;
  readonly manifestPath: string;
  readonly manifest: Manifest;
}

/** UTC, sortable, no colons (safe in file names everywhere): 20261124T203505123Z. */
export function fileStamp(date: Date): string {
  return date.toISOString().replace(/[-:]/g, '').replace('.', '');
}

function fsyncPath(path: string): void {
  const fd = openSync(path, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

export async function backup(options: BackupOptions): Promise<BackupResult> {
  const compression = options.compression ?? 'gzip';
  const env = options.env ?? process.env;
  const database = databaseOf(options.databaseUrl);
  const server = await serverVersion(options.databaseUrl);
  const tools = toolsForServer(server, ['pg_dump'], env);

  mkdirSync(options.outDir, { recursive: true, mode: 0o700 });
  const createdAt = new Date();
  const safeName = database.replace(/[^A-Za-z0-9_.-]/g, '_');
  const archiveName = `${safeName}-${fileStamp(createdAt)}${ARCHIVE_SUFFIX}`;
  const archivePath = join(options.outDir, archiveName);
  const partialPath = `${archivePath}.partial`;

  const connection = connectionForTool(options.databaseUrl, env);
  const args = ['--format=custom', '--no-password', `--dbname=${connection.dbname}`];
  if (compression === 'gzip') args.push('--compress=0');
  const dump = startTool(join(tools.dir, 'pg_dump'), args, connection.env);
  dump.child.stdin.end();

  const plain = new Meter();
  const compressed = new Meter();
  const encrypt = new EncryptStream({ key: options.key, compression, chunkSize: options.chunkSize ?? DEFAULT_CHUNK_BYTES });
  const written = new Meter(true);
  const stages = compression === 'gzip' ? [plain, createGzip({ level: 6 }), compressed] : [plain, compressed];
  try {
    await pipeline([dump.child.stdout, ...stages, encrypt, written, createWriteStream(partialPath, { flags: 'wx', mode: 0o600 })]);
    const code = await dump.exited;
    // pg_dump failing mid-way still ends its stdout cleanly: only its exit code tells.
    if (code !== 0) throw new PgToolError(`pg_dump exited with code ${code}: ${dump.stderr() || '(no message)'}`, dump.stderr());
    fsyncPath(partialPath);
    renameSync(partialPath, archivePath);
    fsyncPath(options.outDir);
  } catch (error) {
    await killTool(dump);
    rmSync(partialPath, { force: true });
    throw error;
  }

  const manifest: Manifest = {
    tool: 'shieldx-backup',
    formatVersion: 1,
    archive: archiveName,
    database,
    serverVersion: server.text,
    serverVersionNum: server.num,
    pgDumpVersion: tools.version,
    pgDumpMajor: tools.major,
    createdAt: createdAt.toISOString(),
    completedAt: new Date().toISOString(),
    compression,
    cipher: 'aes-256-gcm',
    chunkSizeBytes: options.chunkSize ?? DEFAULT_CHUNK_BYTES,
    chunkCount: encrypt.chunkCount,
    keyId: keyIdOf(options.key),
    sizes: { plainBytes: plain.bytes, compressedBytes: compressed.bytes, encryptedBytes: written.bytes },
    sha256: written.digest(),
  };
  const manifestPath = writeManifest(archivePath, manifest);
  fsyncPath(options.outDir);
  return { archivePath, manifestPath, manifest };
}

