import { expect } from 'chai';
import { metricSamples, metricValue } from './metrics';

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

describe('test metrics helper', () => {
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
});
