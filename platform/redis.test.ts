/**
 * watchConnection against a real Redis behind a TCP proxy: a connection that goes
 * silent without closing is reconnected, so commands work again once Redis can be
 * reached; without the watch ioredis would wait on the dead socket for good.
 */
import { expect } from 'chai';
import Redis from 'ioredis';
import { freePort } from './local-servers';
import { watchConnection } from './redis';
import { testInfrastructure } from '../test/harness';
import { TcpProxy } from '../test/tcp-proxy';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('platform redis: watchConnection', function () {
  this.timeout(30_000);
  let proxy: TcpProxy;
  const clients: Redis[] = [];

  before(async () => {
    const url = new URL(testInfrastructure().redisUrl);
    proxy = new TcpProxy(await freePort(), { host: url.hostname, port: Number(url.port || 6379) });
    await proxy.open();
  });
  after(async () => {
    for (const c of clients) c.disconnect();
    await proxy.close();
  });

  const client = () => {
    const c = new Redis({ host: '127.0.0.1', port: proxy.port, maxRetriesPerRequest: 1 });
    c.on('error', () => undefined);
    clients.push(c);
    return c;
  };
  /** The PING's answer, or 'silent' when none came within `ms`. */
  const pingWithin = (c: Redis, ms: number) => Promise.race([c.ping(), sleep(ms).then(() => 'silent')]);

  // Black-holed and restored: the watched client answers again; an unwatched one, same set-up, never does.
  it('reconnects a connection that stopped answering', async () => {
    const watched = client();
    const unwatched = client();
    const stop = watchConnection(watched, undefined, { pingEveryMs: 100, silenceMaxMs: 300 });
    expect(await watched.ping()).to.equal('PONG');
    expect(await unwatched.ping()).to.equal('PONG');

    proxy.blackHole();
    expect(await pingWithin(watched, 200)).to.equal('silent');
    proxy.restore();

    let answer: string | undefined;
    for (let i = 0; i < 40 && answer !== 'PONG'; i++) answer = await pingWithin(watched, 250).catch(() => 'error');
    expect(answer).to.equal('PONG');
    // The control: nothing but the watch tells the two apart.
    expect(await pingWithin(unwatched, 1_000)).to.equal('silent');
    stop();
  });
});
