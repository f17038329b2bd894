/**
 * The shadow service's settings (merged by the platform with platformConfigSchema): evaluation,
 * sample ingest, demo data and the rollout controller. Every integer is an integerSetting, so a
 * bad value is refused with the mesh's words ("must be a number", "must be an integer",
 * "must be at least N"). Documented in docs/configuration.md.
 */
import { z } from 'zod';
import { integerSetting } from '../../platform/config';

/** The rollout controller's variables (the rollout test kit serves the rollout RPCs with only these). */
export const rolloutConfigShape = {
  /** `file` (local default: VirtualService manifests in ROLLOUT_FILE_ROUTER_DIR) or `kubernetes` (the API server). */
  ROLLOUT_ROUTER: z.enum(['file', 'kubernetes'], { errorMap: () => ({ message: 'must be "file" or "kubernetes"' }) }).default('file'),
  /** Directory of `<namespace>.<name>.yaml` manifests; relative paths are under the project root. */
  ROLLOUT_FILE_ROUTER_DIR: z.string().min(1, 'must not be empty').default('.data/virtualservices'),
  /** networking.istio.io API version the Kubernetes router uses: v1 (Istio ≥ 1.22) or v1beta1. */
  ROLLOUT_ISTIO_API_VERSION: z.enum(['v1', 'v1beta1'], { errorMap: () => ({ message: 'must be "v1" or "v1beta1"' }) }).default('v1'),
  PROMETHEUS_URL: z.string().url('must be an http(s) URL').regex(/^https?:\/\//, 'must be an http(s) URL').default('http://127.0.0.1:9090'),
  PROMETHEUS_TIMEOUT_MS: integerSetting(100, 60_000).default(5_000),
  /** How often the leader reconciles rollouts. */
  ROLLOUT_TICK_MS: integerSetting(50, 60_000).default(2_000),
  /** Leader lease TTL; must exceed 2 × ROLLOUT_TICK_MS. */
  ROLLOUT_LEADER_LEASE_SECONDS: integerSetting(1, 600).default(15),
  /** WatchRollout's poll interval of the event table. */
  ROLLOUT_WATCH_POLL_MS: integerSetting(50, 10_000).default(500),
  /**
   * How long idempotency keys of CreateRollout / PromoteRollout / AbortRollout are kept (a retry
   * within it replays the first response). The leader prunes older keys, except those of rollouts
   * it still drives.
   */
  ROLLOUT_IDEMPOTENCY_RETENTION_HOURS: integerSetting(24, 24 * 365).default(168),
  /** How often the leader prunes expired rollout idempotency keys. */
  ROLLOUT_IDEMPOTENCY_PRUNE_INTERVAL_SECONDS: integerSetting(1, 86_400).default(600),
  /** `off`: this replica serves the rollout RPCs but never runs the controller. */
  ROLLOUT_CONTROLLER: z.enum(['on', 'off'], { errorMap: () => ({ message: 'must be "on" or "off"' }) }).default('on'),
};
export type RolloutConfig = z.infer<z.ZodObject<typeof rolloutConfigShape>>;

/** Every shadow variable: the service module's configShape. */
export const shadowConfigShape = {
  ...rolloutConfigShape,
  /** Load a generated, labelled demo dataset ("demo") in the background after start when it is empty (npm start sets it). */
  SHADOW_DEMO_DATA: z.enum(['true', 'false']).default('false').transform((v) => v === 'true'),
  SHADOW_DEMO_SAMPLES: integerSetting(1, 5_000_000).default(20_000),
  /** Samples kept loaded (columnar, ~30 bytes each) for re-evaluating the same selection; 0 disables. */
  SHADOW_SAMPLE_CACHE_MAX: integerSetting(0, 50_000_000).default(5_000_000),
  /** Samples one IngestSamples call may carry: the whole call is one transaction. */
  SHADOW_INGEST_SAMPLES_MAX: integerSetting(1, 50_000_000).default(5_000_000),
  /** Longest an IngestSamples call (and so its transaction) may stay open. */
  SHADOW_INGEST_SECONDS_MAX: integerSetting(1, 3600).default(120),
  /** IngestSamples calls one replica runs at once: each holds a pooled connection for its whole stream. */
  SHADOW_INGEST_STREAMS_MAX: integerSetting(1, 1000).default(4),
  /**
   * Where the evaluation runner LISTENs for new jobs (a direct or session-pooled connection: LISTEN does not
   * work through PgBouncer transaction pooling); unset: DATABASE_URL; `off`: poll only.
   */
  SHADOW_LISTEN_DATABASE_URL: z
    .string()
    .regex(/^(postgres(ql)?:\/\/|off$)/, 'must be a postgres:// URL or "off"')
    .optional(),
  /** An idle runner's fallback poll for pending jobs (notifications wake it at once). */
  SHADOW_EVALUATION_POLL_MS: integerSetting(100, 600_000).default(5_000),
  /** How often a replica re-queues evaluations whose replica died (their lease ran out). */
  SHADOW_EVALUATION_LEASE_SWEEP_SECONDS: integerSetting(1, 3600).default(30),
  /**
   * How long an evaluation's sample load waits for the read replica (DATABASE_READ_URL) to replay
   * the job's WAL position before it loads from the primary instead; 0: one check.
   */
  SHADOW_EVALUATION_REPLICA_WAIT_MS: integerSetting(0, 60_000).default(1_000),
  /** Worker threads per evaluation: a number, or auto (by sample count and cores). */
  SHADOW_EVALUATION_WORKERS: z
    .union([z.literal('auto'), integerSetting(0, 16)], { errorMap: () => ({ message: 'must be "auto" or an integer from 0 to 16' }) })
    .default('auto'),
};
export type ShadowConfig = z.infer<z.ZodObject<typeof shadowConfigShape>>;
