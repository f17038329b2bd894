-- Up Migration
-- Where the periodic checks (services/credits/service.ts, background jobs) stopped last
-- time, per tenant, so each run reads only what was written since: their cost follows the
-- write rate instead of the size of the whole ledger. Full re-scans still run, on their
-- own slower interval, and VerifyAuditChain always recomputes the whole chain.

-- The audit chain was verified from genesis up to (seq, hash). `mac` = HMAC under a key
-- derived from the audit key (services/credits/audit-chain.ts): whoever can write this
-- table without that key cannot move a checkpoint past rows that were never verified.
-- A row that fails its mac is reported as a break, not trusted.
CREATE TABLE credit_audit_checkpoints (
  tenant_id   text        PRIMARY KEY,
  seq         bigint      NOT NULL CHECK (seq >= 1),
  hash        bytea       NOT NULL CHECK (length(hash) = 32),
  mac         bytea       NOT NULL CHECK (length(mac) = 32),
  verified_at timestamptz NOT NULL DEFAULT now()
);

-- The ledger invariant held at the account's `version`: its movements up to transaction
-- `ledger_seq` sum to `ledger_balance`. Safe as a cursor because a tenant's transaction
-- rows are inserted while its account row is locked, so per tenant `seq` order is commit
-- order: no row below a checkpoint can commit after it.
CREATE TABLE credit_ledger_checkpoints (
  tenant_id      text        PRIMARY KEY,
  version        bigint      NOT NULL,
  ledger_seq     bigint      NOT NULL,
  ledger_balance bigint      NOT NULL,
  checked_at     timestamptz NOT NULL DEFAULT now()
);

-- Down Migration
DROP TABLE IF EXISTS credit_ledger_checkpoints;
DROP TABLE IF EXISTS credit_audit_checkpoints;
