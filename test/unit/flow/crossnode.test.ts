// Records from several machines: devices looked up per node, and nodes of the path we get no records from.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PathAssembler, type Unwatched } from '../../../src/flow/assemble';
import type { PacketPath } from '../../../src/flow/path';
import { parseFlowSpec } from '../../../src/flow/spec';
import { formatPathTable } from '../../../src/export/table';
import { pathToJsonLine } from '../../../src/export/json';
import { RECORD_KIND, type HopRecord } from '../../../src/probe/layout.generated';
import type { ClusterTopology, Device, NodeTopology } from '../../../src/topology/model';

interface NodeOpts { hostIno?: number; podIno?: number; tunnel?: boolean; bridge?: boolean }

function node(n: number, podIp: string, podName: string, o: NodeOpts = {}): NodeTopology {
  const netns = { name: `node${n}`, path: `/run/netns/node${n}`, ino: o.hostIno ?? 1000 + n };
  const podNs = { name: podName, path: `/run/netns/${podName}`, ino: o.podIno ?? 2000 + n };
  const dev = (ifindex: number, name: string, role: Device['role'], ns = netns): Device => ({ node: `node${n}`, netns: ns, ifindex, name, role, mtu: 1450 });
  const tunnel = o.tunnel ?? true;
  return {
    name: `node${n}`, netns, ip: `192.168.1.10${n}`, cni: tunnel ? 'flannel-vxlan' : 'flannel-host-gw',
    underlay: dev(2, 'ens5', 'underlay'), bridge: o.bridge ?? true ? dev(3, 'cni0', 'bridge') : null, tunnel: tunnel ? dev(4, 'flannel.1', 'tunnel') : null,
    pods: [{ name: podName, node: `node${n}`, netns: podNs, ips: [podIp], eth: { ...dev(2, 'eth0', 'pod', podNs), pod: podName }, hostVeth: { ...dev(5, 'veth1234', 'host-veth'), pod: podName } }],
  };
}

const flow = parseFlowSpec('10.244.1.5 -> 10.244.2.8:80', 'tcp');
const A = [10, 244, 1, 5];
const B = [10, 244, 2, 8];

function rec(ino: number, ifindex: number, hook: 0 | 1, ts: number, over: Partial<HopRecord> = {}): HopRecord {
  return {
    ts_ns: ts, netns_ino: ino, ifindex, flow_id: 1, skb_len: 74, saddr: Uint8Array.from([...A, ...Array(12).fill(0)]),
    daddr: Uint8Array.from([...B, ...Array(12).fill(0)]), sport: 40000, dport: 80, seq: 1, ack: 0, ip_id: 7, ip_len: 60,
    payload_len: 0, gso_segs: 0, vni: 0, family: 4, proto: 6, hook, direction: 0, flags: 0, tcp_flags: 2, icmp_type: 0,
    kind: 0, reason: 0, order: 0, ...over,
  };
}
const reply: Partial<HopRecord> = {
  saddr: Uint8Array.from([...B, ...Array(12).fill(0)]), daddr: Uint8Array.from([...A, ...Array(12).fill(0)]), sport: 80, dport: 40000, direction: 1, tcp_flags: 0x12,
};

// a node's five hooks when it sends (pod eth0 egress .. ens5 egress) and when it receives (ens5 ingress .. pod eth0 ingress)
const sends = (n: number, hostIno = 1000 + n, podIno = 2000 + n): [number, number, 0 | 1][] =>
  [[podIno, 2, 1], [hostIno, 5, 0], [hostIno, 3, 0], [hostIno, 4, 1], [hostIno, 2, 1]];
const receives = (n: number, hostIno = 1000 + n, podIno = 2000 + n): [number, number, 0 | 1][] =>
  [[hostIno, 2, 0], [hostIno, 4, 0], [hostIno, 3, 1], [hostIno, 5, 1], [podIno, 2, 0]];

function feed(a: PathAssembler, hooks: [number, number, 0 | 1][], t0: number, over: Partial<HopRecord> = {}, node?: string): PacketPath[] {
  return hooks.flatMap(([ino, ifx, hook], i) => a.addRecord(rec(ino, ifx, hook, t0 + i * 10, over), node));
}

test('two machines whose (netns inode, ifindex) collide: with the node given, each record finds its own device', () => {
  // init_net's inode is the same number on every Linux machine; pods' namespaces may collide too
  const INIT = 4026531840;
  const topo: ClusterTopology = { nodes: [node(1, '10.244.1.5', 'pod-a', { hostIno: INIT, podIno: 4026532200 }), node(2, '10.244.2.8', 'pod-b', { hostIno: INIT, podIno: 4026532200 })] };
  const a = new PathAssembler(flow, topo, { graceMs: 1000 });
  const out = [...feed(a, sends(1, INIT, 4026532200), 0, {}, 'node1'), ...feed(a, receives(2, INIT, 4026532200), 100, {}, 'node2')];
  assert.equal(out.length, 1);
  const p = out[0]!;
  assert.deepEqual([p.complete, p.drop], [true, null]);
  assert.deepEqual(p.steps.map((h) => `${h.step} ${h.node} ${h.device} ${h.hook}`), [
    '1 node1 eth0 egress', '2 node1 veth1234 ingress', '3 node1 cni0 ingress', '4 node1 flannel.1 egress', '5 node1 ens5 egress',
    '6 node2 ens5 ingress', '7 node2 flannel.1 ingress', '8 node2 cni0 egress', '9 node2 veth1234 egress', '9 node2 eth0 ingress',
  ]);
  assert.deepEqual([p.steps[0]!.pod, p.steps[9]!.pod], ['pod-a', 'pod-b']);

  // without the node, as today: the numbers name one device of the whole topology, and node1's hops are lost
  // (the receiving node's hops wait the grace time for the sender's, which never come)
  const b = new PathAssembler(flow, topo, { graceMs: 1000 });
  const alone = [...feed(b, sends(1, INIT, 4026532200), 0), ...feed(b, receives(2, INIT, 4026532200), 100), ...b.expire(true)];
  assert.deepEqual(alone.map((q) => q.steps.map((h) => `${h.step} ${h.node}`)), [['6 node2', '7 node2', '8 node2', '9 node2', '9 node2']]);
});

test('a record named from a node that does not have that device is ignored', () => {
  const topo: ClusterTopology = { nodes: [node(1, '10.244.1.5', 'pod-a'), node(2, '10.244.2.8', 'pod-b')] };
  const a = new PathAssembler(flow, topo, { graceMs: 1000 });
  assert.deepEqual(feed(a, sends(1), 0, {}, 'node2'), []);
  assert.deepEqual(feed(a, sends(1), 0, {}, 'node9'), []);
  assert.equal(a.pendingCount, 0);
});

const TO_NODE2: Unwatched[] = [{ side: 'destination', node: 'node2', reason: 'no agent answered' }];

test('not watched, destination node: the request ends at our last hook, the reply starts at our first', () => {
  // nettrace runs on node1 alone: node2 is not in the topology at all
  const topo: ClusterTopology = { nodes: [node(1, '10.244.1.5', 'pod-a')] };
  const a = new PathAssembler(flow, topo, { graceMs: 1000, unwatched: TO_NODE2 });
  const req = feed(a, sends(1), 0, { payload_len: 1448, seq: 100, tcp_flags: 0x18 }, 'node1');
  assert.equal(req.length, 1, 'emitted at ens5 egress, TCP data included, without waiting');
  const p = req[0]!;
  assert.deepEqual([p.complete, p.drop], [false, null]);
  assert.deepEqual(p.steps.map((h) => h.step), [1, 2, 3, 4, 5]);
  assert.deepEqual(p.not_watched, { node: 'node2', reason: 'no agent answered', steps: [6, 7, 8, 9] });
  assert.deepEqual(JSON.parse(pathToJsonLine(p)).not_watched, { node: 'node2', reason: 'no agent answered', steps: [6, 7, 8, 9] });
  const table = formatPathTable(p);
  assert.match(table, /  total 40 ns  not watched: node2 \(no agent answered\): steps 6-9\n$/);
  assert.doesNotMatch(table, /INCOMPLETE/);

  // the reply comes from node2: it starts at node1's underlay ingress and ends at pod-a
  const rep = feed(a, receives(1), 500, reply, 'node1');
  assert.equal(rep.length, 1);
  const r = rep[0]!;
  assert.deepEqual([r.direction, r.complete, r.drop], ['reply', false, null]);
  assert.deepEqual(r.steps.map((h) => h.step), [6, 7, 8, 9, 9]);
  assert.deepEqual(r.not_watched, { node: 'node2', reason: 'no agent answered', steps: [1, 2, 3, 4, 5] });
  assert.match(formatPathTable(r), /not watched: node2 \(no agent answered\): steps 1-5\n$/);
  assert.equal(a.pendingCount, 0);
});

test('not watched, source node: the request arrives from it, our reply goes to it', () => {
  const topo: ClusterTopology = { nodes: [node(2, '10.244.2.8', 'pod-b')] };
  const a = new PathAssembler(flow, topo, { graceMs: 1000, unwatched: [{ side: 'source', node: 'node1', reason: 'agent refused' }] });
  const req = feed(a, receives(2), 0, {}, 'node2');
  assert.deepEqual(req.map((p) => [p.direction, p.complete, p.drop, p.steps.map((h) => h.step), p.not_watched]),
    [['request', false, null, [6, 7, 8, 9, 9], { node: 'node1', reason: 'agent refused', steps: [1, 2, 3, 4, 5] }]]);
  const rep = feed(a, sends(2), 100, reply, 'node2');
  assert.deepEqual(rep.map((p) => [p.direction, p.complete, p.drop, p.steps.map((h) => h.step), p.not_watched]),
    [['reply', false, null, [1, 2, 3, 4, 5], { node: 'node1', reason: 'agent refused', steps: [6, 7, 8, 9] }]]);
});

test('not watched: a stop on our own node is still a drop, and a kernel drop is a real drop', () => {
  let now = 0;
  const topo: ClusterTopology = { nodes: [node(1, '10.244.1.5', 'pod-a')] };
  const a = new PathAssembler(flow, topo, { graceMs: 500, now: () => now, unwatched: TO_NODE2, dropReason: () => 'NETFILTER_DROP' });
  feed(a, sends(1).slice(0, 3), 0, { ip_id: 1 }, 'node1');
  const [k] = a.addRecord(rec(1001, 3, 0, 30, { ip_id: 1, kind: RECORD_KIND.DROP, reason: 5 }), 'node1');
  assert.ok(k);
  assert.deepEqual([k.complete, k.drop?.kernel_reason, k.drop?.step, k.drop?.last_seen.step, k.not_watched], [false, 'NETFILTER_DROP', 4, 3, undefined]);
  assert.match(formatPathTable(k), /INCOMPLETE: dropped by the kernel \(NETFILTER_DROP\) after cni0 ingress \(last seen step 3, bridge\): step 4 \(routing\) failed/);

  feed(a, sends(1).slice(0, 2), 0, { ip_id: 2 }, 'node1');
  now = 600;
  const [s] = a.expire();
  assert.deepEqual([s?.complete, s?.drop?.step, s?.drop?.device, s?.not_watched], [false, 3, 'veth1234', undefined]);
});

test('not watched with host-gw nodes: our last hook is the underlay (step 4), the other node lacks step 7', () => {
  // node2 is known (its agent refused), both host-gw: no tunnel
  const topo: ClusterTopology = { nodes: [node(1, '10.244.1.5', 'pod-a', { tunnel: false }), node(2, '10.244.2.8', 'pod-b', { tunnel: false })] };
  const a = new PathAssembler(flow, topo, { graceMs: 1000, unwatched: [{ side: 'destination', node: 'node2', reason: 'agent refused' }] });
  const hooks = sends(1).filter(([, ifx]) => ifx !== 4);
  assert.deepEqual(feed(a, hooks.slice(0, 3), 0, {}, 'node1'), []);
  const [p] = feed(a, hooks.slice(3), 30, {}, 'node1');
  assert.ok(p);
  assert.deepEqual(p.steps.map((h) => `${h.step} ${h.device}`), ['1 eth0', '2 veth1234', '3 cni0', '4 ens5']);
  assert.deepEqual(p.skipped?.map((s) => s.step), [5]);
  assert.deepEqual(p.not_watched?.steps, [6, 8, 9]);
  assert.match(formatPathTable(p), /not watched: node2 \(agent refused\): steps 6, 8-9\n$/);
});

test('sides unknown (no pod of ours is an end of the flow): records are ignored as today', () => {
  const topo: ClusterTopology = { nodes: [node(3, '10.244.3.3', 'pod-c')] };
  const a = new PathAssembler(flow, topo, { graceMs: 1000, unwatched: TO_NODE2 });
  assert.deepEqual(feed(a, sends(3), 0, {}, 'node3'), []);
  assert.equal(a.pendingCount, 0);
});

test('two streams: the receiving node\'s hops arrive before the sending node\'s last one; still one complete path, no stray', () => {
  const topo: ClusterTopology = { nodes: [node(1, '10.244.1.5', 'pod-a'), node(2, '10.244.2.8', 'pod-b')] };
  const a = new PathAssembler(flow, topo, { graceMs: 1000, perNodeStreams: true });
  const s = sends(1);
  // node1's first four hooks, then all of node2's, then node1's underlay egress from its slower stream
  const out = [...feed(a, s.slice(0, 4), 0, {}, 'node1'), ...feed(a, receives(2), 100, {}, 'node2'), ...feed(a, s.slice(4), 40, {}, 'node1'), ...a.expire(true)];
  assert.equal(out.length, 1, JSON.stringify(out));
  assert.deepEqual([out[0]!.complete, out[0]!.steps.length], [true, 10]);

  // the last source hook never comes: the grace time reports it complete, as it reached the pod
  const b = new PathAssembler(flow, topo, { graceMs: 1000, perNodeStreams: true });
  const late = [...feed(b, s.slice(0, 4), 0, {}, 'node1'), ...feed(b, receives(2), 100, {}, 'node2')];
  assert.deepEqual(late, []);
  const expired = b.expire(true);
  assert.equal(expired.length, 1);
  assert.deepEqual([expired[0]!.complete, expired[0]!.steps.length], [true, 9]);
});

test('a hop earlier than the one before it (two clocks): latency 0, and the path says by how much', () => {
  const topo: ClusterTopology = { nodes: [node(1, '10.244.1.5', 'pod-a'), node(2, '10.244.2.8', 'pod-b')] };
  const a = new PathAssembler(flow, topo, { graceMs: 1000 });
  // node2's clock 25 µs behind: its first hook reads before node1's last
  const out = [...feed(a, sends(1), 100_000, {}, 'node1'), ...feed(a, receives(2), 100_000 + 40 - 25_000, {}, 'node2')];
  assert.equal(out.length, 1);
  const wire = out[0]!.steps.find((h) => h.step === 6)!;
  assert.deepEqual([wire.latency_ns, wire.clamped_ns], [0, 25_000]);
  assert.equal(out[0]!.steps.filter((h) => h.clamped_ns !== undefined).length, 1, 'only the hop across the clocks');
  assert.match(formatPathTable(out[0]!), /clock: 25\.0 µs early, shown as 0/);
  assert.match(pathToJsonLine(out[0]!), /"clamped_ns":25000/);
});
