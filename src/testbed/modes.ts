// The pod network of each CNI mode, as each CNI writes it on a node: devices,
// addresses, routes, neighbour and FDB entries; for calico-bgp, routes learned over real BGP.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { NettraceError } from '../errors';
import { ip, ipJson, run } from '../exec';
import type { CniMode } from '../topology/cni';
import type { TestbedState } from './state';

type Node = TestbedState['nodes'][number];
type Pod = TestbedState['pods'][number];

interface Mode {
  /** the pods' bridge, if the mode has one */
  bridge?: string;
  tunnel?: { name: string; kind: 'vxlan'; id: number; port: number } | { name: string; kind: 'ipip' };
  /** pod side: on a bridge with the node's gateway, or Calico's routed /32 with proxy ARP */
  pods: 'bridged' | 'routed';
  /** between nodes when there is no tunnel: static routes (host-gw) or BGP (bird2) */
  routes?: 'static' | 'bgp';
  /** refuse early, with the reason, when the kernel or the machine lacks something */
  check?: () => void;
}

const VXLAN_MTU = 1450;
/** kubeadm's default Service range: every testbed ClusterIP is in it */
const SERVICE_CIDR = '10.96.0.0/12';
const RUN_DIR = '/run/nettrace/testbed';

export const MODES: Record<CniMode, Mode> = {
  'flannel-vxlan': { bridge: 'cni0', tunnel: { name: 'flannel.1', kind: 'vxlan', id: 1, port: 8472 }, pods: 'bridged' },
  'flannel-host-gw': { bridge: 'cni0', pods: 'bridged', routes: 'static' },
  'calico-bgp': { pods: 'routed', routes: 'bgp', check: requireBird },
  'calico-vxlan': { tunnel: { name: 'vxlan.calico', kind: 'vxlan', id: 4096, port: 4789 }, pods: 'routed' },
  'calico-ipip': { tunnel: { name: 'tunl0', kind: 'ipip' }, pods: 'routed', check: requireIpip },
  weave: { bridge: 'weave', tunnel: { name: 'vxlan-6784', kind: 'vxlan', id: 6784, port: 6784 }, pods: 'bridged' },
};

function tunnelMac(node: number): string {
  return `0e:6e:74:00:00:0${node}`;
}

function hex(n: number): string {
  let s = '';
  for (let i = 0; i < n; i++) s += Math.floor(Math.random() * 16).toString(16);
  return s;
}

/** bird2's daemon; NETTRACE_BIRD names another binary */
function birdBinary(): string {
  return process.env.NETTRACE_BIRD ?? 'bird';
}

function requireBird(): void {
  if (spawnSync(birdBinary(), ['--version'], { timeout: 10_000 }).error) {
    throw new NettraceError('TESTBED', 'calico-bgp needs bird2 (BGP between the nodes), and `bird` is not installed', 'install it: apt-get install bird2 (make deps does)');
  }
}

/** Whether this kernel can make an IPIP device (there is no module to load on some kernels). */
export function kernelHasIpip(): boolean {
  // in a network namespace of its own that goes with the command: nothing to clean up
  return spawnSync('unshare', ['-n', 'ip', 'link', 'add', 'ntipip', 'type', 'ipip', 'local', '127.0.0.2'], { timeout: 10_000 }).status === 0;
}

function requireIpip(): void {
  if (!kernelHasIpip()) {
    throw new NettraceError('TESTBED', 'calico-ipip needs IPIP tunnels, and this kernel has none (CONFIG_NET_IPIP)',
      'use a kernel with the ipip module, or another mode: calico-vxlan, calico-bgp');
  }
}

export function buildMode(state: TestbedState, podMtu?: number): void {
  const mode = MODES[state.cni];
  const mtu = mode.tunnel ? VXLAN_MTU : 1500;
  state.nodes.forEach((n, i) => nodeSide(mode, n, i + 1, mtu));
  for (const pod of state.pods) {
    const idx = state.nodes.findIndex((n) => n.netns === pod.node) + 1;
    podSide(mode, state.nodes[idx - 1]!, idx, pod, podMtu ?? mtu);
  }
  const [n1, n2] = state.nodes as [Node, Node];
  for (const [self, other, otherIdx] of [[n1, n2, 2], [n2, n1, 1]] as const) remote(mode, self, other, otherIdx);
  for (const n of state.nodes) for (const svc of state.services) kubeProxyService(n, svc);
  if (mode.routes === 'bgp') startBgp(state);
}

/** A ClusterIP as kube-proxy's iptables mode writes it: KUBE-SERVICES -> KUBE-SVC-* -> KUBE-SEP-* DNAT. */
function kubeProxyService(n: Node, svc: TestbedState['services'][number]): void {
  const ipt = (args: string[]) => run('ip', ['netns', 'exec', n.netns, 'iptables', '-t', 'nat', ...args]);
  const tag = svc.name.toUpperCase().replace(/[^A-Z0-9]/g, '');
  if (svc.endpoints.length === 0) return kubeProxyReject(n, svc);
  if (!run('ip', ['netns', 'exec', n.netns, 'iptables', '-t', 'nat', '-S'], { allowFail: true }).includes('-N KUBE-SERVICES')) {
    ipt(['-N', 'KUBE-SERVICES']);
    ipt(['-A', 'PREROUTING', '-j', 'KUBE-SERVICES']);
    ipt(['-A', 'OUTPUT', '-j', 'KUBE-SERVICES']);
  }
  ipt(['-N', `KUBE-SVC-${tag}`]);
  const proto = svc.proto ?? 'tcp';
  ipt(['-A', 'KUBE-SERVICES', '-d', `${svc.clusterIp}/32`, '-p', proto, '-m', proto, '--dport', String(svc.port), '-j', `KUBE-SVC-${tag}`]);
  svc.endpoints.forEach((ep, i) => {
    const sep = `KUBE-SEP-${tag}${i}`;
    ipt(['-N', sep]);
    ipt(['-A', `KUBE-SVC-${tag}`, '-j', sep]);
    ipt(['-A', sep, '-p', proto, '-m', proto, '-j', 'DNAT', '--to-destination', ep]);
  });
}

/**
 * A Service without endpoints as kube-proxy's iptables mode writes it: no nat chains, a REJECT in
 * the filter table's KUBE-SERVICES (jumped to for new connections), so clients get a port unreachable.
 */
function kubeProxyReject(n: Node, svc: TestbedState['services'][number]): void {
  const ipt = (args: string[]) => run('ip', ['netns', 'exec', n.netns, 'iptables', '-t', 'filter', ...args]);
  if (!run('ip', ['netns', 'exec', n.netns, 'iptables', '-t', 'filter', '-S'], { allowFail: true }).includes('-N KUBE-SERVICES')) {
    ipt(['-N', 'KUBE-SERVICES']);
    for (const chain of ['INPUT', 'FORWARD', 'OUTPUT']) {
      ipt(['-A', chain, '-m', 'conntrack', '--ctstate', 'NEW', '-m', 'comment', '--comment', 'kubernetes service portals', '-j', 'KUBE-SERVICES']);
    }
    // an untranslated ClusterIP is routed like any address (a real node's default route) before
    // FORWARD rejects it; only the Service range here, so the tests' missing pod routes stay no-route
    ip(n.netns, ['route', 'add', SERVICE_CIDR, 'dev', 'eth0']);
  }
  const proto = svc.proto ?? 'tcp';
  ipt(['-A', 'KUBE-SERVICES', '-d', `${svc.clusterIp}/32`, '-p', proto, '-m', 'comment', '--comment', `${svc.namespace ?? 'default'}/${svc.name} has no endpoints`,
    '-m', proto, '--dport', String(svc.port), '-j', 'REJECT', '--reject-with', 'icmp-port-unreachable']);
}

function nodeSide(mode: Mode, n: Node, idx: number, mtu: number): void {
  if (mode.bridge) {
    ip(n.netns, ['link', 'add', mode.bridge, 'type', 'bridge']);
    ip(n.netns, ['addr', 'add', `10.244.${idx}.1/24`, 'dev', mode.bridge]);
    ip(n.netns, ['link', 'set', mode.bridge, 'up']);
  }
  const t = mode.tunnel;
  if (t?.kind === 'vxlan') {
    ip(n.netns, ['link', 'add', t.name, 'address', tunnelMac(idx), 'type', 'vxlan', 'id', String(t.id),
      'local', n.ip, 'dev', 'eth0', 'dstport', String(t.port), 'nolearning']);
    ip(n.netns, ['link', 'set', t.name, 'mtu', String(mtu), 'up']);
    ip(n.netns, ['addr', 'add', `10.244.${idx}.0/32`, 'dev', t.name]);
  } else if (t?.kind === 'ipip') {
    ip(n.netns, ['link', 'add', t.name, 'type', 'ipip']);
    ip(n.netns, ['link', 'set', t.name, 'mtu', '1480', 'up']);
    ip(n.netns, ['addr', 'add', `10.244.${idx}.0/32`, 'dev', t.name]);
  }
  if (mode.pods === 'routed') {
    // proxy ARP answers for 169.254.1.1 only if the node has a route for it out another device
    ip(n.netns, ['route', 'add', '169.254.1.1/32', 'dev', 'eth0']);
  }
}

function podSide(mode: Mode, n: Node, idx: number, pod: Pod, mtu: number): void {
  if (mode.pods === 'bridged') {
    // host side named like flannel's and weave's CNI: veth + 8 hex digits
    const hostVeth = `veth${hex(8)}`;
    ip(n.netns, ['link', 'add', hostVeth, 'mtu', String(mtu), 'type', 'veth', 'peer', 'name', 'eth0', 'mtu', String(mtu), 'netns', pod.netns]);
    ip(n.netns, ['link', 'set', hostVeth, 'master', mode.bridge!, 'up']);
    ip(pod.netns, ['addr', 'add', `${pod.ip}/24`, 'dev', 'eth0']);
    ip(pod.netns, ['link', 'set', 'eth0', 'up']);
    ip(pod.netns, ['route', 'add', 'default', 'via', `10.244.${idx}.1`]);
    return;
  }
  // Calico: cali + 11 hex digits, no address on the host side, proxy ARP, a /32 route per pod
  const cali = `cali${hex(11)}`;
  ip(n.netns, ['link', 'add', cali, 'mtu', String(mtu), 'type', 'veth', 'peer', 'name', 'eth0', 'mtu', String(mtu), 'netns', pod.netns]);
  // as calico-node sets them: answer the pod's ARP for its gateway, at once (proxy_delay defaults to 0.8 s)
  run('ip', ['netns', 'exec', n.netns, 'sysctl', '-qw', `net.ipv4.conf.${cali}.proxy_arp=1`, `net.ipv4.neigh.${cali}.proxy_delay=0`]);
  ip(n.netns, ['link', 'set', cali, 'up']);
  ip(n.netns, ['route', 'add', `${pod.ip}/32`, 'dev', cali, 'scope', 'link']);
  ip(pod.netns, ['addr', 'add', `${pod.ip}/32`, 'dev', 'eth0']);
  ip(pod.netns, ['link', 'set', 'eth0', 'up']);
  ip(pod.netns, ['route', 'add', '169.254.1.1', 'dev', 'eth0', 'scope', 'link']);
  ip(pod.netns, ['route', 'add', 'default', 'via', '169.254.1.1', 'dev', 'eth0']);
  // calico-node writes a permanent neighbour entry for each workload: the node never ARPs for a pod
  const mac = ipJson<{ address: string }[]>(pod.netns, ['link', 'show', 'dev', 'eth0'])[0]!.address;
  ip(n.netns, ['neigh', 'add', pod.ip, 'lladdr', mac, 'dev', cali, 'nud', 'permanent']);
}

/** How a node reaches the other node's pods. */
function remote(mode: Mode, self: Node, other: Node, otherIdx: number): void {
  const t = mode.tunnel;
  if (t?.kind === 'vxlan') {
    // as flanneld and calico-node write it: route via the remote tunnel address, its MAC, the FDB entry to the node
    const gw = `10.244.${otherIdx}.0`;
    ip(self.netns, ['neigh', 'add', gw, 'lladdr', tunnelMac(otherIdx), 'dev', t.name, 'nud', 'permanent']);
    run('bridge', ['-n', self.netns, 'fdb', 'append', tunnelMac(otherIdx), 'dev', t.name, 'dst', other.ip]);
    ip(self.netns, ['route', 'add', other.podCidr, 'via', gw, 'dev', t.name, 'onlink']);
  } else if (t?.kind === 'ipip') {
    ip(self.netns, ['route', 'add', other.podCidr, 'via', other.ip, 'dev', t.name, 'onlink']);
  } else if (mode.routes === 'static') {
    ip(self.netns, ['route', 'add', other.podCidr, 'via', other.ip, 'dev', 'eth0']);
  }
}

export function birdFiles(netns: string): { conf: string; ctl: string; pid: string } {
  return { conf: path.join(RUN_DIR, `${netns}.bird.conf`), ctl: path.join(RUN_DIR, `${netns}.bird.ctl`), pid: path.join(RUN_DIR, `${netns}.bird.pid`) };
}

/** One bird2 per node: iBGP between the nodes, each announcing its pod block. */
function startBgp(state: TestbedState): void {
  mkdirSync(RUN_DIR, { recursive: true });
  const [n1, n2] = state.nodes as [Node, Node];
  for (const [self, other] of [[n1, n2], [n2, n1]] as const) {
    const f = birdFiles(self.netns);
    writeFileSync(f.conf, [
      `router id ${self.ip};`,
      'protocol device { scan time 2; }',
      'protocol direct { ipv4; interface "eth0"; }',
      // learned pod blocks go into the kernel; nothing is read back from it
      'protocol kernel { ipv4 { import none; export where source = RTS_BGP; }; }',
      `protocol static { ipv4; route ${self.podCidr} blackhole; }`,
      'protocol bgp peer {',
      `  local ${self.ip} as 64512;`,
      `  neighbor ${other.ip} as 64512;`,
      '  direct;', // the peer is on the cable: its address is the next hop
      '  connect delay time 1; connect retry time 1; error wait time 1, 5;',
      '  ipv4 { import all; export where source = RTS_STATIC; next hop self; };',
      '}',
      '',
    ].join('\n'));
    run('ip', ['netns', 'exec', self.netns, birdBinary(), '-c', f.conf, '-s', f.ctl, '-P', f.pid]);
  }
  // the cluster is up when each node has the other's block from BGP
  const deadline = Date.now() + 20_000;
  for (const [self, other] of [[n1, n2], [n2, n1]] as const) {
    while (!ip(self.netns, ['route', 'show', other.podCidr]).includes(`via ${other.ip}`)) {
      if (Date.now() > deadline) throw new Error(`BGP: ${self.netns} has no route to ${other.podCidr} after 20 s (bird log: birdc -s ${birdFiles(self.netns).ctl} show protocols)`);
      spawnSync('sleep', ['0.2'], { timeout: 5_000 });
    }
  }
}

/** bird's files for these nodes; the daemons themselves die with their namespaces' processes. */
export function removeBirdFiles(netnsNames: string[]): void {
  for (const ns of netnsNames) {
    const f = birdFiles(ns);
    for (const p of [f.conf, f.ctl, f.pid]) if (existsSync(p)) rmSync(p, { force: true });
  }
}
