// diagnose() for a flow to a Service, on paths shaped as `nettrace follow -o json` prints them on the
// test cluster (test/cluster/service.test.ts): a ClusterIP kube-proxy rejects because the Service has
// no endpoints, and an endpoint pod that answers the SYN with a reset because nothing listens.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatDiagnosis } from '../../../src/export/diagnosis';
import type { PacketPath } from '../../../src/flow/path';
import { parseFlowSpec } from '../../../src/flow/spec';
import { diagnose, parseNoEndpointsRule, type DiagnoseInput } from '../../../src/flow/verdict';
import { STEP_NAMES } from '../../../src/topology/steps';

const A = '10.244.1.5';
const B = '10.244.2.8';
const VIP = '10.96.0.80';
const N1 = 'nt1-node1';
const N2 = 'nt1-node2';
/** what kube-proxy writes, as iptables-save prints it back */
const REJECT = `-A KUBE-SERVICES -d ${VIP}/32 -p tcp -m comment --comment "shop/web:http has no endpoints" -m tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable`;

type Hook = [number, string, string, 'ingress' | 'egress', string?];
const REQUEST: Hook[] = [
  [1, N1, 'eth0', 'egress', 'pod-a'], [2, N1, 'veth1a', 'ingress'], [3, N1, 'cni0', 'ingress'], [4, N1, 'flannel.1', 'egress'], [5, N1, 'eth0', 'egress'],
  [6, N2, 'eth0', 'ingress'], [7, N2, 'flannel.1', 'ingress'], [8, N2, 'cni0', 'egress'], [9, N2, 'veth2b', 'egress'], [9, N2, 'eth0', 'ingress', 'pod-b'],
];
const REPLY: Hook[] = [
  [1, N2, 'eth0', 'egress', 'pod-b'], [2, N2, 'veth2b', 'ingress'], [3, N2, 'cni0', 'ingress'], [4, N2, 'flannel.1', 'egress'], [5, N2, 'eth0', 'egress'],
  [6, N1, 'eth0', 'ingress'], [7, N1, 'flannel.1', 'ingress'], [8, N1, 'cni0', 'egress'], [9, N1, 'veth1a', 'egress'], [9, N1, 'eth0', 'ingress', 'pod-a'],
];

let sport = 40000;

/** A TCP probe's path: hooks seen (upTo of them), its first hop's header, the kernel's drop reason if it stopped. */
function tcpPath(o: { hooks: Hook[]; upTo?: number; direction: 'request' | 'reply'; flowDst: string; src: string; sport: number; dst: string; dport: number; flags: string; seq?: number; ack?: number; kernel?: string }): PacketPath {
  const seen = o.hooks.slice(0, o.upTo ?? o.hooks.length);
  let ts = 5_000_000_000 + sport * 1000;
  const steps = seen.map(([step, node, device, hook, pod], i) => {
    const latency = i === 0 ? 0 : 20_000;
    ts += latency;
    return { step, name: STEP_NAMES[step]!, node, device, hook, ts_ns: ts, latency_ns: latency, ...(pod ? { pod } : {}) };
  });
  const complete = seen.length === o.hooks.length;
  const last = steps[steps.length - 1]!;
  const failed = o.hooks[seen.length]?.[0] ?? 9;
  return {
    flow: { src: A, sport: 0, dst: o.flowDst, dport: o.flowDst === VIP ? 80 : 5201, proto: 'tcp' },
    direction: o.direction,
    packet: { src: o.src, sport: o.sport, dst: o.dst, dport: o.dport, ip_id: sport & 0xffff, len: 60, payload_len: 0, seq: o.seq ?? 1000, ack: o.ack ?? 0, tcp_flags: o.flags, gso_segs: 1 },
    steps,
    total_ns: steps.reduce((s, h) => s + h.latency_ns, 0),
    complete,
    drop: complete ? null : {
      step: failed, step_name: STEP_NAMES[failed]!, device: last.device, node: last.node,
      reason: `dropped by the kernel (${o.kernel}) after ${last.device} ${last.hook} (last seen step ${last.step}, ${STEP_NAMES[last.step]}): step ${failed} (${STEP_NAMES[failed]}) failed`,
      last_seen: { step: last.step, name: last.name, node: last.node, device: last.device, hook: last.hook },
      ...(o.kernel ? { kernel_reason: o.kernel } : {}),
    },
  };
}

function input(paths: PacketPath[], rules: string[], dst: string): DiagnoseInput {
  return {
    paths, mtuProbe: { size: 1450, podMtu: 1450, paths: [] },
    reach: () => ({ route: { dev: 'eth0' } }),
    dropRules: (node) => (node === N1 ? rules : []),
    mtu: () => 1450,
    dst,
  };
}

/** kube-proxy rejects the SYN in FORWARD on node1: seen up to cni0 ingress, dropped with NETFILTER_DROP. */
const rejectedSyn = () => tcpPath({ hooks: REQUEST, upTo: 3, direction: 'request', flowDst: VIP, src: A, sport: sport++, dst: VIP, dport: 80, flags: 'S', kernel: 'NETFILTER_DROP' });

test('parseNoEndpointsRule: reads the ClusterIP, protocol, port and NS/NAME:PORT of kube-proxy\'s REJECT; other rules are not it', () => {
  assert.deepEqual(parseNoEndpointsRule(REJECT), { ip: VIP, proto: 'tcp', port: 80, service: 'shop/web:http' });
  assert.deepEqual(parseNoEndpointsRule(`-A KUBE-SERVICES -d 10.96.0.53/32 -p udp -m udp --dport 53 -j REJECT`), { ip: '10.96.0.53', proto: 'udp', port: 53, service: null });
  assert.equal(parseNoEndpointsRule(`-A FORWARD -d ${VIP}/32 -p tcp -m tcp --dport 80 -j REJECT`), null, 'not kube-proxy\'s chain');
  assert.equal(parseNoEndpointsRule('-A KUBE-SERVICES -d 10.96.0.80/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-X'), null, 'a jump, not a reject');
});

test('no-endpoints: the SYNs stop at routing on node1 (NETFILTER_DROP) and KUBE-SERVICES rejects ClusterIP:port; names the Service and its EndpointSlices', () => {
  const paths = Array.from({ length: 5 }, rejectedSyn);
  const d = diagnose(input(paths, ['-A FORWARD -s 10.9.9.9/32 -j DROP', REJECT], VIP));
  assert.equal(d.healthy, false);
  assert.equal(d.cause, 'no-endpoints');
  assert.equal(d.reason, 'NETFILTER_DROP');
  assert.deepEqual([d.step, d.step_name, d.node, d.device], [4, 'routing', N1, 'cni0']);
  assert.deepEqual(d.last_seen, { step: 3, name: 'bridge', node: N1, device: 'cni0', hook: 'ingress' });
  assert.match(d.detail, /^Service shop\/web:http \(ClusterIP 10\.96\.0\.80:80\) has no endpoints: kube-proxy on nt1-node1 rejects its connections/);
  assert.ok(d.detail.includes(REJECT), d.detail);
  assert.equal(d.next, 'check the Service\'s selector matches ready pods and its EndpointSlices: kubectl get endpointslices -n shop -l kubernetes.io/service-name=web');
  const table = formatDiagnosis(parseFlowSpec(`${A} -> ${VIP}:80`, 'tcp'), d);
  assert.match(table, /^diagnose 10\.244\.1\.5 -> 10\.96\.0\.80:80 tcp: BROKEN at step 4 \(routing\)$/m);
  assert.match(table, /^cause: no-endpoints \(kernel: NETFILTER_DROP\)$/m);
  assert.match(table, /^ {2}!! 4 routing +<== packets stop here$/m);
});

test('no-endpoints: the REJECT\'s ICMP error, sent by node1 and followed back to pod A, is named', () => {
  const icmp = tcpPath({ hooks: REPLY.slice(7), direction: 'reply', flowDst: VIP, src: '10.244.1.1', sport: 0, dst: A, dport: 0, flags: '' });
  const error: PacketPath = { ...icmp, packet: { src: '10.244.1.1', sport: 0, dst: A, dport: 0, ip_id: 5, len: 88, payload_len: 60, gso_segs: 1, icmp_type: 3 } };
  const d = diagnose(input([rejectedSyn(), error], [REJECT], VIP));
  assert.equal(d.cause, 'no-endpoints');
  assert.match(d.detail, /; 10\.244\.1\.1 on nt1-node1 answered with an ICMP destination unreachable, seen reaching eth0 ingress \(-A KUBE-SERVICES /);
});

test('no-endpoints: a REJECT without the comment still names ClusterIP:port and says how to find the Service', () => {
  const d = diagnose(input([rejectedSyn()], [`-A KUBE-SERVICES -d ${VIP}/32 -p tcp -m tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable`], VIP));
  assert.equal(d.cause, 'no-endpoints');
  assert.match(d.detail, /^the Service \(ClusterIP 10\.96\.0\.80:80\) has no endpoints/);
  assert.match(d.next, /kubectl get svc -A \| grep 10\.96\.0\.80/);
});

test('no-endpoints only for the port and protocol rejected: another port of the ClusterIP is a plain netfilter-drop', () => {
  const other = tcpPath({ hooks: REQUEST, upTo: 3, direction: 'request', flowDst: VIP, src: A, sport: sport++, dst: VIP, dport: 443, flags: 'S', kernel: 'NETFILTER_DROP' });
  const d = diagnose(input([other], [REJECT], VIP));
  assert.equal(d.cause, 'netfilter-drop');
});

/**
 * SYN to the ClusterIP of a Service whose endpoint is pod B, DNAT'ed on node1, arrives; pod B's
 * kernel answers RST-ACK, seq 0, acknowledging the SYN (the ISN near 2^32 wraps).
 */
function refusedProbe(flowDst: string): PacketPath[] {
  const p = sport++;
  return [
    tcpPath({ hooks: REQUEST, direction: 'request', flowDst, src: A, sport: p, dst: flowDst, dport: 5201, flags: 'S', seq: 4294967295 }),
    tcpPath({ hooks: REPLY, direction: 'reply', flowDst, src: B, sport: 5201, dst: A, dport: p, flags: 'RA', seq: 0, ack: 0 }),
  ];
}

test('connection-refused through a Service: pod B answers every SYN with a reset; names the endpoint, the pod and the Service', () => {
  const paths = Array.from({ length: 6 }, () => refusedProbe('10.96.0.10')).flat();
  const d = diagnose(input(paths, [], B));
  assert.equal(d.healthy, false);
  assert.equal(d.cause, 'connection-refused');
  assert.deepEqual([d.step, d.step_name, d.node, d.device, d.reason], [9, 'veth to pod', N2, 'eth0', null]);
  assert.deepEqual(d.last_seen, { step: 9, name: 'veth to pod', node: N2, device: 'eth0', hook: 'ingress' });
  assert.equal(d.detail, '10.244.2.8:5201 (pod pod-b on nt1-node2) refused the connection: it answered 6 of 6 SYN probes with a TCP reset, nothing listens on port 5201 there, reached through the Service 10.96.0.10:5201');
  assert.match(d.next, /listens on 5201/);
  assert.deepEqual(d.steps.map((h) => h.step), [1, 2, 3, 4, 5, 6, 7, 8, 9, 9], 'the request, which arrived');
  const table = formatDiagnosis(parseFlowSpec(`${A} -> 10.96.0.10:5201`, 'tcp'), d);
  assert.match(table, /^ {2}!! 9 veth to pod .*<== refused by the pod$/m);
  assert.match(table, /^cause: connection-refused$/m);
});

test('connection-refused to a pod IP: no Service named', () => {
  const d = diagnose(input(refusedProbe(B), [], B));
  assert.equal(d.cause, 'connection-refused');
  assert.doesNotMatch(d.detail, /Service/);
});

test('a reset that no pod sent (a node\'s REJECT --reject-with tcp-reset) is not connection-refused; a SYN-ACK is healthy', () => {
  const [req, rst] = refusedProbe(B) as [PacketPath, PacketPath];
  const fromNode = { ...rst, steps: rst.steps.slice(2).map((h, i) => (i === 0 ? { ...h, latency_ns: 0 } : h)) };
  assert.notEqual(diagnose(input([req, fromNode], [], B)).cause, 'connection-refused');
  const synAck = { ...rst, packet: { ...rst.packet, tcp_flags: 'SA' } };
  assert.equal(diagnose(input([req, synAck], [], B)).cause, 'none');
  // a listener that accepted, then closed with unread data: its reset acknowledges data, not the SYN
  const late = { ...rst, packet: { ...rst.packet, seq: 777, ack: 8001 } };
  assert.equal(diagnose(input([req, synAck, late], [], B)).cause, 'none');
});

test('connection-refused for UDP: the pod answers the probes with ICMP destination unreachable (type 3), followed as the flow\'s reply', () => {
  const p = sport++;
  const probe = tcpPath({ hooks: REQUEST, direction: 'request', flowDst: B, src: A, sport: p, dst: B, dport: 9999, flags: '' });
  const request: PacketPath = { ...probe, flow: { ...probe.flow, dport: 9999, proto: 'udp' }, packet: { src: A, sport: p, dst: B, dport: 9999, ip_id: 7, len: 31, payload_len: 3, gso_segs: 1 } };
  const icmp = tcpPath({ hooks: REPLY, direction: 'reply', flowDst: B, src: B, sport: 0, dst: A, dport: 0, flags: '' });
  // as follow prints it: the quoted packet makes it 59 bytes; an error shows no ports and no echo id
  const error: PacketPath = { ...icmp, flow: request.flow, packet: { src: B, sport: 0, dst: A, dport: 0, ip_id: 21973, len: 59, payload_len: 31, gso_segs: 1, icmp_type: 3 } };
  const d = diagnose(input([request, error], [], B));
  assert.equal(d.cause, 'connection-refused');
  assert.equal(d.detail, '10.244.2.8 (pod pod-b on nt1-node2) refused the connection: it answered 1 of 1 UDP probes with an ICMP destination unreachable, nothing listens on the port there');
  assert.match(d.next, /ss -lun/);
  // the UDP probes alone, no answer (a listener that says nothing back): healthy
  assert.equal(diagnose(input([request], [], B)).cause, 'none');
});
