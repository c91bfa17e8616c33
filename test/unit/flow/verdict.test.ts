// diagnose() on recorded paths, as `nettrace follow -o json` emits them for each fault the
// cluster tests inject (test/cluster/diagnose.test.ts): the cause, the step and what a user
// reads to fix it. What the nodes say (routes, rules, MTUs) is fixed data.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { PacketPath } from '../../../src/flow/path';
import { median } from '../../../src/flow/stats';
import { diagnose, type DiagnoseInput } from '../../../src/flow/verdict';
import type { ReachCheck } from '../../../src/topology/inspect';
import { STEP_NAMES } from '../../../src/topology/steps';

const A = '10.244.1.5';
const B = '10.244.2.8';
const N1 = 'nt1-node1';
const N2 = 'nt1-node2';
const TUNNEL_MAC = '0e:6e:74:00:00:02';

/** One hook of flannel-vxlan's path A -> B: [step, node, device, hook]. */
type Hook = [number, string, string, 'ingress' | 'egress'];
const PATH: Hook[] = [
  [1, N1, 'eth0', 'egress'], // pod A
  [2, N1, 'veth1a', 'ingress'],
  [3, N1, 'cni0', 'ingress'],
  [4, N1, 'flannel.1', 'egress'],
  [5, N1, 'eth0', 'egress'],
  [6, N2, 'eth0', 'ingress'],
  [7, N2, 'flannel.1', 'ingress'],
  [8, N2, 'cni0', 'egress'],
  [9, N2, 'veth2b', 'egress'],
  [9, N2, 'eth0', 'ingress'], // pod B
];

let ipId = 100;

/**
 * A request path as follow prints it. lat: latency of each hook after the first (ns, default
 * 20 µs); upTo: how many hooks saw it (all: complete); kernel: the kernel's drop reason.
 */
function path(opts: { lat?: (i: number) => number; upTo?: number; kernel?: string; direction?: 'request' | 'reply'; len?: number } = {}): PacketPath {
  const seen = PATH.slice(0, opts.upTo ?? PATH.length);
  let ts = 1_000_000_000 + ipId * 10_000_000;
  const steps = seen.map(([step, node, device, hook], i) => {
    const latency = i === 0 ? 0 : (opts.lat?.(i) ?? 20_000);
    ts += latency;
    return { step, name: STEP_NAMES[step]!, node, device, hook, ts_ns: ts, latency_ns: latency, ...(step === 1 || i === PATH.length - 1 ? { pod: step === 1 ? 'pod-a' : 'pod-b' } : {}) };
  });
  const complete = seen.length === PATH.length;
  const last = steps[steps.length - 1]!;
  const len = opts.len ?? 84;
  return {
    flow: { src: A, sport: 0, dst: B, dport: 0, proto: 'icmp' },
    direction: opts.direction ?? 'request',
    packet: { src: A, sport: 0, dst: B, dport: 0, ip_id: ipId++, len, payload_len: len - 28, icmp_type: 8, icmp_id: 7, icmp_seq: ipId, gso_segs: 1 },
    steps,
    total_ns: steps.reduce((s, h) => s + h.latency_ns, 0),
    complete,
    // flannel-vxlan has every hook: the step that failed is the next hook's
    drop: complete ? null : {
      step: PATH[seen.length]![0], step_name: STEP_NAMES[PATH[seen.length]![0]]!, device: last.device, node: last.node,
      reason: `${opts.kernel ? `dropped by the kernel (${opts.kernel})` : 'not seen'} after ${last.device} ${last.hook} (last seen step ${last.step}, ${STEP_NAMES[last.step]}): step ${PATH[seen.length]![0]} (${STEP_NAMES[PATH[seen.length]![0]]}) failed`,
      last_seen: { step: last.step, name: last.name, node: last.node, device: last.device, hook: last.hook },
      ...(opts.kernel ? { kernel_reason: opts.kernel } : {}),
    },
  };
}

const times = (n: number, f: () => PacketPath) => Array.from({ length: n }, f);

/** node1 can reach B: a route through the tunnel, its neighbour and FDB entries. */
const REACHABLE: ReachCheck = {
  route: { dev: 'flannel.1', gateway: '10.244.2.0' },
  neighbour: { ip: '10.244.2.0', mac: TUNNEL_MAC },
  fdb: { mac: TUNNEL_MAC, dst: '192.168.1.102' },
};

/** The node side as fixed data; records which node each callback was asked about. */
function input(paths: PacketPath[], over: Partial<{ reach: ReachCheck; rules: string[]; mtus: Record<string, number>; mtuProbe: DiagnoseInput['mtuProbe'] }> = {}) {
  const asked: string[] = [];
  const inp: DiagnoseInput = {
    paths,
    mtuProbe: over.mtuProbe ?? { size: 1450, podMtu: 1450, paths: [path({ len: 1450 })] },
    reach: (node) => {
      asked.push(`reach ${node}`);
      return node === N1 ? (over.reach ?? REACHABLE) : { route: { dev: 'cni0' } };
    },
    dropRules: (node) => {
      asked.push(`rules ${node}`);
      return node === N1 ? (over.rules ?? []) : [];
    },
    mtu: (node, dev) => {
      asked.push(`mtu ${node} ${dev}`);
      return (over.mtus ?? { 'flannel.1': 1450, eth0: 1500, cni0: 1450 })[dev] ?? null;
    },
    dst: B,
  };
  return { inp, asked };
}

const FORWARD_RULE = `-A FORWARD -s ${A}/32 -d ${B}/32 -j DROP`;

test('healthy: cause none, no step, the request path with its per-step latencies', () => {
  const paths = [...times(5, () => path()), ...times(5, () => path({ direction: 'reply' }))];
  const d = diagnose(input(paths).inp);
  assert.equal(d.healthy, true);
  assert.equal(d.cause, 'none');
  assert.equal(d.step, null);
  assert.equal(d.step_name, null);
  assert.equal(d.node, null);
  assert.equal(d.last_seen, null);
  assert.equal(d.reason, null);
  assert.equal(d.detail, 'all 10 probe packets crossed every step; median path 180.0 µs');
  assert.equal(d.next, 'nothing to fix on the path');
  assert.deepEqual(d.steps, paths[0]!.steps, 'the first request shown');
  assert.deepEqual(d.steps.map((h) => h.step), [1, 2, 3, 4, 5, 6, 7, 8, 9, 9]);
});

test('mtu: the full-size DF probe stops with PKT_TOO_BIG; names the route device, both MTUs and what to set', () => {
  const big = path({ upTo: 3, kernel: 'PKT_TOO_BIG', len: 1500 });
  const { inp, asked } = input(times(5, () => path()), { mtuProbe: { size: 1500, podMtu: 1500, paths: [big] } });
  const d = diagnose(inp);
  assert.equal(d.healthy, false);
  assert.equal(d.cause, 'mtu');
  assert.equal(d.step, 4, 'the MTU check is routing: the step that failed');
  assert.equal(d.step_name, 'routing');
  assert.equal(d.node, N1);
  assert.equal(d.device, 'cni0', 'the last device that saw it');
  assert.deepEqual(d.last_seen, { step: 3, name: 'bridge', node: N1, device: 'cni0', hook: 'ingress' });
  assert.equal(d.reason, 'PKT_TOO_BIG');
  assert.equal(d.detail, `a 1500-byte packet with DF set (the pod's MTU is 1500) does not fit flannel.1 on ${N1}, MTU 1450 (kernel: PKT_TOO_BIG)`);
  assert.match(d.next, /set the pods' MTU to 1450 /);
  assert.match(d.next, /raise the underlay MTU by 50/);
  assert.deepEqual(d.steps, big.steps, 'the big probe\'s hops, up to where it stopped');
  assert.deepEqual(asked, [`reach ${N1}`, `mtu ${N1} flannel.1`], 'asks the node the probe stopped on, about the device the route uses');
});

test('mtu: FRAG_NEEDED counts too; an unknown device MTU still gives advice', () => {
  const big = path({ upTo: 3, kernel: 'FRAG_NEEDED', len: 1500 });
  const { inp } = input(times(5, () => path()), { mtuProbe: { size: 1500, podMtu: 1500, paths: [path({ len: 1500 }), big] }, mtus: {} });
  const d = diagnose(inp);
  assert.equal(d.cause, 'mtu');
  assert.equal(d.reason, 'FRAG_NEEDED');
  assert.match(d.detail, /does not fit flannel\.1 on nt1-node1, MTU \? \(kernel: FRAG_NEEDED\)/);
  assert.match(d.next, /set the pods' MTU to the tunnel MTU/);
});

test('mtu: a full-size probe that arrived, or stopped for another reason, is not an MTU problem', () => {
  for (const big of [path({ len: 1500 }), path({ upTo: 5, kernel: 'QDISC_DROP', len: 1500 })]) {
    const d = diagnose(input(times(5, () => path()), { mtuProbe: { size: 1500, podMtu: 1500, paths: [big] } }).inp);
    assert.equal(d.cause, 'none');
  }
  assert.equal(diagnose(input(times(5, () => path()), { mtuProbe: null }).inp).cause, 'none', '--passive sends no MTU probe');
});

test('netfilter-drop: a DROP rule in FORWARD; the step, the kernel reason and the rule text', () => {
  const paths = times(5, () => path({ upTo: 3, kernel: 'NETFILTER_DROP' }));
  const { inp, asked } = input(paths, { rules: [FORWARD_RULE, `-A FORWARD -d 10.244.9.0/24 -j REJECT --reject-with icmp-port-unreachable`] });
  const d = diagnose(inp);
  assert.equal(d.healthy, false);
  assert.equal(d.cause, 'netfilter-drop');
  assert.equal(d.step, 4, 'FORWARD is routing: the step that failed');
  assert.equal(d.step_name, 'routing');
  assert.equal(d.node, N1);
  assert.equal(d.device, 'cni0');
  assert.equal(d.reason, 'NETFILTER_DROP');
  assert.ok(d.detail.includes(FORWARD_RULE), d.detail);
  assert.deepEqual(d.last_seen, { step: 3, name: 'bridge', node: N1, device: 'cni0', hook: 'ingress' });
  assert.match(d.detail, /^netfilter dropped the packet after cni0 ingress on nt1-node1 \(last seen step 3, bridge\): step 4 \(routing\) failed; the node's filter table, FORWARD chain, has: -A FORWARD .* \| -A FORWARD -d 10\.244\.9\.0\/24 -j REJECT/);
  assert.match(d.next, /iptables\/nftables FORWARD rules and NetworkPolicies for 10\.244\.2\.8/);
  assert.deepEqual(d.steps, paths[0]!.steps);
  assert.deepEqual(asked, [`rules ${N1}`], 'the rules of the node that dropped it; its routes do not matter');
});

test('netfilter-drop with no DROP rule in FORWARD (nftables, another chain): no rule claimed', () => {
  const d = diagnose(input(times(3, () => path({ upTo: 3, kernel: 'NETFILTER_DROP' })), { rules: [] }).inp);
  assert.equal(d.cause, 'netfilter-drop');
  assert.doesNotMatch(d.detail, /has:/);
});

test('no-route: the node the probes stopped on has no route to the destination', () => {
  const { inp, asked } = input(times(5, () => path({ upTo: 3, kernel: 'IP_NOROUTE' })), { reach: { route: null } });
  const d = diagnose(inp);
  assert.equal(d.cause, 'no-route');
  assert.equal(d.step, 4);
  assert.equal(d.step_name, 'routing');
  assert.equal(d.node, N1);
  assert.equal(d.device, 'cni0');
  assert.equal(d.reason, 'IP_NOROUTE');
  assert.equal(d.detail, `${N1} has no route to ${B} (kernel: IP_NOROUTE)`);
  assert.match(d.next, /flanneld/);
  assert.match(d.next, /`ip route` on nt1-node1/);
  assert.deepEqual(asked, [`reach ${N1}`]);
  // probes that were just not seen again (no kernel drop): the same cause, no kernel part
  const quiet = diagnose(input(times(5, () => path({ upTo: 3 })), { reach: { route: null } }).inp);
  assert.equal(quiet.cause, 'no-route');
  assert.equal(quiet.reason, null);
  assert.equal(quiet.detail, `${N1} has no route to ${B}`);
});

test('no-neighbour: the route\'s gateway has no neighbour entry; names it and the device', () => {
  const reach: ReachCheck = { route: { dev: 'flannel.1', gateway: '10.244.2.0' }, neighbour: { ip: '10.244.2.0', mac: null } };
  const d = diagnose(input(times(5, () => path({ upTo: 3, kernel: 'NEIGH_FAILED' })), { reach }).inp);
  assert.equal(d.cause, 'no-neighbour');
  assert.equal(d.step, 4, 'held in the neighbour queue: it never reached the tunnel, so routing did not complete');
  assert.equal(d.last_seen?.device, 'cni0');
  assert.equal(d.node, N1);
  assert.equal(d.reason, 'NEIGH_FAILED');
  assert.equal(d.detail, `${N1} routes ${B} via 10.244.2.0 on flannel.1, and has no neighbour entry for 10.244.2.0`);
  assert.match(d.next, /`ip neigh show dev flannel\.1` on nt1-node1/);
});

test('no-fdb: the tunnel knows the MAC but not which node to send it to; names the tunnel and the MAC', () => {
  const reach: ReachCheck = { ...REACHABLE, fdb: { mac: TUNNEL_MAC, dst: null } };
  const paths = times(5, () => path({ upTo: 4 }));
  const d = diagnose(input(paths, { reach }).inp);
  assert.equal(d.cause, 'no-fdb');
  assert.equal(d.step, 5, 'seen at the tunnel, which has nowhere to send it: encapsulation failed');
  assert.equal(d.step_name, 'encapsulation');
  assert.equal(d.node, N1);
  assert.equal(d.device, 'flannel.1');
  assert.deepEqual(d.last_seen, { step: 4, name: 'routing', node: N1, device: 'flannel.1', hook: 'egress' });
  assert.equal(d.reason, null);
  assert.equal(d.detail, `${N1} knows 10.244.2.0 is ${TUNNEL_MAC} on flannel.1, and its FDB has no node to send ${TUNNEL_MAC} to`);
  assert.match(d.next, /`bridge fdb show dev flannel\.1` on nt1-node1/);
  assert.deepEqual(d.steps.map((h) => h.device), ['eth0', 'veth1a', 'cni0', 'flannel.1']);
});

test('delay: one slow step (the wire, behind a token bucket on node1\'s eth0) is named with how long it holds', () => {
  // step 6 is the 6th hook (index 5); one packet waits longer than the others
  const held = [200e6, 210e6, 190e6, 205e6, 400e6];
  const paths = held.map((ns, k) => path({ lat: (i) => (i === 5 ? ns : 15_000 + 1000 * k + i) }));
  const d = diagnose(input(paths).inp);
  assert.equal(d.healthy, false);
  assert.equal(d.cause, 'delay');
  assert.equal(d.step, 6);
  assert.equal(d.step_name, 'physical network');
  assert.equal(d.node, N2);
  assert.equal(d.device, 'eth0');
  assert.equal(d.last_seen, null);
  assert.equal(d.reason, null);
  assert.match(d.detail, /^step 6 \(physical network\), from eth0 egress on nt1-node1 to eth0 ingress on nt1-node2, holds 205\.0 ms \(median of 5 packets\); the other steps take \d+\.\d µs \(median\)$/);
  assert.match(d.next, /tc -s qdisc show dev eth0/);
  assert.match(d.next, /between eth0 egress on nt1-node1 and eth0 on nt1-node2/);
  assert.deepEqual(d.steps, paths[4]!.steps, 'shows the packet that waited longest');
});

test('delay: a slow step below 1 ms, or not 10 times the others, is healthy', () => {
  const under1ms = times(5, () => path({ lat: (i) => (i === 5 ? 900_000 : 10_000) }));
  assert.equal(diagnose(input(under1ms).inp).cause, 'none');
  const evenlySlow = times(5, () => path({ lat: (i) => (i === 5 ? 5e6 : 1e6) }));
  assert.equal(diagnose(input(evenlySlow).inp).cause, 'none');
});

test('delay across two machines\' clocks: only what exceeds their uncertainty counts', () => {
  const withClocks = (wireNs: number, uncertaintyNs: number) => {
    const p = path({ lat: (i) => (i === 5 ? wireNs : 10_000) });
    for (const h of p.steps) h.clock = { node: h.node, correction_ns: 0, uncertainty_ns: uncertaintyNs, method: 'exchange' };
    return p;
  };
  // 1.4 ms on the wire, each clock right within 1 ms: no telling it from a clock error
  assert.equal(diagnose(input(times(5, () => withClocks(1_400_000, 1_000_000))).inp).cause, 'none');
  // 30 ms is a delay whatever the clocks say
  const slow = diagnose(input(times(5, () => withClocks(30_000_000, 1_000_000))).inp);
  assert.equal(slow.cause, 'delay');
  assert.equal(slow.step, 6);
});

test('loss: some probes stop after eth0 with a qdisc drop; the rate, the step and where to look', () => {
  const lost = times(2, () => path({ upTo: 5, kernel: 'QDISC_DROP' }));
  const paths = [...times(3, () => path()), ...lost];
  const { inp, asked } = input(paths);
  const d = diagnose(inp);
  assert.equal(d.healthy, false);
  assert.equal(d.cause, 'loss');
  assert.equal(d.step, 6, 'seen at eth0 egress, dropped by its qdisc before the wire: the wire did not carry it');
  assert.equal(d.step_name, 'physical network');
  assert.equal(d.node, N1);
  assert.equal(d.device, 'eth0');
  assert.deepEqual(d.last_seen, { step: 5, name: 'encapsulation', node: N1, device: 'eth0', hook: 'egress' });
  assert.equal(d.reason, 'QDISC_DROP');
  assert.equal(d.detail, `2 of 5 probe packets (40 %) stopped after eth0 egress on ${N1} (last seen step 5, encapsulation): step 6 (physical network) failed, dropped by the kernel: QDISC_DROP`);
  assert.match(d.next, /after eth0 on nt1-node1: its counters \(ip -s link\), qdisc \(tc -s qdisc\)/);
  assert.deepEqual(d.steps, lost[0]!.steps);
  assert.deepEqual(asked, [`reach ${N1}`], 'the node could reach B: not a routing problem');
});

test('loss: a stopped request is reported before a stopped reply', () => {
  const reply = path({ upTo: 8, direction: 'reply' });
  const request = path({ upTo: 2 });
  const d = diagnose(input([path(), reply, request]).inp);
  assert.equal(d.cause, 'loss');
  assert.equal(d.step, 3);
  assert.equal(d.device, 'veth1a');
  assert.match(d.detail, /^2 of 3 probe packets \(67 %\) stopped after veth1a ingress on nt1-node1 \(last seen step 2, veth pair\): step 3 \(bridge\) failed$/);
});

test('loss: no probe seen at all', () => {
  const d = diagnose(input([], { mtuProbe: null }).inp);
  assert.equal(d.healthy, false);
  assert.equal(d.cause, 'loss');
  assert.equal(d.step, null);
  assert.equal(d.last_seen, null);
  assert.equal(d.detail, 'no probe packet was seen on any hook');
  assert.match(d.next, /source pod can send/);
  assert.deepEqual(d.steps, []);
});

test('loss while hop records were lost: a caveat says part of the loss may be ours; other verdicts and no loss of records have none', () => {
  const lossy = () => [...times(3, () => path()), ...times(2, () => path({ upTo: 5 }))];
  const lost = { records: 12, why: ['the ring buffer was full on nt1-node2', 'the client reads too slowly on nt1-node1'] };
  const d = diagnose({ ...input(lossy()).inp, lostRecords: lost });
  assert.equal(d.cause, 'loss');
  assert.deepEqual(d.caveats, ['12 hop records were lost before nettrace read them (the ring buffer was full on nt1-node2; the client reads too slowly on nt1-node1): '
    + "some probes counted as lost may have arrived, so part of the loss may be nettrace's own; run diagnose again to confirm"]);
  assert.equal(diagnose({ ...input([], { mtuProbe: null }).inp, lostRecords: lost }).caveats!.length, 1, 'no probe seen at all is loss too');
  assert.deepEqual(diagnose({ ...input(lossy()).inp, lostRecords: { records: 0, why: [] } }).caveats, []);
  assert.deepEqual(diagnose(input(lossy()).inp).caveats, []);
  // a kernel drop reason or a healthy path is not in doubt
  assert.deepEqual(diagnose({ ...input(times(3, () => path({ upTo: 3, kernel: 'NETFILTER_DROP' }))).inp, lostRecords: lost }).caveats, []);
  assert.deepEqual(diagnose({ ...input(times(5, () => path())).inp, lostRecords: lost }).caveats, []);
});

test('median: the middle value (the upper one of an even count), 0 of nothing, input left alone', () => {
  assert.equal(median([3, 1, 2]), 2);
  assert.equal(median([4, 1, 3, 2]), 3);
  assert.equal(median([7]), 7);
  assert.equal(median([]), 0);
  const xs = [5, 1, 9];
  median(xs);
  assert.deepEqual(xs, [5, 1, 9]);
  assert.equal(median([10, 9, 100]), 10, 'numeric order, not string order');
});
