// SpanSink: sampled packets become OpenTelemetry spans sent over real OTLP/HTTP (JSON) to a
// receiver on 127.0.0.1. One test sends everything, flushes with shutdown, and its subtests read.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TracerProvider, type ReadableSpan, type SpanExporter } from '@opentelemetry/sdk-trace';
import type { ExportResult } from '@opentelemetry/core';
import { agentResource, CountedBatchProcessor, SpanSink } from '../../../src/export/otel';
import { otlpEndpoint } from '../../../src/export/otlpUrl';
import { NettraceError } from '../../../src/errors';
import { createMetrics } from '../../../src/export/prometheus';
import type { HookLabels } from '../../../src/export/prometheus';
import { SampleGrouper, stepSpanId, type Retransmit, type SampledPacket } from '../../../src/flow/sampled';
import { ORDER, RECORD_KIND, type HopRecord } from '../../../src/probe/layout.generated';
import { failedStep, ORDER_POINTS, STEP_NAMES } from '../../../src/topology/steps';
import { attr, startOtlpReceiver, type OtlpSpan } from '../../helpers/agent';
import { sampledHopRecord as rec } from '../../helpers/records';

const NODE = 'nt1-node2';
const SENDER = 'nt1-node1';
/** this node's wall clock: monotonic ns + a fixed offset (beyond 2^53, as real ones are) */
const OFFSET = 1_700_000_000_000_000_000n;
const wall = (ts: number) => OFFSET + BigInt(ts);
const DEVICE: Record<string, string> = { pod: 'pod-eth', 'host-veth': 'pod-veths', bridge: 'cni0', tunnel: 'flannel.1', underlay: 'eth0' };
/** as the agent labels a hook: by its order, on a flannel-vxlan node */
const hookLabels = (order: number): HookLabels | null => {
  const p = ORDER_POINTS[order];
  return p ? { step: p.step, step_name: STEP_NAMES[p.step]!, device: DEVICE[p.role]!, hook: p.hook } : null;
};
/** as the agent labels a drop last seen at a hook: the step that failed, on a flannel-vxlan node */
const dropLabels = (order: number): HookLabels | null => {
  const step = failedStep(order, new Set(['pod', 'host-veth', 'bridge', 'tunnel', 'underlay']));
  const seen = hookLabels(order);
  return step === null ? null : { step, step_name: STEP_NAMES[step]!, device: seen?.device ?? '', hook: seen?.hook ?? '' };
};
const DROP_REASONS: Record<number, string> = { 5: 'NETFILTER_DROP', 17: 'QDISC_DROP' };

/** Feeds records to a grouper as the ring hands them over; the packet they complete. */
function group(records: HopRecord[]): SampledPacket {
  const g = new SampleGrouper();
  let done: SampledPacket | undefined;
  for (const r of records) done = g.add(r).packet ?? done;
  return done ?? g.expire(true)[0]!;
}

const sameTrace = (s: OtlpSpan, p: SampledPacket) => s.traceId === p.traceId;
const durationNs = (s: OtlpSpan) => Number(BigInt(s.endTimeUnixNano) - BigInt(s.startTimeUnixNano));
/** tc's hook as OpenTelemetry's network.io.direction */
const IO: Record<string, string> = { ingress: 'receive', egress: 'transmit' };

test('SpanSink over OTLP/HTTP: packets, the wire, drops and retransmits as spans', async (t) => {
  const recv = await startOtlpReceiver(t);
  // the resource as a deployment names it (read when the sink starts)
  const saved = { name: process.env.OTEL_SERVICE_NAME, attrs: process.env.OTEL_RESOURCE_ATTRIBUTES };
  process.env.OTEL_SERVICE_NAME = 'netobs';
  process.env.OTEL_RESOURCE_ATTRIBUTES = 'k8s.cluster.name=prod-eu,deployment.environment.name=prod';
  t.after(() => {
    for (const [k, v] of [['OTEL_SERVICE_NAME', saved.name], ['OTEL_RESOURCE_ATTRIBUTES', saved.attrs]] as const) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  });
  const exports: { ok: boolean; spans: number }[] = [];
  const logs: string[] = [];
  const sink = new SpanSink({
    endpoint: recv.url, node: NODE, wallNs: wall, hookLabels, dropLabels, dropReason: (r) => DROP_REASONS[r] ?? `REASON_${r}`,
    onExport: (ok, spans) => exports.push({ ok, spans }), log: (l) => logs.push(l),
  });

  // one ping: the sending node's hops (orders 0-4, ring order shuffled) and the receiving node's (5-9)
  const sent = group([rec(1, 10_000), rec(0, 1_000), rec(2, 25_000), rec(3, 40_000), rec(ORDER.UNDERLAY_EGRESS, 52_000)]);
  const arrived = group([5, 6, 7, 8, 9].map((o, i) => rec(o, 2_000_000 + 15_000 * i, { flags: 1, vni: 1 })));
  assert.equal(sent.traceId, arrived.traceId, 'both nodes derive the trace from the packet');
  // the sender's departure, as learned from its agent: 30 µs before the arrival at eth0 ingress
  const departure = { wallNs: wall(2_000_000) - 30_000n, node: SENDER };
  // a packet whose sender's clock is ahead of ours: departure after arrival
  const skewed = group([5, 6, 7, 8, 9].map((o, i) => rec(o, 3_000_000 + 10_000 * i, { ip_id: 4300, flags: 1 })));
  // a packet whose departure is unknown (peer down)
  const alone = group([5, 6, 7, 8, 9].map((o, i) => rec(o, 4_000_000 + 10_000 * i, { ip_id: 4400, flags: 1 })));
  // a packet dropped by netfilter after the bridge
  const dropped = group([rec(0, 5_000_000, { ip_id: 4500 }), rec(1, 5_010_000, { ip_id: 4500 }), rec(2, 5_020_000, { ip_id: 4500 }),
    rec(2, 5_030_000, { ip_id: 4500, kind: RECORD_KIND.DROP, reason: 5 })]);
  // a TCP retransmit of 3 segments
  const g = new SampleGrouper();
  const retrans: Retransmit = g.add(rec(ORDER.NONE, 6_000_000, { kind: RECORD_KIND.RETRANS, proto: 6, sport: 40000, dport: 5201, seq: 123456, gso_segs: 3 })).retransmit!;

  assert.equal(sink.packet(sent, null), 6, 'root + steps 1-5');
  assert.equal(sink.packet(arrived, departure), 5, 'steps 6, 7, 8 and two hooks of 9');
  assert.equal(sink.packet(skewed, { wallNs: wall(3_000_000) + 500n, node: SENDER }), 5);
  assert.equal(sink.packet(alone, null), 5);
  assert.equal(sink.packet(dropped, null), 5, 'root + steps 1-3 + the drop');
  sink.retransmit(retrans);
  await sink.shutdown();

  const all = recv.spans;
  await t.test('every span reached the receiver; exports counted as ok', () => {
    assert.equal(all.length, 6 + 5 + 5 + 5 + 5 + 1);
    assert.ok(exports.length >= 1 && exports.every((e) => e.ok));
    assert.equal(exports.reduce((n, e) => n + e.spans, 0), all.length);
    assert.deepEqual(logs, []);
    for (const s of all) {
      assert.match(s.traceId, /^[0-9a-f]{32}$/);
      assert.match(s.spanId, /^[0-9a-f]{16}$/);
      assert.ok(BigInt(s.endTimeUnixNano) >= BigInt(s.startTimeUnixNano), s.name);
      assert.equal(attr(s, 'nettrace.node'), NODE);
      // the latency is the span's duration; no attribute repeats it
      assert.equal(attr(s, 'nettrace.latency_ns'), undefined, s.name);
    }
    // span names are few: no addresses or ports in them
    assert.deepEqual([...new Set(all.map((s) => s.name.replace(/^step \d [a-z ,]+$/, 'step N NAME')))].sort(), ['drop', 'packet icmp', 'step N NAME', 'tcp retransmit']);
    assert.ok(all.every((s) => !/\d+\.\d+\.\d+\.\d+/.test(s.name)), 'no address in a span name');
  });

  await t.test('the resource: nettrace-agent on its node, OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES winning', () => {
    assert.ok(recv.resources.length >= 1);
    for (const r of recv.resources) {
      const get = (k: string) => r.find((a) => a.key === k)?.value.stringValue;
      assert.equal(get('service.name'), 'netobs');
      assert.equal(get('k8s.cluster.name'), 'prod-eu');
      assert.equal(get('deployment.environment.name'), 'prod');
      assert.equal(get('host.name'), NODE);
    }
  });

  await t.test('one packet is one trace: the sender\'s root span, every step hanging off it', () => {
    const spans = all.filter((s) => sameTrace(s, sent));
    assert.equal(spans.length, 6 + 5, 'both nodes\' spans of the ping in one trace');
    const root = spans.find((s) => !s.parentSpanId)!;
    assert.equal(root.name, 'packet icmp');
    assert.equal(attr(root, 'network.type'), 'ipv4');
    assert.equal(root.spanId, sent.rootSpanId);
    assert.equal(BigInt(root.startTimeUnixNano), wall(1_000));
    assert.equal(BigInt(root.endTimeUnixNano), wall(52_000), 'from the first hook to the last this node saw');
    assert.equal(attr(root, 'network.transport'), 'icmp');
    assert.equal(attr(root, 'source.address'), '10.244.1.5');
    assert.equal(attr(root, 'destination.address'), '10.244.2.8');
    const steps = spans.filter((s) => s !== root);
    for (const s of steps) assert.equal(s.parentSpanId, sent.rootSpanId, `${s.name} hangs off the root`);
    assert.deepEqual(steps.map((s) => attr(s, 'nettrace.step')).sort(), [1, 2, 3, 4, 5, 6, 7, 8, 9, 9]);
    assert.equal(new Set(steps.map((s) => s.spanId)).size, steps.length, 'one span id per hook');
  });

  await t.test('step spans: named and attributed by step, from the previous hook to the one ending the step', () => {
    const spans = all.filter((s) => sameTrace(s, sent) && s.parentSpanId);
    const byOrder = (o: number) => spans.find((s) => s.spanId === stepSpanId(sent.traceId, o))!;
    const first = byOrder(0);
    assert.equal(first.name, 'step 1 container sends');
    assert.equal(attr(first, 'network.interface.name'), 'pod-eth');
    assert.equal(attr(first, 'network.io.direction'), 'transmit');
    assert.equal(first.startTimeUnixNano, first.endTimeUnixNano);
    const expected: [number, string, string, string, number, number, number][] = [
      // order, name, device, hook, start ts, end ts, latency
      [1, 'step 2 veth pair', 'pod-veths', 'ingress', 1_000, 10_000, 9_000],
      [2, 'step 3 bridge', 'cni0', 'ingress', 10_000, 25_000, 15_000],
      [3, 'step 4 routing', 'flannel.1', 'egress', 25_000, 40_000, 15_000],
      [4, 'step 5 encapsulation', 'eth0', 'egress', 40_000, 52_000, 12_000],
      [6, 'step 7 receive, decapsulate', 'flannel.1', 'ingress', 2_000_000, 2_015_000, 15_000],
      [7, 'step 8 route to bridge', 'cni0', 'egress', 2_015_000, 2_030_000, 15_000],
      [8, 'step 9 veth to pod', 'pod-veths', 'egress', 2_030_000, 2_045_000, 15_000],
      [9, 'step 9 veth to pod', 'pod-eth', 'ingress', 2_045_000, 2_060_000, 15_000],
    ];
    for (const [order, name, device, hook, start, end, latency] of expected) {
      const s = byOrder(order);
      assert.ok(s, `span of order ${order}`);
      assert.equal(s.name, name);
      assert.equal(attr(s, 'nettrace.step'), ORDER_POINTS[order]!.step);
      assert.equal(attr(s, 'nettrace.step_name'), STEP_NAMES[ORDER_POINTS[order]!.step]);
      assert.equal(attr(s, 'network.interface.name'), device, name);
      assert.equal(attr(s, 'network.io.direction'), IO[hook], name);
      assert.equal(BigInt(s.startTimeUnixNano), wall(start), name);
      assert.equal(BigInt(s.endTimeUnixNano), wall(end), name);
      assert.equal(durationNs(s), latency, name);
    }
  });

  await t.test('the wire (step 6) spans from the sender\'s departure to the arrival at eth0', () => {
    const wire = all.find((s) => sameTrace(s, sent) && s.spanId === stepSpanId(sent.traceId, ORDER.UNDERLAY_INGRESS))!;
    assert.equal(wire.name, 'step 6 physical network');
    assert.equal(attr(wire, 'nettrace.step'), 6);
    assert.equal(attr(wire, 'network.interface.name'), 'eth0');
    assert.equal(attr(wire, 'network.io.direction'), 'receive');
    assert.equal(attr(wire, 'nettrace.from_node'), SENDER);
    assert.equal(durationNs(wire), 30_000);
    assert.equal(attr(wire, 'nettrace.clock.clamped_ns'), undefined, 'the clocks agreed');
    assert.equal(BigInt(wire.startTimeUnixNano), departure.wallNs);
    assert.equal(BigInt(wire.endTimeUnixNano), wall(2_000_000));
    assert.equal(wire.parentSpanId, sent.rootSpanId);
  });

  await t.test('the wire with a sender clock ahead: latency 0, never negative; without a departure: a point, no sender', () => {
    const wireOf = (p: SampledPacket) => all.find((s) => sameTrace(s, p) && s.spanId === stepSpanId(p.traceId, ORDER.UNDERLAY_INGRESS))!;
    const skew = wireOf(skewed);
    assert.equal(durationNs(skew), 0);
    assert.equal(attr(skew, 'nettrace.clock.clamped_ns'), 500, 'how far the sender\'s departure came after our arrival');
    assert.equal(attr(skew, 'nettrace.from_node'), SENDER);
    assert.equal(BigInt(skew.startTimeUnixNano), wall(3_000_000));
    const lone = wireOf(alone);
    assert.equal(attr(lone, 'nettrace.from_node'), undefined);
    assert.equal(attr(lone, 'nettrace.clock.clamped_ns'), undefined);
    assert.equal(lone.startTimeUnixNano, lone.endTimeUnixNano);
    assert.equal(lone.parentSpanId, alone.rootSpanId, 'the receiving node joins the trace under the sender\'s root');
    assert.equal(all.filter((s) => sameTrace(s, alone)).length, 5, 'no root of its own');
  });

  await t.test('a drop: a span with the kernel\'s reason, the step that failed and where it was last seen, in the packet\'s trace', () => {
    const spans = all.filter((s) => sameTrace(s, dropped));
    assert.deepEqual(spans.map((s) => s.name).sort(), ['drop', 'packet icmp', 'step 1 container sends', 'step 2 veth pair', 'step 3 bridge']);
    const drop = spans.find((s) => s.name === 'drop')!;
    assert.equal(attr(drop, 'nettrace.drop_reason'), 'NETFILTER_DROP');
    assert.equal(attr(drop, 'nettrace.last_device'), 'cni0');
    assert.equal(attr(drop, 'nettrace.last_hook'), 'ingress');
    assert.equal(attr(drop, 'nettrace.last_step'), 3);
    // the step that failed, as nettrace_drops_total and diagnose number it: FORWARD is routing
    assert.equal(attr(drop, 'nettrace.step'), 4);
    assert.equal(attr(drop, 'nettrace.step_name'), 'routing');
    assert.equal(drop.parentSpanId, dropped.rootSpanId);
    assert.equal(BigInt(drop.startTimeUnixNano), wall(5_030_000));
    const root = spans.find((s) => !s.parentSpanId)!;
    assert.equal(BigInt(root.endTimeUnixNano), wall(5_020_000));
  });

  await t.test('a retransmit: a root span in its connection\'s trace with seq and segments', () => {
    const rt = all.find((s) => s.name === 'tcp retransmit')!;
    assert.equal(attr(rt, 'source.address'), '10.244.1.5');
    assert.equal(attr(rt, 'destination.address'), '10.244.2.8');
    assert.equal(rt.traceId, retrans.traceId);
    assert.equal(rt.parentSpanId || undefined, undefined);
    assert.equal(rt.spanId, stepSpanId(retrans.traceId, 123456));
    assert.equal(attr(rt, 'network.transport'), 'tcp');
    assert.equal(attr(rt, 'source.port'), 40000);
    assert.equal(attr(rt, 'destination.port'), 5201);
    assert.equal(attr(rt, 'nettrace.tcp.seq'), 123456);
    assert.equal(attr(rt, 'nettrace.tcp.segments'), 3);
    assert.equal(BigInt(rt.startTimeUnixNano), wall(6_000_000));
    assert.equal(rt.events?.length, 1);
    const ev = rt.events![0]!;
    assert.equal(ev.name, 'retransmit');
    assert.equal(attr({ ...rt, attributes: ev.attributes }, 'segments'), 3);
  });
});

test('a full OTLP queue: the spans the BatchSpanProcessor has no room for are counted in nettrace_agent_spans_dropped_total', async () => {
  const metrics = createMetrics({
    node: NODE, latency: () => [], wireLatency: () => null, drops: () => [], retransmits: () => [], lostRecords: () => 0,
    mapFailures: () => ({ retransmits: 0, drops: 0 }), hookLabels: () => null, dropLabels: () => null, dropReason: String, addressName: () => ({ namespace: '', workload: 'external', pod: '' }),
  });
  // a collector that never answers: the first batch is out, every later span waits in the queue
  const handed: ReadableSpan[][] = [];
  const hung: SpanExporter = { export: (spans: ReadableSpan[], _done: (r: ExportResult) => void) => void handed.push(spans), shutdown: async () => {} };
  const processor = new CountedBatchProcessor({
    exporter: hung, maxQueueSize: 4, maxExportBatchSize: 2, scheduledDelayMillis: 60_000, exportTimeoutMillis: 200,
    onDropped: (n) => metrics.spansDropped.inc({ node: NODE }, n),
  });
  const tracer = new TracerProvider({ spanProcessors: [processor] }).getTracer('test');
  const scrape = async () => /nettrace_agent_spans_dropped_total\{node="nt1-node2"\} (\d+)\n/.exec(await metrics.registry.metrics())?.[1];
  assert.equal(await scrape(), '0');

  for (let i = 0; i < 10; i++) tracer.startSpan(`span ${i}`).end();
  // 2 went to the exporter as a batch, 4 fill the queue, 4 had no room
  assert.deepEqual(handed.map((b) => b.map((s) => s.name)), [['span 0', 'span 1']]);
  assert.equal(processor.dropped, 4);
  assert.equal(await scrape(), '4');
});

test('where spans go: --otlp-endpoint, else OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, else OTEL_EXPORTER_OTLP_ENDPOINT, else nowhere', () => {
  assert.equal(otlpEndpoint(undefined, {}), null);
  assert.equal(otlpEndpoint(undefined, { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' }), 'http://collector:4318');
  assert.equal(otlpEndpoint(undefined, { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://a:4318', OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://b:4318/v1/traces' }), 'http://b:4318/v1/traces');
  assert.equal(otlpEndpoint('http://flag:4318', { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://env:4318' }), 'http://flag:4318', 'the flag wins');
  assert.equal(otlpEndpoint(undefined, { OTEL_EXPORTER_OTLP_ENDPOINT: '  ' }), null, 'empty is unset');
  // a bad value names where it came from
  assert.throws(() => otlpEndpoint(undefined, { OTEL_EXPORTER_OTLP_ENDPOINT: 'collector:4317' }),
    (e: unknown) => e instanceof NettraceError && /^nettrace: E_USAGE: OTEL_EXPORTER_OTLP_ENDPOINT collector:4317: only http:\/\/ and https:\/\/ .*; set OTEL_EXPORTER_OTLP_ENDPOINT to /.test(e.line()));
  assert.throws(() => otlpEndpoint('not a url', {}), (e: unknown) => e instanceof NettraceError && /--otlp-endpoint "not a url" is not a URL; give the collector/.test(e.line()));
});

test('the resource without OTEL_* variables: service.name nettrace-agent, host.name the node', () => {
  const saved = { name: process.env.OTEL_SERVICE_NAME, attrs: process.env.OTEL_RESOURCE_ATTRIBUTES };
  delete process.env.OTEL_SERVICE_NAME;
  delete process.env.OTEL_RESOURCE_ATTRIBUTES;
  try {
    const a = agentResource('node7').attributes;
    assert.deepEqual([a['service.name'], a['host.name'], a['nettrace.node']], ['nettrace-agent', 'node7', 'node7']);
  } finally {
    if (saved.name !== undefined) process.env.OTEL_SERVICE_NAME = saved.name;
    if (saved.attrs !== undefined) process.env.OTEL_RESOURCE_ATTRIBUTES = saved.attrs;
  }
});

test('Kubernetes names: the resource has k8s.node.name; spans carry the pod of this node (sender here, else receiver) and the peer', async (t) => {
  const recv = await startOtlpReceiver(t);
  const pods: Record<string, { namespace: string; name: string; node: string }> = {
    '10.244.1.5': { namespace: 'shop', name: 'frontend-7d4b9-x2x7q', node: 'node1' },
    '10.244.2.8': { namespace: 'db', name: 'redis-0', node: 'node2' },
  };
  // as the agent of `node` names addresses: its own pods are local; no source of names knows 10.244.9.9
  const sinkOn = (node: string) => new SpanSink({
    endpoint: recv.url, node, k8sNode: `k8s-${node}`, wallNs: wall, hookLabels, dropLabels, dropReason: String, onExport: () => {}, log: () => {},
    podOf: (ip) => {
      const p = pods[ip];
      return { local: p?.node === node, k8s: p ? { namespace: p.namespace, name: p.name } : null };
    },
  });
  const node1 = sinkOn('node1');
  const node2 = sinkOn('node2');
  const sent = group([0, 1, 2, 3, ORDER.UNDERLAY_EGRESS].map((o, i) => rec(o, 10_000 * (i + 1), { ip_id: 5100 })));
  const arrived = group([5, 6, 7, 8, 9].map((o, i) => rec(o, 200_000 + 10_000 * i, { ip_id: 5100, flags: 1 })));
  const stranger = group([5, 6, 7, 8, 9].map((o, i) => rec(o, 400_000 + 10_000 * i, { ip_id: 5200, flags: 1, saddr: Uint8Array.from([10, 244, 9, 9, ...Array(12).fill(0)]) })));
  const g = new SampleGrouper();
  const retrans = g.add(rec(ORDER.NONE, 600_000, { kind: RECORD_KIND.RETRANS, proto: 6, sport: 40000, dport: 5201, seq: 9, gso_segs: 1 })).retransmit!;
  node1.packet(sent, null);
  node1.retransmit(retrans);
  node2.packet(arrived, null);
  node2.packet(stranger, null);
  await Promise.all([node1.shutdown(), node2.shutdown()]);

  const names = (s: OtlpSpan) => ['k8s.namespace.name', 'k8s.pod.name', 'nettrace.peer.namespace', 'nettrace.peer.pod'].map((k) => attr(s, k));
  const on = (node: string) => recv.spans.filter((s) => attr(s, 'nettrace.node') === node);
  const sender = ['shop', 'frontend-7d4b9-x2x7q', 'db', 'redis-0'];
  assert.equal(on('node1').length, 7, 'root + steps 1-5 + the retransmit');
  for (const s of on('node1')) assert.deepEqual(names(s), sender, s.name);
  const receiving = on('node2').filter((s) => s.traceId === arrived.traceId);
  assert.equal(receiving.length, 5);
  for (const s of receiving) assert.deepEqual(names(s), ['db', 'redis-0', 'shop', 'frontend-7d4b9-x2x7q'], s.name);
  // a peer no source names: this node's pod only
  for (const s of on('node2').filter((x) => x.traceId === stranger.traceId)) assert.deepEqual(names(s), ['db', 'redis-0', undefined, undefined]);
  const nodeNames = new Set(recv.resources.map((r) => r.find((a) => a.key === 'k8s.node.name')?.value.stringValue));
  assert.deepEqual([...nodeNames].sort(), ['k8s-node1', 'k8s-node2']);
});
