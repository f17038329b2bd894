/**
 * createRedis against a real Redis behind a TCP proxy: a connection that goes
 * silent without closing is replaced once a command has waited the socket
 * timeout, so commands work again once Redis can be reached; without the
 * timeout ioredis would wait on the dead socket for good.
 */
import { expect } from 'chai';
import type Redis from 'ioredis';
import { createRedis } from './redis';
import { testInfrastructure } from '../testing/harness';
import { proxyFor, type TcpProxy } from '../testing/tcp-proxy';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('platform redis: a Redis that goes silent', function () {
  this.timeout(30_000);
  let proxy: TcpProxy;
  let url: string;
  const clients: Redis[] = [];

  before(async () => {
    const proxied = await proxyFor(testInfrastructure().redisUrl, 6379);
    proxy = proxied.proxy;
    url = proxied.url;
  });
  after(async () => {
    for (const c of clients) c.disconnect();
    await proxy.close();
  });

  const client = (socketTimeout: number | undefined) => {
    const c = createRedis(url, undefined, { socketTimeout });
    clients.push(c);
    return c;
  };
  /** The PING's answer, 'silent' when none came within `ms`, or 'error' when it failed. */
  const pingWithin = (c: Redis, ms: number) => Promise.race([c.ping().catch(() => 'error'), sleep(ms).then(() => 'silent')]);

  // Black-holed, then reachable again: the client with the timeout answers again; one without it, same set-up,
  // never does. An idle connection is not timed out (only a command waiting for its reply is).
  it('replaces a connection on which a command waited the socket timeout', async () => {
    const timed = client(300);
    const untimed = client(undefined);
    expect(await timed.ping()).to.equal('PONG');
    expect(await untimed.ping()).to.equal('PONG');
    await sleep(600);
    expect(timed.status, 'idle past the timeout').to.equal('ready');

    proxy.blackHole();
    expect(await pingWithin(timed, 100)).to.equal('silent');
    expect(await pingWithin(untimed, 100)).to.equal('silent');
    proxy.restore();

    let answer: string | undefined;
    for (let i = 0; i < 40 && answer !== 'PONG'; i++) answer = await pingWithin(timed, 250);
    expect(answer).to.equal('PONG');
    // The control: nothing but the timeout tells the two apart.
    expect(await pingWithin(untimed, 1_000)).to.equal('silent');
  });
});
