/**
 * `verify`: reads the whole archive — every chunk's tag, the end marker, the
 * SHA-256 and sizes against the manifest — and feeds the decrypted dump to
 * `pg_restore --list`, so a pass means "this restores", not only "these bytes
 * are intact".
 */
import { join } from 'node:path';
import { PgToolError } from './backup-errors';
import { feedStdin, killTool, startTool } from './child-process';
import { locateManifest, type Manifest } from './manifest';
import { pickBinDir, type PgBinDir } from './pg-tools';
import { assertKeyMatches, readArchive, type ReadSummary } from './read-archive';

export interface VerifyOptions {
  /** The archive or its manifest. */
  readonly path: string;
  readonly key: Buffer;
  /** Run pg_restore --list on the decrypted dump (default true). */
  readonly list?: boolean;
  readonly env?: NodeJS.ProcessEnv;
}

export interface VerifyResult {
  readonly archivePath: string;
  readonly manifest: Manifest;
  readonly summary: ReadSummary;
  /** pg_restore --list output (the archive's table of contents), when listed. */
  readonly listing?: string;
  readonly pgRestore?: PgBinDir;
}

/** pg_restore able to read what this manifest's pg_dump wrote. */
export function pgRestoreFor(manifest: Manifest, env: NodeJS.ProcessEnv, preferMajor?: number): PgBinDir {
  return pickBinDir({
    tools: ['pg_restore'],
    minMajor: manifest.pgDumpMajor,
    preferMajor: preferMajor !== undefined && preferMajor >= manifest.pgDumpMajor ? preferMajor : manifest.pgDumpMajor,
    reason: `archive written by ${manifest.pgDumpVersion}`,
    env,
  });
}

export async function verify(options: VerifyOptions): Promise<VerifyResult> {
  const env = options.env ?? process.env;
  const { manifest, archivePath } = locateManifest(options.path);
  assertKeyMatches(manifest, options.key);
  if (options.list === false) {
    const summary = await readArchive(archivePath, manifest, options.key, async (plaintext) => {
      for await (const _chunk of plaintext);
    });
    return { archivePath, manifest, summary };
  }

  const pgRestore = pgRestoreFor(manifest, env);
  const tool = startTool(join(pgRestore.dir, 'pg_restore'), ['--list'], env);
  let listing = '';
  tool.child.stdout.setEncoding('utf8');
  tool.child.stdout.on('data', (text: string) => {
    listing += text;
  });
  let summary: ReadSummary;
  try {
    // pg_restore --list may stop reading after the table of contents; the rest is still read and authenticated.
    summary = await readArchive(archivePath, manifest, options.key, (plaintext) => feedStdin(plaintext, tool.child, true));
  } catch (error) {
    await killTool(tool);
    throw error;
  }
  tool.child.stdin.end();
  const code = await tool.exited;
  if (code !== 0) {
    throw new PgToolError(`pg_restore --list could not read the decrypted dump (exit ${code}): ${tool.stderr() || '(no message)'}`, tool.stderr());
  }
  return { archivePath, manifest, summary, listing, pgRestore };
}
