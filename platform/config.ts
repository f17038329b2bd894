/**
 * Configuration from environment variables, validated once at start with zod.
 * A bad or missing value stops the process with a message naming the variable
 * and what is wrong — never a half-configured service.
 */
import { z } from 'zod';

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  constructor(
    readonly variable: string,
    readonly problem: string,
  ) {
    super(`invalid configuration: ${variable} ${problem}`);
  }
}

/**
 * The one integer setting of the mesh: every numeric variable of every service is built with it,
 * so `X=abc`, `X=1.5` and `X=0` are refused with the same words everywhere ("must be a number",
 * "must be an integer", "must be at least 1").
 */
export function integerSetting(min: number, max: number) {
  return z.coerce
    .number({ invalid_type_error: 'must be a number' })
    .int('must be an integer')
    .min(min, `must be at least ${min}`)
    .max(max, `must be at most ${max}`);
}

const port = z.coerce
  .number({ invalid_type_error: 'must be a port number' })
  .int('must be an integer')
  .min(0, 'must be between 0 and 65535')
  .max(65535, 'must be between 0 and 65535');

const positiveInt = (max: number) => integerSetting(1, max);

/**
 * A list of Redis `host:port` addresses, comma-separated (REDIS_CLUSTER_NODES, REDIS_SENTINELS):
 * at least one, at most 64, each a host name or IPv4 address and a port from 1 to 65535.
 */
const redisAddressList = z
  .string()
  .transform((raw, ctx) => {
    const out: { host: string; port: number }[] = [];
    for (const item of raw.split(',').map((part) => part.trim())) {
      const match = /^([A-Za-z0-9.-]{1,253}):([0-9]{1,5})$/.exec(item);
      const port = match ? Number(match[2]) : 0;
      if (!match || port < 1 || port > 65535) {
        ctx.addIssue({ code: z.ZodIssueCode.custom, message: `must be a comma-separated list of host:port (got "${item.slice(0, 80)}")` });
        return z.NEVER;
      }
      out.push({ host: match[1]!, port });
    }
    if (out.length > 64) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: 'must list at most 64 addresses' });
      return z.NEVER;
    }
    return out;
  });

/** One configured API key: only the SHA-256 of the key is ever configured. */
export const apiKeySchema = z
  .object({
    id: z.string().min(1).max(64),
    sha256: z.string().regex(/^[0-9a-f]{64}$/, 'must be 64 lowercase hex characters (SHA-256 of the key)'),
    scopes: z.array(z.string().min(1)).min(1, 'must list at least one scope'),
  })
  .strict();
export type ApiKeyConfig = z.infer<typeof apiKeySchema>;

const apiKeys = z
  .string({ required_error: 'is required (JSON list of {id, sha256, scopes})' })
  .transform((raw, ctx) => {
    try {
      return JSON.parse(raw) as unknown;
    } catch {
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: 'must be JSON' });
      return z.NEVER;
    }
  })
  .pipe(z.array(apiKeySchema).min(1, 'must configure at least one key'));

/** Settings every service shares. Each service extends this with its own. */
export const platformConfigSchema = z.object({
  GRPC_HOST: z.string().default('0.0.0.0'),
  GRPC_PORT: port,
  METRICS_PORT: port,
  /** JSON over HTTP (Connect, gRPC-Web) for callers without gRPC; 0 turns it off. */
  HTTP_PORT: port.default(0),
  DATABASE_URL: z
    .string({ required_error: 'is required (postgres://user@host:port/db)' })
    .regex(/^postgres(ql)?:\/\//, 'must be a postgres:// URL'),
  REDIS_URL: z
    .string()
    .regex(/^rediss?:\/\//, 'must be a redis:// or rediss:// URL')
    .optional(),
  /** Redis Cluster seed nodes (`host:port,host:port`); the cluster client finds the rest. Exclusive with REDIS_URL and REDIS_SENTINELS. */
  REDIS_CLUSTER_NODES: redisAddressList.optional(),
  /** Redis Sentinel addresses (`host:port,...`); with REDIS_SENTINEL_MASTER. Exclusive with REDIS_URL and REDIS_CLUSTER_NODES. */
  REDIS_SENTINELS: redisAddressList.optional(),
  /** The master name the sentinels monitor (`sentinel monitor <name> ...`). */
  REDIS_SENTINEL_MASTER: z.string().regex(/^[\x21-\x7e]{1,128}$/, 'must be 1-128 printable characters').optional(),
  /** Password of the Redis nodes for REDIS_CLUSTER_NODES / REDIS_SENTINELS (with REDIS_URL, put it in the URL). */
  REDIS_PASSWORD: z.string().min(1).max(512).optional(),
  SHIELDX_API_KEYS: apiKeys,
  /**
   * Authenticates List page tokens (HMAC key derived from it); the same on every replica of a
   * deployment. Unset: derived from SHIELDX_API_KEYS (the same on every replica, and not known
   * to a caller that holds only a key).
   */
  PAGE_TOKEN_SECRET: z.string().min(32, 'must be at least 32 characters').optional(),
  GRPC_REFLECTION: z.enum(['open', 'authenticated', 'off']).default('open'),
  GRPC_MAX_MESSAGE_BYTES: positiveInt(64 * 1024 * 1024).default(4 * 1024 * 1024),
  GRPC_DEFAULT_DEADLINE_MS: positiveInt(600_000).default(30_000),
  SHUTDOWN_GRACE_MS: positiveInt(300_000).default(10_000),
  /** Keep serving this long after NOT_SERVING so load balancers stop routing first (k8s: a few seconds). */
  SHUTDOWN_DELAY_MS: integerSetting(0, 60_000).default(0),
  DB_POOL_MAX: positiveInt(1000).default(20),
  DB_STATEMENT_TIMEOUT_MS: positiveInt(600_000).default(10_000),
  /**
   * What DATABASE_URL reaches: `session` (PostgreSQL, or a session pooler), `transaction` (a
   * transaction pooler such as PgBouncer pool_mode = transaction), or `auto`: detected at start
   * (a pooler, whatever its mode, is taken for a transaction pooler).
   */
  DB_POOL_MODE: z.enum(['auto', 'session', 'transaction']).default('auto'),
  /**
   * Named prepared statements: `auto` uses them only in session mode; `on` also behind a transaction
   * pooler that supports them (PgBouncer >= 1.21 with max_prepared_statements > 0); `off` never.
   */
  DB_PREPARED_STATEMENTS: z.enum(['auto', 'on', 'off']).default('auto'),
  /** How often the database (and the read replica) is probed for readiness and replica staleness; 0 = never. */
  DB_HEALTH_CHECK_INTERVAL_MS: integerSetting(0, 600_000).default(1_000),
  /**
   * A read replica (streaming standby, or a pooler in front of replicas) for the reads that may lag;
   * unset: every read goes to DATABASE_URL.
   */
  DATABASE_READ_URL: z
    .string()
    .regex(/^postgres(ql)?:\/\//, 'must be a postgres:// URL')
    .optional(),
  /** Reads go to DATABASE_READ_URL only while it is measured at most this far behind the primary. */
  DB_READ_MAX_LAG_MS: positiveInt(3_600_000).default(5_000),
  /** A Redis command that waits this long with no data at all has its connection replaced (ioredis socketTimeout). */
  REDIS_SOCKET_TIMEOUT_MS: positiveInt(600_000).default(5_000),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  MIGRATE_ON_START: z.enum(['true', 'false']).default('true').transform((v) => v === 'true'),
});
export type PlatformConfig = z.infer<typeof platformConfigSchema>;

/**
 * Parses `env` against `schema`. Throws ConfigError for the first bad variable,
 * named exactly as the operator must set it.
 */
export function loadConfig<S extends z.ZodTypeAny>(schema: S, env: NodeJS.ProcessEnv = process.env): z.infer<S> {
  const cleaned: Record<string, string> = {};
  for (const [key, value] of Object.entries(env)) {
    // An empty variable is treated as unset, as shells and manifests often leave them.
    if (value !== undefined && value !== '') cleaned[key] = value;
  }
  const result = schema.safeParse(cleaned);
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  const variable = String(issue.path[0] ?? 'environment');
  const problem = issue.code === 'invalid_type' && issue.received === 'undefined' ? 'is required' : issue.message;
  throw new ConfigError(variable, problem);
}
