// The agent's per-hook programs fed crafted packets through BPF_PROG_TEST_RUN: every packet
// passes unchanged, a packet crossing two hooks in path order adds one hop to the later hook's
// latency histogram, and a sampled packet becomes ring records with its (inner) key.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { statSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { testRun } from '../../src/libbpf';
import { AgentProbe } from '../../src/probe/agentProbe';
import { decodeHopRecord, HOOK, ORDER, RECORD_KIND, type HopRecord } from '../../src/probe/layout.generated';
import { ether, ipBytes, ipv4, ipv6, vxlan, type L4 } from '../helpers/packets';
import { bpfSkipReason } from '../helpers/privileged';

const TC_ACT_UNSPEC = -1;
const NT_F_ENCAP = 1;
const A = '10.244.1.5';
const B = '10.244.2.8';
const ORDERS = Array.from({ length: ORDER.COUNT }, (_, i) => i);
// struct __sk_buff (linux/bpf.h): its size and where gso_segs and gso_size sit, for a TEST_RUN context
const SK_BUFF_SIZE = 192;
const SK_BUFF_GSO_SEGS = 164;
const SK_BUFF_GSO_SIZE = 176;
let probe: AgentProbe;

const skip = bpfSkipReason();

before(() => {
  if (skip) return;
  // where a packet was last seen is kept per CPU, as a packet's hops on one node run on
  // one CPU; TEST_RUN runs on the caller's CPU, so keep this thread on one
  execFileSync('taskset', ['-pc', '0', String(process.pid)], { stdio: 'ignore' });
  // no tracepoints: TEST_RUN frees its skb with kfree_skb; every packet timed and sampled
  probe = AgentProbe.load({ vxlanPorts: [8472, 4789], sampleEvery: 1, latencyEvery: 1, tracepoints: false });
});

after(() => probe?.close());

/** Runs the packet through the program for each order in turn; asserts it passed unchanged each time. */
function cross(pkt: Buffer, ...orders: number[]): void {
  for (const order of orders) {
    const r = testRun(probe.program(order).fd, pkt);
    assert.equal(r.retval, TC_ACT_UNSPEC, `order ${order}: the program must never decide a packet's fate`);
    assert.ok(r.dataOut.equals(pkt), `order ${order}: the packet must pass unchanged`);
  }
}

/** What the ring holds now, emptied. */
function records(): HopRecord[] {
  const out: HopRecord[] = [];
  probe.drain((v, o) => out.push(decodeHopRecord(v, o)));
  return out;
}

/** Hops counted per hook order, all latency buckets summed. */
function hopCounts(): number[] {
  const out = new Array<number>(ORDER.COUNT).fill(0);
  for (const h of probe.latency()) out[h.order] = h.counts.reduce((a, b) => a + b, 0);
  return out;
}

const tcp = (over: Partial<L4> = {}): L4 => ({ proto: 'tcp', sport: 40000, dport: 80, seq: 1000, ack: 77, payload: 100, ...over });
const diff = (after: number[], before: number[]) => after.map((n, i) => n - before[i]!);

test('every program passes TCP, UDP, ICMP, IPv6 and VXLAN packets unchanged with TC_ACT_UNSPEC', { skip }, () => {
  const plain = ether(ipv4(A, B, tcp({ seq: 1 })));
  const pkts = [
    plain,
    ether(ipv4(A, B, { proto: 'udp', sport: 5000, dport: 53, payload: 30 })),
    ether(ipv4(A, B, { proto: 'icmp', id: 4242, icmpSeq: 9, payload: 56 })),
    ether(ipv6('fd00:244:1::5', 'fd00:244:2::8', tcp())),
    vxlan(plain, '192.168.1.101', '192.168.1.102', 42),
    ether(Buffer.alloc(46, 0xee), { type: 0x88b5 }),
  ];
  for (const pkt of pkts) cross(pkt, ...ORDERS);
  records();
});

test('truncated at every byte: passes unchanged', { skip }, () => {
  const encap = vxlan(ether(ipv4(A, B, tcp({ seq: 2 }))), '192.168.1.101', '192.168.1.102');
  // TEST_RUN itself refuses an IPv4 frame shorter than Ethernet + IP header (EINVAL)
  for (let len = 14 + 20; len < encap.length; len++) cross(Buffer.from(encap.subarray(0, len)), ORDER.VETH_INGRESS, ORDER.BRIDGE_INGRESS);
  records();
});

test('a packet crossing two consecutive hooks adds one hop to the later hook\'s histogram', { skip }, () => {
  const pkt = ether(ipv4(A, B, tcp({ seq: 3 }), { id: 0x3001 }));
  const before = hopCounts();
  cross(pkt, ORDER.VETH_INGRESS, ORDER.BRIDGE_INGRESS);
  const expected = new Array<number>(ORDER.COUNT).fill(0);
  expected[ORDER.BRIDGE_INGRESS] = 1;
  assert.deepEqual(diff(hopCounts(), before), expected);
  const lat = probe.latency().find((h) => h.order === ORDER.BRIDGE_INGRESS);
  assert.ok(lat && lat.sumNs >= 0);
  records();
});

test('through a tunnel (VXLAN, inner key) on the receiving node: counted at tunnel ingress', { skip }, () => {
  const pkt = vxlan(ether(ipv4(A, B, tcp({ seq: 4 }), { id: 0x3002 })), '192.168.1.101', '192.168.1.102', 42);
  const before = hopCounts();
  // the outer packet at the underlay and the inner one at the tunnel device are the same packet
  cross(pkt, ORDER.UNDERLAY_INGRESS);
  cross(ether(ipv4(A, B, tcp({ seq: 4 }), { id: 0x3002 })), ORDER.TUNNEL_INGRESS);
  const expected = new Array<number>(ORDER.COUNT).fill(0);
  expected[ORDER.TUNNEL_INGRESS] = 1;
  assert.deepEqual(diff(hopCounts(), before), expected);
  records();
});

test('hooks out of path order, or one hook twice, are not a hop', { skip }, () => {
  const pkt = ether(ipv4(A, B, tcp({ seq: 5 }), { id: 0x3003 }));
  const before = hopCounts();
  cross(pkt, ORDER.BRIDGE_INGRESS, ORDER.VETH_INGRESS, ORDER.VETH_INGRESS);
  assert.deepEqual(diff(hopCounts(), before), new Array<number>(ORDER.COUNT).fill(0));
  records();
});

test('a sampled TCP packet becomes one record per hook, with its key, order, hook and device', { skip }, () => {
  records();
  const pkt = ether(ipv4(A, B, tcp({ seq: 6 }), { id: 0xbeef }));
  cross(pkt, ORDER.POD_EGRESS, ORDER.VETH_INGRESS);
  const recs = records();
  assert.equal(recs.length, 2);
  const [e, i] = recs as [HopRecord, HopRecord];
  assert.deepEqual([e.kind, e.order, e.hook], [RECORD_KIND.HOP, ORDER.POD_EGRESS, HOOK.EGRESS]);
  assert.deepEqual([i.kind, i.order, i.hook], [RECORD_KIND.HOP, ORDER.VETH_INGRESS, HOOK.INGRESS]);
  assert.deepEqual([e.family, e.proto, e.sport, e.dport, e.seq, e.ack, e.ip_id, e.ip_len, e.payload_len, e.tcp_flags], [4, 6, 40000, 80, 6, 77, 0xbeef, 140, 100, 0x18]);
  assert.deepEqual(Buffer.from(e.saddr.subarray(0, 4)), ipBytes(A));
  assert.deepEqual(Buffer.from(e.daddr.subarray(0, 4)), ipBytes(B));
  assert.deepEqual([e.flags, e.vni], [0, 0]);
  // TEST_RUN's skb is on this namespace's loopback
  assert.equal(e.netns_ino, statSync('/proc/self/ns/net').ino);
  assert.equal(e.skb_len, pkt.length);
  assert.ok(e.ts_ns > 0 && i.ts_ns >= e.ts_ns);
  // the same packet: the same key at every hook
  const key = (r: HopRecord) => [r.family, r.proto, [...r.saddr], [...r.daddr], r.sport, r.dport, r.seq, r.ack, r.ip_id, r.ip_len];
  assert.deepEqual(key(i), key(e));
  assert.equal(probe.lostRecords(), 0);
  // nt_map_fail loads and reads as one count per map
  assert.deepEqual(probe.mapFailures(), { retransmits: 0, drops: 0, dns: 0 });
});

test('UDP and ICMP echo: ports, and id/seq', { skip }, () => {
  records();
  cross(ether(ipv4(A, B, { proto: 'udp', sport: 5000, dport: 53, payload: 30 })), ORDER.BRIDGE_EGRESS);
  cross(ether(ipv4(A, B, { proto: 'icmp', id: 4242, icmpSeq: 9, payload: 56 })), ORDER.POD_INGRESS);
  const [udp, icmp] = records();
  assert.deepEqual([udp?.proto, udp?.sport, udp?.dport, udp?.payload_len, udp?.order, udp?.hook], [17, 5000, 53, 30, ORDER.BRIDGE_EGRESS, HOOK.EGRESS]);
  assert.deepEqual([icmp?.proto, icmp?.icmp_type, icmp?.sport, icmp?.seq, icmp?.payload_len, icmp?.order, icmp?.hook], [1, 8, 4242, 9, 56, ORDER.POD_INGRESS, HOOK.INGRESS]);
});

test('a sampled VXLAN packet is recorded with the inner 5-tuple, the VNI and the encap flag', { skip }, () => {
  records();
  const inner = ether(ipv4(A, B, tcp({ sport: 41000, dport: 8080, seq: 7 }), { id: 0x1111 }));
  for (const port of [8472, 4789]) {
    cross(vxlan(inner, '192.168.1.101', '192.168.1.102', 42, port), ORDER.UNDERLAY_EGRESS);
    const recs = records();
    assert.equal(recs.length, 1, `port ${port}`);
    const r = recs[0]!;
    assert.deepEqual([r.family, r.proto, r.sport, r.dport], [4, 6, 41000, 8080], `port ${port}`);
    assert.deepEqual(Buffer.from(r.saddr.subarray(0, 4)), ipBytes(A));
    assert.deepEqual(Buffer.from(r.daddr.subarray(0, 4)), ipBytes(B));
    assert.deepEqual([r.flags & NT_F_ENCAP, r.vni, r.ip_id, r.seq], [NT_F_ENCAP, 42, 0x1111, 7]);
  }
  // UDP to another port is not VXLAN: the outer packet's key
  cross(vxlan(inner, '192.168.1.101', '192.168.1.102', 42, 9999), ORDER.UNDERLAY_EGRESS);
  const [outer] = records();
  assert.deepEqual([outer?.proto, outer?.dport, (outer?.flags ?? 1) & NT_F_ENCAP], [17, 9999, 0]);
  assert.deepEqual(Buffer.from(outer!.saddr.subarray(0, 4)), ipBytes('192.168.1.101'));
});

test('a non-IP frame is neither timed nor recorded', { skip }, () => {
  records();
  const before = hopCounts();
  cross(ether(Buffer.alloc(46, 0xee), { type: 0x88b5 }), ORDER.VETH_INGRESS, ORDER.BRIDGE_INGRESS);
  assert.deepEqual(diff(hopCounts(), before), new Array<number>(ORDER.COUNT).fill(0));
  assert.equal(records().length, 0);
});

test('sampling off: hops are still timed, no records', { skip }, () => {
  const quiet = AgentProbe.load({ vxlanPorts: [8472], sampleEvery: 0, latencyEvery: 1, tracepoints: false });
  try {
    const pkt = ether(ipv4(A, B, tcp({ seq: 8 })));
    for (const order of [ORDER.VETH_INGRESS, ORDER.BRIDGE_INGRESS]) assert.equal(testRun(quiet.program(order).fd, pkt).retval, TC_ACT_UNSPEC);
    const lat = quiet.latency().find((h) => h.order === ORDER.BRIDGE_INGRESS);
    assert.equal(lat?.counts.reduce((a, b) => a + b, 0), 1);
    let n = 0;
    quiet.drain(() => n++);
    assert.equal(n, 0);
  } finally {
    quiet.close();
  }
});

test('program(order) names only the ten hook points', { skip }, () => {
  assert.equal(probe.program(ORDER.POD_INGRESS).name, 'nt_agent_9');
  assert.throws(() => probe.program(ORDER.COUNT), RangeError);
});

/** Packets and bytes counted per hook order so far. */
function stepCounts(): { packets: number[]; bytes: number[] } {
  const packets = new Array<number>(ORDER.COUNT).fill(0);
  const bytes = new Array<number>(ORDER.COUNT).fill(0);
  for (const s of probe.steps()) {
    packets[s.order] = s.packets;
    bytes[s.order] = s.bytes;
  }
  return { packets, bytes };
}

test('every packet a hook sees is counted with its bytes, timed or not, IP or not; a GSO skb as its segments', { skip }, () => {
  const before = stepCounts();
  const tcpPkt = ether(ipv4(A, B, tcp({ seq: 9 }), { id: 0x3009 }));
  const arp = ether(Buffer.alloc(46, 0xee), { type: 0x0806 });
  const encap = vxlan(tcpPkt, '192.168.1.101', '192.168.1.102', 42);
  cross(tcpPkt, ORDER.POD_EGRESS, ORDER.VETH_INGRESS, ORDER.BRIDGE_INGRESS);
  cross(arp, ORDER.BRIDGE_INGRESS);
  cross(encap, ORDER.UNDERLAY_EGRESS);
  // a TSO skb of 3 segments (its struct __sk_buff with gso_segs = 3; TEST_RUN takes at most a page of data)
  const ctx = Buffer.alloc(SK_BUFF_SIZE);
  ctx.writeUInt32LE(3, SK_BUFF_GSO_SEGS);
  ctx.writeUInt32LE(1000, SK_BUFF_GSO_SIZE);
  const big = ether(ipv4(A, B, tcp({ seq: 10, payload: 1000 * 3 }), { id: 0x300a }));
  assert.equal(testRun(probe.program(ORDER.TUNNEL_EGRESS).fd, big, 1, ctx).retval, TC_ACT_UNSPEC);
  const after = stepCounts();
  const packets = new Array<number>(ORDER.COUNT).fill(0);
  const bytes = new Array<number>(ORDER.COUNT).fill(0);
  for (const o of [ORDER.POD_EGRESS, ORDER.VETH_INGRESS]) [packets[o], bytes[o]] = [1, tcpPkt.length];
  [packets[ORDER.BRIDGE_INGRESS], bytes[ORDER.BRIDGE_INGRESS]] = [2, tcpPkt.length + arp.length];
  // the underlay counts the outer packet: VXLAN's 50 bytes included
  [packets[ORDER.UNDERLAY_EGRESS], bytes[ORDER.UNDERLAY_EGRESS]] = [1, tcpPkt.length + 50];
  [packets[ORDER.TUNNEL_EGRESS], bytes[ORDER.TUNNEL_EGRESS]] = [3, big.length];
  assert.equal(encap.length, tcpPkt.length + 50);
  assert.deepEqual(diff(after.packets, before.packets), packets);
  assert.deepEqual(diff(after.bytes, before.bytes), bytes);
  // every hook point has its slot, read in one batch
  assert.deepEqual(probe.steps().map((s) => s.order).sort((a, b) => a - b), ORDERS);
  records();
});
