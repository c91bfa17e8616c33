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
    addressName: () => ({ namespace: '', workload: 'external', pod: '' }),
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

test('a hook not yet timed prints its series at 0 from the first scrape, so rate() sees its first packets', async () => {
  const text = await createMetrics(source([])).registry.metrics();
  assert.match(text, /nettrace_hop_latency_seconds_count\{node="node1",step="3",step_name="bridge",device="cni0",hook="ingress"\} 0\n/);
  assert.match(text, /nettrace_hop_latency_seconds_bucket\{[^}]*step="3"[^}]*le="\+Inf"\} 0\n/);
  assert.equal(text.match(/nettrace_hop_latency_seconds_count/g)!.length, 1, 'only hooks the node has');
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

test('retransmits: labelled by namespace, workload and port, never an address; beyond the cap, the worst series keep theirs and one "other" sums the rest', async () => {
  const v4 = (...b: number[]) => Uint8Array.from([...b, ...Array(12).fill(0)]);
  // pod-a (10.244.1.5) sends to 1500 addresses: 10.245.x.y are 1500 pods of 1500 workloads, except that
  // 10.245.0.7 and 10.245.0.8 are two pods of one workload; 10.246.0.1 is outside the pod network
  const flows = Array.from({ length: 1500 }, (_, i) => ({
    family: 4, saddr: v4(10, 244, 1, 5), daddr: v4(10, 245, i >> 8, i & 255), sport: 40000, dport: 80, retransmits: 1, segments: i === 7 ? 100 : i === 8 ? 50 : 2,
  }));
  flows.push({ family: 4, saddr: v4(10, 244, 1, 5), daddr: v4(10, 246, 0, 1), sport: 40000, dport: 443, retransmits: 3, segments: 300 });
  const addressName = (_f: number, a: Uint8Array) => {
    if (a[1] === 244) return { namespace: 'shop', workload: 'frontend', pod: 'frontend-7d4b9-x2x7q' };
    if (a[1] === 245) return { namespace: 'db', workload: a[2] === 0 && (a[3] === 7 || a[3] === 8) ? 'redis' : `w${a[2]}-${a[3]}`, pod: '' };
    return { namespace: '', workload: 'external', pod: '' };
  };
  const text = await createMetrics({ ...source([]), retransmits: () => flows, addressName }).registry.metrics();
  const lines = text.split('\n').filter((l) => l.startsWith('nettrace_tcp_retransmit_segments_total{'));
  assert.equal(lines.length, 1000);
  assert.doesNotMatch(text, /10\.24[456]\.|_ip=/, 'no address, no address label');
  // two pods of one workload: one series, their segments added up
  assert.ok(lines.includes('nettrace_tcp_retransmit_segments_total{node="node1",source_namespace="shop",source_workload="frontend",source_pod="frontend-7d4b9-x2x7q",destination_namespace="db",destination_workload="redis",destination_port="80"} 150'), lines.slice(0, 3).join('\n'));
  assert.ok(lines.includes('nettrace_tcp_retransmit_segments_total{node="node1",source_namespace="shop",source_workload="frontend",source_pod="frontend-7d4b9-x2x7q",destination_namespace="",destination_workload="external",destination_port="443"} 300'));
  assert.match(text, /nettrace_tcp_retransmits_total\{[^}]*destination_workload="redis",destination_port="80"\} 2\n/);
  const other = lines.find((l) => l.includes('source_workload="other"'))!;
  // 1500 series: external, redis and 997 of 2 segments keep theirs; the other 501 (of 2 segments each) are one
  assert.equal(other, 'nettrace_tcp_retransmit_segments_total{node="node1",source_namespace="",source_workload="other",source_pod="",destination_namespace="",destination_workload="other",destination_port="other"} 1002');
});

test('retransmits: counters never go down when an address changes name (a pod replaced, its IP reused); what was counted stays where it was', async () => {
  const v4 = (...b: number[]) => Uint8Array.from([...b, ...Array(12).fill(0)]);
  const flow = (d: number, segments: number) => ({ family: 4, saddr: v4(10, 244, 1, 5), daddr: v4(10, 244, 2, d), sport: 0, dport: 6379, retransmits: segments, segments });
  // two pods of redis; then 10.244.2.9's pod is replaced by one of another workload, which takes its address
  let flows = [flow(8, 600), flow(9, 400)];
  let nine = 'redis';
  const addressName = (_f: number, a: Uint8Array) => (a[2] === 1 ? { namespace: 'shop', workload: 'cart', pod: 'cart-1' }
    : { namespace: 'db', workload: a[3] === 9 ? nine : 'redis', pod: '' });
  const m = createMetrics({ ...source([]), retransmits: () => flows, addressName });
  const value = (text: string, workload: string) => Number(new RegExp(`nettrace_tcp_retransmit_segments_total\\{[^}]*destination_workload="${workload}"[^}]*\\} (\\d+)`).exec(text)?.[1] ?? NaN);
  assert.equal(value(await m.registry.metrics(), 'redis'), 1000);
  await new Promise((r) => setTimeout(r, 600)); // past the per-scrape cache
  nine = 'queue';
  flows = [flow(8, 650), flow(9, 430)];
  const text = await m.registry.metrics();
  // redis keeps its 1000 and gains 10.244.2.8's 50; the new pod's workload gets only what came since: 30
  assert.equal(value(text, 'redis'), 1050);
  assert.equal(value(text, 'queue'), 30);
});

test('retransmits: an entry the kernel map dropped and made again counts from its new value, not from the one it had', async () => {
  const v4 = (...b: number[]) => Uint8Array.from([...b, ...Array(12).fill(0)]);
  const flow = (segments: number) => ({ family: 4, saddr: v4(10, 244, 1, 5), daddr: v4(10, 244, 2, 8), sport: 0, dport: 80, retransmits: segments, segments });
  let flows = [flow(500)];
  const addressName = () => ({ namespace: 'shop', workload: 'cart', pod: 'cart-1' });
  const m = createMetrics({ ...source([]), retransmits: () => flows, addressName });
  const value = async () => Number(/nettrace_tcp_retransmit_segments_total\{[^}]*workload="cart"[^}]*\} (\d+)/.exec(await m.registry.metrics())?.[1] ?? NaN);
  const pastCache = () => new Promise((r) => setTimeout(r, 600));
  assert.equal(await value(), 500);
  await pastCache();
  flows = []; // the entry is gone from the kernel map
  assert.equal(await value(), 500);
  await pastCache();
  flows = [flow(20)]; // and back, counting again from 0
  assert.equal(await value(), 520);
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

test('packets and bytes per step: every hook point the node has, with the latency histogram\'s labels', async () => {
  const steps = [{ order: 2, packets: 40, bytes: 61234 }, { order: 5, packets: 9, bytes: 900 }];
  const text = await createMetrics({ ...source([]), steps: () => steps }).registry.metrics();
  assert.match(text, /# TYPE nettrace_step_packets_total counter/);
  assert.match(text, /# HELP nettrace_step_bytes_total Bytes each hook point of the path saw: skb->len .*encapsulation/);
  assert.match(text, /^nettrace_step_packets_total\{node="node1",step="3",step_name="bridge",device="cni0",hook="ingress"\} 40$/m);
  assert.match(text, /^nettrace_step_bytes_total\{node="node1",step="3",step_name="bridge",device="cni0",hook="ingress"\} 61234$/m);
  // order 5 has no device on this node: no series
  assert.equal(text.match(/^nettrace_step_packets_total\{/gm)!.length, 1);
  // both counters share one read of the map per scrape; the next scrape reads again
  const m = createMetrics({ ...source([]), steps: () => steps });
  await m.registry.metrics();
  steps[0]!.packets = 41;
  await new Promise((r) => setTimeout(r, 600));
  assert.match(await m.registry.metrics(), /nettrace_step_packets_total\{[^}]*step="3"[^}]*\} 41$/m);
});

test('netfilter rules by backend and table, and failed reads, as the background read left them', async () => {
  let snap = { rules: [{ backend: 'iptables' as const, table: 'nat', rules: 27 }, { backend: 'nftables' as const, table: 'inet cilium', rules: 3 }], failures: { iptables: 0, nftables: 2 } };
  const m = createMetrics({ ...source([]), netfilter: () => snap });
  const text = await m.registry.metrics();
  assert.match(text, /# TYPE nettrace_netfilter_rules gauge/);
  assert.match(text, /^nettrace_netfilter_rules\{node="node1",backend="iptables",table="nat"\} 27$/m);
  assert.match(text, /^nettrace_netfilter_rules\{node="node1",backend="nftables",table="inet cilium"\} 3$/m);
  assert.match(text, /^nettrace_netfilter_read_failures_total\{node="node1",backend="iptables"\} 0$/m);
  assert.match(text, /^nettrace_netfilter_read_failures_total\{node="node1",backend="nftables"\} 2$/m);
  snap = { rules: [], failures: { iptables: 1, nftables: 2 } };
  const after = await m.registry.metrics();
  assert.doesNotMatch(after, /^nettrace_netfilter_rules\{/m);
  assert.match(after, /^nettrace_netfilter_read_failures_total\{node="node1",backend="iptables"\} 1$/m);
});
