-- Up Migration
-- Canary rollouts of approved evaluations: a persisted state machine driven by
-- one leader controller (see shadow_leases), with an append-only event history.
CREATE TYPE shadow_rollout_state AS ENUM (
  'PENDING', 'PROGRESSING', 'AWAITING_PROMOTION', 'SUCCEEDED', 'ROLLED_BACK', 'ABORTED', 'FAILED'
);

CREATE TABLE shadow_rollouts (
  id                  uuid PRIMARY KEY,
  -- Keyset pagination order (newest first); exact, unlike timestamps.
  seq                 bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
  evaluation_id       uuid        NOT NULL REFERENCES shadow_evaluations (id),
  namespace           text        NOT NULL,
  virtual_service     text        NOT NULL,
  host                text        NOT NULL,
  stable_subset       text        NOT NULL,
  canary_subset       text        NOT NULL,
  route_name          text        NOT NULL,
  steps               integer[]   NOT NULL CHECK (cardinality(steps) BETWEEN 1 AND 20 AND steps[cardinality(steps)] = 100),
  step_duration_ms    integer     NOT NULL CHECK (step_duration_ms > 0),
  max_error_rate      double precision NOT NULL CHECK (max_error_rate BETWEEN 0 AND 1),
  max_p99_latency_ms  double precision NOT NULL CHECK (max_p99_latency_ms > 0),
  min_requests        bigint      NOT NULL CHECK (min_requests >= 0),
  max_inconclusive    integer     NOT NULL CHECK (max_inconclusive >= 1),
  analysis_window_ms  integer     NOT NULL CHECK (analysis_window_ms > 0),
  auto_rollback       boolean     NOT NULL,
  manual_promotion    boolean     NOT NULL,
  state               shadow_rollout_state NOT NULL DEFAULT 'PENDING',
  current_step        integer     NOT NULL DEFAULT 0,
  -- Desired canary weight, derived from state + step; what the router must show.
  canary_weight       integer     NOT NULL DEFAULT 0 CHECK (canary_weight BETWEEN 0 AND 100),
  -- Canary weight the router last confirmed writing (NULL: never written).
  applied_weight      integer CHECK (applied_weight BETWEEN 0 AND 100),
  -- When the current step's traffic split took effect; the step's clock.
  step_started_at     timestamptz,
  inconclusive_count  integer     NOT NULL DEFAULT 0,
  -- Bumped by every transition; transitions are compare-and-set on it, and it
  -- is the sequence number of the transition's event.
  version             bigint      NOT NULL DEFAULT 1,
  created_at          timestamptz NOT NULL DEFAULT now(),
  updated_at          timestamptz NOT NULL DEFAULT now(),
  CHECK (current_step >= 0 AND current_step < cardinality(steps))
);
CREATE INDEX shadow_rollouts_state ON shadow_rollouts (state, seq);
-- The controller's work list: active rollouts and finished ones whose weights are not yet applied.
CREATE INDEX shadow_rollouts_actionable ON shadow_rollouts (seq)
  WHERE state IN ('PENDING', 'PROGRESSING', 'AWAITING_PROMOTION') OR applied_weight IS DISTINCT FROM canary_weight;
-- Two live rollouts must never fight over one route's weights.
CREATE UNIQUE INDEX shadow_rollouts_one_active_per_route ON shadow_rollouts (namespace, virtual_service, route_name)
  WHERE state IN ('PENDING', 'PROGRESSING', 'AWAITING_PROMOTION');

CREATE TABLE shadow_rollout_events (
  rollout_id     uuid        NOT NULL REFERENCES shadow_rollouts (id) ON DELETE CASCADE,
  -- = shadow_rollouts.version after the transition: one event per transition, never two.
  sequence       bigint      NOT NULL,
  occurred_at    timestamptz NOT NULL DEFAULT now(),
  from_state     shadow_rollout_state,
  to_state       shadow_rollout_state NOT NULL,
  step           integer     NOT NULL,
  canary_weight  integer     NOT NULL,
  reason         text        NOT NULL,
  -- AnalysisSnapshot (proto JSON) the decision was made on; NULL for operator actions.
  analysis       jsonb,
  PRIMARY KEY (rollout_id, sequence)
);

-- Idempotency keys of the mutating rollout calls: the first response, replayed.
CREATE TABLE shadow_rollout_requests (
  idempotency_key  text PRIMARY KEY,
  method           text        NOT NULL,
  request_hash     text        NOT NULL,
  response         bytea,
  created_at       timestamptz NOT NULL DEFAULT now()
);

-- Leader leases (one row per lease name). Taken and renewed with one atomic
-- upsert per tick: safe behind PgBouncer transaction pooling, unlike session
-- advisory locks.
CREATE TABLE shadow_leases (
  name        text PRIMARY KEY,
  holder      text        NOT NULL,
  expires_at  timestamptz NOT NULL,
  acquired_at timestamptz NOT NULL DEFAULT now()
);

-- Down Migration
DROP TABLE shadow_leases;
DROP TABLE shadow_rollout_requests;
DROP TABLE shadow_rollout_events;
DROP TABLE shadow_rollouts;
DROP TYPE shadow_rollout_state;
