// The agent's DNS metrics as Prometheus prints them: a latency histogram per server, answers per
// server and rcode name, a bounded number of server series.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createMetrics, dnsServerLabels, type MetricsSource } from '../../../src/export/prometheus';

function source(dns: NonNullable<MetricsSource['dns']>): MetricsSource {
  return {
    node: 'node1', latency: () => [], wireLatency: () => null, drops: () => [], retransmits: () => [], lostRecords: () => 0,
    mapFailures: () => ({ retransmits: 0, drops: 0, dns: 4 }), hookLabels: () => null, dropLabels: () => null, dropReason: String,
    addressName: () => ({ namespace: '', workload: 'external', pod: '' }), dns,
  };
}

test('nettrace_dns_request_duration_seconds per server, nettrace_dns_responses_total per server and rcode name', async () => {
  const counts = new Array<number>(64).fill(0);
  counts[19] = 3; // ~0.5-1 ms
  const text = await createMetrics(source(() => ({
    latency: [{ server: '10.96.0.10', counts, sumNs: 2_000_000 }],
    rcodes: [{ server: '10.96.0.10', rcode: 0, count: 3 }, { server: '10.96.0.10', rcode: 3, count: 2 }, { server: '10.96.0.10', rcode: 12, count: 1 }],
  }))).registry.metrics();
  assert.match(text, /^nettrace_dns_request_duration_seconds_count\{node="node1",server="10\.96\.0\.10"\} 3$/m);
  assert.match(text, /^nettrace_dns_request_duration_seconds_sum\{node="node1",server="10\.96\.0\.10"\} 0\.002$/m);
  assert.match(text, /^nettrace_dns_request_duration_seconds_bucket\{node="node1",server="10\.96\.0\.10",le="0\.001048576"\} 3$/m);
  assert.match(text, /^nettrace_dns_request_duration_seconds_bucket\{node="node1",server="10\.96\.0\.10",le="0\.000524288"\} 0$/m);
  assert.match(text, /^nettrace_dns_responses_total\{node="node1",server="10\.96\.0\.10",rcode="NOERROR"\} 3$/m);
  assert.match(text, /^nettrace_dns_responses_total\{node="node1",server="10\.96\.0\.10",rcode="NXDOMAIN"\} 2$/m);
  assert.match(text, /^nettrace_dns_responses_total\{node="node1",server="10\.96\.0\.10",rcode="12"\} 1$/m);
  assert.match(text, /^nettrace_map_update_failures_total\{node="node1",map="dns"\} 4$/m);
});

test('before any DNS answer: both metrics exist, as server="other" at 0 (dashboards and rules find them)', async () => {
  const text = await createMetrics(source(() => ({ latency: [], rcodes: [] }))).registry.metrics();
  assert.match(text, /^nettrace_dns_request_duration_seconds_count\{node="node1",server="other"\} 0$/m);
  assert.match(text, /^nettrace_dns_request_duration_seconds_bucket\{node="node1",server="other",le="\+Inf"\} 0$/m);
  assert.match(text, /^nettrace_dns_responses_total\{node="node1",server="other",rcode="NOERROR"\} 0$/m);
});

test('servers past the cap are summed under server="other": the ones answering most keep their series', async () => {
  const rcodes = Array.from({ length: 70 }, (_, i) => ({ server: `10.0.0.${i}`, rcode: 0, count: 100 - i }));
  const label = dnsServerLabels(rcodes, 64);
  assert.equal(label('10.0.0.0'), '10.0.0.0');
  assert.equal(label('10.0.0.62'), '10.0.0.62');
  assert.equal(label('10.0.0.63'), 'other', '63 kept, the 64th series is other');
  const text = await createMetrics(source(() => ({ latency: [], rcodes }))).registry.metrics();
  const series = text.split('\n').filter((l) => l.startsWith('nettrace_dns_responses_total{'));
  assert.equal(series.length, 64, '63 servers and other');
  // 10.0.0.63 .. 10.0.0.69: 37 + 36 + ... + 31
  assert.match(text, /^nettrace_dns_responses_total\{node="node1",server="other",rcode="NOERROR"\} 238$/m);
});
