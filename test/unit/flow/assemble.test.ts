// Path rebuild from recorded hop records on a two-node topology given as data.
import assert from 'node:assert/strict';
import { SocketAddress } from 'node:net';
import { test } from 'node:test';
import { PathAssembler } from '../../../src/flow/assemble';
import { addrString } from '../../../src/probe/addr';
import { ipBytesOf } from '../../../src/probe/addr';
import { parseFlowSpec } from '../../../src/flow/spec';
import { tcpHopRecord as rec, twoNodeTopology } from '../../helpers/records';

const topo = twoNodeTopology();
const flow = parseFlowSpec('10.244.1.5 -> 10.244.2.8:80', 'tcp');


// the request's ten hooks, given out of order as CPUs deliver them
const REQUEST: [number, number, 0 | 1, number][] = [
  [1002, 3, 1, 800], [2001, 2, 1, 100], [1001, 5, 0, 150], [1001, 3, 0, 190], [1001, 4, 1, 260], [1001, 2, 1, 300],
  [1002, 2, 0, 500], [1002, 4, 0, 650], [1002, 5, 1, 900], [2002, 2, 0, 1000],
];

test('a request path in step order with per-hop latency and total', () => {
  let now = 0;
  const a = new PathAssembler(flow, topo, { graceMs: 1000, now: () => now });
  const out = REQUEST.map(([ino, ifx, hook, ts]) => a.add(rec(ino, ifx, hook, ts))).filter(Boolean);
  assert.equal(out.length, 1);
  const p = out[0]!;
  assert.deepEqual(p.steps.map((h) => h.step), [1, 2, 3, 4, 5, 6, 7, 8, 9, 9]);
  assert.deepEqual(p.steps.map((h) => h.device), ['eth0', 'veth1234', 'cni0', 'flannel.1', 'ens5', 'ens5', 'flannel.1', 'cni0', 'veth1234', 'eth0']);
  assert.deepEqual(p.steps.map((h) => h.latency_ns), [0, 50, 40, 70, 40, 200, 150, 150, 100, 100]);
  assert.equal(p.total_ns, 900);
  assert.equal(p.steps[0]!.pod, 'pod-a');
  assert.deepEqual([p.complete, p.drop, p.direction, p.packet.tcp_flags], [true, null, 'request', 'S']);
  assert.equal(a.pendingCount, 0);
});

test('the reply is mirrored: node2 is its source side', () => {
  const a = new PathAssembler(flow, topo, { graceMs: 1000 });
  const swap = { saddr: rec(0, 0, 0, 0).daddr, daddr: rec(0, 0, 0, 0).saddr, sport: 80, dport: 40000, direction: 1 };
  assert.equal(a.add(rec(2002, 2, 1, 10, swap)), null); // pod-b eth0 egress: step 1 of the reply
  const p = a.add(rec(2001, 2, 0, 90, swap)); // pod-a eth0 ingress: the reply's last hook
  assert.ok(p);
  assert.equal(p.direction, 'reply');
  assert.deepEqual(p.steps.map((h) => [h.step, h.node, h.device, h.hook]), [[1, 'node2', 'eth0', 'egress'], [9, 'node1', 'eth0', 'ingress']]);
  assert.equal(p.total_ns, 80);
});

test('a path that stops is reported incomplete after the grace time: the step that failed, and its last hop', () => {
  let now = 0;
  const a = new PathAssembler(flow, topo, { graceMs: 500, now: () => now });
  for (const [ino, ifx, hook, ts] of REQUEST.slice(1, 4)) a.add(rec(ino, ifx, hook, ts));
  assert.deepEqual(a.expire(), []);
  now = 600;
  const [p] = a.expire();
  assert.ok(p);
  assert.equal(p.complete, false);
  assert.deepEqual(p.steps.map((h) => h.step), [1, 2, 3]);
  assert.deepEqual(p.drop, {
    step: 4, step_name: 'routing', device: 'cni0', node: 'node1',
    reason: 'not seen after cni0 ingress (last seen step 3, bridge): step 4 (routing) failed',
    last_seen: { step: 3, name: 'bridge', node: 'node1', device: 'cni0', hook: 'ingress' },
  });
});

test('hops on devices not in the topology, or another pod\'s veth, are ignored', () => {
  const a = new PathAssembler(flow, topo, { graceMs: 1 });
  assert.equal(a.add(rec(9999, 2, 0, 1)), null);
  assert.equal(a.add(rec(2001, 2, 1, 1, { saddr: Uint8Array.from([10, 244, 1, 99, ...Array(12).fill(0)]) })), null);
  assert.equal(a.pendingCount, 0);
});

test('addresses print as Node formats them, IPv6 compressed per RFC 5952', () => {
  for (const a of ['fd00:244:1::5', '::1', '::', 'fe80::1:0:0:1', '2001:db8:0:1:1:1:1:1', '1:0:0:2::3']) {
    assert.equal(addrString(ipBytesOf(a), 6), new SocketAddress({ address: a, family: 'ipv6' }).address, a);
  }
  assert.equal(addrString(Uint8Array.from([10, 244, 1, 5]), 4), '10.244.1.5');
});
