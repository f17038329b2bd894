-- Up Migration
-- The rollout an idempotent response is about, so that pruning old idempotency keys
-- (ROLLOUT_IDEMPOTENCY_RETENTION_HOURS) never drops the key of a rollout the controller still
-- drives: a retried AbortRollout of a live rollout must replay, not run again.
ALTER TABLE shadow_rollout_requests ADD COLUMN rollout_id uuid;
-- Existing responses (Create/Promote/AbortRolloutResponse) start with the rollout, whose first
-- field is its id: the first UUID in the encoded bytes.
UPDATE shadow_rollout_requests
   SET rollout_id = substring(encode(response, 'escape') FROM '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}')::uuid
 WHERE response IS NOT NULL;
-- The pruning scan: oldest first.
CREATE INDEX shadow_rollout_requests_created ON shadow_rollout_requests (created_at);

-- Down Migration
DROP INDEX shadow_rollout_requests_created;
ALTER TABLE shadow_rollout_requests DROP COLUMN rollout_id;
