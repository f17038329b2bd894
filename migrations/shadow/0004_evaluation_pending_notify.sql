-- Up Migration
-- Wakes idle evaluation runners when a job becomes PENDING (created, or re-queued after its
-- replica died), instead of each replica polling the table several times a second. The payload
-- is empty: NOTIFY folds identical notifications of one transaction into one, and a runner claims
-- whatever is pending anyway. Runners that cannot LISTEN (e.g. behind PgBouncer transaction
-- pooling) still find jobs by their slower poll.
CREATE FUNCTION shadow_notify_evaluation_pending() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('shadow_evaluation_pending', '');
  RETURN NULL;
END;
$$;

CREATE TRIGGER shadow_evaluations_pending_notify
  AFTER INSERT OR UPDATE OF state ON shadow_evaluations
  FOR EACH ROW WHEN (NEW.state = 'PENDING')
  EXECUTE FUNCTION shadow_notify_evaluation_pending();

-- Down Migration
DROP TRIGGER shadow_evaluations_pending_notify ON shadow_evaluations;
DROP FUNCTION shadow_notify_evaluation_pending();
