// The agent's DNS accounting fed crafted packets through BPF_PROG_TEST_RUN: a query entering a
// pod's host veth (order 1) and its answer leaving it (order 8) make one latency sample for the
// server the client asked and one answer of its rcode; anything else (other hooks, ports, a
// short header) counts nothing, and every packet passes unchanged.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { after, before, test } from 'node:test';
import { testRun } from '../../src/libbpf';
import { addrString } from '../../src/probe/addr';
import { AgentProbe } from '../../src/probe/agentProbe';
import { ORDER } from '../../src/probe/layout.generated';
import { ether, ipv4, vxlan } from '../helpers/packets';
import { bpfSkipReason } from '../helpers/privileged';

const TC_ACT_UNSPEC = -1;
const CLIENT = '10.244.1.5';
const VIP = '10.96.0.10';
const skip = bpfSkipReason();
let probe: AgentProbe;

before(() => {
  if (skip) return;
  execFileSync('taskset', ['-pc', '0', String(process.pid)], { stdio: 'ignore' });
  probe = AgentProbe.load({ vxlanPorts: [8472, 4789], sampleEvery: 0, latencyEvery: 1, tracepoints: false });
});

after(() => probe?.close());

/** A UDP datagram whose payload starts with a DNS header (id, flags) and a 4-byte body; dnsBytes < 4 cuts the header short. */
function dns(src: string, dst: string, sport: number, dport: number, id: number, flags: number, dnsBytes = 16): Buffer {
  const l3 = ipv4(src, dst, { proto: 'udp', sport, dport, payload: dnsBytes });
  const at = 20 + 8;
  if (dnsBytes >= 2) l3.writeUInt16BE(id, at);
  if (dnsBytes >= 4) l3.writeUInt16BE(flags, at + 2);
  return l3;
}

const QUERY = 0x0100;
const answer = (rcode: number) => 0x8180 | rcode;

function run(pkt: Buffer, order: number): void {
  const r = testRun(probe.program(order).fd, pkt);
  assert.equal(r.retval, TC_ACT_UNSPEC, `order ${order}: never decides a packet's fate`);
  assert.ok(r.dataOut.equals(pkt), `order ${order}: the packet passes unchanged`);
}

function rcodes(): Map<string, number> {
  const m = new Map<string, number>();
  for (const r of probe.dnsRcodes()) m.set(`${addrString(r.server, r.family)}/${r.rcode}`, r.count);
  return m;
}

function timed(server: string): number {
  const l = probe.dnsLatency().find((x) => addrString(x.server, x.family) === server);
  return l ? l.counts.reduce((a, b) => a + b, 0) : 0;
}

test('a query in at the client\'s host veth and its answer out of it: one latency sample and one answer per rcode, for the server asked', { skip }, () => {
  const t0 = timed(VIP);
  run(ether(dns(CLIENT, VIP, 40001, 53, 0x1234, QUERY)), ORDER.VETH_INGRESS);
  assert.equal(probe.dnsPending(), 1, 'the query waits for its answer');
  run(ether(dns(VIP, CLIENT, 53, 40001, 0x1234, answer(3))), ORDER.VETH_EGRESS);
  assert.equal(probe.dnsPending(), 0, 'the answer takes its query out');
  assert.equal(timed(VIP) - t0, 1);
  assert.equal(rcodes().get(`${VIP}/3`), 1, 'one NXDOMAIN');
  const lat = probe.dnsLatency().find((x) => addrString(x.server, x.family) === VIP)!;
  assert.ok(lat.sumNs > 0 && lat.sumNs < 1e9, `a plausible latency: ${lat.sumNs} ns`);

  // a second pair, NOERROR: its own rcode series, the same server's histogram
  run(ether(dns(CLIENT, VIP, 40002, 53, 0x0007, QUERY)), ORDER.VETH_INGRESS);
  run(ether(dns(VIP, CLIENT, 53, 40002, 0x0007, answer(0))), ORDER.VETH_EGRESS);
  assert.equal(timed(VIP) - t0, 2);
  assert.equal(rcodes().get(`${VIP}/0`), 1);
});

test('an answer whose query was not seen is counted by rcode but not timed; another id or port does not match', { skip }, () => {
  const t0 = timed(VIP);
  const before = rcodes().get(`${VIP}/2`) ?? 0;
  run(ether(dns(CLIENT, VIP, 40003, 53, 0x0100, QUERY)), ORDER.VETH_INGRESS);
  run(ether(dns(VIP, CLIENT, 53, 40003, 0x0101, answer(2))), ORDER.VETH_EGRESS); // another id
  run(ether(dns(VIP, CLIENT, 53, 40004, 0x0100, answer(2))), ORDER.VETH_EGRESS); // another port
  assert.equal(timed(VIP), t0, 'nothing timed');
  assert.equal((rcodes().get(`${VIP}/2`) ?? 0) - before, 2, 'both SERVFAILs counted');
  assert.equal(probe.dnsPending(), 1, 'the query still waits');
  assert.equal(probe.sweepDnsPending(0), 1, 'the sweep takes out what waited too long');
  assert.equal(probe.dnsPending(), 0);
});

test('other hooks, other ports, replies seen as queries and a DNS header cut short count nothing', { skip }, () => {
  const t0 = timed(VIP);
  const r0 = [...rcodes().values()].reduce((a, b) => a + b, 0);
  // the DNS pod's own veth: the query leaves towards it (order 8), the answer enters from it (order 1)
  run(ether(dns(CLIENT, '10.244.2.10', 40005, 53, 0x2222, QUERY)), ORDER.VETH_EGRESS);
  run(ether(dns('10.244.2.10', CLIENT, 53, 40005, 0x2222, answer(0))), ORDER.VETH_INGRESS);
  // every other hook point
  for (const order of [ORDER.POD_EGRESS, ORDER.BRIDGE_INGRESS, ORDER.TUNNEL_EGRESS, ORDER.UNDERLAY_EGRESS, ORDER.UNDERLAY_INGRESS, ORDER.TUNNEL_INGRESS, ORDER.BRIDGE_EGRESS, ORDER.POD_INGRESS]) {
    run(ether(dns(CLIENT, VIP, 40006, 53, 0x3333, QUERY)), order);
    run(ether(dns(VIP, CLIENT, 53, 40006, 0x3333, answer(0))), order);
  }
  // mDNS-like port 5353, and a header of two bytes
  run(ether(dns(CLIENT, VIP, 40007, 5353, 0x4444, QUERY)), ORDER.VETH_INGRESS);
  run(ether(dns(CLIENT, VIP, 40008, 53, 0x5555, QUERY, 2)), ORDER.VETH_INGRESS);
  run(ether(dns(VIP, CLIENT, 53, 40008, 0x5555, answer(0), 2)), ORDER.VETH_EGRESS);
  assert.equal(probe.dnsPending(), 0);
  assert.equal(timed(VIP), t0);
  assert.equal([...rcodes().values()].reduce((a, b) => a + b, 0), r0);
});

test('a query seen through VXLAN (the inner packet) is matched like a plain one', { skip }, () => {
  const t0 = timed(VIP);
  run(vxlan(ether(dns(CLIENT, VIP, 40009, 53, 0x6666, QUERY)), '192.168.1.101', '192.168.1.102'), ORDER.VETH_INGRESS);
  run(vxlan(ether(dns(VIP, CLIENT, 53, 40009, 0x6666, answer(0))), '192.168.1.102', '192.168.1.101'), ORDER.VETH_EGRESS);
  assert.equal(timed(VIP) - t0, 1);
});

test('a full pending map is counted in nt_map_fail (map="dns"), and the sweep empties it', { skip }, () => {
  const f0 = probe.mapFailures().dns ?? 0;
  // 8192 slots (NT_DNS_PENDING): distinct client ports and ids fill them
  for (let i = 0; i < 8192 + 3; i++) {
    const r = testRun(probe.program(ORDER.VETH_INGRESS).fd, ether(dns(CLIENT, VIP, 1024 + (i >> 4), 53, i & 0xffff, QUERY)));
    assert.equal(r.retval, TC_ACT_UNSPEC);
  }
  assert.equal(probe.dnsPending(), 8192);
  assert.equal((probe.mapFailures().dns ?? 0) - f0, 3, 'the three queries that found no room');
  assert.equal(probe.sweepDnsPending(0), 8192);
  assert.equal(probe.dnsPending(), 0);
});
