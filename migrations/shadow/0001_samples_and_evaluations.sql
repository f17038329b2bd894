-- Up Migration
-- Recorded, labelled traffic that candidate rules are replayed against.
CREATE TABLE shadow_samples (
  id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  dataset        text        NOT NULL CHECK (dataset ~ '^[a-z0-9_-]{1,64}$'),
  observed_at    timestamptz NOT NULL,
  client_key     text        NOT NULL DEFAULT '',
  client_ip      inet        NOT NULL,
  method         text        NOT NULL,
  path           text        NOT NULL,
  status         smallint    NOT NULL CHECK (status BETWEEN 100 AND 599),
  user_agent     text        NOT NULL DEFAULT '',
  headers        jsonb       NOT NULL DEFAULT '{}'::jsonb,
  request_bytes  bigint      NOT NULL DEFAULT 0 CHECK (request_bytes >= 0),
  malicious      boolean     NOT NULL,
  attack_type    text        NOT NULL DEFAULT '',
  CHECK (malicious = (attack_type <> ''))
);
-- Replay reads a dataset in time order.
CREATE INDEX shadow_samples_dataset_time ON shadow_samples (dataset, observed_at, id);

CREATE TYPE shadow_evaluation_state AS ENUM ('PENDING', 'RUNNING', 'SUCCEEDED', 'FAILED');

-- A persisted evaluation job. `rule`, `baseline_rule`, `selection`, `thresholds`
-- and `result` hold the proto messages as their canonical JSON.
CREATE TABLE shadow_evaluations (
  id               uuid PRIMARY KEY,
  name             text        NOT NULL DEFAULT '',
  state            shadow_evaluation_state NOT NULL DEFAULT 'PENDING',
  rule             jsonb       NOT NULL,
  baseline_rule    jsonb,
  selection        jsonb       NOT NULL,
  thresholds       jsonb       NOT NULL DEFAULT '{}'::jsonb,
  result           jsonb,
  -- Recommendation of a SUCCEEDED job, e.g. 'DECISION_APPROVE_CANARY' (the rollout gate reads it).
  decision         text,
  error            text        NOT NULL DEFAULT '',
  idempotency_key  text UNIQUE,
  request_hash     text,
  attempts         integer     NOT NULL DEFAULT 0,
  -- A RUNNING job whose lease ran out (its replica died) is taken up again.
  lease_expires_at timestamptz,
  created_at       timestamptz NOT NULL DEFAULT now(),
  started_at       timestamptz,
  completed_at     timestamptz,
  CHECK ((state = 'SUCCEEDED') = (result IS NOT NULL))
);
CREATE INDEX shadow_evaluations_created ON shadow_evaluations (created_at DESC, id DESC);
CREATE INDEX shadow_evaluations_state ON shadow_evaluations (state) WHERE state IN ('PENDING', 'RUNNING');

-- Down Migration
DROP TABLE shadow_evaluations;
DROP TYPE shadow_evaluation_state;
DROP TABLE shadow_samples;
