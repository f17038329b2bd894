-- Up Migration
-- The credits ledger. The rules that keep money right live here as constraints as
-- well as in services/credits/ledger.ts (asserted in two places): even a bug in
-- the service cannot make a balance or an available balance negative.

-- One account per tenant. available = balance - reserved.
-- audit_seq / audit_head are the head of the tenant's audit hash chain: every
-- writer holds this row's lock (the UPDATE of the money movement takes it), so
-- the chain is appended in one order per tenant without any advisory lock.
CREATE TABLE credit_accounts (
  tenant_id   text        PRIMARY KEY CHECK (length(tenant_id) BETWEEN 1 AND 128),
  balance     bigint      NOT NULL DEFAULT 0,
  reserved    bigint      NOT NULL DEFAULT 0,
  version     bigint      NOT NULL DEFAULT 0 CHECK (version >= 0),
  audit_seq   bigint      NOT NULL DEFAULT 0 CHECK (audit_seq >= 0),
  -- NULL until the first audit row: the chain then starts from the genesis value.
  audit_head  bytea,
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT credit_accounts_balance_non_negative CHECK (balance >= 0),
  CONSTRAINT credit_accounts_reserved_non_negative CHECK (reserved >= 0),
  CONSTRAINT credit_accounts_available_non_negative CHECK (balance - reserved >= 0)
);

CREATE TYPE credit_transaction_type AS ENUM ('CONSUME', 'TOP_UP', 'RESERVE', 'CAPTURE', 'RELEASE', 'EXPIRE');

-- Every change of an account is one row. `seq` orders rows (newest first =
-- highest seq) and is the page-token cursor; `id` is the public id.
CREATE TABLE credit_transactions (
  seq             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  id              uuid        NOT NULL UNIQUE,
  tenant_id       text        NOT NULL REFERENCES credit_accounts (tenant_id),
  type            credit_transaction_type NOT NULL,
  amount          bigint      NOT NULL CHECK (amount > 0),
  balance_after   bigint      NOT NULL CHECK (balance_after >= 0),
  reserved_after  bigint      NOT NULL CHECK (reserved_after >= 0 AND reserved_after <= balance_after),
  reference       text        NOT NULL DEFAULT '',
  metadata        jsonb       NOT NULL DEFAULT '{}'::jsonb,
  idempotency_key text        NOT NULL DEFAULT '',
  reservation_id  uuid,
  created_at      timestamptz NOT NULL
);
CREATE INDEX credit_transactions_tenant_seq ON credit_transactions (tenant_id, seq DESC);
CREATE INDEX credit_transactions_tenant_created ON credit_transactions (tenant_id, created_at);

-- Encrypted payment data of a top-up (AES-256-GCM; AAD binds tenant + transaction).
-- Only masked fields are stored in clear.
CREATE TABLE credit_payments (
  transaction_id uuid        PRIMARY KEY REFERENCES credit_transactions (id),
  tenant_id      text        NOT NULL,
  key_id         text        NOT NULL,
  nonce          bytea       NOT NULL CHECK (length(nonce) = 12),
  ciphertext     bytea       NOT NULL,
  auth_tag       bytea       NOT NULL CHECK (length(auth_tag) = 16),
  card_last4     text        NOT NULL CHECK (card_last4 ~ '^[0-9]{4}$'),
  card_brand     text        NOT NULL,
  expiry_month   smallint    NOT NULL CHECK (expiry_month BETWEEN 1 AND 12),
  expiry_year    smallint    NOT NULL,
  created_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TYPE credit_reservation_state AS ENUM ('HELD', 'COMMITTED', 'RELEASED', 'EXPIRED');

CREATE TABLE credit_reservations (
  id              uuid        PRIMARY KEY,
  tenant_id       text        NOT NULL REFERENCES credit_accounts (tenant_id),
  amount          bigint      NOT NULL CHECK (amount > 0),
  captured_amount bigint      NOT NULL DEFAULT 0 CHECK (captured_amount >= 0 AND captured_amount <= amount),
  state           credit_reservation_state NOT NULL DEFAULT 'HELD',
  reference       text        NOT NULL DEFAULT '',
  metadata        jsonb       NOT NULL DEFAULT '{}'::jsonb,
  expires_at      timestamptz NOT NULL,
  created_at      timestamptz NOT NULL,
  updated_at      timestamptz NOT NULL,
  CHECK (state = 'COMMITTED' OR captured_amount = 0)
);
-- The expiry sweeper's scan: only holds.
CREATE INDEX credit_reservations_held_expiry ON credit_reservations (expires_at) WHERE state = 'HELD';
CREATE INDEX credit_reservations_tenant ON credit_reservations (tenant_id) WHERE state = 'HELD';

-- Idempotency records, scoped per tenant. The row is inserted first in the
-- transaction that does the work, so a concurrent duplicate blocks on it and
-- replays what the first stored. `response` holds the encoded protobuf response;
-- `error` the business failure ({code, reason, message, metadata}).
-- request_hash is an HMAC (not a bare hash) because requests can carry card data.
CREATE TABLE credit_idempotency_keys (
  tenant_id     text        NOT NULL CHECK (length(tenant_id) BETWEEN 1 AND 128),
  key           text        NOT NULL CHECK (length(key) BETWEEN 1 AND 128),
  method        text        NOT NULL,
  request_hash  bytea       NOT NULL,
  state         text        NOT NULL DEFAULT 'IN_PROGRESS' CHECK (state IN ('IN_PROGRESS', 'SUCCEEDED', 'FAILED')),
  response      bytea,
  error         jsonb,
  created_at    timestamptz NOT NULL DEFAULT now(),
  completed_at  timestamptz,
  expires_at    timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, key),
  CHECK ((state = 'SUCCEEDED') = (response IS NOT NULL)),
  CHECK ((state = 'FAILED') = (error IS NOT NULL))
);
CREATE INDEX credit_idempotency_keys_expiry ON credit_idempotency_keys (expires_at);

-- Tamper-evident audit log: per tenant, hash = HMAC-SHA256(key, canonical(row) || prev_hash)
-- (encoding in services/credits/audit-chain.ts). Append-only: UPDATE, DELETE and TRUNCATE
-- are refused by triggers.
CREATE TABLE credit_audit_logs (
  tenant_id       text        NOT NULL,
  seq             bigint      NOT NULL CHECK (seq >= 1),
  occurred_at     timestamptz NOT NULL,
  action          text        NOT NULL,
  amount          bigint      NOT NULL,
  balance_after   bigint      NOT NULL,
  reserved_after  bigint      NOT NULL,
  transaction_id  uuid        NOT NULL,
  reservation_id  uuid,
  idempotency_key text        NOT NULL DEFAULT '',
  actor           text        NOT NULL DEFAULT '',
  prev_hash       bytea       NOT NULL CHECK (length(prev_hash) = 32),
  hash            bytea       NOT NULL CHECK (length(hash) = 32),
  PRIMARY KEY (tenant_id, seq)
);

CREATE FUNCTION credit_audit_logs_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'credit_audit_logs is append-only: % refused', TG_OP
    USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER credit_audit_logs_no_update_delete
  BEFORE UPDATE OR DELETE ON credit_audit_logs
  FOR EACH ROW EXECUTE FUNCTION credit_audit_logs_append_only();

CREATE TRIGGER credit_audit_logs_no_truncate
  BEFORE TRUNCATE ON credit_audit_logs
  FOR EACH STATEMENT EXECUTE FUNCTION credit_audit_logs_append_only();

-- Down Migration
DROP TABLE IF EXISTS credit_audit_logs;
DROP FUNCTION IF EXISTS credit_audit_logs_append_only();
DROP TABLE IF EXISTS credit_idempotency_keys;
DROP TABLE IF EXISTS credit_reservations;
DROP TYPE IF EXISTS credit_reservation_state;
DROP TABLE IF EXISTS credit_payments;
DROP TABLE IF EXISTS credit_transactions;
DROP TYPE IF EXISTS credit_transaction_type;
DROP TABLE IF EXISTS credit_accounts;
