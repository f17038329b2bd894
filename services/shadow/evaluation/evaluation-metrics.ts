/** The evaluation runner's Prometheus metrics (one set per service instance, on its registry). */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

export interface EvaluationMetrics {
  readonly active: Gauge;
  readonly duration: Histogram;
  readonly completed: Counter<'is_significant'>;
  /** Sample loads by where they read (replica / primary) and why (store/sample-store.ts SampleSourceReason). */
  readonly sampleLoads: Counter<'source' | 'reason'>;
}

export function createEvaluationMetrics(registry: Registry): EvaluationMetrics {
  return {
    active: new Gauge({ name: 'shadow_evaluations_active', help: 'Evaluations running on this replica.', registers: [registry] }),
    duration: new Histogram({
      name: 'shadow_evaluation_duration_seconds',
      help: 'Wall time of an evaluation (load + replay + statistics).',
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120],
      registers: [registry],
    }),
    completed: new Counter({
      name: 'shadow_evaluations_total',
      help: 'Evaluations completed, by whether the rule/label association was significant.',
      labelNames: ['is_significant'],
      registers: [registry],
    }),
    sampleLoads: new Counter({
      name: 'shadow_evaluation_sample_loads_total',
      help:
        'Evaluation sample loads, by source (replica: DATABASE_READ_URL had replayed past the job\'s WAL position; primary) and reason ' +
        '(replica_caught_up, no_replica, replica_outside_lag_bound, no_job_position, replica_behind, replica_not_standby, replica_failed).',
      labelNames: ['source', 'reason'],
      registers: [registry],
    }),
  };
}
