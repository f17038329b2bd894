import { expect } from 'chai';
import type Redis from 'ioredis';
import { ServiceError } from '../../../platform/service-error';
import { connectTestRedis, deletePrefix, dumpPrefix, uniquePrefix } from '../../../testing/camouflage-kit';
import { RedisCommandLog } from '../../../testing/redis-command-log';
import { BUILT_IN_DECOYS, RegisterDecoyInput } from '../domain/decoy-catalog';
import { CamouflageEngine } from '../store/engine';

const CUSTOM: RegisterDecoyInput = {
  id: 'fake-jenkins-login',
  kind: 'admin_login',
  description: 'Jenkins sign-in page',
  tiers: ['suspicious', 'likely_bot'],
  status: 200,
  contentType: 'text/html; charset=utf-8',
  headers: { server: 'Jetty(10.0.18)', 'x-jenkins': '2.440.1' },
  template: '<html><head><title>Sign in [Jenkins]</title></head><body><form method="post" action="/j_spring_security_check"></form></body></html>',
};

async function expectReason(promise: Promise<unknown>, reason: string, field?: string): Promise<ServiceError> {
  try {
    await promise;
  } catch (thrown) {
    expect(thrown).to.be.instanceOf(ServiceError);
    const error = thrown as ServiceError;
    expect(error.reason, error.message).to.equal(reason);
    if (field !== undefined) expect(error.fieldViolations[0]?.field).to.equal(field);
    return error;
  }
  return expect.fail(`expected ${reason}`);
}

describe('camouflage decoy catalog', () => {
  let redis: Redis;
  let prefix: string;
  let engine: CamouflageEngine;

  beforeEach(() => {
    redis = connectTestRedis();
    prefix = uniquePrefix('catalog');
    engine = new CamouflageEngine({ redis, keyPrefix: prefix });
  });

  afterEach(async () => {
    await deletePrefix(redis, prefix);
    await redis.quit();
  });

  // Proves ListDecoys pages through every decoy exactly once, ordered by id, with opaque tokens.
  it('lists built-in and custom decoys page by page', async () => {
    await engine.registerDecoy(CUSTOM);
    const seen: string[] = [];
    let pageToken = '';
    for (let page = 0; page < 20; page += 1) {
      const result = await engine.listDecoys({ pageSize: 4, pageToken });
      expect(result.decoys.length).to.be.at.most(4);
      seen.push(...result.decoys.map((decoy) => decoy.id));
      pageToken = result.nextPageToken;
      if (pageToken === '') break;
      expect(pageToken).to.not.contain(result.decoys[3]?.id ?? '?'); // opaque, not the raw id
    }
    expect(seen).to.deep.equal([...BUILT_IN_DECOYS.map((decoy) => decoy.id), CUSTOM.id].sort());
    const all = await engine.listDecoys({ pageSize: 1_000 });
    expect(all.decoys).to.have.length(BUILT_IN_DECOYS.length + 1);
    expect(all.nextPageToken).to.equal('');
    expect((await engine.listDecoys()).decoys).to.have.length(BUILT_IN_DECOYS.length + 1);
  });

  // Proves a tier filter applies before paging: pages stay within page size and together list every match once.
  it('filters by tier without over-full pages or skipped decoys', async () => {
    await engine.registerDecoy(CUSTOM);
    const expected = [...BUILT_IN_DECOYS, CUSTOM]
      .filter((decoy) => (decoy.tiers as readonly string[]).includes('likely_bot'))
      .map((decoy) => decoy.id)
      .sort();
    const seen: string[] = [];
    let pageToken = '';
    for (let page = 0; page < 20; page += 1) {
      const result = await engine.listDecoys({ pageSize: 2, pageToken, tier: 'likely_bot' });
      expect(result.decoys.length).to.be.at.most(2);
      for (const decoy of result.decoys) expect(decoy.tiers).to.include('likely_bot');
      seen.push(...result.decoys.map((decoy) => decoy.id));
      pageToken = result.nextPageToken;
      if (pageToken === '') break;
    }
    expect(seen).to.deep.equal(expected);
    await expectReason(engine.listDecoys({ tier: 'paranoid' as 'attack' }), 'INVALID_ARGUMENT', 'tier');
  });

  // Proves a registration is visible to another replica (separate client and engine) through Redis.
  it('shares registrations across replicas', async () => {
    const registered = await engine.registerDecoy(CUSTOM);
    expect(registered.replayed).to.equal(false);
    expect(registered.decoy).to.deep.include({ id: CUSTOM.id, builtIn: false, carriesHoneytoken: false });
    const otherRedis = connectTestRedis();
    try {
      const other = new CamouflageEngine({ redis: otherRedis, keyPrefix: prefix });
      await other.start();
      const listed = (await other.listDecoys({ pageSize: 200 })).decoys.find((decoy) => decoy.id === CUSTOM.id);
      expect(listed).to.deep.include({ status: 200, headers: { server: 'Jetty(10.0.18)', 'x-jenkins': '2.440.1' } });
      const stats = await other.getBanditStats('suspicious');
      expect(stats.arms.map((arm) => arm.decoyId)).to.include(CUSTOM.id);
      expect((await other.getBanditStats('benign')).arms.map((arm) => arm.decoyId)).to.not.include(CUSTOM.id);
    } finally {
      await otherRedis.quit();
    }
  });

  // Proves ListDecoys and RegisterDecoy work from the replica's loaded catalog instead of re-reading it: a list costs one
  // HGET of the catalog version, a registration only its script; a registration by another replica (a newer version)
  // makes the next list reload once, and it then shows that decoy. Counted as the server saw them (MONITOR).
  it('lists from the loaded catalog and reloads only what another replica changed', async () => {
    const decoysKey = `${prefix}decoys`;
    const names = (commands: string[][]) => commands.map((command) => (command[0] === 'EVAL' ? 'EVALSHA' : command[0]));
    const ids = async () => (await engine.listDecoys({ pageSize: 200 })).decoys.map((decoy) => decoy.id);
    await engine.start();
    const log = await RedisCommandLog.open(redis, prefix);
    const otherRedis = connectTestRedis();
    try {
      let commands = await log.during(() => engine.registerDecoy(CUSTOM));
      expect(names(commands)).to.deep.equal(['EVALSHA']);
      let listed: string[] = [];
      commands = await log.during(async () => {
        listed = await ids();
      });
      expect(listed).to.include(CUSTOM.id);
      expect(names(commands)).to.deep.equal(['HGET']);

      const other = new CamouflageEngine({ redis: otherRedis, keyPrefix: prefix });
      await other.registerDecoy({ ...CUSTOM, id: 'fake-jenkins-login-2' });
      commands = await log.during(async () => {
        listed = await ids();
      });
      expect(listed).to.include.members([CUSTOM.id, 'fake-jenkins-login-2']);
      expect(commands.filter((command) => command[0] === 'HGETALL' && command[1] === decoysKey)).to.have.length(1);
      commands = await log.during(async () => {
        listed = await ids();
      });
      expect(names(commands)).to.deep.equal(['HGET']);
      expect(listed).to.deep.equal([...BUILT_IN_DECOYS.map((decoy) => decoy.id), CUSTOM.id, 'fake-jenkins-login-2'].sort());
    } finally {
      await log.close();
      await otherRedis.quit();
    }
  });

  // Proves an idempotent retry replays the registration while a reused key with another body is refused.
  it('replays idempotent registrations and refuses key reuse', async () => {
    await engine.registerDecoy(CUSTOM, { idempotencyKey: 'reg-1' });
    const again = await engine.registerDecoy(CUSTOM, { idempotencyKey: 'reg-1' });
    expect(again.replayed).to.equal(true);
    expect(again.decoy.id).to.equal(CUSTOM.id);
    const before = await dumpPrefix(redis, prefix);
    await expectReason(engine.registerDecoy({ ...CUSTOM, description: 'changed' }, { idempotencyKey: 'reg-1' }), 'IDEMPOTENCY_KEY_REUSED', 'idempotency_key');
    await expectReason(engine.registerDecoy(CUSTOM), 'DECOY_ALREADY_EXISTS', 'decoy.id');
    expect(await dumpPrefix(redis, prefix)).to.deep.equal(before);
  });

  // Proves every invalid registration is refused with a typed error naming the field and writes nothing.
  it('rejects bad registrations without changing state', async () => {
    await engine.registerDecoy(CUSTOM);
    const before = await dumpPrefix(redis, prefix);
    const honeytokenTemplate = 'API_KEY={{honeytoken}}';
    const cases: [unknown, string, string | undefined][] = [
      [{ ...CUSTOM, id: 'Bad Id' }, 'INVALID_ARGUMENT', 'decoy.id'],
      [{ ...CUSTOM, id: 'nginx-404' }, 'DECOY_ALREADY_EXISTS', 'decoy.id'],
      [{ ...CUSTOM, kind: 'rootkit' }, 'INVALID_ARGUMENT', 'decoy.kind'],
      [{ ...CUSTOM, tiers: [] }, 'INVALID_ARGUMENT', 'decoy.tiers'],
      [{ ...CUSTOM, tiers: ['suspicious', 'suspicious'] }, 'INVALID_ARGUMENT', 'decoy.tiers'],
      [{ ...CUSTOM, tiers: ['paranoid'] }, 'INVALID_ARGUMENT', 'decoy.tiers'],
      [{ ...CUSTOM, id: 'env-for-all', tiers: ['benign', 'attack'], carriesHoneytoken: true, template: honeytokenTemplate }, 'INVALID_ARGUMENT', 'decoy.tiers'],
      [{ ...CUSTOM, id: 'creds-for-all', tiers: ['benign'], carriesCredentials: true }, 'INVALID_ARGUMENT', 'decoy.tiers'],
      [{ ...CUSTOM, id: 'aws-file', kind: 'credentials_file', tiers: ['benign'] }, 'INVALID_ARGUMENT', 'decoy.tiers'],
      [{ ...CUSTOM, id: 'no-token', carriesHoneytoken: true }, 'INVALID_ARGUMENT', 'decoy.content_template'],
      [{ ...CUSTOM, id: 'stray-token', template: honeytokenTemplate }, 'INVALID_ARGUMENT', 'decoy.content_template'],
      [{ ...CUSTOM, id: 'heavy-benign', tiers: ['benign'], template: 'x'.repeat(2_049) }, 'INVALID_ARGUMENT', 'decoy.content_template'],
      [{ ...CUSTOM, template: '' }, 'INVALID_ARGUMENT', 'decoy.content_template'],
      [{ ...CUSTOM, status: 700 }, 'INVALID_ARGUMENT', 'decoy.status'],
      [{ ...CUSTOM, headers: { 'x-evil': 'a\r\nSet-Cookie: pwned=1' } }, 'INVALID_ARGUMENT', 'decoy.headers.x-evil'],
      [{ ...CUSTOM, headers: { 'bad header': 'x' } }, 'INVALID_ARGUMENT', 'decoy.headers'],
      // The documented bounds (proto Decoy.status / headers): just past each one is refused.
      [{ ...CUSTOM, status: 99 }, 'INVALID_ARGUMENT', 'decoy.status'],
      [{ ...CUSTOM, headers: Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`x-h${i}`, 'v'])) }, 'INVALID_ARGUMENT', 'decoy.headers'],
      [{ ...CUSTOM, headers: { 'x-long': 'v'.repeat(513) } }, 'INVALID_ARGUMENT', 'decoy.headers.x-long'],
      [{ ...CUSTOM, headers: { 'x-nul': 'a\0b' } }, 'INVALID_ARGUMENT', 'decoy.headers.x-nul'],
      [{ ...CUSTOM, honeytokenShape: 'aws' }, 'INVALID_ARGUMENT', 'decoy.honeytoken_shape'],
      [{ ...CUSTOM, carriesCredentials: 'yes' }, 'INVALID_ARGUMENT', 'decoy.carries_credentials'],
      [null, 'INVALID_ARGUMENT', 'decoy'],
    ];
    for (const [input, reason, field] of cases) {
      await expectReason(engine.registerDecoy(input as RegisterDecoyInput), reason, field);
    }
    await expectReason(engine.registerDecoy({ ...CUSTOM, id: 'ok-id-2' }, { idempotencyKey: 'has space' }), 'INVALID_ARGUMENT', 'idempotency_key');
    expect(await dumpPrefix(redis, prefix)).to.deep.equal(before);
  });

  // Proves listing validates its arguments with typed errors.
  it('validates page size and page token', async () => {
    await expectReason(engine.listDecoys({ pageSize: -1 }), 'INVALID_ARGUMENT', 'page_size');
    await expectReason(engine.listDecoys({ pageSize: 2.5 }), 'INVALID_ARGUMENT', 'page_size');
    await expectReason(engine.listDecoys({ pageToken: 'not-a-token' }), 'INVALID_ARGUMENT', 'page_token');
    await expectReason(engine.listDecoys({ pageToken: Buffer.from('{"v":1,"after":"../x"}').toString('base64url') }), 'INVALID_ARGUMENT', 'page_token');
    expect((await engine.listDecoys({ pageSize: 100_000 })).decoys.length).to.equal(BUILT_IN_DECOYS.length);
  });
});
