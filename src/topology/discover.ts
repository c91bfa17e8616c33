// Discover a node's devices and pods from the node itself (links, addresses, routes), never by name.
import { spawnSync } from 'node:child_process';
import { NettraceError } from '../errors';
import { EXEC_TIMEOUT_MS, ipJson, ipJsonAsync } from '../exec';
import { detectCni } from './cni';
import type { ClusterTopology, Device, NodeTopology, Pod } from './model';
import { ipNs, namedNetns, type NetnsRef } from './netns';

interface IpLink {
  ifindex: number;
  ifname: string;
  mtu: number;
  master?: string;
  link_index?: number;
  link_netnsid?: number;
  linkinfo?: { info_kind?: string; info_data?: { id?: number; port?: number; local?: string } };
}

interface IpAddr {
  ifindex: number;
  ifname: string;
  addr_info: { family: string; local: string; scope?: string }[];
}

interface IpRoute {
  dst: string;
  gateway?: string;
  dev?: string;
}

function globalAddrs(addrs: IpAddr[], ifindex: number): string[] {
  const a = addrs.find((x) => x.ifindex === ifindex);
  return (a?.addr_info ?? []).filter((i) => (i.family === 'inet' || i.family === 'inet6') && i.scope !== 'link' && i.scope !== 'host').map((i) => i.local);
}

function device(node: string, netns: NetnsRef, link: IpLink, role: Device['role'], pod?: string): Device {
  const d: Device = { node, netns, ifindex: link.ifindex, name: link.ifname, role, mtu: link.mtu };
  if (pod) d.pod = pod;
  const data = link.linkinfo?.info_data;
  if (link.linkinfo?.info_kind === 'vxlan' && data) d.vxlan = { id: data.id ?? 0, port: data.port ?? 4789, local: data.local ?? '' };
  return d;
}

export interface DiscoverOptions {
  /** read each pod's device name and addresses inside its namespace (two `ip` runs a pod);
   * without, a pod is its namespace and the peer's ifindex, and has no addresses yet */
  podDetails?: boolean;
}

/** A pod's global addresses, read in its namespace. */
export async function podAddresses(pod: Pod): Promise<string[]> {
  return globalAddrs(await ipJsonAsync<IpAddr[]>(pod.netns.name, ['addr', 'show']), pod.eth.ifindex);
}

/** The pod behind a host-side veth: the namespace its peer lives in, and the peer's addresses. */
function podBehind(nodeName: string, hostVeth: Device, link: IpLink, nsNames: Map<number, string>, nodeNetns: Set<string>, details: boolean): Pod | null {
  if (link.link_netnsid === undefined || link.link_index === undefined) return null;
  const name = nsNames.get(link.link_netnsid);
  if (!name || nodeNetns.has(name)) return null;
  const netns = namedNetns(name);
  if (!details) {
    const eth = device(nodeName, netns, { ifindex: link.link_index, ifname: `${link.ifname}-peer`, mtu: link.mtu }, 'pod', name);
    return { name, node: nodeName, netns, ips: [], eth, hostVeth: { ...hostVeth, pod: name } };
  }
  const peer = ipJson<IpLink[]>(name, ['link', 'show']).find((l) => l.ifindex === link.link_index);
  if (!peer) return null;
  const ips = globalAddrs(ipJson<IpAddr[]>(name, ['addr', 'show']), peer.ifindex);
  return { name, node: nodeName, netns, ips, eth: device(nodeName, netns, peer, 'pod', name), hostVeth: { ...hostVeth, pod: name } };
}

/**
 * `ip netns list-id` (iproute2 6.1) stops after about 134 entries: a node with more pods has
 * nsids it leaves out. Those are asked for one by one, in one `ip -batch` run (-force: a pod
 * gone meanwhile fails its line, not the others).
 */
function namesOfMissingNsids(ns: string | null, ids: number[], into: Map<number, string>): void {
  const wanted = [...new Set(ids)];
  if (!wanted.length) return;
  const r = spawnSync('ip', [...(ns ? ['-n', ns] : []), '-j', '-force', '-b', '-'], {
    input: wanted.map((id) => `netns list-id nsid ${id}\n`).join(''), encoding: 'utf8', timeout: EXEC_TIMEOUT_MS, killSignal: 'SIGKILL',
  });
  // one JSON array a line, for each line that worked
  for (const line of (r.stdout ?? '').split('\n')) {
    if (!line.startsWith('[')) continue;
    try {
      for (const x of JSON.parse(line) as { nsid: number; name?: string }[]) if (x.name) into.set(x.nsid, x.name);
    } catch {
      // a line cut short: its pod is left out, as before
    }
  }
}

/** nodeNetns: names of all namespaces acting as nodes, so a veth between two nodes is not taken for a pod. */
export function discoverNode(netns: NetnsRef, nodeNetns: Set<string> = new Set(), opts: DiscoverOptions = {}): NodeTopology {
  const ns = ipNs(netns);
  const links = ipJson<IpLink[]>(ns, ['-d', 'link', 'show']);
  const addrs = ipJson<IpAddr[]>(ns, ['addr', 'show']);
  const routes = ipJson<IpRoute[]>(ns, ['route', 'show']);
  const nsNames = new Map(ipJson<{ nsid: number; name?: string }[]>(ns, ['netns', 'list-id']).filter((x) => x.name).map((x) => [x.nsid, x.name!]));
  namesOfMissingNsids(ns, links.map((l) => l.link_netnsid).filter((id): id is number => id !== undefined && !nsNames.has(id)), nsNames);
  const kind = (l: IpLink) => l.linkinfo?.info_kind;
  const name = netns.name;

  // an IPIP device is the tunnel only when routes use it (the kernel makes tunl0 in every namespace)
  const tunnelLink = links.find((l) => kind(l) === 'vxlan') ?? links.find((l) => kind(l) === 'ipip' && routes.some((r) => r.dev === l.ifname));
  const tunnel = tunnelLink ? device(name, netns, tunnelLink, 'tunnel') : null;
  // the underlay carries the node IP: the tunnel's local address, else routes via other nodes, else the default route
  const byAddr = tunnel?.vxlan?.local ? links.find((l) => globalAddrs(addrs, l.ifindex).includes(tunnel.vxlan!.local)) : undefined;
  const viaGw = routes.find((r) => r.gateway && r.dev && r.dev !== tunnelLink?.ifname);
  // last, the device with the node's address: not the tunnel, not a bridge, not a pod's veth
  const byNodeAddr = () => links.find((l) => l.ifname !== 'lo' && l.ifindex !== tunnelLink?.ifindex && kind(l) !== 'bridge' && !l.master &&
    globalAddrs(addrs, l.ifindex).length > 0 && (kind(l) !== 'veth' || (l.link_netnsid !== undefined && nodeNetns.has(nsNames.get(l.link_netnsid) ?? ''))));
  const underlayLink = byAddr ?? links.find((l) => l.ifname === viaGw?.dev) ?? links.find((l) => l.ifname === routes.find((r) => r.dst === 'default')?.dev) ?? byNodeAddr();
  const underlay = underlayLink ? device(name, netns, underlayLink, 'underlay') : null;

  const pods: Pod[] = [];
  let bridgeLink: IpLink | undefined;
  for (const l of links) {
    if (kind(l) !== 'veth' || l.ifindex === underlayLink?.ifindex) continue;
    const pod = podBehind(name, device(name, netns, l, 'host-veth'), l, nsNames, nodeNetns, opts.podDetails ?? true);
    if (!pod) continue;
    pods.push(pod);
    if (l.master) bridgeLink ??= links.find((b) => b.ifname === l.master && kind(b) === 'bridge');
  }
  bridgeLink ??= links.find((l) => kind(l) === 'bridge');
  const nodeIp = tunnel?.vxlan?.local || (underlayLink ? globalAddrs(addrs, underlayLink.ifindex)[0] ?? null : null);
  const bridge = bridgeLink ? device(name, netns, bridgeLink, 'bridge') : null;
  // Calico's mark: each pod reached by a /32 route through its own veth, no bridge
  const routedPods = pods.length > 0 && pods.every((p) => routes.some((r) => r.dev === p.hostVeth.name && p.ips.some((ip) => r.dst === ip || r.dst === `${ip}/32`)));
  const bgp = routes.some((r) => (r as IpRoute & { protocol?: string }).protocol === 'bird');
  const cni = detectCni({
    tunnel: tunnelLink && { kind: tunnelLink.linkinfo?.info_kind, port: tunnelLink.linkinfo?.info_data?.port },
    bridge: !!bridge, calicoRouted: bgp || (routedPods && !tunnelLink),
  });
  return { name, netns, ip: nodeIp, underlay, bridge, tunnel, pods, cni };
}

export function discoverCluster(nodes: NetnsRef[]): ClusterTopology {
  const names = new Set(nodes.map((n) => n.name));
  const topo = { nodes: nodes.map((n) => discoverNode(n, names)) };
  if (topo.nodes.every((n) => !n.underlay && !n.bridge && !n.tunnel && n.pods.length === 0)) {
    throw new NettraceError('NOT_FOUND', `no device to hook in ${[...names].join(', ')}`, 'name the namespaces that act as nodes with --netns');
  }
  return topo;
}
