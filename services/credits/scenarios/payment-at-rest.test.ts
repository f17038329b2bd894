/**
 * Card data at rest, end to end: a TopUp over real gRPC writes a
 * credit_payments row in PostgreSQL that holds only ciphertext, decrypts with
 * the service's keyring (built from the same CREDITS_PAYMENT_KEYS the service
 * was started with) under AAD = tenant + transaction id, and refuses to
 * decrypt when moved to another tenant or transaction. payment-crypto.test.ts
 * proves the cipher alone; this proves what the service actually stores.
 */
import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import type { TopUpResponse } from '../../../gen/shieldx/credits/v1/credits';
import type { RunningService } from '../../../platform/server';
import { Credits, creditsEnv, db, key, startCredits, tenant } from '../../../testing/credits-kit';
import { type EncryptedPayment, PaymentKeyring, parsePaymentKeys } from '../domain/payment-crypto';

describe('payment data at rest', function () {
  this.timeout(30_000);
  let service: RunningService;
  let credits: Credits;
  const env = creditsEnv();
  const configuredKeys = parsePaymentKeys(env.CREDITS_PAYMENT_KEYS!) as Record<string, Buffer>;
  /** The keyring the service builds from its configuration (service.ts create()). */
  const keyring = new PaymentKeyring(configuredKeys, env.CREDITS_PAYMENT_ACTIVE_KEY_ID!);

  before(async () => {
    service = await startCredits(env);
    credits = new Credits(service);
  });
  after(async () => {
    credits?.close();
    await service?.shutdown();
  });

  const expiryYear = new Date().getUTCFullYear() + 3;
  const card = { cardNumber: '4000-0566 5566 5556', expiryMonth: 7, expiryYear, cardholderName: 'Grace Hopper', processorReference: 'ch_3Pq9' };

  async function topUp(tenantId: string): Promise<TopUpResponse> {
    return credits.call<object, TopUpResponse>('topUp', { tenantId, amount: 25n, idempotencyKey: key(), reference: 'invoice-7', payment: card, metadata: {} });
  }

  async function storedPayment(transactionId: string): Promise<EncryptedPayment & { row: Record<string, unknown> }> {
    const { rows } = await db().query('SELECT * FROM credit_payments WHERE transaction_id = $1', [transactionId]);
    expect(rows).to.have.length(1);
    const row = rows[0];
    return { keyId: row.key_id, nonce: row.nonce, ciphertext: row.ciphertext, authTag: row.auth_tag, row };
  }

  // The row holds ciphertext (no card number, name or processor reference in clear anywhere in it) plus only the
  // masked view; it decrypts with the service's keyring to exactly what was sent (number normalised to digits).
  it('stores the card as ciphertext that decrypts to the original with tenant + transaction as AAD', async () => {
    const t = tenant();
    const res = await topUp(t);
    const txId = res.transaction!.id;
    const stored = await storedPayment(txId);
    expect(stored.keyId).to.equal(env.CREDITS_PAYMENT_ACTIVE_KEY_ID);
    expect(stored.nonce).to.have.length(12);
    expect(stored.authTag).to.have.length(16);
    expect(stored.row).to.include({ tenant_id: t, card_last4: '5556', card_brand: 'visa', expiry_month: 7, expiry_year: expiryYear });
    // Nothing in clear in any column, however the bytes are read.
    const everything = JSON.stringify(stored.row, (_, v) => (v?.type === 'Buffer' ? Buffer.from(v.data).toString('latin1') : v));
    for (const secret of ['4000056655665556', '4000-0566', 'Grace Hopper', 'ch_3Pq9', '0566556655']) {
      expect(everything).not.to.contain(secret);
      expect(stored.ciphertext.includes(Buffer.from(secret))).to.equal(false);
    }
    expect(keyring.decrypt(stored, t, txId)).to.deep.equal({ ...card, cardNumber: '4000056655665556' });
  });

  // The AAD binds the ciphertext to its row: decrypting it as another tenant's, or another transaction's (even the same
  // tenant's next top-up), or moving it onto that other row, fails authentication instead of yielding a card.
  it('does not decrypt under another tenant or another transaction id', async () => {
    const t = tenant();
    const first = await topUp(t);
    const second = await topUp(t);
    const otherTenant = tenant();
    const foreign = await topUp(otherTenant);
    const stored = await storedPayment(first.transaction!.id);
    expect(() => keyring.decrypt(stored, otherTenant, first.transaction!.id)).to.throw();
    expect(() => keyring.decrypt(stored, t, second.transaction!.id)).to.throw();
    expect(() => keyring.decrypt(stored, otherTenant, foreign.transaction!.id)).to.throw();
    // Each row has its own nonce; the other rows decrypt under their own AAD.
    const secondStored = await storedPayment(second.transaction!.id);
    expect(secondStored.nonce.equals(stored.nonce)).to.equal(false);
    expect(keyring.decrypt(secondStored, t, second.transaction!.id).cardNumber).to.equal('4000056655665556');
    expect(keyring.decrypt(await storedPayment(foreign.transaction!.id), otherTenant, foreign.transaction!.id).cardholderName).to.equal('Grace Hopper');
  });

  // Without the key that encrypted the row (key id not configured, or the same id holding another key), nothing decrypts.
  it('does not decrypt without the right key', async () => {
    const t = tenant();
    const res = await topUp(t);
    const stored = await storedPayment(res.transaction!.id);
    const others = Object.fromEntries(Object.entries(configuredKeys).filter(([id]) => id !== stored.keyId));
    const withoutKey = new PaymentKeyring(others, Object.keys(others)[0]!);
    expect(() => withoutKey.decrypt(stored, t, res.transaction!.id)).to.throw(/not configured/);
    const wrongKey = new PaymentKeyring({ [stored.keyId]: randomBytes(32) }, stored.keyId);
    expect(() => wrongKey.decrypt(stored, t, res.transaction!.id)).to.throw();
  });
});
