// The two-node test cluster built from network namespaces, in each CNI mode nettrace knows:
// the nodes and the cable between them are common, the mode makes the pod network.
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { NettraceError } from '../errors';
import { ip, run } from '../exec';
import type { CniMode } from '../topology/cni';
import { buildMode, MODES, removeBirdFiles } from './modes';
import type { TestbedState } from './state';

export type { TestbedPod, TestbedState } from './state';

export interface TestbedOptions {
  /** prepended to every namespace name, so tests can run beside a demo */
  prefix?: string;
  /** pod eth0 MTU: the mode's (1450 with VXLAN); 1500 reproduces the seed's MTU case */
  podMtu?: number;
  cni?: CniMode;
}

export const STATE_DIR = '/run/nettrace/testbed';

function layout(prefix: string, cni: CniMode = 'flannel-vxlan'): TestbedState {
  const node = (n: number) => ({ name: `node${n}`, netns: `${prefix}node${n}`, ip: `192.168.1.${100 + n}`, podCidr: `10.244.${n}.0/24` });
  return {
    cni,
    prefix,
    nodes: [node(1), node(2)],
    pods: [
      { name: 'pod-a', netns: `${prefix}pod-a`, ip: '10.244.1.5', node: `${prefix}node1` },
      { name: 'pod-b', netns: `${prefix}pod-b`, ip: '10.244.2.8', node: `${prefix}node2` },
    ],
    services: [{ name: 'iperf', clusterIp: '10.96.0.10', port: 5201, endpoints: ['10.244.2.8:5201'] }],
  };
}

function statePath(prefix: string): string {
  return path.join(STATE_DIR, `${prefix || 'default'}.json`);
}

function netnsExists(name: string): boolean {
  return existsSync(`/run/netns/${name}`);
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
  const cni = opts.cni ?? 'flannel-vxlan';
  const existing = testbedStatus(prefix);
  if (existing) {
    if (existing.cni === cni) return existing;
    throw new NettraceError('TESTBED', `a ${existing.cni} test cluster is up with prefix "${prefix}"`, `take it down first (nettrace testbed down${prefix ? ` --prefix ${prefix}` : ''})`);
  }
  testbedDown(prefix); // a half-built cluster from an earlier failure
  const state = layout(prefix, cni);
  try {
    MODES[cni].check?.();
    build(state);
    buildMode(state, opts.podMtu);
  } catch (err) {
    testbedDown(prefix);
    if (err instanceof NettraceError && err.code === 'E_TESTBED') throw err;
    const e = err as Error;
    throw new NettraceError('TESTBED', `testbed up failed: ${e.message}`, 'check you are root and the kernel has veth, bridge and vxlan; nothing was left behind');
  }
  mkdirSync(STATE_DIR, { recursive: true });
  writeFileSync(statePath(prefix), JSON.stringify(state, null, 2));
  return state;
}

/** What every mode shares: the namespaces and the cable between the nodes' eth0. */
function build(state: TestbedState): void {
  const [n1, n2] = state.nodes as [TestbedState['nodes'][0], TestbedState['nodes'][0]];
  for (const ns of [...state.nodes.map((n) => n.netns), ...state.pods.map((p) => p.netns)]) {
    run('ip', ['netns', 'add', ns]);
    ip(ns, ['link', 'set', 'lo', 'up']);
  }
  ip(n1.netns, ['link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', n2.netns]);
  for (const n of state.nodes) {
    ip(n.netns, ['addr', 'add', `${n.ip}/24`, 'dev', 'eth0']);
    ip(n.netns, ['link', 'set', 'eth0', 'up']);
    run('ip', ['netns', 'exec', n.netns, 'sysctl', '-qw', 'net.ipv4.ip_forward=1']);
  }
}

/** Removes everything a cluster with this prefix may have, even a half-built one. */
export function testbedDown(prefix = ''): string[] {
  const state = layout(prefix);
  // the namespaces' processes (a demo's HTTP server, bird) would keep them alive: killed below
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
  removeBirdFiles(state.nodes.map((n) => n.netns));
  rmSync(statePath(prefix), { force: true });
  return removed;
}
