// The kernel's log2 buckets become a standard Prometheus histogram: cumulative, in seconds, with +Inf, _sum and _count.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createMetrics, type MetricsSource } from '../../../src/export/prometheus';

function source(counts: number[][], drops: MetricsSource['drops'] = () => []): MetricsSource {
  return {
    node: 'node1',
    latency: () => counts.map((c, order) => ({ order, counts: c, sumNs: c.reduce((s, n, b) => s + n * 2 ** b, 0) })),
    wireLatency: () => null,
    drops,
    retransmits: () => [],
    lostRecords: () => 0,
    mapFailures: () => ({ retransmits: 0, drops: 0 }),
    hookLabels: (order) => (order === 2 ? { step: 3, step_name: 'bridge', device: 'cni0', hook: 'ingress' } : null),
    dropLabels: (order) => (order === 2 ? { step: 4, step_name: 'routing', device: 'cni0', hook: 'ingress' } : null),
    dropReason: (r) => (r === 12 ? 'NETFILTER_DROP' : `REASON_${r}`),
    podOf: (_f, _a) => ({ pod: '', ip: '' }),
  };
}

test('log2-ns buckets: cumulative counts at le = 2^k ns, only for hooks the node has', async () => {
  const counts = Array.from({ length: 10 }, () => new Array<number>(64).fill(0));
  counts[2]![3] = 5; // 8-15 ns: below the first bound (128 ns)
  counts[2]![10] = 2; // 1024-2047 ns
  counts[2]![40] = 1; // ~18 minutes: beyond the last bound
  const text = await createMetrics(source(counts)).registry.metrics();
  const line = (le: string) => text.split('\n').find((l) => l.startsWith('nettrace_hop_latency_seconds_bucket{') && l.includes(`le="${le}"`));
  assert.match(line('1.28e-7')!, /node="node1",step="3",step_name="bridge",device="cni0",hook="ingress",le="1.28e-7"} 5$/);
  assert.match(line('0.000001024')!, / 5$/); // 2^10 ns: bucket 10 starts there, not yet counted
  assert.match(line('0.000002048')!, / 7$/);
  assert.match(line('17.179869184')!, / 7$/);
  assert.match(line('+Inf')!, / 8$/);
  assert.match(text, /nettrace_hop_latency_seconds_count\{[^}]*step="3"[^}]*\} 8\n/);
  assert.equal(text.match(/nettrace_hop_latency_seconds_count/g)!.length, 1, 'orders without a device on this node print nothing');
  assert.match(text, /# TYPE nettrace_hop_latency_seconds histogram/);
});

test('drops carry the reason name and the step the packet died in; off-path drops say so', async () => {
  const text = await createMetrics(source([], () => [{ reason: 12, order: 2, count: 3 }, { reason: 2, order: 255, count: 4 }])).registry.metrics();
  assert.match(text, /nettrace_drops_total\{node="node1",reason="NETFILTER_DROP",step="4",step_name="routing",device="cni0"\} 3/);
  assert.match(text, /nettrace_drops_total\{node="node1",reason="REASON_2",step="none",step_name="not on a pod path",device=""\} 4/);
  // the standard names every process dashboard reads
  assert.match(text, /^process_cpu_seconds_total /m);
  assert.match(text, /^process_resident_memory_bytes /m);
  assert.doesNotMatch(text, /nettrace_agent_process_/);
});

test('retransmits: one series per endpoint pair; beyond the cap, the flows that resend most keep theirs and one "other" sums the rest', async () => {
  const v4 = (...b: number[]) => Uint8Array.from([...b, ...Array(12).fill(0)]);
  const flows = Array.from({ length: 1500 }, (_, i) => ({
    family: 4, saddr: v4(10, 244, 1, 5), daddr: v4(10, 245, i >> 8, i & 255), sport: 40000, dport: 80, retransmits: 1, segments: i === 7 ? 100 : 2,
  }));
  const src = { ...source([]), retransmits: () => flows, podOf: (_f: number, a: Uint8Array) => ({ pod: a[1] === 244 ? 'pod-a' : '', ip: `${a[0]}.${a[1]}.${a[2]}.${a[3]}` }) };
  const text = await createMetrics(src).registry.metrics();
  const lines = text.split('\n').filter((l) => l.startsWith('nettrace_tcp_retransmit_segments_total{'));
  assert.equal(lines.length, 1000);
  assert.match(lines.find((l) => l.includes('destination_ip="10.245.0.7"'))!, /source_pod="pod-a".*destination_port="80"\} 100$/);
  const other = lines.find((l) => l.includes('destination_ip="other"'))!;
  assert.match(other, / 1002$/); // 501 flows of 2 segments
});

test('silent losses are series from the start: full kernel maps and OTLP queue overflow at 0, then what was lost', async () => {
  let failures = { retransmits: 0, drops: 0 };
  const m = createMetrics({ ...source([]), mapFailures: () => failures });
  const before = await m.registry.metrics();
  assert.match(before, /# HELP nettrace_map_update_failures_total Kernel map updates that failed because the map was full/);
  assert.match(before, /nettrace_map_update_failures_total\{node="node1",map="retransmits"\} 0\n/);
  assert.match(before, /nettrace_map_update_failures_total\{node="node1",map="drops"\} 0\n/);
  assert.match(before, /# HELP nettrace_agent_spans_dropped_total Spans dropped because the OTLP export queue was full/);
  assert.match(before, /nettrace_agent_spans_dropped_total\{node="node1"\} 0\n/);

  failures = { retransmits: 17, drops: 2 };
  m.spansDropped.inc({ node: 'node1' }, 5);
  const after = await m.registry.metrics();
  assert.match(after, /nettrace_map_update_failures_total\{node="node1",map="retransmits"\} 17\n/);
  assert.match(after, /nettrace_map_update_failures_total\{node="node1",map="drops"\} 2\n/);
  assert.match(after, /nettrace_agent_spans_dropped_total\{node="node1"\} 5\n/);
});
