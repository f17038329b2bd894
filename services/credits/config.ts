/**
 * The credits service's settings (docs/configuration.md, "credits"): every integer variable is an
 * `integerSetting`, so each is refused with the mesh's words.
 */
import { z } from 'zod';
import { integerSetting } from '../../platform/config';
import { parsePaymentKeys } from './domain/payment-crypto';

const base64Key = (minBytes: number) =>
  z
    .string()
    .regex(/^[A-Za-z0-9+/]+={0,2}$/, 'must be base64')
    .transform((s) => Buffer.from(s, 'base64'))
    .refine((b) => b.length >= minBytes, `must decode to at least ${minBytes} bytes`);

export const creditsConfigShape = {
  /** JSON map keyId → base64 32-byte AES-256 key. */
  CREDITS_PAYMENT_KEYS: z.string().transform((raw, ctx) => {
    const parsed = parsePaymentKeys(raw);
    if (typeof parsed === 'string') {
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: parsed });
      return z.NEVER;
    }
    return parsed;
  }),
  /** Key id used to encrypt new payment data; must be in CREDITS_PAYMENT_KEYS. */
  CREDITS_PAYMENT_ACTIVE_KEY_ID: z.string().min(1),
  /** base64, at least 32 bytes: keys the audit chain HMAC (and request fingerprints). */
  CREDITS_AUDIT_HMAC_KEY: base64Key(32),
  CREDITS_IDEMPOTENCY_TTL_HOURS: integerSetting(24, 24 * 365).default(24),
  CREDITS_IDEMPOTENCY_PRUNE_INTERVAL_SECONDS: integerSetting(1, 86_400).default(600),
  CREDITS_AUDIT_VERIFY_INTERVAL_SECONDS: integerSetting(1, 86_400).default(300),
  CREDITS_INVARIANT_CHECK_INTERVAL_SECONDS: integerSetting(1, 86_400).default(60),
  /** The periodic checks above read only what changed since their checkpoints; this often they re-scan everything. */
  CREDITS_FULL_VERIFY_INTERVAL_SECONDS: integerSetting(1, 30 * 86_400).default(86_400),
  CREDITS_RESERVATION_SWEEP_INTERVAL_MS: integerSetting(10, 3_600_000).default(5_000),
  CREDITS_CACHE_TTL_SECONDS: integerSetting(1, 86_400).default(60),
  CREDITS_CACHE_KEY_PREFIX: z.string().max(64).default('credits:'),
  CREDITS_CACHE_LOCAL_ENTRIES: integerSetting(0, 1_000_000).default(10_000),
  CREDITS_BATCH_MAX_ITEMS: integerSetting(1, 1_000).default(128),
  CREDITS_BATCH_MAX_IN_FLIGHT: integerSetting(1, 64).default(4),
  CREDITS_BATCH_MAX_QUEUED: integerSetting(1, 1_000_000).default(20_000),
  CREDITS_BATCH_LINGER_MS: integerSetting(0, 100).default(0),
  CREDITS_DB_TIMEOUT_MS: integerSetting(100, 600_000).default(10_000),
  CREDITS_REDIS_TIMEOUT_MS: integerSetting(5, 60_000).default(100),
  CREDITS_BREAKER_RESET_MS: integerSetting(100, 600_000).default(5_000),
};

export type CreditsShape = typeof creditsConfigShape;
