-- Up Migration
ALTER TABLE shadow_rollouts
  -- How often the canary is analysed within a step (AnalysisConfig.interval); NULL (rows of
  -- existing rollouts, or written by a replica not yet upgraded) = the step duration.
  ADD COLUMN analysis_interval_ms integer CHECK (analysis_interval_ms > 0),
  -- When the latest analysis of the current step (or the gate) was made; the next is due an interval later.
  ADD COLUMN analysed_at timestamptz,
  -- The rollout's webhooks (CreateRolloutRequest.webhooks, validated), as JSON.
  ADD COLUMN webhooks jsonb NOT NULL DEFAULT '[]'::jsonb,
  -- Whether the rollback / post-rollout notifications of the finished rollout were claimed (sent at most once).
  ADD COLUMN webhooks_notified boolean NOT NULL DEFAULT false,
  -- User-defined metric checks (AnalysisConfig.metrics, validated), as JSON.
  ADD COLUMN metric_templates jsonb NOT NULL DEFAULT '[]'::jsonb;

-- Down Migration
ALTER TABLE shadow_rollouts DROP COLUMN metric_templates, DROP COLUMN webhooks_notified, DROP COLUMN webhooks,
  DROP COLUMN analysed_at, DROP COLUMN analysis_interval_ms;
