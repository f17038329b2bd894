/**
 * Running pg_dump / pg_restore as children: bounded stderr capture, exit
 * waiting, and feeding a child's stdin from an async source with backpressure.
 */
import { spawn, type ChildProcess, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { Transform, type TransformCallback } from 'node:stream';
import { createHash, type Hash } from 'node:crypto';

const STDERR_BYTES_MAX = 64 * 1024;

export interface RunningTool {
  readonly child: ChildProcessWithoutNullStreams;
  /** Resolves with the exit code (signal → 128 + n style code, or -1). */
  readonly exited: Promise<number>;
  /** What the tool printed on stderr (at most 64 KiB, the tail kept). */
  stderr(): string;
}

export function startTool(path: string, args: readonly string[], env: NodeJS.ProcessEnv): RunningTool {
  const child = spawn(path, args, { env, stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (text: string) => {
    stderr = (stderr + text).slice(-STDERR_BYTES_MAX);
  });
  const exited = new Promise<number>((resolve) => {
    child.once('error', (error) => {
      stderr += `\n${error.message}`;
      resolve(-1);
    });
    child.once('close', (code, signal) => resolve(code ?? (signal ? 128 : -1)));
  });
  return { child, exited, stderr: () => stderr.trim() };
}

/** Kills a child (SIGKILL: it must not get to commit anything) and waits for it. */
export async function killTool(tool: RunningTool): Promise<void> {
  if (tool.child.exitCode === null && tool.child.signalCode === null) tool.child.kill('SIGKILL');
  await tool.exited;
}

/**
 * Writes every chunk of `source` into the child's stdin, honouring
 * backpressure, without ending stdin (the caller ends it once every check has
 * passed). If the child closes its stdin early (pg_restore --list stops after
 * the table of contents) the rest is read and dropped when `tolerateEarlyClose`,
 * so the source is still fully read and authenticated; otherwise that throws.
 */
export async function feedStdin(source: AsyncIterable<Buffer>, child: ChildProcess, tolerateEarlyClose: boolean): Promise<void> {
  const stdin = child.stdin!;
  let closed = false;
  let closeError: Error | undefined;
  const onError = (error: Error) => {
    closed = true;
    closeError = error;
  };
  stdin.on('error', onError);
  stdin.once('close', () => {
    closed = true;
  });
  for await (const chunk of source) {
    if (closed) {
      if (!tolerateEarlyClose) throw new Error(`child stopped reading its input early${closeError ? `: ${closeError.message}` : ''}`);
      continue;
    }
    if (!stdin.write(chunk)) await drainedOrClosed(stdin);
  }
  if (closed && !tolerateEarlyClose) throw new Error(`child stopped reading its input early${closeError ? `: ${closeError.message}` : ''}`);
}

/** Resolves on 'drain' or 'close', whichever comes first, leaving no listener behind. */
function drainedOrClosed(stream: NodeJS.WritableStream): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      stream.off('drain', done);
      stream.off('close', done);
      resolve();
    };
    stream.on('drain', done);
    stream.on('close', done);
  });
}

/** Pass-through that counts bytes and, optionally, hashes them. */
export class Meter extends Transform {
  bytes = 0;
  private readonly hash: Hash | undefined;

  constructor(withSha256 = false) {
    super();
    this.hash = withSha256 ? createHash('sha256') : undefined;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.bytes += chunk.length;
    this.hash?.update(chunk);
    callback(null, chunk);
  }

  /** Hex SHA-256 of everything that passed; call once, after the stream ended. */
  digest(): string {
    if (!this.hash) throw new Error('Meter was created without hashing');
    return this.hash.digest('hex');
  }
}
