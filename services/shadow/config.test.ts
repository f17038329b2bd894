import { expect } from 'chai';
import { z } from 'zod';
import { ConfigError, loadConfig } from '../../platform/config';
import { shadowConfigShape } from './config';

const schema = z.object(shadowConfigShape);

function problem(env: NodeJS.ProcessEnv): string {
  try {
    loadConfig(schema, env);
  } catch (error) {
    expect(error).to.be.instanceOf(ConfigError);
    return (error as ConfigError).message;
  }
  throw new Error('expected a ConfigError');
}

describe('shadow config', () => {
  it('has a default for every variable', () => {
    const config = loadConfig(schema, {});
    expect(config).to.include({ SHADOW_DEMO_SAMPLES: 20_000, SHADOW_EVALUATION_WORKERS: 'auto', ROLLOUT_TICK_MS: 2_000, SHADOW_SAMPLE_CACHE_MAX: 5_000_000 });
  });

  // Every integer is platform integerSetting: the same words as credits and camouflage.
  it('refuses a bad integer with the mesh words', () => {
    expect(problem({ SHADOW_DEMO_SAMPLES: 'abc' })).to.equal('invalid configuration: SHADOW_DEMO_SAMPLES must be a number');
    expect(problem({ SHADOW_INGEST_SECONDS_MAX: '1.5' })).to.equal('invalid configuration: SHADOW_INGEST_SECONDS_MAX must be an integer');
    expect(problem({ SHADOW_EVALUATION_POLL_MS: '99' })).to.equal('invalid configuration: SHADOW_EVALUATION_POLL_MS must be at least 100');
    expect(problem({ SHADOW_SAMPLE_CACHE_MAX: '-1' })).to.equal('invalid configuration: SHADOW_SAMPLE_CACHE_MAX must be at least 0');
    expect(problem({ ROLLOUT_TICK_MS: 'x' })).to.equal('invalid configuration: ROLLOUT_TICK_MS must be a number');
  });

  it('takes auto or a worker count for SHADOW_EVALUATION_WORKERS', () => {
    expect(loadConfig(schema, { SHADOW_EVALUATION_WORKERS: '4' }).SHADOW_EVALUATION_WORKERS).to.equal(4);
    expect(problem({ SHADOW_EVALUATION_WORKERS: 'many' })).to.equal('invalid configuration: SHADOW_EVALUATION_WORKERS must be "auto" or an integer from 0 to 16');
    expect(problem({ SHADOW_EVALUATION_WORKERS: '17' })).to.equal('invalid configuration: SHADOW_EVALUATION_WORKERS must be at most 16');
  });
});
