// The seed's two-node Flannel VXLAN cluster built from network namespaces (design §6).
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { NettraceError } from '../errors';
import { ip, run } from '../exec';

export interface TestbedOptions {
  /** prepended to every namespace name, so tests can run beside a demo */
  prefix?: string;
  /** pod eth0 MTU: 1450 as flannel sets it; 1500 reproduces the seed's MTU case */
  podMtu?: number;
}

export interface TestbedPod {
  name: string;
  netns: string;
  ip: string;
  node: string;
}

export interface TestbedState {
  cni: 'flannel-vxlan';
  prefix: string;
  nodes: { name: string; netns: string; ip: string; podCidr: string }[];
  pods: TestbedPod[];
}

export const CNI_MODES = ['flannel-vxlan'] as const;
const STATE_DIR = '/run/nettrace/testbed';
const VNI = 1;
const VXLAN_PORT = 8472;
const TUNNEL_MTU = 1450;

function layout(prefix: string): TestbedState {
  const node = (n: number) => ({ name: `node${n}`, netns: `${prefix}node${n}`, ip: `192.168.1.${100 + n}`, podCidr: `10.244.${n}.0/24` });
  return {
    cni: 'flannel-vxlan',
    prefix,
    nodes: [node(1), node(2)],
    pods: [
      { name: 'pod-a', netns: `${prefix}pod-a`, ip: '10.244.1.5', node: `${prefix}node1` },
      { name: 'pod-b', netns: `${prefix}pod-b`, ip: '10.244.2.8', node: `${prefix}node2` },
    ],
  };
}

function statePath(prefix: string): string {
  return path.join(STATE_DIR, `${prefix || 'default'}.json`);
}

function netnsExists(name: string): boolean {
  return existsSync(`/run/netns/${name}`);
}

function tunnelMac(node: number): string {
  return `0e:6e:74:00:00:0${node}`;
}

/** What `up` made, or null when no cluster with this prefix is up. */
export function testbedStatus(prefix = ''): TestbedState | null {
  const file = statePath(prefix);
  if (!existsSync(file)) return null;
  const state = JSON.parse(readFileSync(file, 'utf8')) as TestbedState;
  const all = [...state.nodes.map((n) => n.netns), ...state.pods.map((p) => p.netns)];
  return all.every(netnsExists) ? state : null;
}

export function testbedUp(opts: TestbedOptions = {}): TestbedState {
  const prefix = opts.prefix ?? '';
  const existing = testbedStatus(prefix);
  if (existing) return existing;
  testbedDown(prefix); // a half-built cluster from an earlier failure
  const state = layout(prefix);
  try {
    build(state, opts.podMtu ?? TUNNEL_MTU);
  } catch (err) {
    testbedDown(prefix);
    const e = err as Error;
    throw new NettraceError('TESTBED', `testbed up failed: ${e.message}`, 'check you are root and the kernel has veth, bridge and vxlan; nothing was left behind');
  }
  mkdirSync(STATE_DIR, { recursive: true });
  writeFileSync(statePath(prefix), JSON.stringify(state, null, 2));
  return state;
}

function build(state: TestbedState, podMtu: number): void {
  const [n1, n2] = state.nodes as [TestbedState['nodes'][0], TestbedState['nodes'][0]];
  for (const ns of [...state.nodes.map((n) => n.netns), ...state.pods.map((p) => p.netns)]) {
    run('ip', ['netns', 'add', ns]);
    ip(ns, ['link', 'set', 'lo', 'up']);
  }
  // the physical network: one cable between the nodes' eth0
  ip(n1.netns, ['link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', n2.netns]);
  state.nodes.forEach((n, i) => {
    const idx = i + 1;
    ip(n.netns, ['addr', 'add', `${n.ip}/24`, 'dev', 'eth0']);
    ip(n.netns, ['link', 'set', 'eth0', 'up']);
    run('ip', ['netns', 'exec', n.netns, 'sysctl', '-qw', 'net.ipv4.ip_forward=1']);
    // cni0: the pods' bridge and gateway
    ip(n.netns, ['link', 'add', 'cni0', 'type', 'bridge']);
    ip(n.netns, ['addr', 'add', `10.244.${idx}.1/24`, 'dev', 'cni0']);
    ip(n.netns, ['link', 'set', 'cni0', 'up']);
    // flannel.1 as flanneld creates it
    ip(n.netns, ['link', 'add', 'flannel.1', 'address', tunnelMac(idx), 'type', 'vxlan', 'id', String(VNI),
      'local', n.ip, 'dev', 'eth0', 'dstport', String(VXLAN_PORT), 'nolearning']);
    ip(n.netns, ['link', 'set', 'flannel.1', 'mtu', String(TUNNEL_MTU), 'up']);
    ip(n.netns, ['addr', 'add', `10.244.${idx}.0/32`, 'dev', 'flannel.1']);
  });
  // the static entries flanneld writes for each remote node: route, neighbour, FDB
  for (const [self, other, otherIdx] of [[n1, n2, 2], [n2, n1, 1]] as const) {
    const gw = `10.244.${otherIdx}.0`;
    ip(self.netns, ['neigh', 'add', gw, 'lladdr', tunnelMac(otherIdx), 'dev', 'flannel.1', 'nud', 'permanent']);
    run('bridge', ['-n', self.netns, 'fdb', 'append', tunnelMac(otherIdx), 'dev', 'flannel.1', 'dst', other.ip]);
    ip(self.netns, ['route', 'add', other.podCidr, 'via', gw, 'dev', 'flannel.1', 'onlink']);
  }
  for (const pod of state.pods) {
    const node = state.nodes.find((n) => n.netns === pod.node)!;
    const gateway = node.podCidr.replace(/0\/24$/, '1');
    // host side named like the CNI's: veth + 8 hex digits
    const hostVeth = `veth${Math.floor(Math.random() * 0xffffffff).toString(16).padStart(8, '0')}`;
    ip(node.netns, ['link', 'add', hostVeth, 'mtu', String(podMtu), 'type', 'veth', 'peer', 'name', 'eth0', 'mtu', String(podMtu), 'netns', pod.netns]);
    ip(node.netns, ['link', 'set', hostVeth, 'master', 'cni0', 'up']);
    ip(pod.netns, ['addr', 'add', `${pod.ip}/24`, 'dev', 'eth0']);
    ip(pod.netns, ['link', 'set', 'eth0', 'up']);
    ip(pod.netns, ['route', 'add', 'default', 'via', gateway]);
  }
}

/** Removes everything a cluster with this prefix may have, even a half-built one. */
export function testbedDown(prefix = ''): string[] {
  const state = layout(prefix);
  const removed: string[] = [];
  for (const ns of [...state.pods.map((p) => p.netns), ...state.nodes.map((n) => n.netns)]) {
    if (!netnsExists(ns)) continue;
    // processes inside (a demo's HTTP server) would keep the namespace alive
    const pids = run('ip', ['netns', 'pids', ns], { allowFail: true }).split('\n').filter(Boolean);
    for (const pid of pids) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        // already gone
      }
    }
    run('ip', ['netns', 'del', ns]);
    removed.push(ns);
  }
  rmSync(statePath(prefix), { force: true });
  return removed;
}
