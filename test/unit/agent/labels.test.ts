// One meaning of "step" for a packet that stopped: the agent's nettrace_drops_total (and its drop
// spans) and follow's/diagnose's drop name the same step, the one that failed, in every node model.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AddressNames, dropLabels, hookLabels, podNetworks } from '../../../src/agent/labels';
import type { PodIdentity } from '../../../src/k8s/identity';
import { joinIdentities } from '../../../src/k8s/join';
import { PathAssembler } from '../../../src/flow/assemble';
import { parseFlowSpec } from '../../../src/flow/spec';
import { ORDER } from '../../../src/probe/layout.generated';
import type { ClusterTopology, NodeTopology } from '../../../src/topology/model';
import { tcpHopRecord as rec, twoNodeTopology } from '../../helpers/records';

const flow = parseFlowSpec('10.244.1.5 -> 10.244.2.8:80', 'tcp');

/** The request's hooks in path order: [order, netns ino, ifindex, tc hook (0 ingress, 1 egress)] on twoNodeTopology. */
const HOOKS: [number, number, number, 0 | 1][] = [
  [ORDER.POD_EGRESS, 2001, 2, 1], [ORDER.VETH_INGRESS, 1001, 5, 0], [ORDER.BRIDGE_INGRESS, 1001, 3, 0], [ORDER.TUNNEL_EGRESS, 1001, 4, 1],
  [ORDER.UNDERLAY_EGRESS, 1001, 2, 1], [ORDER.UNDERLAY_INGRESS, 1002, 2, 0], [ORDER.TUNNEL_INGRESS, 1002, 4, 0], [ORDER.BRIDGE_EGRESS, 1002, 3, 1],
  [ORDER.VETH_EGRESS, 1002, 5, 1],
];

/** twoNodeTopology with some devices taken away, as a mode without them has. */
function model(without: ('tunnel' | 'bridge')[]): ClusterTopology {
  const t = twoNodeTopology();
  for (const n of t.nodes) for (const role of without) (n as NodeTopology)[role] = null;
  return t;
}

/** For a packet last seen at each hook its mode has: [last order, follow's drop.step, the agent's drop step label]. */
function stopped(t: ClusterTopology): [number, number | undefined, number | undefined][] {
  const present = HOOKS.filter(([, ino, ifx]) => ino > 2000 || t.nodes.some((n) => [n.underlay, n.tunnel, n.bridge, n.pods[0]!.hostVeth].some((d) => d?.netns.ino === ino && d.ifindex === ifx)));
  return present.map((_, i) => {
    let now = 0;
    const a = new PathAssembler(flow, t, { graceMs: 10, now: () => now });
    for (const [, ino, ifx, hook] of present.slice(0, i + 1)) a.add(rec(ino, ifx, hook, 100 * (i + 1)));
    now = 100;
    const [p] = a.expire();
    const [order, ino] = present[i]!;
    const node = t.nodes.find((n) => n.netns.ino === ino || n.pods[0]!.netns.ino === ino)!;
    return [order, p?.drop?.step, dropLabels(node, order)?.step];
  });
}

test('flannel-vxlan: the step that failed is the next hook\'s, the same in follow and the agent', () => {
  assert.deepEqual(stopped(model([])), [
    [ORDER.POD_EGRESS, 2, 2], [ORDER.VETH_INGRESS, 3, 3], [ORDER.BRIDGE_INGRESS, 4, 4], [ORDER.TUNNEL_EGRESS, 5, 5], [ORDER.UNDERLAY_EGRESS, 6, 6],
    [ORDER.UNDERLAY_INGRESS, 7, 7], [ORDER.TUNNEL_INGRESS, 8, 8], [ORDER.BRIDGE_EGRESS, 9, 9], [ORDER.VETH_EGRESS, 9, 9],
  ]);
});

test('host-gw (no tunnel): steps 5 and 7 are passed over, the same in follow and the agent', () => {
  assert.deepEqual(stopped(model(['tunnel'])), [
    [ORDER.POD_EGRESS, 2, 2], [ORDER.VETH_INGRESS, 3, 3], [ORDER.BRIDGE_INGRESS, 4, 4], [ORDER.UNDERLAY_EGRESS, 6, 6],
    [ORDER.UNDERLAY_INGRESS, 8, 8], [ORDER.BRIDGE_EGRESS, 9, 9], [ORDER.VETH_EGRESS, 9, 9],
  ]);
});

test('Calico BGP (no bridge, no tunnel): step 3 is passed over, routing on the receiving node ends at the veth', () => {
  assert.deepEqual(stopped(model(['tunnel', 'bridge'])), [
    [ORDER.POD_EGRESS, 2, 2], [ORDER.VETH_INGRESS, 4, 4], [ORDER.UNDERLAY_EGRESS, 6, 6], [ORDER.UNDERLAY_INGRESS, 8, 8], [ORDER.VETH_EGRESS, 9, 9],
  ]);
});

test('a drop label names the step that failed and where the packet was last seen; no order, no label', () => {
  const node = twoNodeTopology().nodes[0]!;
  assert.deepEqual(dropLabels(node, ORDER.BRIDGE_INGRESS), { step: 4, step_name: 'routing', device: 'cni0', hook: 'ingress' });
  assert.deepEqual(dropLabels(node, ORDER.TUNNEL_EGRESS), { step: 5, step_name: 'encapsulation', device: 'flannel.1', hook: 'egress' });
  assert.equal(dropLabels(node, ORDER.NONE), null);
});

/** node1 of twoNodeTopology as `ip -j route show` prints its routes: flannel's VXLAN subnets, cni0's, the underlay's */
const FLANNEL_ROUTES = [
  { dst: 'default', gateway: '192.168.1.1', dev: 'ens5' },
  { dst: '10.244.1.0/24', dev: 'cni0' },
  { dst: '10.244.2.0/24', gateway: '10.244.2.0', dev: 'flannel.1' },
  { dst: '192.168.1.0/24', dev: 'ens5' },
];

/** What the API server would list: pod-a on node1 (a Deployment's), pod-b on node2 (a bare pod), two host-network pods. */
const IDENTITIES: PodIdentity[] = [
  { namespace: 'shop', name: 'frontend-7d4b9-x2x7q', uid: 'u1', ips: ['10.244.1.5'], node: 'node1', workload: 'frontend' },
  { namespace: 'db', name: 'redis-0', uid: 'u2', ips: ['10.244.2.8'], node: 'node2' },
  { namespace: 'kube-system', name: 'kube-proxy-abcde', uid: 'u3', ips: ['192.168.1.102'], node: 'node2', workload: 'kube-proxy' },
  { namespace: 'kube-system', name: 'flannel-fghij', uid: 'u4', ips: ['192.168.1.102'], node: 'node2', workload: 'flannel' },
];

test('pod networks: the routes through the bridge, the tunnel, a pod veth, via another node, or blackholed; not default, not the underlay subnet', () => {
  const node = twoNodeTopology().nodes[0]!;
  assert.deepEqual(podNetworks(node, FLANNEL_ROUTES), ['10.244.1.0/24', '10.244.2.0/24']);
  const hostGw = { ...node, tunnel: null };
  assert.deepEqual(podNetworks(hostGw, [{ dst: '10.244.2.0/24', gateway: '192.168.1.102', dev: 'ens5' }, { dst: '10.244.1.5', dev: 'veth1234' }, { dst: '10.244.3.0/26', type: 'blackhole' }]),
    ['10.244.2.0/24', '10.244.1.5', '10.244.3.0/26']);
});

test('address names: a pod by its Kubernetes namespace and workload (a bare pod by its name), never an address', () => {
  const t = twoNodeTopology();
  const node = t.nodes[0]!;
  const source = { kind: 'kubernetes' as const, ready: async () => {}, pods: () => IDENTITIES, services: () => [], close() {} };
  joinIdentities([node], source);
  const names = new AddressNames();
  names.update(node, IDENTITIES, [], podNetworks(node, FLANNEL_ROUTES));
  assert.deepEqual(names.of('10.244.1.5'), { namespace: 'shop', workload: 'frontend', pod: 'frontend-7d4b9-x2x7q', local: true, k8s: { namespace: 'shop', name: 'frontend-7d4b9-x2x7q' } });
  assert.deepEqual(names.of('10.244.2.8'), { namespace: 'db', workload: 'redis-0', pod: 'redis-0', local: false, k8s: { namespace: 'db', name: 'redis-0' } });
  // in the pod network, no name known; this node; another node, which several host-network pods claim; the world
  assert.deepEqual([names.of('10.244.2.99'), names.of('192.168.1.101'), names.of('192.168.1.102'), names.of('1.1.1.1')].map((n) => [n.namespace, n.workload, n.pod]),
    [['', 'unknown', ''], ['', 'node', ''], ['', 'external', ''], ['', 'external', '']]);
});

test('address names without a source: this node\'s pods by network namespace, others by where they are', () => {
  const node = twoNodeTopology().nodes[0]!;
  const names = new AddressNames();
  names.update(node, [], [], podNetworks(node, FLANNEL_ROUTES));
  assert.deepEqual(names.of('10.244.1.5'), { namespace: '', workload: 'pod-a', pod: 'pod-a', local: true, k8s: null });
  assert.equal(names.of('10.244.2.8').workload, 'unknown');
  // an identity that arrives later renames the pod once joined again
  const source = { kind: 'cri' as const, ready: async () => {}, pods: () => IDENTITIES.slice(0, 1), services: () => [], close() {} };
  joinIdentities([node], source);
  names.update(node, source.pods(), [], podNetworks(node, FLANNEL_ROUTES));
  assert.equal(names.of('10.244.1.5').workload, 'frontend');
});

test('address names of other nodes\' pods: the endpoints of Services (the agent lists its own node\'s pods only), the Service as workload', () => {
  const node = twoNodeTopology().nodes[0]!;
  const svc = (namespace: string, name: string, endpoints: { ip: string; pod?: { namespace: string; name: string } }[]) =>
    ({ namespace, name, clusterIps: ['10.96.0.10'], ports: [{ port: 6379, protocol: 'TCP' as const }], endpoints: endpoints.map((e) => ({ ...e, port: 6379, protocol: 'TCP' as const, ready: true })) });
  const names = new AddressNames();
  // redis-0 backs two Services: the first by namespace/name names it, whatever order the source gives
  const services = [svc('db', 'redis-replicas', [{ ip: '10.244.2.8', pod: { namespace: 'db', name: 'redis-0' } }]), svc('db', 'redis', [{ ip: '10.244.2.8', pod: { namespace: 'db', name: 'redis-0' } }]),
    svc('ext', 'legacy', [{ ip: '10.244.2.77' }])];
  names.update(node, IDENTITIES.slice(0, 1), services, podNetworks(node, FLANNEL_ROUTES));
  assert.deepEqual(names.of('10.244.2.8'), { namespace: 'db', workload: 'redis', pod: 'redis-0', local: false, k8s: { namespace: 'db', name: 'redis-0' } });
  // an endpoint that is no pod (a manual EndpointSlice) names nothing
  assert.equal(names.of('10.244.2.77').workload, 'unknown');
  names.update(node, IDENTITIES.slice(0, 1), [...services].reverse(), podNetworks(node, FLANNEL_ROUTES));
  assert.equal(names.of('10.244.2.8').workload, 'redis');
});

test('hop latency stays summed over pods: pod-side devices have no pod label', () => {
  const node = twoNodeTopology().nodes[0]!;
  assert.deepEqual(hookLabels(node, ORDER.VETH_INGRESS), { step: 2, step_name: 'veth pair', device: 'pod-veths', hook: 'ingress' });
  assert.deepEqual(hookLabels(node, ORDER.POD_EGRESS), { step: 1, step_name: 'container sends', device: 'pod-eth', hook: 'egress' });
});
