// The two-node test cluster built from network namespaces, in each CNI mode nettrace knows:
// the nodes and the cable between them are common, the mode makes the pod network.
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { NettraceError, usageError } from '../errors';
import { ip, run } from '../exec';
import type { CniMode } from '../topology/cni';
import { dnsLayout, dnsPathsOk, DNS_CLUSTER_IP, requireUnbound, startDns, stopDns } from './dns';
import { checkCriMode, checkCriState, criCleanup, criStopSandboxes, criUp, requireCriTools } from './cri';
import { buildMode, MODES, removeBirdFiles } from './modes';
import type { TestbedState } from './state';

export type { TestbedPod, TestbedState } from './state';

export interface TestbedOptions {
  /** prepended to every namespace name, so tests can run beside a demo */
  prefix?: string;
  /** pod eth0 MTU: the mode's (1450 with VXLAN); 1500 reproduces the seed's MTU case */
  podMtu?: number;
  cni?: CniMode;
  /** pods through a real containerd per node as well (testbedUpCri; flannel modes only) */
  cri?: boolean;
}

export const STATE_DIR = '/run/nettrace/testbed';

function layout(prefix: string, cni: CniMode = 'flannel-vxlan'): TestbedState {
  const node = (n: number) => ({ name: `node${n}`, netns: `${prefix}node${n}`, ip: `192.168.1.${100 + n}`, podCidr: `10.244.${n}.0/24` });
  return {
    cni,
    prefix,
    nodes: [node(1), node(2)],
    pods: [
      { name: 'pod-a', netns: `${prefix}pod-a`, ip: '10.244.1.5', node: `${prefix}node1`, labels: { app: 'pod-a' } },
      { name: 'pod-b', netns: `${prefix}pod-b`, ip: '10.244.2.8', node: `${prefix}node2`, labels: { app: 'pod-b' } },
      // the cluster DNS, on the node pod-a is not on: pod-a's queries cross every step
      { name: 'dns', netns: `${prefix}dns`, ip: '10.244.2.10', node: `${prefix}node2` },
    ],
    services: [
      { name: 'iperf', clusterIp: '10.96.0.20', port: 5201, endpoints: ['10.244.2.8:5201'] },
      // kube-dns as kube-proxy writes it: one Service port per protocol
      { name: 'kube-dns', namespace: 'kube-system', clusterIp: DNS_CLUSTER_IP, port: 53, proto: 'udp', endpoints: ['10.244.2.10:53'] },
      { name: 'kube-dns-tcp', namespace: 'kube-system', clusterIp: DNS_CLUSTER_IP, port: 53, proto: 'tcp', endpoints: ['10.244.2.10:53'] },
      // a Service whose selector matches no ready pod: kube-proxy rejects its connections
      { name: 'web', clusterIp: '10.96.0.80', port: 80, endpoints: [] },
    ],
    dns: dnsLayout(prefix, `${prefix}dns`, [`${prefix}pod-a`, `${prefix}pod-b`]),
  };
}

/**
 * A --prefix becomes part of namespace names (/run/netns/PREFIXnode1) and of the state file's
 * name (STATE_DIR/PREFIX.json), and down deletes what those name: so no `/`, no leading `.`
 * (no `..`), nothing a shell or `ip` would read as something else. "default" is the state file
 * of the cluster without a prefix.
 */
export function checkPrefix(prefix: string): string {
  if (prefix === '') return prefix;
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$/.test(prefix)) {
    throw usageError(`--prefix "${prefix}" is not a namespace name prefix`, 'use up to 32 letters, digits, `-`, `_` or `.`, starting with a letter or digit, e.g. --prefix t1-');
  }
  if (prefix === 'default') throw usageError('--prefix default is the name of the unprefixed cluster\'s state file', 'pick another prefix, e.g. --prefix default-');
  return prefix;
}

/** What `ip netns` accepts as a name and /run/netns holds as one file. */
function isNetnsName(name: unknown): name is string {
  return typeof name === 'string' && name.length <= 255 && /^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(name);
}

function statePath(prefix: string): string {
  return path.join(STATE_DIR, `${prefix || 'default'}.json`);
}

/**
 * A state file's text, checked before anything in it is deleted: it must be what `up` wrote for
 * this prefix, every namespace a plain name starting with the prefix.
 */
export function parseState(text: string, prefix: string, file = statePath(prefix)): TestbedState {
  const bad = (why: string) => new NettraceError('TESTBED', `the testbed state file ${file} ${why}`,
    `nettrace did not write it this way: check \`ip netns list\`, remove what is left by hand, then remove ${file}`);
  let state: TestbedState;
  try {
    state = JSON.parse(text) as TestbedState;
  } catch {
    throw bad('is not JSON');
  }
  if (!state || typeof state !== 'object' || !Array.isArray(state.nodes) || !Array.isArray(state.pods)) throw bad('lists no nodes and pods');
  if (state.prefix !== prefix) throw bad(`is for prefix "${String(state.prefix)}", not "${prefix}"`);
  for (const ns of [...state.nodes.map((n) => n?.netns), ...state.pods.map((p) => p?.netns)]) {
    if (!isNetnsName(ns) || !ns.startsWith(prefix)) throw bad(`names ${JSON.stringify(ns)}, not a namespace of this cluster`);
  }
  if (!dnsPathsOk(state)) throw bad('names DNS files that are not this cluster\'s');
  checkCriState(state, bad);
  return state;
}

/** The namespaces a cluster's state file says up made, pods first: exactly what down deletes. */
export function namespacesOf(state: TestbedState): string[] {
  return [...state.pods.map((p) => p.netns), ...state.nodes.map((n) => n.netns)];
}

function readState(prefix: string): TestbedState | null {
  const file = statePath(prefix);
  if (!existsSync(file)) return null;
  return parseState(readFileSync(file, 'utf8'), prefix, file);
}

export function writeState(state: TestbedState): void {
  mkdirSync(STATE_DIR, { recursive: true });
  writeFileSync(statePath(state.prefix), JSON.stringify(state, null, 2));
}

function netnsExists(name: string): boolean {
  return existsSync(`/run/netns/${name}`);
}

/** What `up` made, or null when no cluster with this prefix is up. */
export function testbedStatus(prefix = ''): TestbedState | null {
  const state = readState(checkPrefix(prefix));
  if (!state || state.building) return null;
  return namespacesOf(state).every(netnsExists) ? state : null;
}

export function testbedUp(opts: TestbedOptions = {}): TestbedState {
  const prefix = checkPrefix(opts.prefix ?? '');
  const cni = opts.cni ?? 'flannel-vxlan';
  const existing = testbedStatus(prefix);
  if (existing) {
    if (existing.cni === cni) return existing;
    throw new NettraceError('TESTBED', `a ${existing.cni} test cluster is up with prefix "${prefix}"`, `take it down first (nettrace testbed down${prefix ? ` --prefix ${prefix}` : ''})`);
  }
  testbedDown(prefix); // a half-built cluster from an earlier failure: its state file lists what it made
  const state = layout(prefix, cni);
  try {
    MODES[cni].check?.();
    requireUnbound();
  } catch (err) {
    if (err instanceof NettraceError) throw err;
    throw new NettraceError('TESTBED', `testbed up failed: ${(err as Error).message}`, 'nothing was made');
  }
  // a namespace we did not make is someone else's: never build into it, never delete it later
  const taken = namespacesOf(state).filter(netnsExists);
  if (taken.length) {
    throw new NettraceError('TESTBED', `network namespace${taken.length > 1 ? 's' : ''} ${taken.join(', ')} already exist${taken.length > 1 ? '' : 's'}, and no testbed state file says nettrace made ${taken.length > 1 ? 'them' : 'it'}`,
      `pick another --prefix, or if ${taken.length > 1 ? 'they are' : 'it is'} left over, remove ${taken.length > 1 ? 'them' : 'it'}: ip netns del ${taken[0]}`);
  }
  writeState({ ...state, building: true });
  try {
    build(state);
    buildMode(state, opts.podMtu);
    startDns(state, (s) => writeState({ ...s, building: true }));
  } catch (err) {
    testbedDown(prefix);
    if (err instanceof NettraceError && err.code === 'E_TESTBED') throw err;
    const e = err as Error;
    throw new NettraceError('TESTBED', `testbed up failed: ${e.message}`, 'check you are root and the kernel has veth, bridge and vxlan; nothing was left behind');
  }
  writeState(state);
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

/**
 * Removes what the state file of the cluster with this prefix says up made (also a half-built
 * one), and nothing else: no namespace is deleted for merely having a matching name.
 */
export function testbedDown(prefix = ''): string[] {
  const state = readState(checkPrefix(prefix));
  if (!state) return [];
  // the runtime's processes live in the nodes' namespaces, its sandboxes in namespaces of their own
  const removed: string[] = state.cri ? criCleanup(state.cri) : [];
  for (const ns of namespacesOf(state)) {
    if (!netnsExists(ns)) continue;
    // processes inside (a demo's HTTP server, bird) would keep the namespace alive
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
  // after the namespaces' processes are killed: an unbound whose pid up never read can no longer write its pid file
  stopDns(state.dns);
  rmSync(statePath(prefix), { force: true });
  return removed;
}

/**
 * testbedUp, then (with opts.cri) one containerd per node and pods made through its CRI:
 * default/frontend on node1, default/backend on node2. A failure removes everything up made.
 */
export async function testbedUpCri(opts: TestbedOptions = {}): Promise<TestbedState> {
  if (!opts.cri) return testbedUp(opts);
  checkCriMode(opts.cni ?? 'flannel-vxlan');
  requireCriTools();
  const state = testbedUp(opts);
  if (state.cri) return state;
  try {
    await criUp(state, writeState, opts.podMtu);
  } catch (err) {
    if (state.cri) await criStopSandboxes(state.cri).catch(() => undefined);
    testbedDown(state.prefix);
    if (err instanceof NettraceError && err.code === 'E_TESTBED') throw err;
    throw new NettraceError('TESTBED', `testbed up --cri failed: ${(err as Error).message}`, 'nothing was left behind; check containerd runs here (containerd --version) and see the cause above');
  }
  writeState(state);
  return state;
}

/** testbedDown, after asking each node's containerd to stop and remove its sandboxes. */
export async function testbedDownCri(prefix = ''): Promise<string[]> {
  const state = readState(checkPrefix(prefix));
  if (state?.cri) await criStopSandboxes(state.cri);
  return testbedDown(prefix);
}
