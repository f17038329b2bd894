import { expect } from 'chai';
import { z } from 'zod';
import { ConfigError, integerSetting, loadConfig, platformConfigSchema } from './config';
import { generateApiKey, ApiKeyVerifier } from './auth';

const valid = {
  GRPC_PORT: '5004',
  METRICS_PORT: '9004',
  DATABASE_URL: 'postgres://postgres@127.0.0.1:5432/shieldx',
  SHIELDX_API_KEYS: JSON.stringify([generateApiKey('a', ['*']).config]),
};

function problem(env: Record<string, string>): ConfigError {
  try {
    loadConfig(platformConfigSchema, env);
  } catch (error) {
    if (error instanceof ConfigError) return error;
    throw error;
  }
  throw new Error('expected a ConfigError');
}

describe('config', () => {
  // Valid variables parse into typed values with the documented defaults.
  it('parses valid variables and applies defaults', () => {
    const config = loadConfig(platformConfigSchema, valid);
    expect(config.GRPC_PORT).to.equal(5004);
    expect(config.GRPC_REFLECTION).to.equal('open');
    expect(config.SHUTDOWN_GRACE_MS).to.equal(10_000);
    expect(config.MIGRATE_ON_START).to.equal(true);
    expect(config.REDIS_URL).to.equal(undefined);
  });

  // Each kind of bad value names the variable and says what is wrong.
  it('names the bad variable', () => {
    expect(problem({ ...valid, GRPC_PORT: '-1' })).to.include({ variable: 'GRPC_PORT', problem: 'must be between 0 and 65535' });
    expect(problem({ ...valid, DB_POOL_MAX: '1.5' })).to.include({ variable: 'DB_POOL_MAX', problem: 'must be an integer' });
    expect(problem({ ...valid, REDIS_URL: 'http://x' })).to.include({ variable: 'REDIS_URL' });
    expect(problem({ ...valid, SHIELDX_API_KEYS: 'not json' })).to.include({ variable: 'SHIELDX_API_KEYS', problem: 'must be JSON' });
    expect(problem({ ...valid, SHIELDX_API_KEYS: '[]' })).to.include({ variable: 'SHIELDX_API_KEYS', problem: 'must configure at least one key' });
    const { DATABASE_URL: _, ...missing } = valid;
    expect(problem(missing)).to.include({ variable: 'DATABASE_URL', problem: 'is required' });
  });

  // An empty variable counts as unset (manifests often leave them empty), so defaults apply.
  it('treats empty variables as unset', () => {
    expect(loadConfig(platformConfigSchema, { ...valid, LOG_LEVEL: '' }).LOG_LEVEL).to.equal('info');
  });

  // A service's own variables extend the platform's and are validated the same way.
  it('validates service variables', () => {
    const schema = platformConfigSchema.extend({ EXTRA_TTL_SECONDS: z.coerce.number().int().min(60, 'must be at least 60') });
    expect(() => loadConfig(schema, { ...valid, EXTRA_TTL_SECONDS: '5' })).to.throw(ConfigError, 'EXTRA_TTL_SECONDS must be at least 60');
  });
});

describe('api keys', () => {
  const reader = generateApiKey('reader', ['credits:read']);
  const admin = generateApiKey('admin', ['*']);
  const verifier = new ApiKeyVerifier([reader.config, admin.config]);

  // Only the hash is configured, and the right key maps to its id and scopes.
  it('authenticates a configured key by its hash', () => {
    expect(reader.config.sha256).to.match(/^[0-9a-f]{64}$/);
    expect(JSON.stringify(reader.config)).not.to.include(reader.key);
    const result = verifier.authenticate(`Bearer ${reader.key}`);
    expect(result.ok && result.principal.keyId).to.equal('reader');
    expect(result.ok && [...result.principal.scopes]).to.deep.equal(['credits:read']);
  });

  // Missing, unknown, non-Bearer and oversized values are refused with the right reason.
  it('refuses bad credentials', () => {
    expect(verifier.authenticate(undefined)).to.deep.equal({ ok: false, reason: 'MISSING_CREDENTIALS' });
    expect(verifier.authenticate(`Bearer ${reader.key}0`)).to.deep.equal({ ok: false, reason: 'INVALID_CREDENTIALS' });
    expect(verifier.authenticate(`Basic ${reader.key}`)).to.deep.equal({ ok: false, reason: 'INVALID_CREDENTIALS' });
    expect(verifier.authenticate(`Bearer ${'a'.repeat(5000)}`)).to.deep.equal({ ok: false, reason: 'INVALID_CREDENTIALS' });
  });

  // The one integer helper: the same words for every numeric variable of every service.
  it('refuses integers in one way: not a number, not an integer, out of range', () => {
    const schema = z.object({ X_COUNT: integerSetting(1, 100).default(5) });
    const refusal = (value: string) => {
      try {
        loadConfig(schema, { X_COUNT: value });
      } catch (error) {
        if (error instanceof ConfigError) return error.message;
      }
      return 'accepted';
    };
    expect(loadConfig(schema, {}).X_COUNT).to.equal(5);
    expect(loadConfig(schema, { X_COUNT: '100' }).X_COUNT).to.equal(100);
    expect(refusal('abc')).to.equal('invalid configuration: X_COUNT must be a number');
    expect(refusal('1.5')).to.equal('invalid configuration: X_COUNT must be an integer');
    expect(refusal('0')).to.equal('invalid configuration: X_COUNT must be at least 1');
    expect(refusal('101')).to.equal('invalid configuration: X_COUNT must be at most 100');
  });
});
