/**
 * Shared helpers for the camouflage tests: a real Redis client for the run, a unique key prefix
 * per test so tests never see each other's keys, and a canonical dump of everything under a
 * prefix so "no state change" can be asserted by comparing dumps.
 *
 * The Redis URL: under `npm test` the root hooks (testing/harness.ts) publish the run's server as
 * TEST_REDIS_URL_RUN (a redis-server they started, or TEST_REDIS_URL when set); run standalone
 * with `--no-config`, TEST_REDIS_URL is read directly.
 */
import type Redis from 'ioredis';
import { createRedis } from '../platform/redis';
import { uniquePrefix as harnessUniquePrefix } from './harness';
import type { AssessInput } from '../services/camouflage/domain/threat-signals';

export function testRedisUrl(): string {
  const url = process.env.TEST_REDIS_URL_RUN || process.env.TEST_REDIS_URL;
  if (url === undefined || url === '') {
    throw new Error('TEST_REDIS_URL is not set (and no test harness published TEST_REDIS_URL_RUN): the camouflage tests need a real Redis');
  }
  return url;
}

/** A client with production's options (platform/redis.ts: auto-pipelining off). */
export function connectTestRedis(): Redis {
  return createRedis(testRedisUrl());
}

/** `test:camo:<label>:<random>:` (the harness' unique prefix under `camo:`). */
export function uniquePrefix(label: string): string {
  return harnessUniquePrefix(`camo:${label}`);
}

/** Bound on keys a test may create under its prefix (the sweep loop stops there). */
const TEST_KEYS_MAX = 200_000;

export async function keysUnder(redis: Redis, prefix: string): Promise<string[]> {
  const out: string[] = [];
  let cursor = '0';
  do {
    const [next, batch] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1_000);
    cursor = next;
    out.push(...batch);
  } while (cursor !== '0' && out.length < TEST_KEYS_MAX);
  return out.sort();
}

/** Every key under the prefix with its type and content (TTLs left out: they tick). */
export async function dumpPrefix(redis: Redis, prefix: string): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  for (const key of await keysUnder(redis, prefix)) {
    const type = await redis.type(key);
    if (type === 'hash') out[key] = await redis.hgetall(key);
    else if (type === 'string') out[key] = await redis.get(key);
    else if (type === 'zset') out[key] = await redis.zrange(key, 0, -1, 'WITHSCORES');
    else out[key] = type;
  }
  return out;
}

export async function deletePrefix(redis: Redis, prefix: string): Promise<void> {
  const keys = await keysUnder(redis, prefix);
  for (let i = 0; i < keys.length; i += 500) await redis.del(...keys.slice(i, i + 500));
}

export const T0_MS = 1_700_000_000_000;

export const CHROME_UA =
  'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36';
export const FIREFOX_UA = 'Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0';
export const SAFARI_UA =
  'Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15';

/** A request as a real browser sends it (Chrome navigation headers). */
export function browserRequest(overrides: Partial<AssessInput> = {}): AssessInput {
  return {
    clientIp: '203.0.113.7',
    method: 'GET',
    path: '/products/42',
    query: 'page=2&sort=price',
    userAgent: CHROME_UA,
    headers: {
      host: 'shop.example.com',
      accept: 'text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8',
      'accept-language': 'en-GB,en;q=0.9',
      'accept-encoding': 'gzip, deflate, br, zstd',
      cookie: 'sid=3f9a1c77b2; _ga=GA1.1.1234567890.1700000000; consent=yes',
      referer: 'https://shop.example.com/products?page=1&q=running+shoes',
      'sec-ch-ua': '"Chromium";v="124", "Google Chrome";v="124", "Not-A.Brand";v="99"',
      'sec-ch-ua-mobile': '?0',
      'sec-ch-ua-platform': '"Windows"',
      'sec-fetch-dest': 'document',
      'sec-fetch-mode': 'navigate',
      'sec-fetch-site': 'same-origin',
      'upgrade-insecure-requests': '1',
    },
    sessionKey: 'browser-session',
    timestampMs: T0_MS,
    ...overrides,
  };
}

/** A request as a scanner sends it: tool user agent, bare headers, host by IP. */
export function scannerRequest(overrides: Partial<AssessInput> = {}): AssessInput {
  return {
    clientIp: '198.51.100.23',
    method: 'GET',
    path: '/.env',
    query: '',
    userAgent: 'Mozilla/5.00 (Nikto/2.5.0) (Evasions:None) (Test:000562)',
    headers: { host: '192.0.2.10', connection: 'close' },
    sessionKey: 'scanner-session',
    timestampMs: T0_MS,
    ...overrides,
  };
}
