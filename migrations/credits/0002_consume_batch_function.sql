-- Up Migration
-- Group-committed Consume in ONE round trip (services/credits/ledger.ts, fast path).
--
-- The service decides a batch in memory from the account states it last committed
-- (balance, reserved, version, audit chain head), computes every row (transaction,
-- audit row with its HMAC, idempotency record with the encoded response or the
-- business failure), and sends them here. In one implicit transaction this function:
--  1. inserts the idempotency records (sorted, ON CONFLICT DO NOTHING: a concurrent
--     duplicate waits on the uncommitted row exactly like the claim of the
--     transactional path); a key that already exists raises SQLSTATE CR001;
--  2. locks the accounts (tenant order) and checks that each still has exactly the
--     expected balance, reserved, version and audit head; otherwise raises CR002;
--  3. updates the accounts that moved and inserts the transaction and audit rows,
--     asserting the row counts (CR003).
-- Any raise rolls everything back; the service then runs the batch through the
-- transactional path (claim, lock, decide, write), which also refreshes its states.
-- No session state of its own. The service calls it as a protocol-level named prepared statement:
-- through PgBouncer transaction pooling that needs max_prepared_statements > 0 (mesh/README.md).
CREATE FUNCTION credits_consume_batch(
  a_tenant text[], a_exp_balance bigint[], a_exp_reserved bigint[], a_exp_version bigint[], a_exp_audit_seq bigint[], a_exp_head text[],
  a_d_balance bigint[], a_d_version bigint[], a_head text[], a_updated_at timestamptz,
  m_id uuid[], m_tenant text[], m_amount bigint[], m_balance_after bigint[], m_reserved_after bigint[], m_reference text[],
  m_metadata text[], m_key text[], m_created_at timestamptz[], m_audit_seq bigint[], m_prev text[], m_hash text[], m_actor text[],
  k_tenant text[], k_key text[], k_method text, k_hash text[], k_response text[], k_error text[], k_ttl_hours int
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  n bigint;
BEGIN
  INSERT INTO credit_idempotency_keys (tenant_id, key, method, request_hash, state, response, error, completed_at, expires_at)
  SELECT u.tenant_id, u.key, k_method, decode(u.hash, 'hex'),
         CASE WHEN u.response IS NULL THEN 'FAILED' ELSE 'SUCCEEDED' END,
         decode(u.response, 'hex'), u.error::jsonb, now(), now() + make_interval(hours => k_ttl_hours)
    FROM unnest(k_tenant, k_key, k_hash, k_response, k_error) AS u(tenant_id, key, hash, response, error)
   ORDER BY u.tenant_id, u.key
  ON CONFLICT (tenant_id, key) DO NOTHING;
  GET DIAGNOSTICS n = ROW_COUNT;
  IF n <> cardinality(k_key) THEN
    RAISE EXCEPTION 'credits_consume_batch: an idempotency key is already used' USING ERRCODE = 'CR001';
  END IF;

  SELECT count(*) INTO n
    FROM (SELECT tenant_id, balance, reserved, version, audit_seq, audit_head
            FROM credit_accounts WHERE tenant_id = ANY(a_tenant) ORDER BY tenant_id FOR UPDATE) AS a
    JOIN unnest(a_tenant, a_exp_balance, a_exp_reserved, a_exp_version, a_exp_audit_seq, a_exp_head)
         AS e(tenant_id, balance, reserved, version, audit_seq, head)
      ON a.tenant_id = e.tenant_id AND a.balance = e.balance AND a.reserved = e.reserved AND a.version = e.version
     AND a.audit_seq = e.audit_seq AND a.audit_head IS NOT DISTINCT FROM decode(e.head, 'hex');
  IF n <> cardinality(a_tenant) THEN
    RAISE EXCEPTION 'credits_consume_batch: an account changed since the service last saw it' USING ERRCODE = 'CR002';
  END IF;

  UPDATE credit_accounts a
     SET balance = a.balance + u.d_balance, version = a.version + u.d_version, audit_seq = a.audit_seq + u.d_version,
         audit_head = decode(u.head, 'hex'), updated_at = a_updated_at
    FROM unnest(a_tenant, a_d_balance, a_d_version, a_head) AS u(tenant_id, d_balance, d_version, head)
   WHERE a.tenant_id = u.tenant_id AND u.d_version > 0;

  INSERT INTO credit_transactions (id, tenant_id, type, amount, balance_after, reserved_after, reference, metadata,
                                   idempotency_key, created_at)
  SELECT u.id, u.tenant_id, 'CONSUME', u.amount, u.balance_after, u.reserved_after, u.reference, u.metadata::jsonb,
         u.key, u.created_at
    FROM unnest(m_id, m_tenant, m_amount, m_balance_after, m_reserved_after, m_reference, m_metadata, m_key, m_created_at)
         WITH ORDINALITY AS u(id, tenant_id, amount, balance_after, reserved_after, reference, metadata, key, created_at, ord)
   ORDER BY u.ord;
  GET DIAGNOSTICS n = ROW_COUNT;
  IF n <> cardinality(m_id) THEN
    RAISE EXCEPTION 'credits_consume_batch: transaction rows not all written' USING ERRCODE = 'CR003';
  END IF;

  INSERT INTO credit_audit_logs (tenant_id, seq, occurred_at, action, amount, balance_after, reserved_after,
                                 transaction_id, reservation_id, idempotency_key, actor, prev_hash, hash)
  SELECT u.tenant_id, u.seq, u.created_at, 'CONSUME', u.amount, u.balance_after, u.reserved_after, u.id, NULL,
         u.key, u.actor, decode(u.prev, 'hex'), decode(u.hash, 'hex')
    FROM unnest(m_id, m_tenant, m_amount, m_balance_after, m_reserved_after, m_key, m_created_at, m_audit_seq, m_prev, m_hash, m_actor)
         AS u(id, tenant_id, amount, balance_after, reserved_after, key, created_at, seq, prev, hash, actor);
  GET DIAGNOSTICS n = ROW_COUNT;
  IF n <> cardinality(m_id) THEN
    RAISE EXCEPTION 'credits_consume_batch: audit rows not all written' USING ERRCODE = 'CR003';
  END IF;
END;
$$;

-- Down Migration
DROP FUNCTION IF EXISTS credits_consume_batch(text[], bigint[], bigint[], bigint[], bigint[], text[], bigint[], bigint[], text[], timestamptz,
  uuid[], text[], bigint[], bigint[], bigint[], text[], text[], text[], timestamptz[], bigint[], text[], text[], text[],
  text[], text[], text, text[], text[], text[], int);
