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
  });
}
