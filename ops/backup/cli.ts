/**
 * shieldx-backup: encrypted PostgreSQL backups of the ShieldX databases.
 *
 *   npx tsx ops/backup/cli.ts backup  --db-url URL --out-dir DIR [--key-file F]
 *   npx tsx ops/backup/cli.ts verify  ARCHIVE [--key-file F]
 *   npx tsx ops/backup/cli.ts restore ARCHIVE --target-db NAME [--db-url URL] [--force]
 *   npx tsx ops/backup/cli.ts prune   --dir DIR --older-than-days N [--keep-last K] [--dry-run]
 *   npx tsx ops/backup/cli.ts keygen  --out FILE
 *
 * Each command takes only its own options (and --json); any other is a usage error.
 *
 * Exit codes: 0 ok, 1 other failure, 2 usage, 3 integrity (tampered, truncated,
 * wrong key, checksum), 4 PostgreSQL tool, 5 restore refused. See README.md.
 */
import { parseArgs } from 'node:util';
import { backup } from './backup';
import { BackupIntegrityError, BackupUsageError, exitCodeFor, PgToolError, RestoreRefusedError } from './backup-errors';
import { generateKeyFile, KEY_ENV, loadKey } from './backup-key';
import { prune } from './prune';
import { redactUrl } from './pg-tools';
import { restore } from './restore';
import { verify } from './verify';

const USAGE = `usage: shieldx-backup <command> [options]

commands:
  backup   --db-url URL --out-dir DIR [--compression gzip|none] [--chunk-kib N]
  verify   ARCHIVE [--quiet]
  restore  ARCHIVE --target-db NAME [--db-url URL] [--force] [--no-owner] [--no-privileges] [--skip-verify]
  prune    --dir DIR --older-than-days N [--keep-last K] [--dry-run]
  keygen   --out FILE

key: --key-file FILE (32 raw bytes or base64), or ${KEY_ENV}=<base64 of 32 bytes>.
     Never on the command line.
database: --db-url, or DATABASE_URL. PG_BIN_DIR overrides where pg_dump/pg_restore are found.
--json prints the result as JSON.`;

const KEY_ON_ARGV =
  `--key is not accepted: a key on the command line is visible to every user (ps, /proc/<pid>/cmdline) ` +
  `and kept in shell history. Use --key-file FILE (mode 600) or ${KEY_ENV}.`;

/** Every option any command takes; COMMAND_OPTIONS says which command takes which. */
const OPTIONS = {
  'key-file': { type: 'string' },
  'db-url': { type: 'string' },
  'out-dir': { type: 'string' },
  compression: { type: 'string' },
  'chunk-kib': { type: 'string' },
  quiet: { type: 'boolean' },
  'target-db': { type: 'string' },
  force: { type: 'boolean' },
  'no-owner': { type: 'boolean' },
  'no-privileges': { type: 'boolean' },
  'skip-verify': { type: 'boolean' },
  dir: { type: 'string' },
  'older-than-days': { type: 'string' },
  'keep-last': { type: 'string' },
  'dry-run': { type: 'boolean' },
  out: { type: 'string' },
  json: { type: 'boolean' },
} as const;
type OptionName = keyof typeof OPTIONS;
type OptionValues = { [K in OptionName]?: (typeof OPTIONS)[K]['type'] extends 'string' ? string : boolean };

const COMMAND_OPTIONS: Record<string, readonly OptionName[] | undefined> = {
  backup: ['db-url', 'out-dir', 'key-file', 'compression', 'chunk-kib', 'json'],
  verify: ['key-file', 'quiet', 'json'],
  restore: ['target-db', 'db-url', 'key-file', 'force', 'no-owner', 'no-privileges', 'skip-verify', 'json'],
  prune: ['dir', 'older-than-days', 'keep-last', 'dry-run', 'json'],
  keygen: ['out', 'json'],
};

type Out = (line: string) => void;

function requireString(value: string | undefined, flag: string): string {
  if (value === undefined || value === '') throw new BackupUsageError(`${flag} is required`);
  return value;
}

function onePositional(positionals: string[], command: string): string {
  if (positionals.length !== 1) throw new BackupUsageError(`${command} takes exactly one archive path (got ${positionals.length})`);
  return positionals[0]!;
}

function parseNumber(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n)) throw new BackupUsageError(`${flag} must be a number (got "${value}")`);
  return n;
}

function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(2)} MiB`;
}

export async function main(argv: string[], env: NodeJS.ProcessEnv, out: Out, err: Out): Promise<number> {
  try {
    if (argv.some((arg) => arg === '--key' || arg.startsWith('--key='))) throw new BackupUsageError(KEY_ON_ARGV);
    const [command, ...rest] = argv;
    if (command === undefined || command === 'help' || command === '--help' || command === '-h') {
      out(USAGE);
      return command === undefined ? 2 : 0;
    }
    const allowed = Object.hasOwn(COMMAND_OPTIONS, command) ? COMMAND_OPTIONS[command] : undefined;
    if (allowed === undefined) throw new BackupUsageError(`unknown command "${command}"\n${USAGE}`);
    // Each command accepts only its own options: a flag meant for another command (`restore … --dry-run`)
    // is refused rather than silently ignored.
    for (const arg of rest) {
      if (arg === '--') break;
      if (!arg.startsWith('--')) continue;
      const name = arg.slice(2).split('=', 1)[0]!;
      if (Object.hasOwn(OPTIONS, name) && !allowed.includes(name as OptionName)) {
        throw new BackupUsageError(`${command} does not take --${name}\n${USAGE}`);
      }
    }
    const { values, positionals } = parseArgs({
      args: rest,
      allowPositionals: true,
      strict: true,
      // Only this command's options: parseArgs rejects any other as unknown.
      options: Object.fromEntries(allowed.map((name) => [name, OPTIONS[name]])),
    }) as { values: OptionValues; positionals: string[] };
    const json = values.json === true;
    const key = () => {
      const loaded = loadKey(values['key-file'], env);
      if (loaded.warning) err(`warning: ${loaded.warning}`);
      return loaded;
    };
    const dbUrl = () => requireString(values['db-url'] ?? env.DATABASE_URL, '--db-url (or DATABASE_URL)');

    switch (command) {
      case 'backup': {
        const compression = values.compression ?? 'gzip';
        if (compression !== 'gzip' && compression !== 'none') throw new BackupUsageError('--compression must be gzip or none');
        const chunkKib = parseNumber(values['chunk-kib'], '--chunk-kib');
        if (chunkKib !== undefined && (!Number.isInteger(chunkKib) || chunkKib < 1 || chunkKib > 16 * 1024)) {
          throw new BackupUsageError('--chunk-kib must be an integer from 1 to 16384');
        }
        const url = dbUrl();
        const { key: keyBytes, keyId } = key();
        const result = await backup({
          databaseUrl: url,
          outDir: requireString(values['out-dir'], '--out-dir'),
          key: keyBytes,
          compression,
          chunkSize: chunkKib !== undefined ? chunkKib * 1024 : undefined,
          env,
        });
        if (json) out(JSON.stringify({ archivePath: result.archivePath, manifestPath: result.manifestPath, ...result.manifest }));
        else {
          const s = result.manifest.sizes;
          out(`backup of ${result.manifest.database} (${redactUrl(url)}, PostgreSQL ${result.manifest.serverVersion})`);
          out(`  archive   ${result.archivePath}`);
          out(`  manifest  ${result.manifestPath}`);
          out(`  sizes     dump ${mib(s.plainBytes)}, ${result.manifest.compression} ${mib(s.compressedBytes)}, encrypted ${mib(s.encryptedBytes)}`);
          out(`  sha256    ${result.manifest.sha256}`);
          out(`  key id    ${keyId}`);
        }
        return 0;
      }
      case 'verify': {
        const result = await verify({ path: onePositional(positionals, 'verify'), key: key().key, env });
        if (json) out(JSON.stringify({ ok: true, archivePath: result.archivePath, summary: result.summary, listing: result.listing }));
        else {
          out(`OK ${result.archivePath}`);
          out(`  database ${result.manifest.database}, taken ${result.manifest.createdAt} by ${result.manifest.pgDumpVersion}`);
          out(`  ${result.summary.chunkCount} chunks authenticated, end marker present, sha256 matches the manifest`);
          out(`  dump ${mib(result.summary.plainBytes)} read by ${result.pgRestore?.dir}/pg_restore --list:`);
          if (values.quiet !== true) out(result.listing ?? '');
        }
        return 0;
      }
      case 'restore': {
        const targetDb = requireString(values['target-db'], '--target-db');
        const url = dbUrl();
        const result = await restore({
          path: onePositional(positionals, 'restore'),
          key: key().key,
          serverUrl: url,
          targetDb,
          force: values.force === true,
          skipVerify: values['skip-verify'] === true,
          noOwner: values['no-owner'] === true,
          noPrivileges: values['no-privileges'] === true,
          env,
        });
        if (json) {
          out(JSON.stringify({ ok: true, targetDb, created: result.created, droppedExisting: result.droppedExisting, tables: result.tableCount, summary: result.summary }));
        } else {
          out(`restored ${result.manifest.archive} into database "${targetDb}" (${redactUrl(result.targetUrl)})`);
          out(`  ${result.droppedExisting ? 'dropped and recreated' : result.created ? 'created' : 'existing empty database used'}; ${result.tableCount} tables`);
          out(`  backup of ${result.manifest.database} taken ${result.manifest.createdAt}; pg_restore from ${result.pgRestore.dir}`);
        }
        return 0;
      }
      case 'prune': {
        const days = parseNumber(requireString(values['older-than-days'], '--older-than-days'), '--older-than-days')!;
        const keepLast = parseNumber(values['keep-last'], '--keep-last');
        const result = prune({
          dir: requireString(values.dir, '--dir'),
          olderThanDays: days,
          keepLast,
          dryRun: values['dry-run'] === true,
        });
        if (json) out(JSON.stringify(result));
        else {
          const verb = result.dryRun ? 'would delete' : 'deleted';
          out(`prune: backups created before ${result.cutoff}${result.dryRun ? ' (dry run)' : ''}`);
          for (const d of result.deleted) out(`  ${verb} ${d.archive} (${d.database}, ${d.createdAt})`);
          for (const k of result.kept) out(`  kept    ${k.archive} (${k.database}, ${k.createdAt})`);
          for (const s of result.skipped) out(`  skipped ${s.file}: ${s.reason}`);
          out(`  ${result.deleted.length} ${verb}, ${result.kept.length} kept, ${result.skipped.length} skipped`);
        }
        return 0;
      }
      case 'keygen': {
        const created = generateKeyFile(requireString(values.out, '--out'));
        out(json ? JSON.stringify({ keyFile: values.out, keyId: created.keyId }) : `wrote ${values.out} (mode 600), key id ${created.keyId}. Store a copy off this machine.`);
        return 0;
      }
      default:
        throw new BackupUsageError(`unknown command "${command}"\n${USAGE}`);
    }
  } catch (error) {
    err(describeError(error));
    return exitCodeFor(error);
  }
}

export function describeError(error: unknown): string {
  if (error instanceof BackupIntegrityError) return `INTEGRITY FAILURE (${error.reason}): ${error.message}. Do not restore from this archive.`;
  if (error instanceof BackupUsageError) return `usage error: ${error.message}`;
  if (error instanceof RestoreRefusedError) return `restore refused: ${error.message}`;
  if (error instanceof PgToolError) return `postgresql tool error: ${error.message}`;
  // parseArgs' own errors (unknown option, missing value) are usage errors too.
  const code = (error as { code?: string }).code;
  if (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS')) return `usage error: ${(error as Error).message}\n${USAGE}`;
  return `error: ${(error as Error).message ?? String(error)}`;
}

if (require.main === module) {
  main(process.argv.slice(2), process.env, (line) => process.stdout.write(`${line}\n`), (line) => process.stderr.write(`${line}\n`)).then(
    (code) => {
      process.exitCode = code;
    },
    (error: unknown) => {
      process.stderr.write(`error: ${String(error)}\n`);
      process.exitCode = 1;
    },
  );
}
