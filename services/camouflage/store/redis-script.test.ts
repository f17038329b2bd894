/**
 * RedisScript sends the calls of one event-loop turn as one pipeline: each caller
 * must still get its own reply or its own error, and a Redis that lost its
 * scripts (restart, failover: NOSCRIPT) must be served transparently.
 */
import { expect } from 'chai';
import Redis from 'ioredis';
import { testRedisUrl, uniquePrefix } from '../../../testing/camouflage-kit';
import { RedisScript } from './redis-script';
import { createRedisStandIn } from '../../../dev/redis-stand-in';

const ECHO_LUA = `
if ARGV[1] == 'fail' then return redis.error_reply('ERR asked to fail') end
return {KEYS[1], ARGV[1], redis.call('INCR', KEYS[1])}`;

describe('camouflage RedisScript pipelining', () => {
  // Production settings: auto-pipelining off (dev/redis-stand-in.ts).
  let redis: Redis;
  before(() => {
    redis = new Redis(testRedisUrl(), { enableAutoPipelining: false, maxRetriesPerRequest: 2 });
  });
  after(async () => {
    await redis.quit();
  });

  it('answers each of many concurrent calls with its own reply', async () => {
    const script = new RedisScript(`testEcho${Date.now()}`, ECHO_LUA);
    const prefix = uniquePrefix('script');
    const replies = await Promise.all(Array.from({ length: 200 }, (_, i) => script.run(redis, [`${prefix}${i % 7}`], [`arg-${i}`])));
    replies.forEach((reply, i) => expect((reply as unknown[]).slice(0, 2)).to.deep.equal([`${prefix}${i % 7}`, `arg-${i}`]));
    // Every call ran exactly once: each key was incremented once per call made on it.
    for (let k = 0; k < 7; k++) {
      expect(await redis.get(`${prefix}${k}`)).to.equal(String(replies.filter((_, i) => i % 7 === k).length));
    }
    // Calls of different key counts (two defined commands) share a pipeline too.
    const [one, two] = await Promise.all([script.run(redis, [`${prefix}a`], ['x']), script.run(redis, [`${prefix}b`, `${prefix}c`], ['y'])]);
    expect((one as unknown[]).slice(0, 2)).to.deep.equal([`${prefix}a`, 'x']);
    expect((two as unknown[]).slice(0, 2)).to.deep.equal([`${prefix}b`, 'y']);
  });

  it('rejects only the call whose script failed', async () => {
    const script = new RedisScript(`testEchoFail${Date.now()}`, ECHO_LUA);
    const prefix = uniquePrefix('script');
    const settled = await Promise.allSettled([
      script.run(redis, [`${prefix}1`], ['ok-1']),
      script.run(redis, [`${prefix}2`], ['fail']),
      script.run(redis, [`${prefix}3`], ['ok-3']),
    ]);
    expect(settled.map((s) => s.status)).to.deep.equal(['fulfilled', 'rejected', 'fulfilled']);
    expect(String((settled[1] as PromiseRejectedResult).reason)).to.contain('asked to fail');
    expect(((settled[2] as PromiseFulfilledResult<unknown[]>).value as unknown[])[1]).to.equal('ok-3');
  });

  it('reloads the script when Redis forgot it (NOSCRIPT) inside a pipeline', async () => {
    const script = new RedisScript(`testEchoFlush${Date.now()}`, ECHO_LUA);
    const prefix = uniquePrefix('script');
    await script.run(redis, [`${prefix}w`], ['warm']);
    await redis.script('FLUSH');
    const replies = await Promise.all(Array.from({ length: 20 }, (_, i) => script.run(redis, [`${prefix}n`], [`after-${i}`])));
    expect(replies.map((r) => (r as unknown[])[1])).to.deep.equal(Array.from({ length: 20 }, (_, i) => `after-${i}`));
    expect(await redis.get(`${prefix}n`)).to.equal('20');
  });
});

// `npm start` without REDIS_URL runs on ioredis-mock (dev/redis-stand-in.ts): its pipelines must run our scripts too.
describe('camouflage RedisScript on the in-process store', () => {
  it('answers concurrent calls pipelined through ioredis-mock', async () => {
    const redis = createRedisStandIn();
    const script = new RedisScript('testMockEcho', ECHO_LUA);
    const replies = await Promise.all(Array.from({ length: 10 }, (_, i) => script.run(redis, [`k${i % 3}`], [`a${i}`])));
    expect(replies.map((r) => (r as unknown[])[1])).to.deep.equal(Array.from({ length: 10 }, (_, i) => `a${i}`));
    expect(await redis.get('k0')).to.equal('4');
    redis.disconnect();
  });
});
