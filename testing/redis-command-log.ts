/**
 * What a Redis server executed, seen through MONITOR: for tests that count round trips.
 */
import type Redis from 'ioredis';
import { Socket, createConnection } from 'node:net';

/**
 * The commands Redis executed for a piece of work, as the server saw them: a MONITOR connection
 * keeps every command that names a key under `prefix`, from any client. Commands a Lua script runs
 * are left out (they cost no round trip: the script call that ran them is listed). {@link during}
 * brackets the work with two sentinel commands and returns what MONITOR showed between them:
 * MONITOR reports in execution order, so nothing from before the work is counted and nothing of
 * the work is missed. Counting on a private prefix is immune to whatever else uses this Redis.
 *
 * A plain socket rather than ioredis' `monitor()`: ioredis enters monitor mode a microtask after
 * MONITOR's OK, and on a busy server the first monitored lines arrive in the same chunk and crash
 * its command queue. Keep the log open only for the test that needs it: MONITOR slows the server.
 */
export class RedisCommandLog {
  private readonly seen: string[][] = [];
  private sentinels = 0;
  private buffered = '';
  /** `+OK` replies seen (AUTH, MONITOR): monitoring starts with MONITOR's. */
  private okReplies = 0;

  private constructor(
    private readonly socket: Socket,
    private readonly client: Redis,
    private readonly prefix: string,
  ) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.take(chunk));
  }

  /** `client` issues the sentinels (any connection to the server the URL names will do). */
  static async open(client: Redis, prefix: string, url = process.env.TEST_REDIS_URL_RUN || process.env.TEST_REDIS_URL): Promise<RedisCommandLog> {
    if (!url) throw new Error('RedisCommandLog: no Redis URL (TEST_REDIS_URL_RUN or TEST_REDIS_URL)');
    const target = new URL(url);
    const socket = createConnection({ host: target.hostname, port: Number(target.port || 6379) });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    const log = new RedisCommandLog(socket, client, prefix);
    const command = (...args: string[]) => `*${args.length}\r\n${args.map((arg) => `$${Buffer.byteLength(arg)}\r\n${arg}\r\n`).join('')}`;
    const auth = target.password !== '';
    if (auth) socket.write(command('AUTH', decodeURIComponent(target.username || 'default'), decodeURIComponent(target.password)));
    socket.write(command('MONITOR'));
    // Only then the first sentinel: sent on another connection, it could otherwise run before MONITOR does and never be seen.
    for (let polls = 0; log.okReplies < (auth ? 2 : 1); polls += 1) {
      if (polls >= 1_000) throw new Error('MONITOR was not acknowledged');
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    await log.sentinel();
    return log;
  }

  /** Runs `work`, then returns the commands it caused, in execution order (`[NAME, ...args]`). */
  async during(work: () => Promise<unknown>): Promise<string[][]> {
    const start = await this.sentinel();
    await work();
    const end = await this.sentinel();
    return this.seen.slice(start + 1, end);
  }

  async close(): Promise<void> {
    this.socket.destroy();
  }

  /** Issues a GET of a fresh sentinel key and returns its index in {@link seen} once MONITOR shows it. */
  private async sentinel(): Promise<number> {
    this.sentinels += 1;
    const key = `${this.prefix}monitor-sentinel:${this.sentinels}`;
    await this.client.get(key);
    for (let polls = 0; polls < 2_000; polls += 1) {
      const index = this.seen.findIndex((command) => command[1] === key);
      if (index >= 0) return index;
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    throw new Error('MONITOR never showed the sentinel command');
  }

  /** MONITOR lines: `+<time> [<db> <client address | lua>] "NAME" "arg" ...` (args quoted, \\ and \" escaped). */
  private take(chunk: string): void {
    this.buffered += chunk;
    let from = 0;
    for (let end = this.buffered.indexOf('\r\n'); end >= 0; from = end + 2, end = this.buffered.indexOf('\r\n', from)) {
      const line = this.buffered.slice(from, end);
      if (line === '+OK') this.okReplies += 1;
      // Most lines are other clients' traffic: skip them before parsing.
      if (!line.includes(this.prefix)) continue;
      const source = /^\+\S+ \[\d+ ([^\]]+)\] /.exec(line);
      if (source === null || source[1] === 'lua') continue;
      const args = [...line.slice(source[0].length).matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((m) => (m[1] as string).replace(/\\(.)/g, '$1'));
      if (args.length < 2 || !args.slice(1).some((arg) => arg.startsWith(this.prefix))) continue;
      this.seen.push([(args[0] as string).toUpperCase(), ...args.slice(1)]);
    }
    this.buffered = this.buffered.slice(from);
  }
}
