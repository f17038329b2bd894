/**
 * Camouflage's settings (docs/configuration.md, "camouflage"): the zod shape the platform's
 * loadConfig validates at start. Every integer variable is an `integerSetting`, so a bad number is
 * refused with the same words as in the rest of the mesh.
 */
import { z } from 'zod';
import { integerSetting } from '../../platform/config';
import {
  DECISION_TTL_SECONDS_DEFAULT,
  DECISION_TTL_SECONDS_MAX,
  HONEYTOKEN_TTL_SECONDS_DEFAULT,
  HONEYTOKEN_TTL_SECONDS_MAX,
  KEY_PREFIX_DEFAULT,
} from './store/engine';
import { isValidKeyPrefix } from './store/redis-keys';
import { WAF_TIMEOUT_MICROS_DEFAULT } from './waf/ddwaf';

export const camouflageConfigShape = {
  CAMOUFLAGE_BANDIT_POLICY: z.enum(['ucb1', 'thompson']).default('ucb1'),
  CAMOUFLAGE_REDIS_PREFIX: z.string().refine(isValidKeyPrefix, 'must be 1-64 printable ASCII characters without spaces').default(KEY_PREFIX_DEFAULT),
  // Bounds and defaults are the engine's, so a value the config accepts never fails engine.start().
  CAMOUFLAGE_DECISION_TTL_SECONDS: integerSetting(60, DECISION_TTL_SECONDS_MAX).default(DECISION_TTL_SECONDS_DEFAULT),
  CAMOUFLAGE_HONEYTOKEN_TTL_SECONDS: integerSetting(3600, HONEYTOKEN_TTL_SECONDS_MAX).default(HONEYTOKEN_TTL_SECONDS_DEFAULT),
  // libddwaf with the vendored ruleset under the project's own detectors (waf/ddwaf.ts); off: own detectors only.
  CAMOUFLAGE_WAF: z.enum(['on', 'off']).default('on'),
  // Budget of one WAF run; a run that does not finish is the signal waf-timeout (SUSPICIOUS), never benign.
  CAMOUFLAGE_WAF_TIMEOUT_MICROS: integerSetting(100, 1_000_000).default(WAF_TIMEOUT_MICROS_DEFAULT),
};
export type CamouflageConfigShape = typeof camouflageConfigShape;
