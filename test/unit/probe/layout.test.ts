// The layouts, the decoder and the program and map names are generated from the objects' BTF;
// this fails when bpf/ changed and `make gen` was not run.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { generate, OBJECTS } from '../../../scripts/gen-layout';
import { AGENT, decodeHopRecord, decodeHopRecordInto, HOP, HOP_RECORD_FIELDS, HOP_RECORD_SIZE, ORDER } from '../../../src/probe/layout.generated';

const ROOT = path.resolve(__dirname, '../../../..');

test('src/probe/layout.generated.ts matches the BTF of the built objects', () => {
  const fresh = generate(OBJECTS.map((o) => path.join(ROOT, o)));
  assert.equal(readFileSync(path.join(ROOT, 'src/probe/layout.generated.ts'), 'utf8'), fresh, 'run `make gen`');
});

test('decoding reads every field at its BTF offset, little endian', () => {
  const buf = Buffer.alloc(HOP_RECORD_SIZE);
  const F = HOP_RECORD_FIELDS;
  buf.writeBigUInt64LE(123456789012345n, F.ts_ns.offset);
  buf.writeUInt32LE(4026531840, F.netns_ino.offset);
  buf.writeUInt16LE(40000, F.sport.offset);
  buf.writeUInt32LE(0xfffffff0, F.seq.offset);
  buf.set([10, 244, 1, 5], F.saddr.offset);
  buf.writeUInt8(6, F.proto.offset);
  const r = decodeHopRecord(new DataView(buf.buffer, buf.byteOffset, buf.length), 0);
  assert.equal(r.ts_ns, 123456789012345);
  assert.equal(r.netns_ino, 4026531840);
  assert.equal(r.sport, 40000);
  assert.equal(r.seq, 0xfffffff0);
  assert.deepEqual([...r.saddr.subarray(0, 5)], [10, 244, 1, 5, 0]);
  assert.equal(r.proto, 6);
  assert.ok(!('_pad' in r));
  assert.ok('order' in r && 'kind' in r && 'reason' in r);
});

test('decoding into a reused object gives what decoding gives; IPv4 address arrays are shared between records, IPv6 ones are not', () => {
  const F = HOP_RECORD_FIELDS;
  const buf = Buffer.alloc(HOP_RECORD_SIZE * 3);
  for (let i = 0; i < 3; i++) {
    const o = i * HOP_RECORD_SIZE;
    buf.writeBigUInt64LE(BigInt(1000 + i), o + F.ts_ns.offset);
    buf.writeUInt32LE(7 + i, o + F.seq.offset);
    buf.set([10, 244, 1, 5], o + F.saddr.offset);
    // records 0 and 1: IPv4; record 2: an IPv6 destination
    buf.set(i < 2 ? [10, 244, 2, 8] : [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8], o + F.daddr.offset);
  }
  const view = new DataView(buf.buffer, buf.byteOffset, buf.length);
  const scratch = {} as ReturnType<typeof decodeHopRecord>;
  for (let i = 0; i < 3; i++) {
    const fresh = decodeHopRecord(view, i * HOP_RECORD_SIZE);
    const into = decodeHopRecordInto(view, i * HOP_RECORD_SIZE, scratch);
    assert.equal(into, scratch);
    assert.deepEqual({ ...into }, fresh);
  }
  const [a, b, c] = [0, 1, 2].map((i) => decodeHopRecord(view, i * HOP_RECORD_SIZE));
  assert.equal(a!.daddr, b!.daddr, 'the same IPv4 address: one array');
  assert.notEqual(c!.daddr, decodeHopRecord(view, 2 * HOP_RECORD_SIZE).daddr, 'IPv6: a copy each time');
  // a copy of the ring's bytes, never a view of them
  buf.fill(0);
  assert.deepEqual([...a!.saddr.subarray(0, 4)], [10, 244, 1, 5]);
});

test('program and map names: every program, every map, one agent program per hook point', () => {
  assert.deepEqual(Object.keys(HOP.programs), ['nt_ingress', 'nt_egress', 'nt_ingress_cap', 'nt_egress_cap', 'nt_drop']);
  assert.ok('nt_flows' in HOP.maps && 'nt_records' in HOP.maps && 'nt_lost' in HOP.maps);
  assert.ok('nt_kfree_skb' in AGENT.programs && 'nt_tcp_retransmit' in AGENT.programs && 'nt_lat' in AGENT.maps);
  // kfuncs (extern) are not programs
  assert.ok(!('bpf_cast_to_kern_ctx' in AGENT.programs));
  assert.equal(AGENT.byOrder.length, ORDER.COUNT);
  AGENT.byOrder.forEach((p, order) => assert.equal(p, `nt_agent_${order}`));
});
