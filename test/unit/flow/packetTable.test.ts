// Entries by packet identity: found by the fields a packet keeps across hops, never by another packet's.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { packetHash, PacketTable } from '../../../src/flow/packetTable';
import { tcpHopRecord } from '../../helpers/records';

const rec = (over: Parameters<typeof tcpHopRecord>[4]) => tcpHopRecord(1001, 2, 0, 0, over);

for (const [name, hash] of [['hashed', packetHash], ['every entry in one bucket', () => 7]] as const) {
  test(`${name}: get finds the entry of the same packet, at any hook; delete removes that entry only`, () => {
    const t = new PacketTable<{ first: ReturnType<typeof rec>; n: number }>(hash);
    const fields = ['seq', 'ack', 'ip_id', 'ip_len', 'sport', 'dport', 'flow_id', 'direction'] as const;
    const base = rec({ seq: 100, ack: 200, ip_id: 3, ip_len: 60, sport: 40000, dport: 80, flow_id: 1, direction: 0 });
    const a = { first: base, n: 0 };
    t.add(a);
    // each identity field changed is another packet
    const others = fields.map((f, i) => ({ first: { ...base, [f]: (base[f] as number) + 1 }, n: i + 1 }));
    for (const o of others) t.add(o);
    assert.equal(t.size, fields.length + 1);
    // what is not identity (time, device, hook, length on the wire) does not matter
    assert.equal(t.get({ ...base, ts_ns: 99, netns_ino: 1002, ifindex: 4, hook: 1, skb_len: 1500 }), a);
    for (const o of others) assert.equal(t.get({ ...o.first }), o);
    assert.equal(t.delete({ first: { ...base }, n: 0 }), false, 'another object of the same packet is not the entry');
    assert.equal(t.delete(a), true);
    assert.equal(t.delete(a), false);
    assert.equal(t.get(base), undefined);
    assert.equal(t.size, fields.length);
    assert.deepEqual([...t.values()].map((e) => e.n).sort((x, y) => x - y), others.map((o) => o.n));
    // deleting while iterating visits every entry once
    let seen = 0;
    for (const e of t.values()) {
      seen++;
      t.delete(e);
    }
    assert.deepEqual([seen, t.size, [...t.values()].length], [fields.length, 0, 0]);
  });
}

test('the hash is a small integer and spreads consecutive segments of a flow', () => {
  const hashes = new Set<number>();
  for (let i = 0; i < 100_000; i++) {
    const h = packetHash(rec({ seq: (1 + i * 1448) >>> 0, ip_id: i & 0xffff, ack: 9000 }));
    assert.ok(Number.isInteger(h) && h >= 0 && h < 2 ** 30);
    hashes.add(h);
  }
  assert.ok(hashes.size > 99_900, `${hashes.size} distinct of 100000`);
});
