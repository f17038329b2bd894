/**
 * `npm run migrate -- <service|all>`: applies migrations and exits. For
 * deployments where services start with MIGRATE_ON_START=false and a
 * Kubernetes Job (or a release step) migrates first, over a direct database
 * connection (the migration lock is session-level: not through PgBouncer in
 * transaction mode). Reads DATABASE_URL.
 */
import { ConfigError, loadConfig, platformConfigSchema } from '../platform/config';
import { runMigrations } from '../platform/migrate';
import { createLogger } from '../platform/logger';
import { SERVICE_NAMES } from './services';

async function main(): Promise<void> {
  const target = process.argv[2] ?? 'all';
  let url: string;
  try {
    // The services' own rule for DATABASE_URL (platform/config.ts).
    url = loadConfig(platformConfigSchema.pick({ DATABASE_URL: true })).DATABASE_URL;
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    process.stderr.write(`${error.message}\n`);
    process.exit(2);
  }
  const services = target === 'all' ? SERVICE_NAMES : SERVICE_NAMES.filter((s) => s === target);
  if (services.length === 0) {
    process.stderr.write(`usage: migrate <${SERVICE_NAMES.join('|')}|all>\n`);
    process.exit(2);
  }
  const logger = createLogger('migrate');
  for (const service of services) {
    const applied = await runMigrations(url, service, logger);
    process.stdout.write(`${service}: ${applied.length === 0 ? 'up to date' : `applied ${applied.join(', ')}`}\n`);
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`migration failed: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
