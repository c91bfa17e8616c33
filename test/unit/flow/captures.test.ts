// follow -w: the packet bytes of each hop record reach the hop of the path built from it, through
// the assembler unchanged; what no path takes is forgotten by count and by age. And the generated
// decoder of a record with bytes cuts them where the kernel did.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PathAssembler } from '../../../src/flow/assemble';
import { CaptureIndex, hasMacHeader } from '../../../src/flow/captures';
import { parseFlowSpec } from '../../../src/flow/spec';
import { decodeHopCapture, HOP_CAPTURE_FIELDS, HOP_CAPTURE_SIZE, HOP_RECORD_FIELDS, HOP_RECORD_SIZE } from '../../../src/probe/layout.generated';
import { tcpHopRecord as rec, twoNodeTopology } from '../../helpers/records';

const topo = twoNodeTopology();
const flow = parseFlowSpec('10.244.1.5 -> 10.244.2.8:80', 'tcp');
const REQUEST: [number, number, 0 | 1, number][] = [
  [2001, 2, 1, 100], [1001, 2, 1, 300], [1001, 3, 0, 190], [1001, 5, 0, 150], [1001, 4, 1, 260],
  [1002, 2, 0, 500], [1002, 4, 0, 650], [1002, 5, 1, 900], [1002, 3, 1, 800], [2002, 2, 0, 1000],
];

test('every hop of a path gets the bytes of the record it was built from', () => {
  const a = new PathAssembler(flow, topo, { graceMs: 1000 });
  const idx = new CaptureIndex(topo);
  let path = null;
  for (const [ino, ifx, hook, ts] of REQUEST) {
    const r = rec(ino, ifx, hook, ts, { skb_len: 1000 + ts });
    // the bytes say which record they came with
    idx.add(r, Uint8Array.of(ino & 0xff, ifx, hook, ts & 0xff), 1);
    path = a.add(r) ?? path;
  }
  assert.ok(path);
  const bytes = idx.take(path);
  assert.equal(bytes.length, 10);
  path.steps.forEach((h, i) => {
    const b = bytes[i]!;
    assert.equal(b.data[3], h.ts_ns & 0xff, `hop ${i}: bytes of its own record`);
    assert.equal(b.originalLength, 1000 + h.ts_ns);
    assert.equal(b.ethernet, true);
  });
  assert.equal(idx.size, 0, 'taken out');
  assert.equal(idx.missing, 0);
  // asked again: nothing kept, counted
  assert.ok(idx.take(path).every((b) => b === undefined));
  assert.equal(idx.missing, 10);
});

test('bounded: the oldest records go past maxEntries, records far older than the newest are forgotten', () => {
  const idx = new CaptureIndex(topo, { maxEntries: 3, retainNs: 1000 });
  for (let ts = 1; ts <= 5; ts++) idx.add(rec(1001, 3, 0, ts), new Uint8Array(1), 1);
  assert.equal(idx.size, 3);
  idx.add(rec(1001, 3, 0, 5000), new Uint8Array(1), 1);
  const a = new PathAssembler(flow, topo, { graceMs: 1000 });
  const p = a.add(rec(1001, 3, 0, 5000));
  assert.equal(p, null);
  const [expired] = a.expire(true);
  assert.ok(expired);
  assert.ok(idx.take(expired)[0]);
  assert.equal(idx.size, 0, 'ts 3..5 are more than 1000 ns older than 5000');
  // a device nettrace does not hook, and drop records, are not kept
  idx.add(rec(9999, 1, 0, 6000), new Uint8Array(1), 1);
  idx.add(rec(1001, 3, 0, 6000, { kind: 1 }), new Uint8Array(1), 1);
  assert.equal(idx.size, 0);
});

test('the kernel\'s device type says whether the bytes start at a MAC header', () => {
  assert.equal(hasMacHeader(1), true, 'ARPHRD_ETHER: veths, bridges, VXLAN, NICs');
  assert.equal(hasMacHeader(772), true, 'ARPHRD_LOOPBACK');
  assert.equal(hasMacHeader(768), false, 'ARPHRD_TUNNEL: tunl0');
  assert.equal(hasMacHeader(65534), false, 'ARPHRD_NONE: WireGuard');
  const idx = new CaptureIndex(topo);
  const a = new PathAssembler(flow, topo, { graceMs: 1000 });
  idx.add(rec(1001, 4, 1, 10), new Uint8Array(20), 768);
  a.add(rec(1001, 4, 1, 10));
  const [p] = a.expire(true);
  assert.equal(idx.take(p!)[0]!.ethernet, false);
});

test('decodeHopCapture: the hop record, and the bytes cut at cap_len and at the record length', () => {
  const F = HOP_CAPTURE_FIELDS;
  assert.equal(F.hop.offset, 0);
  assert.equal(F.hop.length, HOP_RECORD_SIZE);
  assert.equal(HOP_CAPTURE_SIZE, F.data.offset + F.data.length);
  const buf = Buffer.alloc(HOP_CAPTURE_SIZE + 16, 0xee);
  buf.fill(0, 0, F.data.offset);
  buf.writeUInt32LE(77, HOP_RECORD_FIELDS.ifindex.offset);
  buf.writeUInt16LE(5, F.cap_len.offset);
  buf.writeUInt16LE(768, F.dev_type.offset);
  for (let i = 0; i < 5; i++) buf[F.data.offset + i] = i + 1;
  const v = new DataView(buf.buffer, buf.byteOffset, buf.length);
  const c = decodeHopCapture(v, 0, F.data.offset + 5);
  assert.equal(c.hop.ifindex, 77);
  assert.equal(c.dev_type, 768);
  assert.deepEqual([...c.data], [1, 2, 3, 4, 5]);
  // a copy: the ring's memory is reused
  buf[F.data.offset] = 9;
  assert.equal(c.data[0], 1);
  // the record ends before cap_len says: only what is there
  assert.deepEqual([...decodeHopCapture(v, 0, F.data.offset + 2).data], [9, 2]);
  // a plain hop record: no bytes
  assert.equal(decodeHopCapture(v, 0, HOP_RECORD_SIZE).data.length, 0);
  // cap_len beyond the array is cut at it
  buf.writeUInt16LE(60000, F.cap_len.offset);
  assert.equal(decodeHopCapture(v, 0, buf.length).data.length, F.data.length);
});
