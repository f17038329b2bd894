import { expect } from 'chai';
import { ConfigError } from '../platform/config';
import { devServiceEnv, portSetting, usesDevApiKey, type DevSecrets } from './dev-env';

const secrets: DevSecrets = {
  postgresPassword: 'pg',
  apiKey: 'shx_dev',
  apiKeySha256: 'a'.repeat(64),
  paymentKeyId: 'dev-1',
  paymentKey: 'cGF5bWVudA==',
  auditHmacKey: 'YXVkaXQ=',
};
const service = { name: 'credits', grpcPort: 5004, metricsPort: 9004, httpPort: 8004 };
const DEFAULTED = ['SHIELDX_API_KEYS', 'CREDITS_PAYMENT_KEYS', 'CREDITS_PAYMENT_ACTIVE_KEY_ID', 'CREDITS_AUDIT_HMAC_KEY', 'SHADOW_DEMO_DATA'];

describe('npm start: service environment', () => {
  // A variable exported but empty (`export SHIELDX_API_KEYS=`) is unset: the development default applies,
  // as it would if the variable were missing, instead of an empty value the service then refuses.
  it('treats exported-but-empty variables as unset', () => {
    const unset = devServiceEnv({}, secrets, service, 'postgres://db/shieldx');
    const empty = devServiceEnv(Object.fromEntries(DEFAULTED.map((name) => [name, ''])), secrets, service, 'postgres://db/shieldx');
    for (const name of DEFAULTED) expect(empty[name], name).to.equal(unset[name]).and.not.equal('');
    expect(JSON.parse(empty.SHIELDX_API_KEYS!)).to.deep.equal([{ id: 'dev', sha256: secrets.apiKeySha256, scopes: ['*'] }]);
    expect(empty.SHADOW_DEMO_DATA).to.equal('true');
    expect(usesDevApiKey({ SHIELDX_API_KEYS: '' })).to.equal(true);
  });

  // What the caller does set wins over every default, and the service's own settings are npm start's.
  it('keeps what the caller sets', () => {
    const env = devServiceEnv(
      { SHIELDX_API_KEYS: '[]', CREDITS_AUDIT_HMAC_KEY: 'mine', SHADOW_DEMO_DATA: 'false', OTHER: 'x' },
      secrets,
      service,
      'postgres://db/shieldx',
    );
    expect(env).to.include({ SHIELDX_API_KEYS: '[]', CREDITS_AUDIT_HMAC_KEY: 'mine', SHADOW_DEMO_DATA: 'false', OTHER: 'x' });
    expect(env).to.include({ SHIELDX_SERVICE: 'credits', GRPC_PORT: '5004', METRICS_PORT: '9004', HTTP_PORT: '8004', DATABASE_URL: 'postgres://db/shieldx' });
    expect(usesDevApiKey({ SHIELDX_API_KEYS: '[]' })).to.equal(false);
  });

  // CREDITS_PORT and the like: unset or empty gives the default; a bad value stops npm start
  // before anything runs, with the variable named.
  it('reads port variables, refusing what is not a port', () => {
    expect(portSetting({}, 'CREDITS_PORT', 5004)).to.equal(5004);
    expect(portSetting({ CREDITS_PORT: '' }, 'CREDITS_PORT', 5004)).to.equal(5004);
    expect(portSetting({ CREDITS_PORT: '6004' }, 'CREDITS_PORT', 5004)).to.equal(6004);
    for (const bad of ['http', '0', '65536', '50.5', '-1']) {
      expect(() => portSetting({ CREDITS_PORT: bad }, 'CREDITS_PORT', 5004), bad)
        .to.throw(ConfigError, 'invalid configuration: CREDITS_PORT must be a port number (1-65535)');
    }
  });
});
