// follow -w's programs fed crafted packets through BPF_PROG_TEST_RUN: each record carries the
// packet's first snaplen bytes exactly, cut at the packet's end, and records of the plain programs
// stay HOP_RECORD_SIZE bytes.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { testRun } from '../../src/libbpf';
import { HopProbe } from '../../src/probe/hop';
import { decodeHopCapture, HOP_CAPTURE_FIELDS, HOP_RECORD_SIZE, type HopCapture } from '../../src/probe/layout.generated';
import { ether, ipBytes, ipv4, vxlan } from '../helpers/packets';
import { bpfSkipReason } from '../helpers/privileged';

const A = '10.244.1.5';
const B = '10.244.2.8';
const skip = bpfSkipReason();
const probes: { plain?: HopProbe; cap64?: HopProbe; cap256?: HopProbe } = {};

before(() => {
  if (skip) return;
  const load = (snaplen: number) => {
    // no drop tracepoint: BPF_PROG_TEST_RUN frees its skb with kfree_skb, which it would report
    const p = HopProbe.load({ vxlanPorts: [8472], drops: false, snaplen });
    p.follow({ family: 4, proto: 6, saddr: ipBytes(A), daddr: ipBytes(B), sport: 0, dport: 80, flowId: 1, direction: 'request' });
    return p;
  };
  probes.plain = load(0);
  probes.cap64 = load(64);
  probes.cap256 = load(256);
});

after(() => {
  for (const p of Object.values(probes)) p?.close();
});

/** The packet through a probe's ingress and egress programs: each record's length and what it decodes to. */
function run(probe: HopProbe, pkt: Buffer): { length: number; c: HopCapture }[] {
  for (const prog of [probe.ingress, probe.egress]) {
    const r = testRun(prog.fd, pkt);
    assert.equal(r.retval, -1, 'TC_ACT_UNSPEC: the packet\'s fate is not ours');
    assert.ok(r.dataOut.equals(pkt), 'the packet passes unchanged');
  }
  const out: { length: number; c: HopCapture }[] = [];
  probe.drain((v, o, length) => out.push({ length, c: decodeHopCapture(v, o, length) }));
  return out;
}

const tcp = (payload: number) => ({ proto: 'tcp' as const, sport: 40000, dport: 80, payload });

test('without snaplen the records are as they were: HOP_RECORD_SIZE bytes, no packet bytes', { skip }, () => {
  const recs = run(probes.plain!, ether(ipv4(A, B, tcp(100))));
  assert.equal(recs.length, 2);
  for (const { length, c } of recs) {
    assert.equal(length, HOP_RECORD_SIZE);
    assert.equal(c.data.length, 0);
    assert.equal(c.hop.dport, 80);
  }
});

test('snaplen 64: the first 64 bytes of a longer packet, the whole of a shorter one, its length beside', { skip }, () => {
  const long = ether(ipv4(A, B, tcp(100), { id: 0xabcd }));
  for (const { length, c } of run(probes.cap64!, long)) {
    assert.equal(length, HOP_CAPTURE_FIELDS.data.offset + 64);
    assert.equal(c.cap_len, 64);
    assert.ok(Buffer.from(c.data).equals(long.subarray(0, 64)), 'the packet\'s own bytes, from its MAC header');
    assert.equal(c.hop.skb_len, long.length);
    assert.equal(c.hop.ip_id, 0xabcd, 'the key is still parsed');
    // BPF_PROG_TEST_RUN runs on the loopback device: ARPHRD_LOOPBACK, an Ethernet header first
    assert.equal(c.dev_type, 772);
  }
  const short = ether(ipv4(A, B, tcp(0)));
  assert.ok(short.length < 64);
  for (const { length, c } of run(probes.cap64!, short)) {
    assert.equal(length, HOP_CAPTURE_FIELDS.data.offset + short.length);
    assert.ok(Buffer.from(c.data).equals(short));
  }
});

test('snaplen 256 through VXLAN: the outer headers and the inner packet, cut at 256', { skip }, () => {
  const pkt = vxlan(ether(ipv4(A, B, tcp(400))), '192.168.1.101', '192.168.1.102');
  const recs = run(probes.cap256!, pkt);
  assert.equal(recs.length, 2);
  for (const { length, c } of recs) {
    assert.equal(length, HOP_CAPTURE_FIELDS.data.offset + 256);
    assert.ok(Buffer.from(c.data).equals(pkt.subarray(0, 256)));
    assert.equal(c.hop.flags & 1, 1, 'seen through VXLAN');
    assert.equal(c.hop.skb_len, pkt.length);
  }
});
