/**
 * Payment data at rest: validation (Luhn, expiry) and AES-256-GCM encryption.
 *
 * Why AAD = tenant + transaction: a ciphertext copied onto another tenant's or
 * another transaction's row fails to decrypt instead of silently attaching one
 * tenant's card to another's top-up. The key id is stored beside each
 * ciphertext so the active key can rotate while old rows still decrypt.
 *
 * Nothing here logs, and no error message ever contains card data.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { ServiceError } from '../../../platform/service-error';

export interface PaymentInput {
  readonly cardNumber: string;
  readonly expiryMonth: number;
  readonly expiryYear: number;
  readonly cardholderName: string;
  readonly processorReference: string;
}

/** What may be stored and returned in clear. */
export interface MaskedCard {
  readonly cardLast4: string;
  readonly cardBrand: string;
  readonly expiryMonth: number;
  readonly expiryYear: number;
}

export interface EncryptedPayment {
  readonly keyId: string;
  readonly nonce: Buffer;
  readonly ciphertext: Buffer;
  readonly authTag: Buffer;
}

const CARDHOLDER_NAME_LENGTH_MAX = 128;
const PROCESSOR_REFERENCE_LENGTH_MAX = 128;
const AAD_PREFIX = 'shieldx.credits.payment.v1';

/** Luhn checksum over a string of digits. */
export function luhnValid(digits: string): boolean {
  let sum = 0;
  let double = false;
  for (let i = digits.length - 1; i >= 0; i--) {
    let d = digits.charCodeAt(i) - 48;
    if (d < 0 || d > 9) return false;
    if (double) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
    double = !double;
  }
  return sum % 10 === 0;
}

export function cardBrand(digits: string): string {
  if (/^4/.test(digits)) return 'visa';
  if (/^(5[1-5]|2(2[2-9][1-9]|2[3-9]\d|[3-6]\d\d|7[01]\d|720))/.test(digits)) return 'mastercard';
  if (/^3[47]/.test(digits)) return 'amex';
  if (/^(6011|65|64[4-9])/.test(digits)) return 'discover';
  return 'unknown';
}

/**
 * Validates the card and returns its normalised number (digits only) and the
 * masked view. Throws INVALID_ARGUMENT naming the field; the message never
 * contains the number.
 */
export function validatePayment(payment: PaymentInput | undefined, now: Date = new Date()): { digits: string; masked: MaskedCard } {
  if (payment === undefined) throw ServiceError.invalidArgument('payment', 'is required');
  const digits = payment.cardNumber.replace(/[ -]/g, '');
  if (!/^[0-9]{12,19}$/.test(digits)) throw ServiceError.invalidArgument('payment.card_number', 'must be 12 to 19 digits');
  if (!luhnValid(digits)) throw ServiceError.invalidArgument('payment.card_number', 'fails the Luhn check');
  const month = payment.expiryMonth;
  if (!Number.isInteger(month) || month < 1 || month > 12) {
    throw ServiceError.invalidArgument('payment.expiry_month', 'must be between 1 and 12');
  }
  const year = payment.expiryYear;
  if (!Number.isInteger(year) || year < 2000 || year > 2100) {
    throw ServiceError.invalidArgument('payment.expiry_year', 'must be a four-digit year');
  }
  // A card is valid through the last day of its expiry month (UTC).
  const endOfExpiryMonth = Date.UTC(year, month, 1);
  if (endOfExpiryMonth <= now.getTime()) throw ServiceError.invalidArgument('payment.expiry_year', 'card has expired');
  if (payment.cardholderName.length > CARDHOLDER_NAME_LENGTH_MAX) {
    throw ServiceError.invalidArgument('payment.cardholder_name', `must be at most ${CARDHOLDER_NAME_LENGTH_MAX} characters`);
  }
  if (payment.processorReference.length > PROCESSOR_REFERENCE_LENGTH_MAX) {
    throw ServiceError.invalidArgument('payment.processor_reference', `must be at most ${PROCESSOR_REFERENCE_LENGTH_MAX} characters`);
  }
  return { digits, masked: { cardLast4: digits.slice(-4), cardBrand: cardBrand(digits), expiryMonth: month, expiryYear: year } };
}

/** Length-prefixed so that ("ab","c") and ("a","bc") bind different AADs. */
function additionalData(tenantId: string, transactionId: string): Buffer {
  const parts = [AAD_PREFIX, tenantId, transactionId].map((p) => `${Buffer.byteLength(p)}:${p}`);
  return Buffer.from(parts.join('|'));
}

/** The configured keys: id → 32-byte key; one of them is active for new rows. */
export class PaymentKeyring {
  private readonly keys: ReadonlyMap<string, Buffer>;

  constructor(
    keys: Record<string, Buffer>,
    readonly activeKeyId: string,
  ) {
    for (const [id, key] of Object.entries(keys)) {
      if (key.length !== 32) throw new Error(`payment key ${id} must be 32 bytes`);
    }
    if (!(activeKeyId in keys)) throw new Error(`active payment key ${activeKeyId} is not among the configured keys`);
    this.keys = new Map(Object.entries(keys));
  }

  encrypt(plaintext: PaymentInput & { cardNumber: string }, tenantId: string, transactionId: string): EncryptedPayment {
    const key = this.keys.get(this.activeKeyId)!;
    const nonce = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', key, nonce);
    cipher.setAAD(additionalData(tenantId, transactionId));
    const body = Buffer.from(
      JSON.stringify({
        card_number: plaintext.cardNumber,
        expiry_month: plaintext.expiryMonth,
        expiry_year: plaintext.expiryYear,
        cardholder_name: plaintext.cardholderName,
        processor_reference: plaintext.processorReference,
      }),
    );
    const ciphertext = Buffer.concat([cipher.update(body), cipher.final()]);
    body.fill(0);
    return { keyId: this.activeKeyId, nonce, ciphertext, authTag: cipher.getAuthTag() };
  }

  /** Throws when the key id is unknown or the data, tenant or transaction do not match. */
  decrypt(encrypted: EncryptedPayment, tenantId: string, transactionId: string): PaymentInput {
    const key = this.keys.get(encrypted.keyId);
    if (!key) throw new Error(`payment key ${encrypted.keyId} is not configured`);
    const decipher = createDecipheriv('aes-256-gcm', key, encrypted.nonce);
    decipher.setAAD(additionalData(tenantId, transactionId));
    decipher.setAuthTag(encrypted.authTag);
    const body = Buffer.concat([decipher.update(encrypted.ciphertext), decipher.final()]);
    const parsed = JSON.parse(body.toString('utf8')) as Record<string, unknown>;
    body.fill(0);
    return {
      cardNumber: String(parsed.card_number),
      expiryMonth: Number(parsed.expiry_month),
      expiryYear: Number(parsed.expiry_year),
      cardholderName: String(parsed.cardholder_name),
      processorReference: String(parsed.processor_reference),
    };
  }
}

/**
 * Parses `CREDITS_PAYMENT_KEYS` (JSON map keyId → base64 32-byte key). Returns
 * an error message (naming no key material) or the keys.
 */
export function parsePaymentKeys(raw: string): Record<string, Buffer> | string {
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    return 'must be a JSON object mapping key id to a base64 32-byte key';
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    return 'must be a JSON object mapping key id to a base64 32-byte key';
  }
  const keys: Record<string, Buffer> = {};
  for (const [id, value] of Object.entries(parsed)) {
    if (!/^[A-Za-z0-9._-]{1,64}$/.test(id)) return `key id "${id.slice(0, 64)}" must be 1-64 characters of [A-Za-z0-9._-]`;
    if (typeof value !== 'string' || !/^[A-Za-z0-9+/]+={0,2}$/.test(value)) return `key ${id} must be base64`;
    const key = Buffer.from(value, 'base64');
    if (key.length !== 32) return `key ${id} must decode to 32 bytes (got ${key.length})`;
    keys[id] = key;
  }
  if (Object.keys(keys).length === 0) return 'must configure at least one key';
  return keys;
}
