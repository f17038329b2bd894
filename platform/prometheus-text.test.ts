import { expect } from 'chai';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { metricSamples, metricValue } from './prometheus-text';

const TEXT = [
  '# HELP grpc_server_handled_total Calls completed.',
  '# TYPE grpc_server_handled_total counter',
  'grpc_server_handled_total{grpc_method="GetBalance",grpc_code="OK",service="credits"} 3',
  'grpc_server_handled_total{grpc_method="GetBalanceX",grpc_code="OK",service="credits"} 5',
  'grpc_server_handled_total{grpc_method="GetBalance",grpc_code="NotFound",service="credits"} 1',
  'grpc_server_handling_seconds_bucket{grpc_method="GetBalance",le="+Inf"} 4',
  'grpc_server_handling_seconds_count{grpc_method="GetBalance"} 4',
  'process_start_time_seconds 1700000000',
  'odd_label{path="a\\"}b"} 2',
  '',
].join('\n');

describe('Prometheus text reader', () => {
  // Names and label values match exactly: GetBalance does not pick GetBalanceX, a metric not its _bucket.
  it('matches names and label values exactly', () => {
    expect(metricValue(TEXT, 'grpc_server_handled_total', { grpc_method: 'GetBalance', grpc_code: 'OK' })).to.equal(3);
    expect(metricValue(TEXT, 'grpc_server_handling_seconds_count', { grpc_method: 'GetBalance' })).to.equal(4);
    expect(metricValue(TEXT, 'grpc_server_handling_seconds', { grpc_method: 'GetBalance' })).to.equal(undefined);
    expect(metricValue(TEXT, 'grpc_server_handling_seconds_bucket', { le: '+Inf' })).to.equal(4);
    expect(metricValue(TEXT, 'process_start_time_seconds')).to.equal(1_700_000_000);
    expect(metricValue(TEXT, 'odd_label', { path: 'a"}b' })).to.equal(2);
    expect(metricValue(TEXT, 'grpc_server_handled_total', { grpc_code: 'Unavailable' })).to.equal(undefined);
  });

  // Labels loose enough to match several samples are a test bug, not a silent first match.
  it('refuses labels that match several samples', () => {
    expect(() => metricValue(TEXT, 'grpc_server_handled_total', { grpc_code: 'OK' })).to.throw(/matches 2 samples/);
    expect(metricSamples(TEXT, 'grpc_server_handled_total', { grpc_code: 'OK' }).map((s) => s.value)).to.deep.equal([3, 5]);
  });

  // What the services actually serve: prom-client's own exposition of a labelled histogram, a counter
  // and a gauge, with the default label every service registry sets and a label value that needs escaping.
  it('reads prom-client exposition text', async () => {
    const registry = new Registry();
    registry.setDefaultLabels({ service: 'credits' });
    const handling = new Histogram({
      name: 'grpc_server_handling_seconds',
      help: 'Handling time.',
      labelNames: ['grpc_method', 'grpc_type'],
      buckets: [0.001, 0.01, 0.1],
      registers: [registry],
    });
    handling.observe({ grpc_method: 'Consume', grpc_type: 'unary' }, 0.005);
    handling.observe({ grpc_method: 'Consume', grpc_type: 'unary' }, 0.05);
    handling.observe({ grpc_method: 'Consume', grpc_type: 'unary' }, 5);
    handling.observe({ grpc_method: 'GetBalance', grpc_type: 'unary' }, 0.0005);
    const batches = new Counter({ name: 'credits_consume_batches_total', help: 'Batches.', labelNames: ['path'], registers: [registry] });
    batches.inc({ path: 'fast' }, 41);
    batches.inc({ path: 'fallback' });
    const lag = new Gauge({ name: 'nodejs_eventloop_lag_p99_seconds', help: 'Lag.', registers: [registry] });
    lag.set(0.0125);
    const odd = new Gauge({ name: 'odd_label', help: 'Escaping.', labelNames: ['path'], registers: [registry] });
    odd.set({ path: 'a"b\\c\nd' }, -2.5);
    const text = await registry.metrics();

    const consume = { grpc_method: 'Consume' };
    const buckets = metricSamples(text, 'grpc_server_handling_seconds_bucket', consume).map((s) => [s.labels.le, s.value]);
    expect(buckets).to.deep.equal([
      ['0.001', 0],
      ['0.01', 1],
      ['0.1', 2],
      ['+Inf', 3],
    ]);
    expect(metricSamples(text, 'grpc_server_handling_seconds_bucket', consume)[0]!.labels).to.deep.equal({
      le: '0.001',
      grpc_method: 'Consume',
      grpc_type: 'unary',
      service: 'credits',
    });
    expect(metricValue(text, 'grpc_server_handling_seconds_count', consume)).to.equal(3);
    expect(metricValue(text, 'grpc_server_handling_seconds_sum', consume)).to.be.closeTo(5.055, 1e-9);
    expect(metricValue(text, 'grpc_server_handling_seconds_count', { grpc_method: 'GetBalance' })).to.equal(1);
    expect(metricSamples(text, 'credits_consume_batches_total').map((s) => [s.labels.path, s.value])).to.deep.equal([
      ['fast', 41],
      ['fallback', 1],
    ]);
    expect(metricValue(text, 'nodejs_eventloop_lag_p99_seconds')).to.equal(0.0125);
    expect(metricValue(text, 'odd_label', { path: 'a"b\\c\nd' })).to.equal(-2.5);
    expect(metricValue(text, 'credits_consume_batches_total', { path: 'transactional' })).to.equal(undefined);
  });
});
