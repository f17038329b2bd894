/**
 * The grpc-js 1.14 internals platform/transport-limits.ts relies on, on a bare grpc-js server:
 * if an upgrade renames or reshapes them, these fail (the service itself would only log a
 * warning and run without the limits).
 */
import http2 from 'node:http2';
import { Server, ServerCredentials } from '@grpc/grpc-js';
import { expect } from 'chai';
import { createLogger } from './logger';
import { limitMetadata, reapStalledSessions } from './transport-limits';

const ECHO = {
  Echo: {
    path: '/t.T/Echo',
    requestStream: false,
    responseStream: false,
    requestSerialize: (b: Buffer) => b,
    requestDeserialize: (b: Buffer) => b,
    responseSerialize: (b: Buffer) => b,
    responseDeserialize: (b: Buffer) => b,
  },
};

async function bareServer(limit: boolean): Promise<{ server: Server; port: number }> {
  const server = new Server();
  server.addService(ECHO, { Echo: (_call: unknown, callback: (e: null, b: Buffer) => void) => callback(null, Buffer.from('ok')) });
  if (limit) expect(limitMetadata(server, { GRPC_MAX_METADATA_BYTES: 4_096, GRPC_MAX_METADATA_ENTRIES: 16 }), 'limitMetadata applied').to.equal(true);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  return { server, port };
}

function connect(port: number): Promise<http2.ClientHttp2Session> {
  const session = http2.connect(`http://127.0.0.1:${port}`, { maxSendHeaderBlockLength: 1 << 24 });
  session.on('error', () => undefined);
  return new Promise((resolve) => session.once('remoteSettings', () => resolve(session)));
}

function call(session: http2.ClientHttp2Session, headers: Record<string, string> = {}): Promise<string> {
  return new Promise((resolve) => {
    const req = session.request({ ':method': 'POST', ':path': '/t.T/Echo', 'content-type': 'application/grpc', te: 'trailers', ...headers });
    let status: string | undefined;
    req.on('trailers', (h) => (status = String(h['grpc-status'])));
    req.on('response', (h) => h['grpc-status'] !== undefined && (status = String(h['grpc-status'])));
    req.on('data', () => undefined);
    req.on('error', () => undefined);
    req.on('close', () => resolve(status !== undefined ? `status ${status}` : `rst ${req.rstCode}`));
    req.end(Buffer.alloc(5));
  });
}

describe('transport limits on grpc-js internals', function () {
  this.timeout(20_000);

  it('advertises and enforces the metadata limits through grpc-js\'s commonServerOptions', async () => {
    const { server, port } = await bareServer(true);
    const session = await connect(port);
    try {
      expect(session.remoteSettings.maxHeaderListSize).to.equal(4_096);
      expect(await call(session)).to.equal('status 0');
      expect(await call(session, { 'x-big': 'v'.repeat(5_000) }), 'over 4 KiB').to.equal('rst 11');
      const many = Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`x-${i}`, '1']));
      expect(await call(session, many), '20 entries > 16').to.equal('rst 11');
      expect(await call(session), 'the connection goes on').to.equal('status 0');
    } finally {
      session.destroy();
      server.forceShutdown();
    }
  });

  it('finds grpc-js\'s HTTP/2 servers and closes a connection nghttp2 stopped reading', async () => {
    const { server, port } = await bareServer(false);
    const reaper = reapStalledSessions(server, createLogger('transport-limits-test', 'silent'));
    expect(reaper, 'grpc-js http2Servers found').to.not.equal(undefined);
    // A session that stops reading but keeps its socket open, as C-core does after the GOAWAY.
    const session = await connect(port);
    const closed = new Promise<void>((resolve) => session.socket.once('close', () => resolve()));
    const req = session.request({ ':method': 'POST', ':path': '/t.T/Echo', 'content-type': 'application/grpc', te: 'trailers', 'x-big': '~'.repeat(70_000) });
    req.on('error', () => undefined);
    req.end(Buffer.alloc(5));
    // node's client ends its session on GOAWAY COMPRESSION_ERROR; what matters is the server's side.
    const healthy = await connect(port);
    try {
      const started = Date.now();
      await closed;
      const deadline = Date.now() + 10_000;
      while (reaper!.reaped < 1 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
      expect(reaper!.reaped, 'stalled connections closed by the reaper').to.equal(1);
      expect(Date.now() - started, 'ms until closed (generous bound)').to.be.below(10_000);
      expect(await call(healthy), 'another connection is left alone').to.equal('status 0');
    } finally {
      reaper!.stop();
      healthy.destroy();
      server.forceShutdown();
    }
  });
});
