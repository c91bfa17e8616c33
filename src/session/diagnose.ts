// diagnose as a session: send probes of the flow from its source pod (or watch real traffic),
// follow them through the nine steps, and judge where and why the flow breaks or slows.
import { spawnSync } from 'node:child_process';
import { NettraceError } from '../errors';
import { diagnose, type Diagnosis } from '../flow/verdict';
import type { PacketPath } from '../flow/path';
import type { FlowSpec } from '../flow/spec';
import type { AttachMechanism } from '../probe/attach';
import { checkReach, deviceMtu, forwardDropRules } from '../topology/inspect';
import { findPodByIp, type NodeTopology, type Pod } from '../topology/model';
import { nodeNames, serviceAt, type ClusterView } from './cluster';
import { startFollow, type ReadyEvent } from './follow';

export interface DiagnoseSessionOptions {
  flow: FlowSpec;
  cluster: ClusterView;
  passive: boolean;
  /** how long to watch real traffic with passive */
  seconds: number;
  attach: AttachMechanism;
  onReady?(r: ReadyEvent): void;
  onWarning?(message: string): void;
}

const PROBES = 5;
/** the follow grace time: a stopped packet is reported by then */
const GRACE_MS = 1000;

/** Probe packets of the flow's protocol from inside the source pod, then one full-size one with DF. */
function sendProbes(pod: Pod, f: FlowSpec, podMtu: number): void {
  const inPod = (cmd: string[]) => spawnSync('ip', ['netns', 'exec', pod.netns.name, ...cmd], { stdio: 'ignore', timeout: 10_000 });
  const bash = (script: string) => inPod(['timeout', '1', 'bash', '-c', script]);
  if (f.proto === 'icmp') {
    inPod(['ping', '-c', String(PROBES), '-i', '0.05', '-W', '1', f.dst]);
    inPod(['ping', '-c', '1', '-W', '1', '-M', 'do', '-s', String(podMtu - 28), f.dst]);
  } else if (f.proto === 'tcp') {
    for (let i = 0; i < PROBES; i++) bash(`exec 3<>/dev/tcp/${f.dst}/${f.dport}`);
    // a full-size segment: TCP sets DF
    bash(`exec 3<>/dev/tcp/${f.dst}/${f.dport} && head -c 8000 /dev/zero >&3`);
  } else {
    for (let i = 0; i < PROBES; i++) bash(`echo probe > /dev/udp/${f.dst}/${f.dport}`);
    bash(`head -c ${podMtu - 28} /dev/zero > /dev/udp/${f.dst}/${f.dport}`);
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function runDiagnose(opts: DiagnoseSessionOptions): Promise<Diagnosis> {
  const f = opts.flow;
  const topology = opts.cluster.topology;
  const pod = findPodByIp(topology, f.src);
  // the source pod's probes to a ClusterIP go through the node's DNAT like any client's
  if (!pod && !opts.passive) {
    throw new NettraceError('NOT_FOUND', `${f.src} is not a pod in ${nodeNames(opts.cluster)}: no pod to send probes from`,
      'give a pod address as the source, or watch real traffic with --passive');
  }
  if ((f.proto === 'tcp' || f.proto === 'udp') && !f.dport && !opts.passive) {
    throw new NettraceError('USAGE', `a ${f.proto} probe needs the destination port`, `add it: --flow '${f.src} -> ${f.dst}:PORT'`);
  }
  const unknown = topology.nodes.filter((n) => n.cni === 'unknown');
  if (unknown.length === topology.nodes.length) {
    throw new NettraceError('NOT_FOUND', `no known CNI on ${unknown.map((n) => n.name).join(', ')}: no bridge, tunnel or CNI routes found`,
      'name the namespaces that act as nodes with --nodes, or check the CNI is running');
  }

  const paths: PacketPath[] = [];
  let stopping = false;
  let readyNs = Number.MAX_SAFE_INTEGER;
  const session = startFollow({
    flow: f, cluster: opts.cluster, attach: opts.attach, graceMs: GRACE_MS,
    onReady: (r) => {
      readyNs = r.atNs;
      opts.onReady?.(r);
    },
    onWarning: opts.onWarning,
    onPath: (p) => {
      // cut off by our own stop, or begun before every hook was on: not a lost packet
      if (!p.complete && ((p.steps[0]?.ts_ns ?? 0) < readyNs || (stopping && !p.drop?.kernel_reason))) return;
      paths.push(p);
    },
  });
  const podMtu = pod?.eth.mtu ?? 1500;
  try {
    if (opts.passive) await sleep(opts.seconds * 1000);
    else {
      await sleep(100);
      sendProbes(pod!, f, podMtu);
    }
    await sleep(GRACE_MS + 300);
  } finally {
    stopping = true;
    session.stop();
    await session.done;
  }

  const node = (name: string): NodeTopology => topology.nodes.find((n) => n.name === name)!;
  // a ClusterIP is routed as the endpoint it is translated to
  const routedDst = serviceAt(opts.cluster, f.dst)?.endpoints[0]?.ip ?? f.dst;
  const full = (p: PacketPath) => p.packet.len >= podMtu - 20;
  return diagnose({
    paths: paths.filter((p) => !full(p)),
    mtuProbe: opts.passive ? null : { size: podMtu, podMtu, paths: paths.filter(full) },
    reach: (n) => checkReach(node(n), routedDst),
    dropRules: (n) => forwardDropRules(node(n)),
    mtu: (n, dev) => deviceMtu(node(n), dev),
    dst: f.dst,
  });
}
