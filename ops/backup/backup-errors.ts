/**
 * The backup tool's errors. The CLI maps each class to its own exit code so a
 * cron job or a drill script can tell "the archive is bad" (page someone) from
 * "you typed it wrong" or "the database was unreachable".
 */

/** Bad arguments or configuration: exit code 2. */
export class BackupUsageError extends Error {
  override readonly name = 'BackupUsageError';
}

export type IntegrityReason =
  | 'TAMPERED'
  | 'TRUNCATED'
  | 'WRONG_KEY'
  | 'CHECKSUM_MISMATCH'
  | 'MANIFEST_MISMATCH'
  | 'MANIFEST_INVALID'
  | 'NOT_AN_ARCHIVE'
  | 'UNSUPPORTED_FORMAT';

/** The archive is not what was written: exit code 3. Never restore from it. */
export class BackupIntegrityError extends Error {
  override readonly name = 'BackupIntegrityError';
  constructor(
    readonly reason: IntegrityReason,
    message: string,
  ) {
    super(message);
  }
}

/** A PostgreSQL client tool failed or none fits the server: exit code 4. */
export class PgToolError extends Error {
  override readonly name = 'PgToolError';
  constructor(
    message: string,
    readonly stderr = '',
  ) {
    super(message);
  }
}

/** Restore refused to touch a database: exit code 5. */
export class RestoreRefusedError extends Error {
  override readonly name = 'RestoreRefusedError';
}

export const EXIT_CODES = {
  ok: 0,
  failure: 1,
  usage: 2,
  integrity: 3,
  pgTool: 4,
  refused: 5,
} as const;

export function exitCodeFor(error: unknown): number {
  if (error instanceof BackupUsageError) return EXIT_CODES.usage;
  if (error instanceof BackupIntegrityError) return EXIT_CODES.integrity;
  if (error instanceof PgToolError) return EXIT_CODES.pgTool;
  if (error instanceof RestoreRefusedError) return EXIT_CODES.refused;
  // node:util parseArgs rejects unknown options and missing values with these codes.
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS')) return EXIT_CODES.usage;
  return EXIT_CODES.failure;
}
