// nettrace diagnose: send probes of the flow from its source pod (or watch real traffic),
// follow them through the nine steps, and say where and why the flow breaks or slows.
import { spawnSync } from 'node:child_process';
import { NettraceError } from '../errors';
import { formatDuration } from '../export/table';
import { diagnose, type Diagnosis } from '../flow/diagnose';
import type { PacketPath } from '../flow/path';
import { formatFlow, type FlowSpec } from '../flow/spec';
import type { AttachMechanism } from '../probe/attach';
import { discoverCluster } from '../topology/discover';
import { checkReach, deviceMtu, forwardDropRules } from '../topology/inspect';
import { nodeServices } from '../topology/services';
import { findPodByIp, type NodeTopology, type Pod } from '../topology/model';
import type { NetnsRef } from '../topology/netns';
import { STEP_NAMES } from '../topology/steps';
import { follow } from './follow';

export interface DiagnoseOptions {
  flow: FlowSpec;
  nodes: NetnsRef[];
  passive: boolean;
  /** how long to watch real traffic with --passive */
  seconds: number;
  attach: AttachMechanism;
  cni?: string;
  log: (s: string) => void;
}

const PROBES = 5;

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

export async function runDiagnose(opts: DiagnoseOptions): Promise<Diagnosis> {
  const f = opts.flow;
  const topology = discoverCluster(opts.nodes);
  if (opts.cni) for (const n of topology.nodes) n.cni = opts.cni;
  const pod = findPodByIp(topology, f.src);
  // the source pod's probes to a ClusterIP go through the node's DNAT like any client's
  if (!pod && !opts.passive) {
    throw new NettraceError('NOT_FOUND', `${f.src} is not a pod in ${opts.nodes.map((n) => n.name).join(', ')}: no pod to send probes from`,
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
  let readyNs = Number.MAX_SAFE_INTEGER; // bpf_ktime_get_ns and hrtime are both CLOCK_MONOTONIC
  const session = follow({
    flow: f, nodes: opts.nodes, output: 'json', count: null, timeoutS: null, graceMs: 1000, attach: opts.attach, cni: opts.cni,
    write: (s) => {
      for (const line of s.split('\n')) {
        if (!line.trim()) continue;
        const p = JSON.parse(line) as PacketPath;
        // cut off by our own stop, or begun before every hook was on: not a lost packet
        if (!p.complete && ((p.steps[0]?.ts_ns ?? 0) < readyNs || (stopping && !p.drop?.kernel_reason))) continue;
        paths.push(p);
      }
    },
    log: (s) => {
      if (s.startsWith('ready:')) readyNs = Number(process.hrtime.bigint());
      opts.log(s.replace(/^ready: following/, 'ready: diagnosing'));
    },
  });
  const podMtu = pod?.eth.mtu ?? 1500;
  try {
    if (opts.passive) await new Promise((r) => setTimeout(r, opts.seconds * 1000));
    else {
      await new Promise((r) => setTimeout(r, 100));
      sendProbes(pod!, f, podMtu);
    }
    await new Promise((r) => setTimeout(r, 1300)); // the grace time: a stopped packet is reported by then
  } finally {
    stopping = true;
    session.stop();
    await session.done;
  }

  const node = (name: string): NodeTopology => topology.nodes.find((n) => n.name === name)!;
  // a ClusterIP is routed as the endpoint it is translated to
  const service = topology.nodes.flatMap(nodeServices).find((s) => s.clusterIp === f.dst);
  const routedDst = service?.endpoints[0]?.ip ?? f.dst;
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

/** One screen for a person: the path drawn, the broken or slow step marked. */
export function formatDiagnosis(f: FlowSpec, d: Diagnosis): string {
  const out: string[] = [];
  out.push(`diagnose ${formatFlow(f)}: ${d.healthy ? 'HEALTHY' : d.cause === 'delay' ? `SLOW at step ${d.step} (${d.step_name})` : `BROKEN at step ${d.step ?? '?'} (${d.step_name ?? 'unknown'})`}`);
  const seen = new Set(d.steps.map((h) => h.step));
  for (let s = 1; s <= 9; s++) {
    const hops = d.steps.filter((h) => h.step === s);
    const mark = d.cause !== 'none' && d.step === s ? (d.cause === 'delay' ? ' <== slow' : ' <== packets stop here') : '';
    const where = hops.map((h) => `${h.node} ${h.device} ${h.hook}${h === d.steps[0] ? '' : ` +${formatDuration(h.latency_ns)}`}`).join(', ');
    const state = seen.has(s) ? 'ok' : d.step !== null && s > d.step && d.cause !== 'delay' ? '--' : '  ';
    out.push(`  ${state} ${s} ${(STEP_NAMES[s] ?? '').padEnd(21)} ${where}${mark}`);
  }
  out.push(`cause: ${d.cause}${d.reason ? ` (kernel: ${d.reason})` : ''}`);
  out.push(`  ${d.detail}`);
  out.push(`next: ${d.next}`);
  return out.join('\n') + '\n';
}
