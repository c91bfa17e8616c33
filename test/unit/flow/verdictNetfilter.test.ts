// diagnose() when netfilter dropped the probes and the node says which rule's counter grew: a
// Calico Felix chain is a NetworkPolicy (named, with the rule that did not allow the flow), any
// other rule is netfilter-drop naming the tool, table, chain and rule (iptables and nftables).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { PacketPath } from '../../../src/flow/path';
import { diagnose, type DiagnoseInput } from '../../../src/flow/verdict';
import type { FilterRule } from '../../../src/topology/netfilter';
import { STEP_NAMES } from '../../../src/topology/steps';

const A = '10.244.1.5';
const B = '10.244.2.8';
const N2 = 'nt1-node2';

/** A calico-bgp probe dropped on node2 after its eth0 ingress (step 6): the step that failed is 8. */
function dropped(): PacketPath {
  const hops: [number, string, string, 'ingress' | 'egress'][] = [[1, 'nt1-node1', 'eth0', 'egress'], [2, 'nt1-node1', 'cali1', 'ingress'], [4, 'nt1-node1', 'eth0', 'egress'], [6, N2, 'eth0', 'ingress']];
  const steps = hops.map(([step, node, device, hook], i) => ({ step, name: STEP_NAMES[step]!, node, device, hook, ts_ns: 1e9 + i * 20_000, latency_ns: i ? 20_000 : 0 }));
  return {
    flow: { src: A, sport: 0, dst: B, dport: 5201, proto: 'tcp' }, direction: 'request',
    packet: { src: A, sport: 40000, dst: B, dport: 5201, ip_id: 1, len: 60, payload_len: 0, gso_segs: 1 },
    steps, total_ns: 60_000, complete: false,
    drop: { step: 8, step_name: STEP_NAMES[8]!, node: N2, device: 'eth0', reason: 'x', kernel_reason: 'NETFILTER_DROP', last_seen: { step: 6, name: STEP_NAMES[6]!, node: N2, device: 'eth0', hook: 'ingress' } },
  } as PacketPath;
}

function input(hits: FilterRule[]): DiagnoseInput {
  return {
    paths: [dropped(), dropped(), dropped()], mtuProbe: null,
    reach: () => ({ route: { dev: 'cali2' } }), dropRules: () => [], mtu: () => null, dst: B,
    dropHits: (n) => (n === N2 ? hits : []), flow: { src: A, proto: 'tcp', dport: 5201 },
  };
}

const TW = '-A cali-tw-cali2 -m comment --comment "cali:VsBM" -m comment --comment "End of tier default. Drop if no policies passed packet" -m mark --mark 0x0/0x20000 -j DROP';
const policyDrop = (name: string | null, workload?: string): FilterRule => ({
  backend: 'iptables', family: 'ip', table: 'filter', chain: 'cali-tw-cali2', rule: TW, packets: 6, comments: [],
  calico: { direction: 'ingress', iface: 'cali2', explicit: false, policies: [{ namespace: name ? 'default' : null, name, chain: 'cali-pi-_7nJn461tDmQCxVUh10X' }], ...(workload ? { workload } : {}) },
});

test('network-policy: the namespace and policy, the pod, what is not allowed, the rule; next: kubectl describe', () => {
  const d = diagnose(input([policyDrop('deny-pod-a', 'default/pod-b')]));
  assert.equal(d.healthy, false);
  assert.equal(d.cause, 'network-policy');
  assert.equal(d.reason, 'NETFILTER_DROP');
  assert.deepEqual([d.step, d.node], [8, N2]);
  assert.ok(d.detail.startsWith('default/deny-pod-a: ingress to default/pod-b, no rule allows tcp/5201 from 10.244.1.5; dropped on nt1-node2 by iptables filter table, chain cali-tw-cali2: '), d.detail);
  assert.ok(d.detail.includes(`${TW} (6 packets during the probes)`));
  assert.equal(d.next, 'kubectl describe networkpolicy deny-pod-a -n default: add an ingress rule that allows tcp/5201 from 10.244.1.5, if it should pass');
});

test('network-policy on a Felix node whose policy chain names no policy: the chain, and where to look', () => {
  const d = diagnose(input([policyDrop(null)]));
  assert.equal(d.cause, 'network-policy');
  assert.match(d.detail, /^policy chain cali-pi-_7nJn461tDmQCxVUh10X: ingress to the workload on cali2, no rule allows tcp\/5201/);
  assert.match(d.next, /iptables-save -t filter \| grep cali-pi-_7nJn461tDmQCxVUh10X/);
});

test('an unnamed iptables DROP stays netfilter-drop: the table, chain and rule that counted the probes', () => {
  const rule = '-A FORWARD -s 10.244.1.5/32 -d 10.244.2.8/32 -j DROP';
  const d = diagnose(input([{ backend: 'iptables', family: 'ip', table: 'filter', chain: 'FORWARD', rule, packets: 3, comments: [] }]));
  assert.equal(d.cause, 'netfilter-drop');
  assert.match(d.detail, /^netfilter dropped the packet after eth0 ingress on nt1-node2 \(last seen step 6, physical network\): step 8 \(route to bridge\) failed: iptables filter table, chain FORWARD: -A FORWARD -s 10\.244\.1\.5\/32 -d 10\.244\.2\.8\/32 -j DROP \(3 packets during the probes\)$/);
  assert.match(d.next, /iptables -t filter -L FORWARD -v -n --line-numbers/);
});

test('an nft drop: netfilter-drop naming the nft table and chain, counted or matched', () => {
  const nft = (packets: number | null): FilterRule => ({ backend: 'nft', family: 'inet', table: 'filter', chain: 'forward', rule: 'ip daddr 10.244.2.8 tcp dport 5201 drop # handle 2', packets, comments: [] });
  const d = diagnose(input([nft(4)]));
  assert.equal(d.cause, 'netfilter-drop');
  assert.match(d.detail, /: nft table inet filter, chain forward: ip daddr 10\.244\.2\.8 tcp dport 5201 drop # handle 2 \(4 packets during the probes\)$/);
  assert.match(d.next, /nft -a list chain inet filter forward/);
  assert.match(diagnose(input([nft(null)])).detail, /\(no counter; it matches the flow\)$/);
});

test('no rule counted the probes: the FORWARD listing as before', () => {
  const d = diagnose({ ...input([]), dropRules: () => ['-A FORWARD -j DROP'] });
  assert.equal(d.cause, 'netfilter-drop');
  assert.match(d.detail, /the node's filter table, FORWARD chain, has: -A FORWARD -j DROP$/);
});
