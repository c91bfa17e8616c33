// Sampled packets: the same packet gets the same trace id on every node; hops group per packet in path order.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SampleGrouper, stepSpanId } from '../../../src/flow/sampled';
import { ORDER, RECORD_KIND } from '../../../src/probe/layout.generated';
import { sampledHopRecord as rec } from '../../helpers/records';

test('two nodes see one packet: same trace id and root span id, each node its own hops', () => {
  const node1 = new SampleGrouper();
  const node2 = new SampleGrouper();
  for (const [o, ts] of [[1, 110], [0, 100], [2, 130], [3, 150]] as const) assert.equal(node1.add(rec(o, ts)).packet, undefined);
  const sent = node1.add(rec(ORDER.UNDERLAY_EGRESS, 170)).packet!;
  assert.deepEqual(sent.hops.map((h) => h.order), [0, 1, 2, 3, 4], 'in path order whatever the ring order');
  for (const [o, ts] of [[5, 200], [6, 220], [7, 240], [8, 250]] as const) node2.add(rec(o, ts, { flags: 1, vni: 1 }));
  const received = node2.add(rec(ORDER.POD_INGRESS, 260)).packet!;
  assert.equal(received.traceId, sent.traceId);
  assert.equal(received.rootSpanId, sent.rootSpanId);
  assert.match(sent.traceId, /^[0-9a-f]{32}$/);
  assert.match(sent.rootSpanId, /^[0-9a-f]{16}$/);
  assert.equal(stepSpanId(sent.traceId, 6), stepSpanId(received.traceId, 6));
  assert.notEqual(stepSpanId(sent.traceId, 6), stepSpanId(sent.traceId, 7));
});

test('another packet of the flow is another trace; a quiet packet is flushed; a retransmit goes to its flow\'s trace', () => {
  let now = 0;
  const g = new SampleGrouper(300, () => now);
  g.add(rec(0, 100));
  g.add(rec(0, 100, { ip_id: 4243, seq: 2 }));
  assert.deepEqual(g.expire(), []);
  now = 301;
  const quiet = g.expire();
  assert.equal(quiet.length, 2);
  assert.notEqual(quiet[0]!.traceId, quiet[1]!.traceId);
  const r1 = g.add(rec(255, 1, { kind: RECORD_KIND.RETRANS, proto: 6, sport: 40000, dport: 5201, seq: 10, gso_segs: 3 })).retransmit!;
  const r2 = g.add(rec(255, 2, { kind: RECORD_KIND.RETRANS, proto: 6, sport: 40000, dport: 5201, seq: 99, gso_segs: 1 })).retransmit!;
  assert.equal(r1.traceId, r2.traceId);
  assert.equal(r1.segments, 3);
});

test('a drop ends the packet with its reason and last hook', () => {
  const g = new SampleGrouper();
  g.add(rec(1, 10));
  g.add(rec(2, 20));
  const p = g.add(rec(2, 30, { kind: RECORD_KIND.DROP, reason: 12 })).packet!;
  assert.deepEqual(p.drop, { reason: 12, order: 2, tsNs: 30 });
  assert.deepEqual(p.hops.map((h) => h.order), [1, 2]);
});
