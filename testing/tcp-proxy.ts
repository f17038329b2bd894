/**
 * A TCP proxy for failure tests: the service under test reaches PostgreSQL or
 * Redis through it, and the test cuts, restores or black-holes the path.
 */
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { freePort } from '../dev/local-servers';

/**
 * A TCP proxy (to PostgreSQL or Redis) that can be cut and restored, or black-holed: `blackHole()`
 * stops forwarding on every open connection and leaves them open for good (a partition,
 * or a failed-over primary whose old connections die without a reset), and holds new
 * connections unanswered until `restore()`; connections opened after that work again.
 */
export class TcpProxy {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  private holding = false;

  constructor(
    readonly port: number,
    private readonly target: { host: string; port: number },
  ) {}

  async open(): Promise<void> {
    this.server = createServer((client) => {
      this.track(client);
      // Black-holed: accepted, never answered.
      if (!this.holding) this.forward(client);
    });
    await new Promise<void>((resolve) => this.server!.listen(this.port, '127.0.0.1', () => resolve()));
  }

  private track(s: Socket): void {
    this.sockets.add(s);
    s.on('close', () => this.sockets.delete(s));
    s.on('error', () => undefined);
  }

  private forward(client: Socket): void {
    const upstream = createConnection(this.target);
    this.track(upstream);
    client.pipe(upstream).pipe(client);
  }

  blackHole(): void {
    this.holding = true;
    for (const s of this.sockets) {
      s.unpipe();
      s.pause();
    }
  }

  /** New connections reach PostgreSQL again; the black-holed ones stay dead. */
  restore(): void {
    this.holding = false;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    this.server = undefined;
  }
}

/** A TcpProxy opened on a free port in front of the server `url` names, and `url` pointed at the proxy. */
export async function proxyFor(url: string, defaultPort: number): Promise<{ proxy: TcpProxy; url: string }> {
  const target = new URL(url);
  const proxy = new TcpProxy(await freePort(), { host: target.hostname, port: Number(target.port || defaultPort) });
  await proxy.open();
  target.host = `127.0.0.1:${proxy.port}`;
  return { proxy, url: target.toString() };
}
