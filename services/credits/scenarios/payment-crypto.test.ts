/**
 * Payment data validation and encryption at rest (AES-256-GCM), including key
 * rotation, AAD binding, and the service's refusal to start without keys.
 */
import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import { ConfigError } from '../../../platform/config';
import { ServiceError } from '../../../platform/service-error';
import { startCredits } from '../../../testing/credits-kit';
import { cardBrand, luhnValid, parsePaymentKeys, PaymentKeyring, validatePayment } from '../domain/payment-crypto';

const card = { cardNumber: '4111111111111111', expiryMonth: 1, expiryYear: 2099, cardholderName: 'A', processorReference: 'p' };

describe('credits payment crypto', () => {
  // Luhn accepts valid test cards and rejects a one-digit change.
  it('checks Luhn and detects brands', () => {
    expect(luhnValid('4111111111111111')).to.equal(true);
    expect(luhnValid('4111111111111112')).to.equal(false);
    expect(cardBrand('5555555555554444')).to.equal('mastercard');
    expect(cardBrand('378282246310005')).to.equal('amex');
  });

  // Expired cards and bad months are INVALID_ARGUMENT naming the field.
  it('validates expiry', () => {
    const now = new Date(Date.UTC(2030, 5, 15));
    expect(validatePayment({ ...card, expiryMonth: 6, expiryYear: 2030 }, now).masked.cardLast4).to.equal('1111');
    for (const bad of [{ ...card, expiryMonth: 5, expiryYear: 2030 }, { ...card, expiryMonth: 0 }]) {
      let error: unknown;
      try {
        validatePayment(bad, now);
      } catch (e) {
        error = e;
      }
      expect(error).to.be.instanceOf(ServiceError);
      expect((error as ServiceError).fieldViolations[0]!.field).to.match(/^payment\.expiry_/);
    }
  });

  // Round trip; after rotation the old key still decrypts old rows and new rows use the new key.
  it('encrypts, decrypts, and survives key rotation', () => {
    const a = randomBytes(32);
    const b = randomBytes(32);
    const old = new PaymentKeyring({ a }, 'a');
    const sealed = old.encrypt(card, 'tenant-1', 'tx-1');
    expect(sealed.keyId).to.equal('a');
    expect(sealed.ciphertext.toString('latin1')).not.to.contain('4111111111111111');
    const rotated = new PaymentKeyring({ a, b }, 'b');
    expect(rotated.decrypt(sealed, 'tenant-1', 'tx-1')).to.deep.equal(card);
    expect(rotated.encrypt(card, 'tenant-1', 'tx-2').keyId).to.equal('b');
  });

  // The AAD binds tenant and transaction: a ciphertext moved to another row does not decrypt; tampering fails.
  it('refuses a ciphertext moved to another tenant or transaction', () => {
    const ring = new PaymentKeyring({ a: randomBytes(32) }, 'a');
    const sealed = ring.encrypt(card, 'tenant-1', 'tx-1');
    expect(() => ring.decrypt(sealed, 'tenant-2', 'tx-1')).to.throw();
    expect(() => ring.decrypt(sealed, 'tenant-1', 'tx-2')).to.throw();
    const flipped = Buffer.from(sealed.ciphertext);
    flipped[0] = flipped[0]! ^ 1;
    expect(() => ring.decrypt({ ...sealed, ciphertext: flipped }, 'tenant-1', 'tx-1')).to.throw();
    expect(() => new PaymentKeyring({ a: randomBytes(32) }, 'b')).to.throw();
  });

  // Bad key configuration is reported without echoing key material.
  it('parses CREDITS_PAYMENT_KEYS strictly', () => {
    expect(parsePaymentKeys('nope')).to.be.a('string');
    expect(parsePaymentKeys(JSON.stringify({ a: randomBytes(16).toString('base64') }))).to.match(/32 bytes/);
    expect(parsePaymentKeys('{}')).to.be.a('string');
    expect(parsePaymentKeys(JSON.stringify({ a: randomBytes(32).toString('base64') }))).to.have.property('a');
  });

  // The service refuses to start with missing or inconsistent payment/audit keys or bad intervals, naming the variable.
  it('requires its keys at start', async () => {
    const cases: [Record<string, string>, string][] = [
      [{ CREDITS_PAYMENT_KEYS: '' }, 'CREDITS_PAYMENT_KEYS'],
      [{ CREDITS_PAYMENT_ACTIVE_KEY_ID: 'zz' }, 'CREDITS_PAYMENT_ACTIVE_KEY_ID'],
      [{ CREDITS_AUDIT_HMAC_KEY: randomBytes(16).toString('base64') }, 'CREDITS_AUDIT_HMAC_KEY'],
      [{ CREDITS_IDEMPOTENCY_TTL_HOURS: '1' }, 'CREDITS_IDEMPOTENCY_TTL_HOURS'],
      [{ CREDITS_FULL_VERIFY_INTERVAL_SECONDS: '0' }, 'CREDITS_FULL_VERIFY_INTERVAL_SECONDS'],
      [{ CREDITS_FULL_VERIFY_INTERVAL_SECONDS: 'daily' }, 'CREDITS_FULL_VERIFY_INTERVAL_SECONDS'],
      [{ CREDITS_CACHE_LOCAL_ENTRIES: '-1' }, 'CREDITS_CACHE_LOCAL_ENTRIES'],
      [{ CREDITS_CACHE_LOCAL_ENTRIES: '1e9' }, 'CREDITS_CACHE_LOCAL_ENTRIES'],
    ];
    for (const [extra, variable] of cases) {
      let error: unknown;
      const started = await startCredits(extra).catch((e: unknown) => {
        error = e;
        return undefined;
      });
      await started?.shutdown();
      expect(error, variable).to.be.instanceOf(ConfigError);
      expect((error as ConfigError).variable).to.equal(variable);
    }
  });
});
