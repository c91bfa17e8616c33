// Cross-node matching of TCP data by byte range: TSO/GSO cuts a sent skb into segments and GRO
// regroups them at the receiver, so the two nodes see other skb boundaries (docs/architecture.md#packet-identity).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PathAssembler } from '../../../src/flow/assemble';
import type { PacketPath } from '../../../src/flow/path';
import { parseFlowSpec } from '../../../src/flow/spec';
import { formatPathTable } from '../../../src/export/table';
import { pathToJsonLine } from '../../../src/export/json';
import { RECORD_KIND, type HopRecord } from '../../../src/probe/layout.generated';
import { tcpHopRecord as rec, twoNodeTopology } from '../../helpers/records';

const topo = twoNodeTopology();
const flow = parseFlowSpec('10.244.1.5 -> 10.244.2.8:80', 'tcp');
const MSS = 1448;


interface Skb { seq: number; len: number; ipId: number; segs?: number }
const data = (s: Skb): Partial<HopRecord> => ({
  seq: s.seq >>> 0, payload_len: s.len, ip_len: 52 + s.len > 0xffff ? 0 : 52 + s.len, ip_id: s.ipId, gso_segs: s.segs ?? 0, ack: 9000, tcp_flags: 0x18,
});
// node1's five hooks of a request (pod-a eth0 egress .. ens5 egress), node2's five (ens5 ingress .. pod-b eth0 ingress)
const SRC: [number, number, 0 | 1][] = [[2001, 2, 1], [1001, 5, 0], [1001, 3, 0], [1001, 4, 1], [1001, 2, 1]];
const DST: [number, number, 0 | 1][] = [[1002, 2, 0], [1002, 4, 0], [1002, 3, 1], [1002, 5, 1], [2002, 2, 0]];
const sent = (s: Skb, t0: number) => SRC.map(([ino, ifx, hook], i) => rec(ino, ifx, hook, t0 + i * 10, data(s)));
const received = (s: Skb, t0: number) => DST.map(([ino, ifx, hook], i) => rec(ino, ifx, hook, t0 + i * 10, data(s)));

function feed(a: PathAssembler, recs: HopRecord[]): PacketPath[] {
  return recs.flatMap((r) => a.addRecord(r));
}

function assembler(graceMs = 1000) {
  const clock = { now: 0 };
  return { a: new PathAssembler(flow, topo, { graceMs, now: () => clock.now, dropReason: (n) => (n === 77 ? 'TC_INGRESS' : `reason ${n}`) }), clock };
}

const ALL_STEPS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 9];

test('one 45-segment skb that GRO regroups into three: one complete path, 45 segments → 3', () => {
  const { a } = assembler();
  const big: Skb = { seq: 1_000_000, len: 45 * MSS, ipId: 100, segs: 45 };
  const parts: Skb[] = [0, 1, 2].map((i) => ({ seq: 1_000_000 + i * 15 * MSS, len: 15 * MSS, ipId: 100 + i * 15, segs: 15 }));
  assert.deepEqual(feed(a, sent(big, 1000)), []);
  assert.deepEqual(feed(a, [...received(parts[0]!, 2000), ...received(parts[1]!, 2100)]), [], 'not all bytes there yet');
  const out = feed(a, received(parts[2]!, 2200));
  assert.equal(out.length, 1);
  const p = out[0]!;
  assert.deepEqual(p.steps.map((h) => h.step), ALL_STEPS);
  assert.deepEqual(p.steps.map((h) => h.node), [...Array(5).fill('node1'), ...Array(5).fill('node2')]);
  assert.deepEqual([p.complete, p.drop], [true, null]);
  // the packet is the sent skb; steps 6-9 are the timestamps of the skb holding its first byte
  assert.deepEqual([p.packet.seq, p.packet.payload_len, p.packet.gso_segs, p.packet.ip_id], [1_000_000, 45 * MSS, 45, 100]);
  assert.deepEqual(p.steps.slice(5).map((h) => h.ts_ns), [2000, 2010, 2020, 2030, 2040]);
  assert.equal(p.steps[5]!.latency_ns, 2000 - 1040);
  assert.deepEqual(p.packet.segments, { sent: 45, received_as: 3, node: 'node2', merged: false });
  assert.equal(a.pendingCount, 0, 'the regrouped skbs are not reported on their own');
  assert.deepEqual(a.expire(true), []);
  assert.match(formatPathTable(p).split('\n')[0]!, /^request 10\.244\.1\.5:40000 -> 10\.244\.2\.8:80 tcp ip-id 100 len 65212 45 segments → 3 seq 1000000 ack 9000 \[PA\]$/);
  assert.deepEqual(JSON.parse(pathToJsonLine(p)).packet.segments, { sent: 45, received_as: 3, node: 'node2', merged: false });
});

test('three skbs that GRO merges into one: three complete paths, each 1 segment → 1 (merged)', () => {
  const { a } = assembler();
  const small: Skb[] = [0, 1, 2].map((i) => ({ seq: 5000 + i * MSS, len: MSS, ipId: 10 + i }));
  const merged: Skb = { seq: 5000, len: 3 * MSS, ipId: 10, segs: 3 };
  assert.deepEqual(feed(a, small.flatMap((s, i) => sent(s, 100 + i * 5))), []);
  const recs = received(merged, 900);
  assert.deepEqual(feed(a, recs.slice(0, 4)), []);
  // add() hands out the first path the last hop completed, expire() the others
  const first = a.add(recs[4]!);
  assert.ok(first);
  const rest = a.expire();
  const paths = [first, ...rest];
  assert.equal(paths.length, 3);
  assert.deepEqual(paths.map((p) => p.packet.seq), [5000, 5000 + MSS, 5000 + 2 * MSS]);
  for (const p of paths) {
    assert.deepEqual(p.steps.map((h) => h.step), ALL_STEPS);
    assert.deepEqual([p.complete, p.drop], [true, null]);
    assert.deepEqual(p.steps.slice(5).map((h) => h.ts_ns), [900, 910, 920, 930, 940]);
    assert.deepEqual(p.packet.segments, { sent: 1, received_as: 1, node: 'node2', merged: true });
    assert.ok(p.steps.every((h) => h.latency_ns >= 0));
  }
  assert.match(formatPathTable(paths[1]!), / 1 segment → 1 \(merged\) seq 6448 /);
  assert.equal(a.pendingCount, 0);
});

test('records of the receiving node first: paths wait for the sender\'s last hook, nothing reported twice', () => {
  const { a } = assembler();
  const big: Skb = { seq: 70_000, len: 4 * MSS, ipId: 1, segs: 4 };
  const halves: Skb[] = [{ seq: 70_000, len: 2 * MSS, ipId: 1, segs: 2 }, { seq: 70_000 + 2 * MSS, len: 2 * MSS, ipId: 3, segs: 2 }];
  assert.deepEqual(feed(a, halves.flatMap((h, i) => received(h, 5000 + i * 50))), [], 'a destination skb waits for its sender');
  const s = sent(big, 4000);
  assert.deepEqual(feed(a, s.slice(0, 4)), [], 'not before the sending node\'s last hook');
  const out = feed(a, s.slice(4));
  assert.equal(out.length, 1);
  assert.deepEqual(out[0]!.steps.map((h) => h.step), ALL_STEPS);
  assert.deepEqual(out[0]!.packet.segments, { sent: 4, received_as: 2, node: 'node2', merged: false });
  assert.equal(a.pendingCount, 0);
  assert.deepEqual(a.expire(true), []);

  // 3 -> 1 the same way round
  const small: Skb[] = [0, 1, 2].map((i) => ({ seq: 90_000 + i * MSS, len: MSS, ipId: 50 + i }));
  assert.deepEqual(feed(a, received({ seq: 90_000, len: 3 * MSS, ipId: 50, segs: 3 }, 9000)), []);
  const paths = small.flatMap((sk, i) => feed(a, sent(sk, 8000 + i * 20)));
  assert.deepEqual(paths.map((p) => [p.packet.seq, p.complete, p.steps.length]), [[90_000, true, 10], [90_000 + MSS, true, 10], [90_000 + 2 * MSS, true, 10]]);
  assert.equal(a.pendingCount, 0);
});

test('two nodes\' streams interleaved in any order: always one complete path per sent skb', () => {
  // each node's records arrive in their order; how the two streams interleave is arbitrary
  let seed = 12345;
  const rand = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
  for (let round = 0; round < 50; round++) {
    const { a } = assembler();
    const base = 1_000 + round * 100_000;
    const sentSkbs: Skb[] = [{ seq: base, len: 10 * MSS, ipId: 1, segs: 10 }, { seq: base + 10 * MSS, len: 10 * MSS, ipId: 11, segs: 10 }];
    // GRO boundaries straddle the sent skbs
    const recvSkbs: Skb[] = [{ seq: base, len: 7 * MSS, ipId: 1 }, { seq: base + 7 * MSS, len: 7 * MSS, ipId: 8 }, { seq: base + 14 * MSS, len: 6 * MSS, ipId: 15 }];
    const n1 = sentSkbs.flatMap((s, i) => sent(s, 100 + i * 100));
    const n2 = recvSkbs.flatMap((s, i) => received(s, 1000 + i * 100));
    const out: PacketPath[] = [];
    while (n1.length || n2.length) {
      const from = !n2.length || (n1.length && rand() < 0.5) ? n1 : n2;
      out.push(...a.addRecord(from.shift()!));
    }
    assert.deepEqual(out.map((p) => [p.packet.seq, p.complete, p.steps.length]).sort((x, y) => x[0] as number - (y[0] as number)),
      [[base, true, 10], [base + 10 * MSS, true, 10]], `round ${round}`);
    assert.deepEqual(out.map((p) => p.packet.segments?.received_as).sort(), [2, 2]);
    assert.equal(a.pendingCount, 0);
    assert.deepEqual(a.expire(true), []);
  }
});

test('bytes that never arrive: after the grace time, incomplete where they were last seen', () => {
  const { a, clock } = assembler(500);
  const big: Skb = { seq: 1, len: 3 * MSS, ipId: 1, segs: 3 };
  const parts: Skb[] = [0, 1, 2].map((i) => ({ seq: 1 + i * MSS, len: MSS, ipId: 1 + i }));
  feed(a, sent(big, 0));
  feed(a, [...received(parts[0]!, 100), ...received(parts[1]!, 150)]);
  assert.deepEqual(a.expire(), []);
  clock.now = 600;
  const out = a.expire();
  assert.equal(out.length, 1, 'one path for the sent skb, not one per received skb');
  const p = out[0]!;
  assert.equal(p.complete, false);
  assert.deepEqual(p.steps.map((h) => h.step), ALL_STEPS, 'steps 6-9 of the skb holding the first byte');
  assert.deepEqual(p.drop, {
    step: 6, step_name: 'physical network', device: 'ens5', node: 'node1',
    reason: `not seen after ens5 egress (last seen step 5, encapsulation): step 6 (physical network) failed for ${MSS} of ${3 * MSS} bytes`,
    last_seen: { step: 5, name: 'encapsulation', node: 'node1', device: 'ens5', hook: 'egress' },
  });
  assert.deepEqual(p.packet.segments, { sent: 3, received_as: 2, node: 'node2', merged: false });
  assert.match(formatPathTable(p), /INCOMPLETE: not seen after ens5 egress \(last seen step 5, encapsulation\): step 6 \(physical network\) failed for 1448 of 4344 bytes\n$/);
  assert.equal(a.pendingCount, 0);

  // the last third reached node2 but stopped at its tunnel
  const b = assembler(500);
  feed(b.a, sent(big, 0));
  feed(b.a, [...received(parts[0]!, 100), ...received(parts[1]!, 150), ...received(parts[2]!, 200).slice(0, 2)]);
  b.clock.now = 100;
  assert.deepEqual(b.a.expire(), []);
  b.clock.now = 700;
  const [q] = b.a.expire();
  assert.deepEqual([q?.complete, q?.drop?.step, q?.drop?.device, q?.drop?.node, q?.drop?.reason],
    [false, 8, 'flannel.1', 'node2', `not seen after flannel.1 ingress (last seen step 7, receive, decapsulate): step 8 (route to bridge) failed for ${MSS} of ${3 * MSS} bytes`]);
});

test('a linked source waits while its bytes still move on the receiving node', () => {
  const { a, clock } = assembler(500);
  const big: Skb = { seq: 1, len: 2 * MSS, ipId: 1, segs: 2 };
  const parts: Skb[] = [0, 1].map((i) => ({ seq: 1 + i * MSS, len: MSS, ipId: 1 + i }));
  feed(a, sent(big, 0));
  feed(a, received(parts[0]!, 100));
  clock.now = 400;
  feed(a, received(parts[1]!, 150).slice(0, 3));
  clock.now = 800; // 800 ms after the sender's hops, 400 after the last receiving one
  assert.deepEqual(a.expire(), []);
  clock.now = 850;
  const out = feed(a, received(parts[1]!, 150).slice(3));
  assert.deepEqual(out.map((p) => p.complete), [true]);
});

test('sequence numbers that wrap past 2^32 inside one skb', () => {
  const { a } = assembler();
  const start = 2 ** 32 - 2000;
  const big: Skb = { seq: start, len: 3 * MSS, ipId: 1, segs: 3 };
  const parts: Skb[] = [{ seq: start, len: 2000, ipId: 1 }, { seq: 0, len: 3 * MSS - 2000, ipId: 2 }];
  // an skb of another flow direction at the same seqs, and one of the same flow far away, must not link
  feed(a, received({ seq: 0, len: 500, ipId: 9 }, 50).map((r) => ({ ...r, sport: 40001 })));
  feed(a, received({ seq: 2 ** 31, len: 500, ipId: 9 }, 50));
  feed(a, sent(big, 0));
  const out = feed(a, [...received(parts[1]!, 200), ...received(parts[0]!, 100)]);
  assert.equal(out.length, 1);
  assert.deepEqual([out[0]!.complete, out[0]!.packet.seq, out[0]!.packet.segments], [true, start, { sent: 3, received_as: 2, node: 'node2', merged: false }]);
  assert.deepEqual(out[0]!.steps.slice(5).map((h) => h.ts_ns), [100, 110, 120, 130, 140], 'the skb holding the first byte, before the wrap');
  // the unlinked ones are reported on their own, as seen only on node2
  const alone = a.expire(true);
  assert.deepEqual(alone.map((p) => [p.complete, p.steps.map((h) => h.step)]), [[true, [6, 7, 8, 9, 9]], [true, [6, 7, 8, 9, 9]]]);
});

test('a flow that moves on by gigabytes keeps matching (the index rebases)', () => {
  const { a } = assembler();
  let seq = 3_000_000_000;
  const stale = { seq: seq - 100_000, len: MSS, ipId: 60000 };
  feed(a, sent(stale, 0)); // pending, never received
  for (let i = 0; i < 8; i++) {
    const s: Skb = { seq, len: 2 * MSS, ipId: i * 2, segs: 2 };
    feed(a, sent(s, i * 1000));
    const out = feed(a, [...received({ seq, len: MSS, ipId: i * 2 }, i * 1000 + 500), ...received({ seq: seq + MSS, len: MSS, ipId: i * 2 + 1 }, i * 1000 + 600)]);
    assert.deepEqual(out.map((p) => [p.packet.seq, p.complete]), [[seq >>> 0, true]], `at seq ${seq >>> 0}`);
    seq = (seq + 700_000_000) >>> 0;
  }
  const left = a.expire(true);
  assert.deepEqual(left.map((p) => [p.packet.seq, p.complete, p.drop?.step]), [[stale.seq, false, 6]]);
});

test('unchanged boundaries (the all-veth cluster): one exact entry, no segments field, either arrival order', () => {
  const skb: Skb = { seq: 777, len: 45 * MSS, ipId: 4, segs: 45 };
  for (const order of ['sender first', 'receiver first'] as const) {
    const { a } = assembler();
    const recs = order === 'sender first' ? [...sent(skb, 0), ...received(skb, 100)] : [...received(skb, 100), ...sent(skb, 0)];
    const out = feed(a, recs);
    assert.equal(out.length, 1, order);
    const p = out[0]!;
    assert.deepEqual([p.complete, p.drop, p.steps.map((h) => h.step)], [true, null, ALL_STEPS], order);
    assert.equal(p.packet.segments, undefined);
    assert.ok(!('segments' in JSON.parse(pathToJsonLine(p)).packet));
    assert.match(formatPathTable(p).split('\n')[0]!, / 45 segs seq 777 /);
    assert.equal(a.pendingCount, 0);
  }
});

test('pure ACKs keep exact-key matching: a receiving-node ACK waits the grace time for its sender, not linked by bytes', () => {
  const { a, clock } = assembler(500);
  const ack = (ipId: number) => ({ seq: 5000, payload_len: 0, ip_id: ipId, tcp_flags: 0x10 });
  feed(a, SRC.map(([ino, ifx, hook], i) => rec(ino, ifx, hook, i, ack(1))));
  assert.deepEqual(feed(a, DST.map(([ino, ifx, hook], i) => rec(ino, ifx, hook, 100 + i, ack(2)))), []);
  clock.now = 600;
  assert.deepEqual(a.expire().map((p) => [p.complete, p.drop?.step ?? null, p.steps.map((h) => h.step), p.packet.segments]).sort((x, y) => Number(x[0]) - Number(y[0])),
    [[false, 6, [1, 2, 3, 4, 5], undefined], [true, null, [6, 7, 8, 9, 9], undefined]]);
});

test('a receiving-node skb that overlaps no sent skb is reported as today after the grace time', () => {
  const { a, clock } = assembler(500);
  assert.deepEqual(feed(a, received({ seq: 1, len: MSS, ipId: 1 }, 0)), []);
  assert.equal(a.pendingCount, 1);
  clock.now = 600;
  const out = a.expire();
  assert.deepEqual(out.map((p) => [p.complete, p.drop, p.steps.map((h) => h.step), p.packet.segments]), [[true, null, [6, 7, 8, 9, 9], undefined]]);
});

test('the kernel drops one regrouped skb: the sent skb\'s path ends at once with the kernel\'s reason', () => {
  const { a } = assembler();
  const big: Skb = { seq: 1, len: 2 * MSS, ipId: 1, segs: 2 };
  const parts: Skb[] = [0, 1].map((i) => ({ seq: 1 + i * MSS, len: MSS, ipId: 1 + i }));
  feed(a, sent(big, 0));
  feed(a, received(parts[0]!, 100));
  feed(a, received(parts[1]!, 150).slice(0, 2));
  const out = feed(a, [rec(1002, 4, 0, 175, { ...data(parts[1]!), kind: RECORD_KIND.DROP, reason: 77 })]);
  assert.equal(out.length, 1);
  const p = out[0]!;
  assert.equal(p.complete, false);
  assert.deepEqual(p.drop, {
    step: 8, step_name: 'route to bridge', device: 'flannel.1', node: 'node2', kernel_reason: 'TC_INGRESS', dropped_on: 'flannel.1',
    reason: `dropped by the kernel (TC_INGRESS) after flannel.1 ingress (last seen step 7, receive, decapsulate): step 8 (route to bridge) failed for ${MSS} of ${2 * MSS} bytes`,
    last_seen: { step: 7, name: 'receive, decapsulate', node: 'node2', device: 'flannel.1', hook: 'ingress' },
  });
  assert.deepEqual(p.steps.map((h) => h.step), ALL_STEPS);
  assert.deepEqual(a.expire(true), [], 'the dropped skb is not reported again on its own');
});
