-- Up Migration
-- Fencing: a lease's epoch grows by one each time the lease changes hands, so a write carrying
-- an older epoch (a paused ex-leader's) can be told apart from the current leader's and refused.
ALTER TABLE shadow_leases ADD COLUMN epoch bigint NOT NULL DEFAULT 0;

ALTER TABLE shadow_rollouts
  -- Unhealthy analyses in a row before rollback (AnalysisConfig.failure_threshold).
  ADD COLUMN failure_threshold integer NOT NULL DEFAULT 1 CHECK (failure_threshold BETWEEN 1 AND 100),
  ADD COLUMN unhealthy_count integer NOT NULL DEFAULT 0,
  -- A live rollout that has not advanced a step for this long fails (progress_deadline).
  ADD COLUMN progress_deadline_ms bigint NOT NULL DEFAULT 600000 CHECK (progress_deadline_ms > 0),
  -- When it last advanced a step (or was created).
  ADD COLUMN progressed_at timestamptz NOT NULL DEFAULT now(),
  -- Verdict of the latest analysis (AnalysisVerdict name), also of the analyses made at the manual
  -- gate, which record no event while healthy: PromoteRollout requires it HEALTHY.
  ADD COLUMN last_verdict text;

-- Down Migration
ALTER TABLE shadow_rollouts DROP COLUMN last_verdict, DROP COLUMN progressed_at, DROP COLUMN progress_deadline_ms,
  DROP COLUMN unhealthy_count, DROP COLUMN failure_threshold;
ALTER TABLE shadow_leases DROP COLUMN epoch;
