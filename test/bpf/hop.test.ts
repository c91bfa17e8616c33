// The hop program fed crafted packets through BPF_PROG_TEST_RUN: the key it records, and that
// every packet passes unchanged with TC_ACT_UNSPEC whatever it holds.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import { testRun } from '../../src/libbpf';
import { pairBit } from '../../src/probe/flowrule';
import { HopProbe } from '../../src/probe/hop';
import type { HopRecord } from '../../src/probe/layout.generated';
import { ether, ipBytes, ipip, ipv4, ipv6, vxlan } from '../helpers/packets';
import { runHop, TC_ACT_UNSPEC } from '../helpers/hopRun';
import { bpfSkipReason } from '../helpers/privileged';

const A = '10.244.1.5';
const B = '10.244.2.8';
const A6 = 'fd00:244:1::5';
const B6 = 'fd00:244:2::8';
let probe: HopProbe;

const skip = bpfSkipReason();

before(() => {
  if (skip) return;
  // no drop tracepoint: BPF_PROG_TEST_RUN frees its skb with kfree_skb, which it would report
  probe = HopProbe.load({ vxlanPorts: [8472, 4789], drops: false });
  const rule = { proto: 6, sport: 0, dport: 80, flowId: 3, direction: 'request' as const };
  probe.follow({ family: 4, saddr: ipBytes(A), daddr: ipBytes(B), ...rule });
  probe.follow({ family: 4, saddr: ipBytes(B), daddr: ipBytes(A), ...rule, sport: 80, dport: 0, direction: 'reply' });
  probe.follow({ family: 6, saddr: ipBytes(A6), daddr: ipBytes(B6), ...rule });
  probe.follow({ family: 4, proto: 1, saddr: ipBytes(A), daddr: ipBytes(B), sport: 0, dport: 0, flowId: 4, direction: 'request' });
  probe.follow({ family: 4, proto: 17, saddr: ipBytes(A), daddr: ipBytes(B), sport: 0, dport: 53, flowId: 5, direction: 'request' });
});

after(() => probe?.close());

const run = (pkt: Buffer): HopRecord[] => runHop(probe, pkt);

const tcp = (over: object = {}) => ({ proto: 'tcp' as const, sport: 40000, dport: 80, seq: 1000, ack: 77, payload: 100, ...over });

test('plain IPv4 TCP: recorded at both hooks with the full packet key', { skip }, () => {
  const recs = run(ether(ipv4(A, B, tcp(), { id: 0xbeef })));
  assert.equal(recs.length, 2);
  const [i, e] = recs as [HopRecord, HopRecord];
  assert.deepEqual([i.hook, e.hook], [0, 1]);
  assert.deepEqual([i.family, i.proto, i.sport, i.dport, i.seq, i.ack, i.ip_id, i.ip_len, i.payload_len], [4, 6, 40000, 80, 1000, 77, 0xbeef, 140, 100]);
  assert.deepEqual([...i.saddr.subarray(0, 4)], [10, 244, 1, 5]);
  assert.deepEqual([i.flow_id, i.direction, i.flags, i.vni, i.tcp_flags], [3, 0, 0, 0, 0x18]);
  assert.ok(i.netns_ino > 0 && i.ts_ns > 0 && e.ts_ns >= i.ts_ns);
});

test('the reply direction matches its own rule', { skip }, () => {
  const [r] = run(ether(ipv4(B, A, tcp({ sport: 80, dport: 40000 }))));
  assert.equal(r?.direction, 1);
});

test('VXLAN on 8472 and 4789: the inner packet\'s key, the VNI, the encap flag', { skip }, () => {
  const inner = ether(ipv4(A, B, tcp(), { id: 0x1111 }));
  for (const port of [8472, 4789]) {
    const recs = run(vxlan(inner, '192.168.1.101', '192.168.1.102', 42, port));
    assert.equal(recs.length, 2, `port ${port}`);
    const r = recs[0]!;
    assert.deepEqual([r.flags & 1, r.vni, r.ip_id, r.sport, r.dport, r.seq], [1, 42, 0x1111, 40000, 80, 1000]);
    assert.deepEqual([...r.saddr.subarray(0, 4)], [10, 244, 1, 5]);
  }
  // UDP to another port is not taken for VXLAN
  assert.equal(run(vxlan(inner, '192.168.1.101', '192.168.1.102', 1, 9999)).length, 0);
});

test('IPIP (Calico calico-ipip, tunl0): the inner packet\'s key and the encap flag; other IP protocols are not inner packets', { skip }, () => {
  const recs = run(ipip(ipv4(A, B, tcp(), { id: 0x2222 }), '192.168.1.101', '192.168.1.102'));
  assert.equal(recs.length, 2);
  const r = recs[0]!;
  assert.deepEqual([r.flags & 1, r.ip_id, r.sport, r.dport, r.seq], [1, 0x2222, 40000, 80, 1000]);
  assert.deepEqual([...r.saddr.subarray(0, 4)], [10, 244, 1, 5]);
  // an outer packet between the nodes is not the followed flow
  assert.equal(run(ether(ipv4('192.168.1.101', '192.168.1.102', tcp()))).length, 0);
});

test('VLAN tags (one and two) are skipped', { skip }, () => {
  for (const vlans of [[100], [100, 200]]) {
    const recs = run(ether(ipv4(A, B, tcp()), { vlans }));
    assert.equal(recs.length, 2);
    assert.equal(recs[0]!.flags & 2, 2);
  }
});

test('IPv6 TCP is parsed for the key', { skip }, () => {
  const recs = run(ether(ipv6(A6, B6, tcp())));
  assert.equal(recs.length, 2);
  assert.equal(recs[0]!.family, 6);
  assert.deepEqual(Buffer.from(recs[0]!.saddr), ipBytes(A6));
  assert.equal(recs[0]!.ip_len, 40 + 20 + 100);
});

test('ICMP echo and UDP: id/seq and ports', { skip }, () => {
  const [icmp] = run(ether(ipv4(A, B, { proto: 'icmp', id: 4242, icmpSeq: 9, payload: 56 })));
  assert.deepEqual([icmp?.proto, icmp?.icmp_type, icmp?.sport, icmp?.seq, icmp?.payload_len], [1, 8, 4242, 9, 56]);
  const [udp] = run(ether(ipv4(A, B, { proto: 'udp', sport: 5000, dport: 53, payload: 30 })));
  assert.deepEqual([udp?.proto, udp?.sport, udp?.dport, udp?.payload_len], [17, 5000, 53, 30]);
});

test('unfollowed flows and ports are not recorded', { skip }, () => {
  assert.equal(run(ether(ipv4('10.0.0.1', B, tcp()))).length, 0);
  assert.equal(run(ether(ipv4(A, B, tcp({ dport: 443 })))).length, 0);
  assert.equal(run(ether(ipv4(A, B, { proto: 'udp', dport: 54 }))).length, 0);
});

test('a pair of another flow whose filter bit a followed pair sets is still not recorded; both directions share the bit', { skip }, () => {
  const bit = pairBit({ family: 4, proto: 6, saddr: ipBytes(A), daddr: ipBytes(B), sport: 0, dport: 80, flowId: 3, direction: 'request' });
  let other = '';
  for (let i = 0; i < 1 << 16 && !other; i++) {
    const ip = `10.9.${i >> 8}.${i & 255}`;
    if (pairBit({ family: 4, proto: 6, saddr: ipBytes(ip), daddr: ipBytes(B), sport: 0, dport: 0, flowId: 0, direction: 'request' }) === bit) other = ip;
  }
  assert.ok(other, 'an address of 10.9/16 shares the bit of A -> B');
  assert.equal(run(ether(ipv4(other, B, tcp()))).length, 0, `${other} -> ${B} passes the filter, the flow map turns it away`);
  // ingress and egress both record it
  assert.deepEqual(run(ether(ipv4(B, A, tcp({ sport: 80, dport: 40000 })))).map((r) => r.direction), [1, 1], 'the reply direction, by the same bit');
});

test('truncated at every byte: passes unchanged, never a record without its full key', { skip }, () => {
  const plain = ether(ipv4(A, B, tcp()));
  const encap = vxlan(plain, '192.168.1.101', '192.168.1.102');
  for (const pkt of [plain, encap]) {
    const keyEnd = pkt.length - 100; // headers end where the payload starts
    // TEST_RUN itself refuses an IPv4 frame shorter than Ethernet + IP header (EINVAL)
    for (let len = 14 + 20; len < pkt.length; len++) {
      const cut = pkt.subarray(0, len);
      const recs = run(Buffer.from(cut));
      if (len < keyEnd) assert.equal(recs.length, 0, `record from a packet cut at ${len} of ${pkt.length}`);
    }
  }
});

test('garbage: 2000 random frames pass unchanged', { skip }, () => {
  for (let i = 0; i < 2000; i++) {
    // half claim IPv4 (TEST_RUN wants 20 bytes after Ethernet for those), half carry a non-IP type
    const pkt = randomBytes(34 + (i % 200));
    pkt.writeUInt16BE(i % 2 ? 0x0800 : 0x88b5, 12);
    run(pkt);
  }
});

test('a miss costs little: ns per run reported by the kernel', { skip }, () => {
  const miss = testRun(probe.ingress.fd, ether(ipv4('10.0.0.1', B, tcp())), 100000);
  assert.equal(miss.retval, TC_ACT_UNSPEC);
  assert.ok(miss.durationNs > 0);
});
