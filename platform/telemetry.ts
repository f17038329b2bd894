/**
 * OpenTelemetry tracing. Must start before grpc-js, pg and ioredis are loaded:
 * the instrumentations patch those modules when they are first required, which
 * is why `scripts/start-service.ts` imports this module before anything else.
 *
 * Configured by the standard OTEL_* variables (OTEL_EXPORTER_OTLP_ENDPOINT,
 * OTEL_EXPORTER_OTLP_PROTOCOL, OTEL_SERVICE_NAME, OTEL_TRACES_SAMPLER, ...).
 * Propagation is W3C trace context + baggage (the SDK default). With no
 * exporter configured (the dev default) the SDK is not started at all: nothing
 * tries to reach a collector that is not there, and no call pays for spans.
 */
import { GrpcInstrumentation } from '@opentelemetry/instrumentation-grpc';
import { IORedisInstrumentation } from '@opentelemetry/instrumentation-ioredis';
import { PgInstrumentation } from '@opentelemetry/instrumentation-pg';
import { NodeSDK } from '@opentelemetry/sdk-node';
import type { SpanProcessor } from '@opentelemetry/sdk-trace-base';

export interface TelemetryOptions {
  readonly serviceName: string;
  /** Extra processors (tests use an in-memory exporter). */
  readonly spanProcessors?: SpanProcessor[];
}

let sdk: NodeSDK | undefined;

export function startTelemetry(options: TelemetryOptions, env: NodeJS.ProcessEnv = process.env): NodeSDK | undefined {
  if (sdk) return sdk;
  const exporterConfigured =
    (env.OTEL_TRACES_EXPORTER !== undefined && env.OTEL_TRACES_EXPORTER !== 'none') ||
    env.OTEL_EXPORTER_OTLP_ENDPOINT !== undefined ||
    env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT !== undefined;
  // Nowhere to send spans: do not instrument at all. Instrumented but unexported
  // spans still cost ~10-20 % of a 10k-calls/s service's CPU (span objects, Redis
  // statement serialisation) for nothing. OTEL_SDK_DISABLED is honoured too.
  if ((!exporterConfigured && !options.spanProcessors) || env.OTEL_SDK_DISABLED === 'true') return undefined;
  // Metrics go through prom-client's /metrics; logs through pino.
  env.OTEL_METRICS_EXPORTER ??= 'none';
  env.OTEL_LOGS_EXPORTER ??= 'none';
  sdk = new NodeSDK({
    serviceName: env.OTEL_SERVICE_NAME ?? options.serviceName,
    ...(options.spanProcessors ? { spanProcessors: options.spanProcessors } : {}),
    instrumentations: [
      new GrpcInstrumentation(),
      new PgInstrumentation({ requireParentSpan: true }),
      new IORedisInstrumentation({ requireParentSpan: true }),
    ],
  });
  sdk.start();
  return sdk;
}

/** Flushes and stops the SDK (last step of shutdown). */
export async function stopTelemetry(): Promise<void> {
  const running = sdk;
  sdk = undefined;
  await running?.shutdown();
}
