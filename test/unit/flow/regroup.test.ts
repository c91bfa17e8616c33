// The receiving node's skb boundaries change between step 6 and step 7: its underlay ingress sees the
// wire segments (no GRO there), the tunnel device merges the inner packets again after decapsulation
// (gro_cells). Measured on the test cluster (flannel VXLAN, TSO/GSO off on node1, GRO off on node2's
// underlay): one 6990-byte skb of 5 segments leaves node1; node2's underlay ingress sees 5 skbs of 1398
// bytes; flannel.1 ingress onwards sees one 6990-byte skb with node1's key again.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PathAssembler } from '../../../src/flow/assemble';
import type { PacketPath } from '../../../src/flow/path';
import { parseFlowSpec } from '../../../src/flow/spec';
import { formatPathTable } from '../../../src/export/table';
import { pathToJsonLine } from '../../../src/export/json';
import type { HopRecord } from '../../../src/probe/layout.generated';
import { tcpHopRecord as rec, twoNodeTopology } from '../../helpers/records';

const topo = twoNodeTopology('eth0');
const flow = parseFlowSpec('10.244.1.5 -> 10.244.2.8:80', 'tcp');
const SEG = 1398;


interface Skb { seq: number; len: number; ipId: number; segs: number }
const data = (s: Skb): Partial<HopRecord> => ({ seq: s.seq >>> 0, payload_len: s.len, ip_len: 52 + s.len, ip_id: s.ipId, gso_segs: s.segs, ack: 9000, tcp_flags: 0x18 });
// node1: pod eth0 egress .. eth0 egress (orders 0-4); node2: eth0 ingress (order 5), then flannel.1 ingress .. pod eth0 ingress (6-9)
const SRC: [number, number, 0 | 1][] = [[2001, 2, 1], [1001, 5, 0], [1001, 3, 0], [1001, 4, 1], [1001, 2, 1]];
const WIRE: [number, number, 0 | 1] = [1002, 2, 0];
const DECAP: [number, number, 0 | 1][] = [[1002, 4, 0], [1002, 3, 1], [1002, 5, 1], [2002, 2, 0]];
const sent = (s: Skb, t0: number) => SRC.map(([ino, ifx, hook], i) => rec(ino, ifx, hook, t0 + i * 10, data(s)));
const wire = (s: Skb, t: number) => rec(WIRE[0], WIRE[1], WIRE[2], t, data(s));
const decap = (s: Skb, t0: number) => DECAP.map(([ino, ifx, hook], i) => rec(ino, ifx, hook, t0 + i * 10, data(s)));

const S = 3_000_000;
const I = 500;
const BIG: Skb = { seq: S, len: 5 * SEG, ipId: I, segs: 5 };
/** the 5 skbs node2's underlay ingress sees, 100 ns apart from 2000 */
const SEGS: Skb[] = [0, 1, 2, 3, 4].map((i) => ({ seq: S + i * SEG, len: SEG, ipId: I + i, segs: 1 }));
const WIRE_RECS = SEGS.map((s, i) => wire(s, 2000 + i * 100));
/** node2 after decapsulation: node1's skb again (gro_cells set gso_segs to the merged count) */
const MERGED = decap(BIG, 2500);
const SENT = sent(BIG, 1000);
const ALL_STEPS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 9];

function assembler(graceMs = 1000) {
  const clock = { now: 0 };
  return { a: new PathAssembler(flow, topo, { graceMs, now: () => clock.now }), clock };
}

/** Merge streams, keeping each one's own order, choosing the next stream at random. */
function interleave(streams: HopRecord[][], rand: () => number): HopRecord[] {
  const left = streams.map((s) => [...s]).filter((s) => s.length);
  const out: HopRecord[] = [];
  while (left.length) {
    const i = Math.floor(rand() * left.length);
    out.push(left[i]!.shift()!);
    if (!left[i]!.length) left.splice(i, 1);
  }
  return out;
}

function seeded(seed: number): () => number {
  return () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
}

function feed(a: PathAssembler, recs: HopRecord[]): PacketPath[] {
  return recs.flatMap((r) => a.addRecord(r));
}

/** The measured case in named and random arrival orders: node1's stream, node2's wire skbs, node2's merged skb. */
const ORDERS: [string, HopRecord[]][] = [
  ['sender, wire, merged', [...SENT, ...WIRE_RECS, ...MERGED]],
  ['sender, merged, wire', [...SENT, ...MERGED, ...WIRE_RECS]],
  ['wire, sender, merged', [...WIRE_RECS, ...SENT, ...MERGED]],
  ['wire, merged, sender', [...WIRE_RECS, ...MERGED, ...SENT]],
  ['merged, sender, wire', [...MERGED, ...SENT, ...WIRE_RECS]],
  ['merged, wire, sender', [...MERGED, ...WIRE_RECS, ...SENT]],
  ['wire reversed, merged, sender', [...[...WIRE_RECS].reverse(), ...MERGED, ...SENT]],
  ...Array.from({ length: 60 }, (_, i): [string, HopRecord[]] => {
    const rand = seeded(1000 + i);
    // node2's two kinds of skbs may come in either order too (the brief: arbitrary); each skb's own hops stay in order
    return [`interleaved ${i}`, interleave([SENT, ...WIRE_RECS.map((w) => [w]), MERGED], rand)];
  }),
];

function checkMeasured(p: PacketPath, label: string, receivedAs = 5, step6Ts = 2000): void {
  assert.deepEqual([p.complete, p.drop], [true, null], label);
  assert.deepEqual(p.steps.map((h) => h.step), ALL_STEPS, label);
  assert.deepEqual(p.steps.map((h) => `${h.node} ${h.device} ${h.hook}`), [
    'node1 eth0 egress', 'node1 veth1234 egress'.replace('egress', 'ingress'), 'node1 cni0 ingress', 'node1 flannel.1 egress', 'node1 eth0 egress',
    'node2 eth0 ingress', 'node2 flannel.1 ingress', 'node2 cni0 egress', 'node2 veth1234 egress', 'node2 eth0 ingress',
  ], label);
  // the sent skb, its step 6 from the wire skb holding its first byte
  assert.deepEqual([p.packet.seq, p.packet.payload_len, p.packet.ip_id], [S, 5 * SEG, I], label);
  assert.equal(p.steps[5]!.ts_ns, step6Ts, label);
  assert.equal(p.steps[5]!.latency_ns, step6Ts - 1040, label);
  assert.equal(p.steps[6]!.ts_ns, 2500, label);
  assert.deepEqual(p.packet.segments, { sent: 5, received_as: receivedAs, node: 'node2', merged: false }, label);
}

test('measured: 5 wire skbs at node2\'s underlay ingress, one skb again after decapsulation: one complete path with step 6, in any arrival order', () => {
  for (const [label, recs] of ORDERS) {
    const { a } = assembler();
    const out = feed(a, recs);
    assert.equal(out.length, 1, `${label}: one path, emitted once its wire skbs are all here`);
    checkMeasured(out[0]!, label);
    assert.equal(a.pendingCount, 0, `${label}: the wire skbs are taken, not left pending`);
    assert.deepEqual(a.expire(true), [], `${label}: no path for the wire skbs on their own`);
  }
  const { a } = assembler();
  const [p] = feed(a, ORDERS[0]![1]);
  assert.match(formatPathTable(p!).split('\n')[0]!, /^request 10\.244\.1\.5:40000 -> 10\.244\.2\.8:80 tcp ip-id 500 len 7042 5 segments → 5 seq 3000000 ack 9000 \[PA\]$/);
  assert.match(formatPathTable(p!), /\n  6     physical network .* node2 +eth0 +ingress +\+960 ns\n/);
  assert.deepEqual(JSON.parse(pathToJsonLine(p!)).packet.segments, { sent: 5, received_as: 5, node: 'node2', merged: false });
});

test('measured, sender and merged skb first: the path is held (not emitted without step 6) until its wire skbs come', () => {
  const { a, clock } = assembler(1000);
  assert.deepEqual(feed(a, [...SENT, ...MERGED]), [], 'held for its step 6');
  clock.now = 900;
  assert.deepEqual(a.expire(), []);
  assert.deepEqual(feed(a, WIRE_RECS.slice(0, 4)), [], 'not before all its bytes crossed the underlay');
  const out = feed(a, WIRE_RECS.slice(4));
  assert.equal(out.length, 1);
  checkMeasured(out[0]!, 'held');
  assert.equal(a.pendingCount, 0);
});

test('GRO on at node2\'s underlay: the same skb at every hook, exact key: one complete path with step 6, no segments, never held', () => {
  const recv = [wire(BIG, 2000), ...MERGED];
  const orders: [string, HopRecord[]][] = [
    ['sender first', [...SENT, ...recv]], ['receiver first', [...recv, ...SENT]],
    ...Array.from({ length: 20 }, (_, i): [string, HopRecord[]] => [`interleaved ${i}`, interleave([SENT, recv], seeded(7 + i))]),
  ];
  for (const [label, recs] of orders) {
    const { a } = assembler();
    const out = feed(a, recs);
    assert.equal(out.length, 1, label);
    const p = out[0]!;
    assert.deepEqual([p.complete, p.drop, p.steps.map((h) => h.step)], [true, null, ALL_STEPS], label);
    assert.equal(p.steps[5]!.ts_ns, 2000, label);
    assert.equal(p.packet.segments, undefined, label);
    assert.match(formatPathTable(p).split('\n')[0]!, / 5 segs seq 3000000 /);
    assert.equal(a.pendingCount, 0, label);
    assert.deepEqual(a.expire(true), [], label);
  }
});

test('a wire skb lost (4 of 5 came): after the grace time, complete through flannel.1, step 6 from the first wire skb that came', () => {
  for (const lost of [2, 0, 4]) {
    const wires = WIRE_RECS.filter((_, i) => i !== lost);
    const step6 = lost === 0 ? 2100 : 2000;
    for (const [label, recs] of [
      ['sender, merged, wire', [...SENT, ...MERGED, ...wires]],
      ['wire, sender, merged', [...wires, ...SENT, ...MERGED]],
      ['merged, wire, sender', [...MERGED, ...wires, ...SENT]],
      ['interleaved', interleave([SENT, MERGED, ...wires.map((w) => [w])], seeded(lost + 99))],
    ] as [string, HopRecord[]][]) {
      const what = `lost ${lost}, ${label}`;
      const { a, clock } = assembler(500);
      assert.deepEqual(feed(a, recs), [], `${what}: held, its bytes are not all accounted for at step 6`);
      clock.now = 400;
      assert.deepEqual(a.expire(), [], what);
      clock.now = 600;
      const out = a.expire();
      assert.equal(out.length, 1, `${what}: one path, the wire skbs not on their own`);
      checkMeasured(out[0]!, what, 4, step6);
      assert.equal(a.pendingCount, 0, what);
      assert.deepEqual(a.expire(true), [], what);
    }
  }
});

test('the same bytes sent again (a spurious retransmission, new IP IDs): each transmission counts its own wire skbs, in any arrival order', () => {
  // measured on a loaded machine: node2's stream was ahead, so the first skb's path was built after the
  // second's wire skbs came, and said "46 segments -> 92"
  const again: Skb = { ...BIG, ipId: 900 };
  const againWire = [0, 1, 2, 3, 4].map((i) => wire({ seq: S + i * SEG, len: SEG, ipId: 900 + i, segs: 1 }, 6000 + i * 100));
  const againSent = sent(again, 5000);
  const againMerged = decap(again, 6500);
  const orders: [string, HopRecord[]][] = [
    ['in time order', [...SENT, ...WIRE_RECS, ...MERGED, ...againSent, ...againWire, ...againMerged]],
    ['receiver ahead', [...WIRE_RECS, ...MERGED, ...againWire, ...againMerged, ...SENT, ...againSent]],
    ...Array.from({ length: 30 }, (_, i): [string, HopRecord[]] => [`interleaved ${i}`,
      interleave([[...SENT, ...againSent], [...WIRE_RECS, ...MERGED, ...againWire, ...againMerged]], seeded(300 + i))]),
  ];
  for (const [label, recs] of orders) {
    const { a } = assembler();
    const out = [...feed(a, recs), ...a.expire(true)].filter((p) => p.packet.ip_id === I || p.packet.ip_id === 900);
    const byId = (id: number) => out.filter((p) => p.packet.ip_id === id);
    for (const [id, step6] of [[I, 2000], [900, 6000]] as const) {
      const [p, ...more] = byId(id);
      assert.equal(more.length, 0, `${label}: one path for ip-id ${id}`);
      assert.ok(p, `${label}: a path for ip-id ${id}`);
      assert.equal(p.complete, true, label);
      assert.equal(p.steps.find((h) => h.step === 6)?.ts_ns, step6, `${label}: ip-id ${id}'s step 6 is its own wire skb`);
      assert.deepEqual(p.packet.segments, { sent: 5, received_as: 5, node: 'node2', merged: false }, `${label}: ip-id ${id}`);
    }
  }
});

test('no underlay ingress record at all: held for the grace time, then complete without step 6, as before', () => {
  const { a, clock } = assembler(500);
  assert.deepEqual(feed(a, [...SENT, ...MERGED]), []);
  clock.now = 600;
  const out = a.expire();
  assert.equal(out.length, 1);
  assert.deepEqual([out[0]!.complete, out[0]!.drop, out[0]!.steps.map((h) => h.step), out[0]!.packet.segments], [true, null, [1, 2, 3, 4, 5, 7, 8, 9, 9], undefined]);
  assert.equal(a.pendingCount, 0);
});

test('regrouped twice: 10 wire skbs at step 6, two skbs after decapsulation (byte-range match across nodes): step 6 from the wire', () => {
  const big: Skb = { seq: 10_000, len: 10 * SEG, ipId: 1, segs: 10 };
  const wires = Array.from({ length: 10 }, (_, i) => wire({ seq: 10_000 + i * SEG, len: SEG, ipId: 1 + i, segs: 1 }, 2000 + i * 50));
  const halves = [0, 1].map((i) => decap({ seq: 10_000 + i * 5 * SEG, len: 5 * SEG, ipId: 1 + i * 5, segs: 5 }, 2600 + i * 100));
  for (let round = 0; round < 40; round++) {
    const { a } = assembler();
    const recs = round === 0 ? [...sent(big, 1000), ...wires, ...halves.flat()]
      : round === 1 ? [...halves.flat(), ...wires, ...sent(big, 1000)]
        : interleave([sent(big, 1000), ...halves, ...wires.map((w) => [w])], seeded(round));
    const out = feed(a, recs);
    const label = `round ${round}`;
    assert.equal(out.length, 1, label);
    const p = out[0]!;
    assert.deepEqual([p.complete, p.drop, p.steps.map((h) => h.step)], [true, null, ALL_STEPS], label);
    assert.deepEqual(p.steps.slice(5).map((h) => h.ts_ns), [2000, 2600, 2610, 2620, 2630], label);
    // one meaning: the regrouping at step 6 (the underlay ingress), not the one after decapsulation
    assert.deepEqual(p.packet.segments, { sent: 10, received_as: 10, node: 'node2', merged: false }, label);
    assert.equal(a.pendingCount, 0, label);
    assert.deepEqual(a.expire(true), [], label);
  }
});

test('the sender\'s records never come: one path seen on node2 alone, with its step 6 from the wire skbs', () => {
  const { a, clock } = assembler(500);
  assert.deepEqual(feed(a, [...WIRE_RECS, ...MERGED]), []);
  clock.now = 600;
  const out = a.expire();
  assert.equal(out.length, 1);
  assert.deepEqual([out[0]!.complete, out[0]!.steps.map((h) => h.step), out[0]!.steps[0]!.ts_ns], [true, [6, 7, 8, 9, 9], 2000]);
  assert.equal(a.pendingCount, 0);
});

test('wire skbs of no path on the receiving node are reported on their own after the grace time, as before', () => {
  const { a, clock } = assembler(500);
  assert.deepEqual(feed(a, WIRE_RECS.slice(0, 2)), []);
  clock.now = 600;
  const out = a.expire();
  assert.deepEqual(out.map((p) => [p.complete, p.drop?.step, p.steps.map((h) => h.step)]), [[false, 7, [6]], [false, 7, [6]]]);
  assert.equal(a.pendingCount, 0);
});

test('a wire skb waits while a path of the receiving node may still take it', () => {
  const { a, clock } = assembler(500);
  feed(a, WIRE_RECS);
  clock.now = 400;
  feed(a, MERGED); // node2's merged skb: its sender's records may still come
  clock.now = 600;
  assert.deepEqual(a.expire(), [], 'the wire skbs expire, but the merged skb may still take them');
  clock.now = 700;
  const out = feed(a, SENT);
  assert.equal(out.length, 1);
  checkMeasured(out[0]!, 'late sender');
  assert.equal(a.pendingCount, 0);
});

test('the same on the sending node (boundaries change between tunnel egress and underlay egress): not rebuilt, but nothing breaks', () => {
  // node1's orders 0-3 see the 5-segment skb, its underlay egress (order 4) the 5 segments; node2 as measured
  const { a } = assembler(500);
  const upper = sent(BIG, 1000).slice(0, 4);
  const under = SEGS.map((s, i) => rec(...SRC[4]!, 1040 + i * 10, data(s)));
  const out = [...feed(a, [...upper, ...under, ...WIRE_RECS, ...MERGED]), ...a.expire(true)];
  const big = out.filter((p) => p.packet.seq === S && p.packet.payload_len === 5 * SEG);
  assert.equal(big.length, 1);
  assert.equal(big[0]!.complete, true);
  assert.ok(out.length <= 6);
  assert.equal(a.pendingCount, 0);
});
