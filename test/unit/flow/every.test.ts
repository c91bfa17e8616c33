// follow --every on the collector's side: a sampled skb is named across nodes by its sampled byte,
// so the kept skb of each node makes one complete path however TSO/GSO and GRO cut the bytes.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PathAssembler } from '../../../src/flow/assemble';
import { everyShift, sampledByte, validEvery } from '../../../src/flow/every';
import { parseFlowSpec } from '../../../src/flow/spec';
import type { HopRecord } from '../../../src/probe/layout.generated';
import { tcpHopRecord as rec, twoNodeTopology } from '../../helpers/records';

test('--every takes powers of two from 1 to 1024; 1 samples nothing', () => {
  assert.deepEqual([1, 2, 16, 1024].map(everyShift), [0, 17, 20, 26]);
  for (const bad of [0, 3, 2048, 1.5, -2]) assert.equal(validEvery(bad), false, String(bad));
});

test('the byte that names a sampled skb: its multiple of the unit, else (a SYN or RST with data) all of it (-1)', () => {
  const shift = everyShift(2); // 128 KiB
  assert.equal(sampledByte(131072 * 3 - 10, 5000, 0x18, shift), 131072 * 3);
  // a FIN merged by GRO into the data before it: named by the mark, as the sender's skb of it is
  assert.equal(sampledByte(131072 * 3 - 10, 5000, 0x19, shift), 131072 * 3);
  assert.equal(sampledByte(131072 * 3 - 10, 5000, 0x02, shift), -1, 'SYN with data');
  assert.equal(sampledByte(0xfffffff0, 0x40, 0x18, shift), 0);
  assert.equal(sampledByte(5, 100, 0x18, shift), -1, 'no sampled byte');
  assert.equal(sampledByte(131072 * 3 - 10, 5000, 0x18, 0), -1, 'not sampling');
});

const topo = twoNodeTopology('eth0');
const flow = parseFlowSpec('10.244.1.5 -> 10.244.2.8:80', 'tcp');
const SEG = 1398;
const SRC: [number, number, 0 | 1][] = [[2001, 2, 1], [1001, 5, 0], [1001, 3, 0], [1001, 4, 1], [1001, 2, 1]];
const WIRE: [number, number, 0 | 1] = [1002, 2, 0];
const DECAP: [number, number, 0 | 1][] = [[1002, 4, 0], [1002, 3, 1], [1002, 5, 1], [2002, 2, 0]];
const data = (seq: number, len: number, ipId: number, segs: number): Partial<HopRecord> =>
  ({ seq: seq >>> 0, payload_len: len, ip_len: 52 + len, ip_id: ipId, gso_segs: segs, ack: 9000, tcp_flags: 0x18 });

/**
 * What the kernel keeps with --every 2 of one 46-segment skb node1 sends across the 128 KiB mark: the
 * whole skb at node1's hooks; at node2's underlay the one wire segment holding the mark; after the tunnel
 * merged the segments again (here in two skbs), the one holding it.
 */
function keptRecords(): HopRecord[] {
  const mark = 131072 * 20;
  const S = mark - 1000;
  const sent = SRC.map(([ino, ifx, hook], i) => rec(ino, ifx, hook, 1000 + i * 10, data(S, 46 * SEG, 100, 46)));
  const wire = rec(WIRE[0], WIRE[1], WIRE[2], 2000, data(S, SEG, 100, 1));
  const merged = DECAP.map(([ino, ifx, hook], i) => rec(ino, ifx, hook, 2500 + i * 10, data(S, 20 * SEG, 100, 20)));
  return [...sent, wire, ...merged];
}

test('--every: the kept skbs of both nodes make one complete path, without waiting for bytes never kept', () => {
  const now = { ms: 0 };
  const a = new PathAssembler(flow, topo, { graceMs: 1000, every: 2, now: () => now.ms });
  const paths = keptRecords().flatMap((r) => a.addRecord(r));
  assert.equal(paths.length, 1, 'one path as soon as the last hop is in');
  const p = paths[0]!;
  assert.deepEqual(p.steps.map((s) => s.step), [1, 2, 3, 4, 5, 6, 7, 8, 9, 9]);
  assert.equal(p.complete, true);
  assert.equal(p.packet.payload_len, 46 * SEG, 'the packet is shown as node1 sent it');
  now.ms = 5000;
  assert.deepEqual(a.expire(true), [], 'nothing left behind');
});

test('without --every the same records would wait for the bytes node2 did not report', () => {
  const now = { ms: 0 };
  const a = new PathAssembler(flow, topo, { graceMs: 1000, now: () => now.ms });
  const paths = keptRecords().flatMap((r) => a.addRecord(r));
  assert.equal(paths.length, 0);
});
