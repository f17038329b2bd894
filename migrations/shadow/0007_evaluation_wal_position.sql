-- Up Migration
-- The primary's WAL insert position when the job was created: every sample committed before the
-- StartEvaluation call (the caller's own ingest among them) ends at or below it. The runner loads
-- the samples from the read replica only once the replica has replayed past it (checked in the
-- load's own transaction on the replica), otherwise from the primary. NULL for jobs created before
-- this migration: those load from the primary.
ALTER TABLE shadow_evaluations ADD COLUMN created_wal_lsn pg_lsn;

-- Down Migration
ALTER TABLE shadow_evaluations DROP COLUMN created_wal_lsn;
