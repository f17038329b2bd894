/**
 * `prune`: deletes backups older than N days, judged by the manifest's
 * createdAt (not the file's mtime, which a copy or restore from tape resets).
 * Only backups with a valid manifest whose archive sits beside it with the
 * recorded size are ever deleted; anything else in the directory is reported
 * and left alone. The newest `keepLast` backups of each database are kept
 * whatever their age, so a backup job that silently stopped never ends in an
 * empty directory.
 */
import { readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { BackupUsageError } from './backup-errors';
import { ARCHIVE_SUFFIX, MANIFEST_SUFFIX, readManifest, type Manifest } from './manifest';

export interface PruneOptions {
  readonly dir: string;
  readonly olderThanDays: number;
  /** Newest backups kept per database regardless of age (default 1). */
  readonly keepLast?: number;
  readonly dryRun?: boolean;
  readonly now?: Date;
}

export interface PrunedBackup {
  readonly archive: string;
  readonly manifest: string;
  readonly database: string;
  readonly createdAt: string;
}

export interface PruneResult {
  readonly cutoff: string;
  readonly deleted: PrunedBackup[];
  readonly kept: PrunedBackup[];
  /** Files left alone, and why. */
  readonly skipped: { file: string; reason: string }[];
  readonly dryRun: boolean;
}

const DAY_MS = 86_400_000;

export function prune(options: PruneOptions): PruneResult {
  if (!Number.isFinite(options.olderThanDays) || options.olderThanDays < 0) {
    throw new BackupUsageError('--older-than-days must be a number of days, 0 or more');
  }
  const keepLast = options.keepLast ?? 1;
  if (!Number.isInteger(keepLast) || keepLast < 0) throw new BackupUsageError('--keep-last must be an integer, 0 or more');
  const now = options.now ?? new Date();
  const cutoff = new Date(now.getTime() - options.olderThanDays * DAY_MS);

  let names: string[];
  try {
    names = readdirSync(options.dir);
  } catch (error) {
    throw new BackupUsageError(`cannot read backup directory ${options.dir}: ${(error as Error).message}`);
  }
  const skipped: PruneResult['skipped'] = [];
  const valid: { manifest: Manifest; manifestPath: string; archivePath: string }[] = [];
  const claimed = new Set<string>();
  for (const name of names.sort()) {
    if (!name.endsWith(MANIFEST_SUFFIX)) continue;
    const read = readManifest(join(options.dir, name));
    claimed.add(name);
    if (!read.ok) {
      skipped.push({ file: name, reason: read.problem });
      continue;
    }
    claimed.add(read.manifest.archive);
    valid.push({ manifest: read.manifest, manifestPath: read.path, archivePath: read.archivePath });
  }
  for (const name of names) {
    if (claimed.has(name)) continue;
    if (name.endsWith(`${ARCHIVE_SUFFIX}.partial`) || name.endsWith(`${MANIFEST_SUFFIX}.partial`)) {
      skipped.push({ file: name, reason: 'unfinished backup (.partial): left for an operator' });
    } else if (name.endsWith(ARCHIVE_SUFFIX)) {
      skipped.push({ file: name, reason: 'archive without a valid manifest: never deleted automatically' });
    }
  }

  const byDatabase = new Map<string, typeof valid>();
  for (const entry of valid) {
    const list = byDatabase.get(entry.manifest.database) ?? [];
    list.push(entry);
    byDatabase.set(entry.manifest.database, list);
  }
  const deleted: PrunedBackup[] = [];
  const kept: PrunedBackup[] = [];
  for (const list of byDatabase.values()) {
    list.sort((a, b) => Date.parse(b.manifest.createdAt) - Date.parse(a.manifest.createdAt));
    list.forEach((entry, position) => {
      const item: PrunedBackup = {
        archive: entry.manifest.archive,
        manifest: entry.manifestPath,
        database: entry.manifest.database,
        createdAt: entry.manifest.createdAt,
      };
      const old = Date.parse(entry.manifest.createdAt) < cutoff.getTime();
      if (!old || position < keepLast) {
        kept.push(item);
        return;
      }
      if (!options.dryRun) {
        // Manifest first: a crash in between leaves an archive without a manifest, which nothing trusts.
        rmSync(entry.manifestPath);
        rmSync(entry.archivePath);
      }
      deleted.push(item);
    });
  }
  return { cutoff: cutoff.toISOString(), deleted, kept, skipped, dryRun: options.dryRun ?? false };
}
