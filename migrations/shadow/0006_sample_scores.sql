-- Up Migration
-- A detector's score carried on a sample (TrafficSample.score, e.g. a model's probability of
-- attack), read by score rules and so ranked by AUC-ROC. NULL when the sample carries none.
ALTER TABLE shadow_samples ADD COLUMN score double precision CHECK (score >= 0 AND score < 'Infinity');

-- Down Migration
ALTER TABLE shadow_samples DROP COLUMN score;
