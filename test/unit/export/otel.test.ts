// SpanSink: sampled packets become OpenTelemetry spans sent over real OTLP/HTTP (JSON) to a
// receiver on 127.0.0.1. One sink per process (the SDK registers the global tracer
// provider), so one test sends everything, flushes with shutdown, and its subtests read.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TracerProvider, type ReadableSpan, type SpanExporter } from '@opentelemetry/sdk-trace';
import type { ExportResult } from '@opentelemetry/core';
import { CountedBatchProcessor, SpanSink } from '../../../src/export/otel';
import { createMetrics } from '../../../src/export/prometheus';
import type { HookLabels } from '../../../src/export/prometheus';
import { SampleGrouper, stepSpanId, type Retransmit, type SampledPacket } from '../../../src/flow/sampled';
import { ORDER, RECORD_KIND, type HopRecord } from '../../../src/probe/layout.generated';
import { ORDER_POINTS, STEP_NAMES } from '../../../src/topology/steps';
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
const DROP_REASONS: Record<number, string> = { 5: 'NETFILTER_DROP', 17: 'QDISC_DROP' };

/** Feeds records to a grouper as the ring hands them over; the packet they complete. */
function group(records: HopRecord[]): SampledPacket {
  const g = new SampleGrouper();
  let done: SampledPacket | undefined;
  for (const r of records) done = g.add(r).packet ?? done;
  return done ?? g.expire(true)[0]!;
}

const sameTrace = (s: OtlpSpan, p: SampledPacket) => s.traceId === p.traceId;

test('SpanSink over OTLP/HTTP: packets, the wire, drops and retransmits as spans', async (t) => {
  const recv = await startOtlpReceiver(t);
  const exports: { ok: boolean; spans: number }[] = [];
  const logs: string[] = [];
  const sink = new SpanSink({
    endpoint: recv.url, node: NODE, wallNs: wall, hookLabels, dropReason: (r) => DROP_REASONS[r] ?? `REASON_${r}`,
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
    }
  });

  await t.test('one packet is one trace: the sender\'s root span, every step hanging off it', () => {
    const spans = all.filter((s) => sameTrace(s, sent));
    assert.equal(spans.length, 6 + 5, 'both nodes\' spans of the ping in one trace');
    const root = spans.find((s) => !s.parentSpanId)!;
    assert.equal(root.name, 'packet 10.244.1.5 -> 10.244.2.8');
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
    assert.equal(attr(first, 'nettrace.device'), 'pod-eth');
    assert.equal(attr(first, 'nettrace.hook'), 'egress');
    assert.equal(attr(first, 'nettrace.latency_ns'), undefined, 'the first hook is a point');
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
      assert.equal(attr(s, 'nettrace.device'), device, name);
      assert.equal(attr(s, 'nettrace.hook'), hook, name);
      assert.equal(BigInt(s.startTimeUnixNano), wall(start), name);
      assert.equal(BigInt(s.endTimeUnixNano), wall(end), name);
      assert.equal(attr(s, 'nettrace.latency_ns'), latency, name);
    }
  });

  await t.test('the wire (step 6) spans from the sender\'s departure to the arrival at eth0', () => {
    const wire = all.find((s) => sameTrace(s, sent) && s.spanId === stepSpanId(sent.traceId, ORDER.UNDERLAY_INGRESS))!;
    assert.equal(wire.name, 'step 6 physical network');
    assert.equal(attr(wire, 'nettrace.step'), 6);
    assert.equal(attr(wire, 'nettrace.device'), 'eth0');
    assert.equal(attr(wire, 'nettrace.hook'), 'ingress');
    assert.equal(attr(wire, 'nettrace.from_node'), SENDER);
    assert.equal(attr(wire, 'nettrace.latency_ns'), 30_000);
    assert.equal(BigInt(wire.startTimeUnixNano), departure.wallNs);
    assert.equal(BigInt(wire.endTimeUnixNano), wall(2_000_000));
    assert.equal(wire.parentSpanId, sent.rootSpanId);
  });

  await t.test('the wire with a sender clock ahead: latency 0, never negative; without a departure: a point, no sender', () => {
    const wireOf = (p: SampledPacket) => all.find((s) => sameTrace(s, p) && s.spanId === stepSpanId(p.traceId, ORDER.UNDERLAY_INGRESS))!;
    const skew = wireOf(skewed);
    assert.equal(attr(skew, 'nettrace.latency_ns'), 0);
    assert.equal(attr(skew, 'nettrace.from_node'), SENDER);
    assert.equal(BigInt(skew.startTimeUnixNano), wall(3_000_000));
    const lone = wireOf(alone);
    assert.equal(attr(lone, 'nettrace.from_node'), undefined);
    assert.equal(attr(lone, 'nettrace.latency_ns'), undefined);
    assert.equal(lone.startTimeUnixNano, lone.endTimeUnixNano);
    assert.equal(lone.parentSpanId, alone.rootSpanId, 'the receiving node joins the trace under the sender\'s root');
    assert.equal(all.filter((s) => sameTrace(s, alone)).length, 5, 'no root of its own');
  });

  await t.test('a drop: a span with the kernel\'s reason and the last device, in the packet\'s trace', () => {
    const spans = all.filter((s) => sameTrace(s, dropped));
    assert.deepEqual(spans.map((s) => s.name).sort(), ['drop', 'packet 10.244.1.5 -> 10.244.2.8', 'step 1 container sends', 'step 2 veth pair', 'step 3 bridge']);
    const drop = spans.find((s) => s.name === 'drop')!;
    assert.equal(attr(drop, 'nettrace.drop_reason'), 'NETFILTER_DROP');
    assert.equal(attr(drop, 'nettrace.last_device'), 'cni0');
    assert.equal(drop.parentSpanId, dropped.rootSpanId);
    assert.equal(BigInt(drop.startTimeUnixNano), wall(5_030_000));
    const root = spans.find((s) => !s.parentSpanId)!;
    assert.equal(BigInt(root.endTimeUnixNano), wall(5_020_000));
  });

  await t.test('a retransmit: a root span in its connection\'s trace with seq and segments', () => {
    const rt = all.find((s) => s.name.startsWith('tcp retransmit'))!;
    assert.equal(rt.name, 'tcp retransmit 10.244.1.5:40000 -> 10.244.2.8:5201');
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
    mapFailures: () => ({ retransmits: 0, drops: 0 }), hookLabels: () => null, dropLabels: () => null, dropReason: String, podOf: () => ({ pod: '', ip: '' }),
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
