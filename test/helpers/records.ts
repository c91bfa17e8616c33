// Hop records and a two-node flannel-vxlan topology given as data, for the flow tests.
import { RECORD_KIND, type HopRecord } from '../../src/probe/layout.generated';
import type { ClusterTopology, Device, NodeTopology } from '../../src/topology/model';

/** A flannel-vxlan node: host netns ino 1000+n, one pod (netns ino 2000+n), devices underlay 2, cni0 3, flannel.1 4, host veth 5. */
export function flannelNode(n: number, podIp: string, podName: string, underlay = 'ens5'): NodeTopology {
  const netns = { name: `node${n}`, path: `/run/netns/node${n}`, ino: 1000 + n };
  const podNs = { name: podName, path: `/run/netns/${podName}`, ino: 2000 + n };
  const dev = (ifindex: number, name: string, role: Device['role'], ns = netns): Device => ({ node: `node${n}`, netns: ns, ifindex, name, role, mtu: 1450 });
  return {
    name: `node${n}`, netns, ip: `192.168.1.10${n}`, cni: 'flannel-vxlan',
    underlay: dev(2, underlay, 'underlay'), bridge: dev(3, 'cni0', 'bridge'), tunnel: dev(4, 'flannel.1', 'tunnel'),
    pods: [{ name: podName, node: `node${n}`, netns: podNs, ips: [podIp], eth: { ...dev(2, 'eth0', 'pod', podNs), pod: podName }, hostVeth: { ...dev(5, 'veth1234', 'host-veth'), pod: podName } }],
  };
}

/** node1 with pod-a (10.244.1.5), node2 with pod-b (10.244.2.8). */
export function twoNodeTopology(underlay = 'ens5'): ClusterTopology {
  return { nodes: [flannelNode(1, '10.244.1.5', 'pod-a', underlay), flannelNode(2, '10.244.2.8', 'pod-b', underlay)] };
}

/** A followed TCP packet's hop (flow 1, 10.244.1.5:40000 -> 10.244.2.8:80, a SYN) at one hook; `over` changes fields. */
export function tcpHopRecord(ino: number, ifindex: number, hook: 0 | 1, ts: number, over: Partial<HopRecord> = {}): HopRecord {
  return {
    ts_ns: ts, netns_ino: ino, ifindex, flow_id: 1, skb_len: 74, saddr: Uint8Array.from([10, 244, 1, 5, ...Array(12).fill(0)]),
    daddr: Uint8Array.from([10, 244, 2, 8, ...Array(12).fill(0)]), sport: 40000, dport: 80, seq: 1, ack: 0, ip_id: 7, ip_len: 60,
    payload_len: 0, gso_segs: 0, vni: 0, family: 4, proto: 6, hook, direction: 0, flags: 0, tcp_flags: 2, icmp_type: 0,
    kind: 0, reason: 0, order: 0, ...over,
  };
}

/** A sampled ICMP echo's hop (10.244.1.5 -> 10.244.2.8) at the hook of `order`; `over` changes fields. */
export function sampledHopRecord(order: number, ts: number, over: Partial<HopRecord> = {}): HopRecord {
  return {
    ts_ns: ts, netns_ino: 4026530000 + order, ifindex: order + 2, flow_id: 0, skb_len: 98,
    saddr: Uint8Array.from([10, 244, 1, 5, ...Array(12).fill(0)]), daddr: Uint8Array.from([10, 244, 2, 8, ...Array(12).fill(0)]),
    sport: 7, dport: 0, seq: 1, ack: 0, ip_id: 4242, ip_len: 84, payload_len: 56, gso_segs: 0, vni: 0, family: 4, proto: 1,
    hook: 0, direction: 0, flags: 0, tcp_flags: 0, icmp_type: 8, kind: RECORD_KIND.HOP, reason: 0, order, ...over,
  };
}
