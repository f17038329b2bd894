/**
 * What `npm start` (dev/dev.ts) hands each service process: the caller's
 * environment, with development defaults for what the caller leaves unset. Kept
 * apart from dev.ts, which starts the mesh when loaded, so it can be tested.
 */
import { ConfigError } from '../platform/config';

/** Development secrets, generated on first start into .data/dev-secrets.json. */
export interface DevSecrets {
  postgresPassword: string;
  apiKey: string;
  apiKeySha256: string;
  paymentKeyId: string;
  paymentKey: string;
  auditHmacKey: string;
}

/**
 * A variable as the services read it: exported but empty counts as unset
 * (platform/config.ts does the same), so `SHIELDX_API_KEYS=` does not replace
 * the development key with nothing.
 */
export function setting(env: NodeJS.ProcessEnv, name: string): string | undefined {
  const value = env[name];
  return value === undefined || value === '' ? undefined : value;
}

/**
 * A port npm start reads (CREDITS_PORT, ..., EMBEDDED_POSTGRES_PORT): unset or
 * empty gives `fallback`; anything but a port number 1-65535 is a ConfigError
 * naming the variable, as the services' own configuration errors do.
 */
export function portSetting(env: NodeJS.ProcessEnv, variable: string, fallback: number): number {
  const raw = setting(env, variable);
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 1 || value > 65535) throw new ConfigError(variable, 'must be a port number (1-65535)');
  return value;
}

/** True when npm start supplies its development API key (the caller configured none). */
export function usesDevApiKey(env: NodeJS.ProcessEnv): boolean {
  return setting(env, 'SHIELDX_API_KEYS') === undefined;
}

export interface DevService {
  readonly name: string;
  readonly grpcPort: number;
  readonly metricsPort: number;
  readonly httpPort: number;
}

/** The environment of one service process under npm start. */
export function devServiceEnv(env: NodeJS.ProcessEnv, secrets: DevSecrets, service: DevService, databaseUrl: string): NodeJS.ProcessEnv {
  return {
    ...env,
    SHIELDX_SERVICE: service.name,
    GRPC_PORT: String(service.grpcPort),
    METRICS_PORT: String(service.metricsPort),
    HTTP_PORT: String(service.httpPort),
    DATABASE_URL: databaseUrl,
    SHIELDX_API_KEYS: setting(env, 'SHIELDX_API_KEYS') ?? JSON.stringify([{ id: 'dev', sha256: secrets.apiKeySha256, scopes: ['*'] }]),
    CREDITS_PAYMENT_KEYS: setting(env, 'CREDITS_PAYMENT_KEYS') ?? JSON.stringify({ [secrets.paymentKeyId]: secrets.paymentKey }),
    CREDITS_PAYMENT_ACTIVE_KEY_ID: setting(env, 'CREDITS_PAYMENT_ACTIVE_KEY_ID') ?? secrets.paymentKeyId,
    CREDITS_AUDIT_HMAC_KEY: setting(env, 'CREDITS_AUDIT_HMAC_KEY') ?? secrets.auditHmacKey,
    SHADOW_DEMO_DATA: setting(env, 'SHADOW_DEMO_DATA') ?? 'true',
  };
}
