// Test-cluster pods made by a real container runtime (`testbed up --cri`): one containerd per node,
// started inside the node's network namespace, makes pod sandboxes through its CRI the way kubelet
// does, and the CNI bridge and host-local plugins wire them to the node's cni0. The sandboxes get
// Kubernetes identities (namespace, name, uid) that only the CRI knows.
import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { NettraceError } from '../errors';
import { run } from '../exec';
import type { CriClient } from '../k8s/criClient';
import type { CniMode } from '../topology/cni';
import type { TestbedCri, TestbedCriNode, TestbedSandbox, TestbedState } from './state';

const RUN_DIR = '/run/nettrace/testbed';
/** where libcni caches each attachment's result (containerd 1.6 does not move it) */
export const CNI_RESULTS_DIR = '/var/lib/cni/results';
const CNI_BIN_DIR = '/usr/lib/cni';
/** the CRI plugin's default sandbox image in containerd 1.6: ours, built here, answers to its name */
const PAUSE_IMAGE = 'registry.k8s.io/pause:3.6';

/** The modes with a cni0 bridge for the CNI bridge plugin to join; Calico and Weave wire pods otherwise. */
export const CRI_MODES: readonly CniMode[] = ['flannel-vxlan', 'flannel-host-gw'];

/** The pods the runtime makes, one on each node; their addresses come from host-local. */
export const CRI_PODS = [
  { namespace: 'default', name: 'frontend', node: 0 },
  { namespace: 'default', name: 'backend', node: 1 },
] as const;

export function checkCriMode(cni: CniMode): void {
  if (!CRI_MODES.includes(cni)) {
    throw new NettraceError('TESTBED', `testbed up --cri makes pods with the CNI bridge plugin on cni0, which ${cni} has not`, `use --cri with --cni ${CRI_MODES.join(' or --cni ')}`);
  }
}

function have(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { timeout: 10_000 }).status === 0;
}

export function requireCriTools(): void {
  const missing = ['containerd', 'containerd-shim-runc-v2', 'ctr', 'runc', 'nsenter', 'clang'].filter((c) => !have(c));
  if (!existsSync(path.join(CNI_BIN_DIR, 'bridge')) || !existsSync(path.join(CNI_BIN_DIR, 'host-local'))) missing.push(`${CNI_BIN_DIR}/bridge`);
  if (missing.length) {
    throw new NettraceError('TESTBED', `testbed up --cri needs ${missing.join(', ')}, which ${missing.length > 1 ? 'are' : 'is'} not installed`,
      'install them: apt-get install containerd runc containernetworking-plugins clang libc6-dev (make deps does)');
  }
}

/** Where a node's containerd keeps everything: one directory, removed whole by down. */
export function criNodeDir(netns: string): string {
  return path.join(RUN_DIR, `${netns}.cri`);
}

/**
 * The cgroup the node's sandboxes go under (as kubelet's /kubepods): the runtime makes
 * CGROUP/ID in each hierarchy and down removes exactly those, never the runtime's defaults.
 */
export function criCgroupParent(netns: string): string {
  return `/nettrace-testbed-${netns}`;
}

function criNode(netns: string): TestbedCriNode {
  const dir = criNodeDir(netns);
  return { netns, dir, socket: path.join(dir, 'containerd.sock'), pid: null, network: `nettrace-${netns}` };
}

/**
 * The cri part of a state file, checked before down kills or deletes anything it names: every
 * directory is the one up uses for one of the cluster's nodes, every sandbox netns a cni-<uuid>.
 */
export function checkCriState(state: TestbedState, bad: (why: string) => Error): void {
  const cri = state.cri as TestbedCri | undefined;
  if (cri === undefined) return;
  if (!cri || typeof cri !== 'object' || !Array.isArray(cri.nodes) || !Array.isArray(cri.sandboxes)) throw bad('has a cri entry without nodes and sandboxes');
  const nodes = new Set(state.nodes.map((n) => n?.netns));
  for (const n of cri.nodes) {
    const want = nodes.has(n?.netns) ? criNode(n.netns) : null;
    if (!want || n.dir !== want.dir || n.socket !== want.socket || n.network !== want.network || !(n.pid === null || Number.isInteger(n.pid))) {
      throw bad(`names a containerd ${JSON.stringify(n)} that is not one of this cluster's`);
    }
  }
  for (const s of cri.sandboxes) {
    if (!s || !/^[0-9a-f]{64}$/.test(String(s.id)) || !/^(cni-[0-9a-f-]{36})?$/.test(String(s.netns))) throw bad(`names a sandbox ${JSON.stringify(s)} that containerd did not make`);
  }
}

/** The pause process every sandbox runs: sleeps until TERM/INT, reaps what is left to it. */
const PAUSE_C = `#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
static void quit(int s) { (void)s; _exit(0); }
static void reap(int s) { (void)s; while (waitpid(-1, 0, WNOHANG) > 0) {} }
int main(void) {
  signal(SIGTERM, quit); signal(SIGINT, quit); signal(SIGCHLD, reap);
  for (;;) pause();
}
`;

function sha256(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

/** A one-layer image with /pause, as a docker-archive tar that `ctr images import` reads; no registry. */
function buildPauseImage(dir: string): string {
  const work = path.join(dir, 'pause');
  const rootfs = path.join(work, 'rootfs');
  mkdirSync(rootfs, { recursive: true });
  writeFileSync(path.join(work, 'pause.c'), PAUSE_C);
  run('clang', ['-static', '-O2', '-o', path.join(rootfs, 'pause'), path.join(work, 'pause.c')], { timeoutMs: 120_000 });
  const image = path.join(work, 'image');
  mkdirSync(image);
  run('tar', ['-C', rootfs, '--owner=0', '--group=0', '--numeric-owner', '-cf', path.join(image, 'layer.tar'), 'pause']);
  const arch = process.arch === 'x64' ? 'amd64' : process.arch;
  const config = JSON.stringify({
    architecture: arch, os: 'linux',
    config: { Entrypoint: ['/pause'] },
    rootfs: { type: 'layers', diff_ids: [`sha256:${sha256(readFileSync(path.join(image, 'layer.tar')))}`] },
  });
  const configName = `${sha256(config)}.json`;
  writeFileSync(path.join(image, configName), config);
  writeFileSync(path.join(image, 'manifest.json'), JSON.stringify([{ Config: configName, RepoTags: [PAUSE_IMAGE], Layers: ['layer.tar'] }]));
  const tar = path.join(work, 'pause.tar');
  run('tar', ['-C', image, '-cf', tar, 'manifest.json', configName, 'layer.tar']);
  return tar;
}

function containerdConfig(n: TestbedCriNode): string {
  const q = (s: string) => JSON.stringify(s);
  const cri = '[plugins."io.containerd.grpc.v1.cri"';
  return [
    'version = 2',
    `root = ${q(path.join(n.dir, 'root'))}`,
    `state = ${q(path.join(n.dir, 'state'))}`,
    // snapshotters and services a pod sandbox does not need; opt would write to /opt
    'disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.internal.v1.opt", "io.containerd.tracing.processor.v1.otlp"]',
    '[grpc]', `  address = ${q(n.socket)}`,
    '[ttrpc]', `  address = ${q(`${n.socket}.ttrpc`)}`,
    '[debug]', '  address = ""',
    '[metrics]', '  address = ""',
    `${cri}]`,
    `  sandbox_image = ${q(PAUSE_IMAGE)}`,
    // root here may lack CAP_SYS_RESOURCE: without this, runc cannot lower the sandbox's oom_score_adj
    '  restrict_oom_score_adj = true',
    '  stream_server_address = "127.0.0.1"', '  stream_server_port = "0"',
    `${cri}.containerd]`, '  snapshotter = "overlayfs"', '  default_runtime_name = "runc"',
    `${cri}.containerd.runtimes.runc]`, '  runtime_type = "io.containerd.runc.v2"',
    `${cri}.containerd.runtimes.runc.options]`, `  Root = ${q(path.join(n.dir, 'runc'))}`, '  SystemdCgroup = false',
    `${cri}.cni]`, `  bin_dir = ${q(CNI_BIN_DIR)}`, `  conf_dir = ${q(path.join(n.dir, 'net.d'))}`, '  max_conf_num = 1',
    '',
  ].join('\n');
}

/** As flannel's CNI config delegates it: the bridge plugin on cni0, host-local in the node's pod subnet. */
function cniConflist(n: TestbedCriNode, podCidr: string, mtu: number): string {
  const base = podCidr.replace(/\.0\/24$/, '');
  return JSON.stringify({
    cniVersion: '1.0.0',
    name: n.network,
    plugins: [{
      type: 'bridge', bridge: 'cni0', isGateway: true, ipMasq: false, hairpinMode: false, mtu,
      ipam: {
        type: 'host-local',
        // above the testbed's fixed pods (.5, .8): no address is handed out twice
        ranges: [[{ subnet: podCidr, rangeStart: `${base}.100`, rangeEnd: `${base}.199`, gateway: `${base}.1` }]],
        routes: [{ dst: '0.0.0.0/0' }],
        dataDir: path.join(n.dir, 'ipam'),
      },
    }],
  }, null, 2);
}

// gRPC and protobufjs are megabytes of heap that every nettrace command would carry (testbed.ts is
// loaded for --netns defaults): only `testbed up --cri` and down of a CRI testbed load them
const grpcSide = async () => ({ ...(await import('../k8s/criClient')), ...(await import('../k8s/cri')) });

async function waitForRuntime(n: TestbedCriNode, client: CriClient, logFile: string): Promise<string> {
  const until = Date.now() + 20_000;
  let last: unknown;
  while (Date.now() < until) {
    if (n.pid !== null && !alive(n.pid)) break;
    if (existsSync(n.socket)) {
      try {
        const v = await client.version();
        return `${v.runtime_name} ${v.runtime_version} (CRI ${v.runtime_api_version})`;
      } catch (err) {
        last = err;
      }
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  const log = existsSync(logFile) ? readFileSync(logFile, 'utf8').trim().split('\n').slice(-1)[0] : '';
  throw new Error(`containerd in ${n.netns} did not come up (${log || (last as Error | undefined)?.message || 'no log'})`);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * Starts a containerd in each node, imports the pause image and runs the pods' sandboxes. The
 * state is saved (through `save`) before each thing is made, so down finds it after any failure.
 */
export async function criUp(state: TestbedState, save: (s: TestbedState) => void, podMtu?: number): Promise<TestbedCri> {
  const { CriClient, netnsFromInfo } = await grpcSide();
  const cri: TestbedCri = { runtime: '', nodes: state.nodes.map((n) => criNode(n.netns)), sandboxes: [] };
  state.cri = cri;
  save(state);
  const mtu = podMtu ?? (state.cni === 'flannel-vxlan' ? 1450 : 1500);
  const clients: CriClient[] = [];
  try {
    for (const [i, n] of cri.nodes.entries()) {
      mkdirSync(path.join(n.dir, 'net.d'), { recursive: true });
      writeFileSync(path.join(n.dir, 'config.toml'), containerdConfig(n));
      writeFileSync(path.join(n.dir, 'net.d', '10-nettrace.conflist'), cniConflist(n, state.nodes[i]!.podCidr, mtu));
      const logFile = path.join(n.dir, 'containerd.log');
      const log = openSync(logFile, 'a');
      // nsenter --net only: `ip netns exec` also remounts /sys, and runc then finds no cgroup mount
      const child = spawn('nsenter', [`--net=/run/netns/${n.netns}`, 'containerd', '--config', path.join(n.dir, 'config.toml')],
        { detached: true, stdio: ['ignore', log, log] });
      closeSync(log);
      child.unref();
      n.pid = child.pid ?? null;
      save(state);
      const client = new CriClient(n.socket);
      clients.push(client);
      cri.runtime = await waitForRuntime(n, client, logFile);
    }
    const tar = buildPauseImage(cri.nodes[0]!.dir);
    for (const n of cri.nodes) run('ctr', ['-a', n.socket, '-n', 'k8s.io', 'images', 'import', tar], { timeoutMs: 60_000 });
    for (const pod of CRI_PODS) {
      const n = cri.nodes[pod.node]!;
      const client = clients[pod.node]!;
      const uid = randomUUID();
      const id = await client.runSandbox({
        metadata: { name: pod.name, namespace: pod.namespace, uid, attempt: 0 },
        hostname: pod.name,
        log_directory: path.join(n.dir, 'pods', uid),
        // what kubelet puts on a sandbox: the pod's labels plus its identity
        labels: { app: pod.name, 'io.kubernetes.pod.name': pod.name, 'io.kubernetes.pod.namespace': pod.namespace, 'io.kubernetes.pod.uid': uid },
        annotations: { 'kubernetes.io/config.source': 'api', 'kubernetes.io/config.seen': new Date().toISOString() },
        linux: { cgroup_parent: criCgroupParent(n.netns), security_context: { namespace_options: { network: 'POD', pid: 'CONTAINER', ipc: 'POD' } } },
      });
      const sandbox: TestbedSandbox = { id, node: n.netns, namespace: pod.namespace, name: pod.name, uid, ip: '', netns: '' };
      cri.sandboxes.push(sandbox);
      save(state);
      const st = await client.sandboxStatus(id, true);
      const netnsPath = netnsFromInfo(st.info);
      sandbox.ip = st.status?.network?.ip ?? '';
      sandbox.netns = netnsPath ? path.basename(netnsPath) : '';
      if (!sandbox.ip || !/^cni-[0-9a-f-]{36}$/.test(sandbox.netns)) throw new Error(`containerd made sandbox ${pod.namespace}/${pod.name} without an address or network namespace (${sandbox.ip || 'no ip'}, ${netnsPath ?? 'no netns'})`);
      save(state);
    }
    return cri;
  } finally {
    for (const c of clients) c.close();
  }
}

/**
 * Stops and removes every sandbox of each node's containerd through its CRI (so the runtime tears
 * down the CNI attachment, the netns and the shim itself), then leaves the rest to criCleanup.
 * A runtime that is gone or does not answer is left to criCleanup too.
 */
export async function criStopSandboxes(cri: TestbedCri): Promise<void> {
  const { CriClient } = await grpcSide();
  await Promise.all(cri.nodes.map(async (n) => {
    if (n.pid === null || !alive(n.pid) || !existsSync(n.socket)) return;
    const client = new CriClient(n.socket, 5_000);
    try {
      const all = await client.listReadySandboxes().catch(() => []);
      const ids = new Set([...all.map((s) => s.id), ...cri.sandboxes.filter((s) => s.node === n.netns).map((s) => s.id)]);
      for (const id of ids) {
        await client.stopSandbox(id).catch(() => undefined);
        await client.removeSandbox(id).catch(() => undefined);
      }
    } finally {
      client.close();
    }
  }));
}

function cmdline(pid: string): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
  } catch {
    return '';
  }
}

/** Processes whose command line names this node's directory: its containerd and shims. */
function processesOf(n: TestbedCriNode): number[] {
  return readdirSync('/proc').filter((p) => /^\d+$/.test(p) && cmdline(p).includes(`${n.dir}/`)).map(Number);
}

function killAndWait(pids: number[], signal: NodeJS.Signals, ms: number): void {
  for (const pid of pids) {
    try {
      process.kill(pid, signal);
    } catch {
      // already gone
    }
  }
  const until = Date.now() + ms;
  while (pids.some(alive) && Date.now() < until) spawnSync('sleep', ['0.05']);
}

/** Mount points under dir (sandbox root filesystems, shm), deepest first. */
function mountsUnder(dir: string): string[] {
  const lines = readFileSync('/proc/self/mountinfo', 'utf8').split('\n');
  return lines.map((l) => l.split(' ')[4] ?? '').filter((m) => m === dir || m.startsWith(`${dir}/`)).sort((a, b) => b.length - a.length);
}

/** Where the cgroup hierarchies are mounted (v1: one per controller set; v2: one). */
function cgroupRoots(): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => l.split(' '))
    .filter((f) => { const sep = f.indexOf('-'); return sep > 0 && (f[sep + 1] === 'cgroup' || f[sep + 1] === 'cgroup2'); })
    .map((f) => f[4]!);
}

/** The node's sandbox cgroups (empty once their processes are gone), then their parent. */
function removeCgroups(netns: string): void {
  for (const root of cgroupRoots()) {
    const parent = path.join(root, criCgroupParent(netns));
    if (!existsSync(parent)) continue;
    for (const e of readdirSync(parent, { withFileTypes: true })) {
      if (e.isDirectory() && /^[0-9a-f]{64}$/.test(e.name)) spawnSync('rmdir', [path.join(parent, e.name)]);
    }
    spawnSync('rmdir', [parent]);
  }
}

/** libcni's cache entries of the node's sandboxes: ours (NETWORK-ID-eth0) and containerd's loopback. */
function removeCniResults(n: TestbedCriNode, ids: Set<string>): void {
  if (!existsSync(CNI_RESULTS_DIR)) return;
  const files = readdirSync(CNI_RESULTS_DIR);
  // a sandbox a killed up never recorded is still named by our network's entry
  for (const f of files) {
    const m = new RegExp(`^${n.network.replace(/[.]/g, '\\.')}-([0-9a-f]{64})-eth0$`).exec(f);
    if (m) ids.add(m[1]!);
  }
  for (const f of files) {
    const m = /^(.+)-([0-9a-f]{64})-(eth0|lo)$/.exec(f);
    if (m && ids.has(m[2]!) && (m[1] === n.network || m[1] === 'cni-loopback')) rmSync(path.join(CNI_RESULTS_DIR, f), { force: true });
  }
}

/** The processes in the node's sandbox cgroups: the pause processes, also of sandboxes never recorded. */
function sandboxProcesses(netns: string): number[] {
  const pids = new Set<number>();
  for (const root of cgroupRoots()) {
    const parent = path.join(root, criCgroupParent(netns));
    if (!existsSync(parent)) continue;
    for (const e of readdirSync(parent, { withFileTypes: true })) {
      if (!e.isDirectory() || !/^[0-9a-f]{64}$/.test(e.name)) continue;
      try {
        for (const p of readFileSync(path.join(parent, e.name, 'cgroup.procs'), 'utf8').split('\n')) if (/^\d+$/.test(p)) pids.add(Number(p));
      } catch {
        // removed meanwhile
      }
    }
  }
  return [...pids];
}

function inode(file: string): number | null {
  try {
    return statSync(file).ino;
  } catch {
    return null;
  }
}

/** The cni-* namespaces in /run/netns these processes are in. */
function netnsOf(pids: number[]): string[] {
  const inodes = new Set(pids.map((p) => inode(`/proc/${p}/ns/net`)).filter((i): i is number => i !== null));
  if (!existsSync('/run/netns')) return [];
  return readdirSync('/run/netns').filter((f) => /^cni-[0-9a-f-]{36}$/.test(f) && inodes.has(inode(`/run/netns/${f}`) ?? -1));
}

/**
 * Removes what up made for the CRI pods, whatever state they are in (also after a killed up):
 * each sandbox's pause process and network namespace (recorded, or found through the node's
 * sandbox cgroups), containerd and its shims (by the pid and command lines that name the node's
 * directory), mounts under that directory, libcni's cache entries of our sandboxes, their
 * cgroups, then the directories. Returns the sandbox namespaces it deleted.
 */
export function criCleanup(cri: TestbedCri): string[] {
  const removed: string[] = [];
  const paused = cri.nodes.flatMap((n) => sandboxProcesses(n.netns));
  const sandboxNetns = new Set([...cri.sandboxes.map((s) => s.netns).filter(Boolean), ...netnsOf(paused)]);
  killAndWait(paused, 'SIGKILL', 2_000);
  for (const ns of sandboxNetns) {
    if (!existsSync(`/run/netns/${ns}`)) continue;
    const pids = run('ip', ['netns', 'pids', ns], { allowFail: true }).split('\n').filter(Boolean).map(Number);
    killAndWait(pids, 'SIGKILL', 2_000);
    run('ip', ['netns', 'del', ns], { allowFail: true });
    removed.push(ns);
  }
  const own = cri.nodes.flatMap((n) => (n.pid !== null && cmdline(String(n.pid)).includes(path.join(n.dir, 'config.toml')) ? [n.pid] : []));
  // TERM first, all nodes at once (containerd takes about a second to close): what is left after 3 s is killed
  killAndWait([...new Set([...own, ...cri.nodes.flatMap(processesOf)])], 'SIGTERM', 3_000);
  killAndWait(cri.nodes.flatMap(processesOf), 'SIGKILL', 2_000);
  for (const n of cri.nodes) {
    for (const m of mountsUnder(n.dir)) run('umount', ['-l', m], { allowFail: true });
    removeCniResults(n, new Set(cri.sandboxes.filter((s) => s.node === n.netns).map((s) => s.id)));
    removeCgroups(n.netns);
    rmSync(n.dir, { recursive: true, force: true });
  }
  return removed;
}
