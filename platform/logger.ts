/**
 * Structured JSON logs (pino) carrying the active trace id, so a log line and
 * its trace are one click apart. Secrets never reach a log: the redact list
 * covers the fields that could carry them, and callers log ids, not payloads.
 */
import { isSpanContextValid, trace } from '@opentelemetry/api';
import pino, { type Logger } from 'pino';

export type { Logger } from 'pino';

/** Field paths that are censored wherever they appear (defence in depth). */
const REDACT_PATHS = [
  'authorization',
  '*.authorization',
  'apiKey',
  '*.apiKey',
  'card_number',
  'cardNumber',
  '*.cardNumber',
  '*.card_number',
  'payment',
  '*.payment',
  'honeytoken',
  '*.honeytoken',
  'password',
  '*.password',
  'key',
  '*.key',
];

/**
 * Log bytes held in memory while stdout is not being read (a hung log shipper, a
 * pager left open); past it, lines are dropped and counted, so that logging can
 * neither fill the memory nor stall the calls that log.
 */
const STDOUT_BUFFER_MAX_BYTES = 16 * 1024 * 1024;
/** At exit, how long a full stdout is waited for before the lines still held are dropped. */
const EXIT_FLUSH_MS = 1_000;

/**
 * pino's stdout destination (asynchronous, as pino's default), bounded. pino flushes
 * it synchronously at exit and, unbounded, retries a full pipe forever: a service
 * told to stop would never exit.
 */
function stdoutDestination(service: string): pino.DestinationStream {
  let flushDeadline: number | undefined;
  const stream = pino.destination({
    // Reading process.stdout first, as pino's default does, makes a pipe non-blocking,
    // so a full pipe answers EAGAIN (and is retried as below) instead of blocking a write.
    dest: process.stdout.fd || 1,
    sync: false,
    maxLength: STDOUT_BUFFER_MAX_BYTES,
    retryEAGAIN: () => flushDeadline === undefined || Date.now() < flushDeadline,
  });
  const flushSync = stream.flushSync.bind(stream);
  stream.flushSync = () => {
    flushDeadline = Date.now() + EXIT_FLUSH_MS;
    try {
      flushSync();
    } catch {
      // stdout still full after EXIT_FLUSH_MS: the rest is lost, the exit goes on.
    } finally {
      flushDeadline = undefined;
    }
  };
  let dropped = 0;
  stream.on('drop', () => void (dropped += 1));
  stream.on('write', () => {
    if (dropped === 0) return;
    // After this event the stream frees what was written: only then is there room for the warning.
    process.nextTick(warnDropped);
  });
  const warnDropped = () => {
    if (dropped === 0) return;
    const count = dropped;
    dropped = 0;
    stream.write(`${JSON.stringify({ level: 'warn', time: new Date().toISOString(), service, dropped: count, msg: 'log lines dropped: stdout was not being read' })}\n`);
  };
  return stream;
}

export function createLogger(service: string, level: string = process.env.LOG_LEVEL ?? 'info'): Logger {
  return pino({
    level,
    base: { service },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    formatters: { level: (label) => ({ level: label }) },
    mixin() {
      const span = trace.getActiveSpan();
      const context = span?.spanContext();
      // Tracing off still yields a span with all-zero ids: log no ids rather than fake ones.
      if (!context || !isSpanContextValid(context)) return {};
      return { trace_id: context.traceId, span_id: context.spanId };
    },
  }, stdoutDestination(service));
}
