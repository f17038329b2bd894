/**
 * Full contents of a database's tables, each ordered by its primary key, for
 * "restored equals original" checks in the backup tests and restore drills.
 * Rows go through to_jsonb, so every column type compares exactly (bigint,
 * numeric, bytea, timestamptz) without passing through JavaScript numbers.
 */
import pg from 'pg';

export interface TableSnapshot {
  /** schema.table */
  readonly table: string;
  readonly primaryKey: readonly string[];
  /** One JSON text per row, in primary-key order. */
  readonly rows: readonly string[];
}

function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/** Every ordinary table outside the system schemas (and the migration bookkeeping unless asked). */
export async function snapshotDatabase(databaseUrl: string, options: { includeMigrationTables?: boolean } = {}): Promise<Map<string, TableSnapshot>> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    const { rows: tables } = await client.query<{ schema: string; table: string; pk: string[] | null }>(`
      SELECT n.nspname AS schema, c.relname AS table,
             (SELECT array_agg(a.attname::text ORDER BY k.ord)
                FROM pg_index i
                CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
                JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
               WHERE i.indrelid = c.oid AND i.indisprimary) AS pk
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
       WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
       ORDER BY 1, 2`);
    const snapshot = new Map<string, TableSnapshot>();
    for (const t of tables) {
      if (!options.includeMigrationTables && t.table.startsWith('pgmigrations')) continue;
      const name = `${t.schema}.${t.table}`;
      const from = `${quoteIdent(t.schema)}.${quoteIdent(t.table)}`;
      // No primary key: order by the whole row's text, still deterministic.
      const order = t.pk && t.pk.length > 0 ? t.pk.map(quoteIdent).join(', ') : 'to_jsonb(r)::text';
      const { rows } = await client.query<{ row: string }>(`SELECT to_jsonb(r)::text AS row FROM ${from} r ORDER BY ${order}`);
      snapshot.set(name, { table: name, primaryKey: t.pk ?? [], rows: rows.map((r) => r.row) });
    }
    return snapshot;
  } finally {
    await client.end();
  }
}

/** Current values of every sequence (so restored ids continue where they stopped). */
export async function sequenceValues(databaseUrl: string): Promise<Record<string, string>> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    const { rows } = await client.query<{ name: string; value: string | null }>(
      `SELECT schemaname || '.' || sequencename AS name, last_value::text AS value FROM pg_sequences ORDER BY 1`,
    );
    return Object.fromEntries(rows.map((r) => [r.name, r.value ?? 'unset']));
  } finally {
    await client.end();
  }
}
