// diagnose as a session: send probes of the flow from its source pod (or watch real traffic),
// follow them through the nine steps, and judge where and why the flow breaks or slows. The
// cluster is this machine's namespaces (local) or the agents' nodes (remote): a target.
import { NettraceError } from '../errors';
import { diagnose, type Diagnosis } from '../flow/verdict';
import type { PacketPath } from '../flow/path';
import type { FlowSpec } from '../flow/spec';
import type { AttachMechanism } from '../probe/attach';
import { checkReach, forwardDropRules, type ReachCheck } from '../topology/inspect';
import { countedSince, nftMatchesFlow, readDropRules, type FilterRule } from '../topology/netfilter';
import { findPodByIp, type ClusterTopology, type NodeTopology, type Pod } from '../topology/model';
import type { Service } from '../topology/services';
import { nodeNames, type ClusterView } from './cluster';
import { startFollow, type FollowSession, type ReadyEvent } from './follow';
import { sendProbes } from './probes';

/** What a node says about reaching an address, read where a probe stopped. */
export interface NodeFacts {
  reach: ReachCheck;
  dropRules: string[];
  /** every drop rule of iptables' filter table and of nft's own tables, with counters */
  filterRules?: FilterRule[];
  /** its step devices' MTUs by name */
  mtus: Record<string, number>;
}

/** What this machine's node says, read here: a local diagnose, or an agent for a remote one. */
export function nodeFacts(node: NodeTopology, dst: string): NodeFacts {
  const mtus: Record<string, number> = {};
  for (const d of [node.underlay, node.tunnel, node.bridge]) if (d) mtus[d.name] = d.mtu;
  return { reach: checkReach(node, dst), dropRules: forwardDropRules(node, dst), filterRules: readDropRules(node), mtus };
}

export interface DiagnoseTarget {
  /** the nodes, for messages */
  where: string;
  topology: ClusterTopology;
  services: Service[];
  follow(h: { graceMs: number; onPath(p: PacketPath): void; onReady(r: ReadyEvent): void; onWarning?(m: string): void; onLost?(records: number, why: string): void }): FollowSession;
  sendProbes(pod: Pod): Promise<void>;
  inspect(node: string, dst: string): Promise<NodeFacts>;
  /** the node's drop rules and their counters, read before the probes: the rule whose counter grows is the one that took them */
  filterRules?(node: string): Promise<FilterRule[]>;
}

export function localTarget(flow: FlowSpec, cluster: ClusterView, attach: AttachMechanism): DiagnoseTarget {
  const topology = cluster.topology;
  return {
    where: nodeNames(cluster), topology, services: cluster.services,
    follow: (h) => startFollow({ flow, cluster, attach, ...h }),
    sendProbes: (pod) => sendProbes(pod.netns.name, flow, pod.eth.mtu),
    inspect: async (name, dst) => nodeFacts(topology.nodes.find((n) => n.name === name)!, dst),
    filterRules: async (name) => readDropRules(topology.nodes.find((n) => n.name === name)!),
  };
}

export interface DiagnoseSessionOptions {
  flow: FlowSpec;
  target: DiagnoseTarget;
  passive: boolean;
  /** how long to watch real traffic with passive */
  seconds: number;
  onReady?(r: ReadyEvent): void;
  onWarning?(message: string): void;
  /** aborted (a signal): stop waiting, detach, and throw the abort reason instead of judging */
  signal?: AbortSignal;
}

/**
 * The follow grace time: a packet not seen for this long is reported stopped. Longer than
 * follow's default: a probe queued behind the others on a slow link is late, not lost.
 */
const GRACE_MS = 3000;

/** Waits ms, or less when signal aborts: a Ctrl-C must not sit out the grace time with programs attached. */
function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}

/** Settles when p does, or resolves early when signal aborts (p's later outcome is then ignored). */
function orAbort(p: Promise<unknown>, signal?: AbortSignal): Promise<unknown> {
  if (!signal) return p;
  return new Promise((resolve, reject) => {
    if (signal.aborted) return resolve(undefined);
    const onAbort = () => resolve(undefined);
    signal.addEventListener('abort', onAbort, { once: true });
    p.then((v) => {
      signal.removeEventListener('abort', onAbort);
      resolve(v);
    }, (err: unknown) => {
      signal.removeEventListener('abort', onAbort);
      reject(err);
    });
  });
}

export async function runDiagnose(opts: DiagnoseSessionOptions): Promise<Diagnosis> {
  const f = opts.flow;
  const signal = opts.signal;
  signal?.throwIfAborted();
  const { topology, services } = opts.target;
  const pod = findPodByIp(topology, f.src);
  // the source pod's probes to a ClusterIP go through the node's DNAT like any client's
  if (!pod && !opts.passive) {
    throw new NettraceError('NOT_FOUND', `${f.src} is not a pod in ${opts.target.where}: no pod to send probes from`,
      'give a pod address as the source, or watch real traffic with --passive');
  }
  if ((f.proto === 'tcp' || f.proto === 'udp') && !f.dport && !opts.passive) {
    throw new NettraceError('USAGE', `a ${f.proto} probe needs the destination port`, `add it: --flow '${f.src} -> ${f.dst}:PORT'`);
  }
  const unknown = topology.nodes.filter((n) => n.cni === 'unknown');
  if (unknown.length === topology.nodes.length) {
    throw new NettraceError('NOT_FOUND', `no known CNI on ${unknown.map((n) => n.name).join(', ')}: no bridge, tunnel or CNI routes found`,
      'name the namespaces that act as nodes with --netns, or check the CNI is running');
  }

  // counters before the probes (and before any hook, so no probe is in them)
  const before = new Map<string, FilterRule[]>();
  if (opts.target.filterRules) {
    for (const n of topology.nodes) {
      try {
        before.set(n.name, await opts.target.filterRules(n.name));
      } catch {
        // no reading: that node's drop rules are judged by the FORWARD listing alone
      }
    }
  }
  signal?.throwIfAborted();

  const paths: PacketPath[] = [];
  // records we lost make probes look lost: the verdict says so
  const lost = { records: 0, why: new Set<string>() };
  let stopping = false;
  let readyNs = Number.MAX_SAFE_INTEGER;
  let ready: () => void = () => {};
  const isReady = new Promise<void>((resolve) => (ready = resolve));
  const session = opts.target.follow({
    graceMs: GRACE_MS,
    onReady: (r) => {
      readyNs = r.atNs;
      opts.onReady?.(r);
      ready();
    },
    onWarning: opts.onWarning,
    onLost: (n, why) => {
      lost.records += n;
      lost.why.add(why);
    },
    onPath: (p) => {
      // cut off by our own stop, or begun before every hook was on: not a lost packet
      if (!p.complete && ((p.steps[0]?.ts_ns ?? 0) < readyNs || (stopping && !p.drop?.kernel_reason && !p.not_watched))) return;
      paths.push(p);
    },
  });
  const podMtu = pod?.eth.mtu ?? 1500;
  try {
    await orAbort(Promise.race([isReady, session.done]), signal);
    if (opts.passive) await sleep(opts.seconds * 1000, signal);
    else {
      await sleep(100, signal);
      if (!signal?.aborted) await orAbort(opts.target.sendProbes(pod!), signal);
    }
    await sleep(GRACE_MS + 300, signal);
  } finally {
    stopping = true;
    session.stop();
    await session.done;
  }
  // interrupted: the programs are off; half the probes' paths are no verdict
  signal?.throwIfAborted();

  // a ClusterIP is routed as the endpoint it is translated to
  const routedDst = services.find((s) => s.clusterIp === f.dst)?.endpoints[0]?.ip ?? f.dst;
  const facts = new Map<string, NodeFacts>();
  for (const node of new Set(paths.flatMap((p) => (p.drop ? [p.drop.node] : [])))) {
    if (topology.nodes.some((n) => n.name === node)) facts.set(node, await opts.target.inspect(node, routedDst));
  }
  const full = (p: PacketPath) => p.packet.len >= podMtu - 20;
  const probeFlow = { src: f.src, dst: routedDst, proto: f.proto, ...(f.dport ? { dport: f.dport } : {}) };
  const hits = (n: string): FilterRule[] => {
    const after = facts.get(n)?.filterRules;
    if (!after || !before.has(n)) return [];
    const node = topology.nodes.find((x) => x.name === n);
    // an nft rule without a counter cannot say it took them: one that matches the flow may have
    const uncounted = after.filter((r) => r.packets === null && r.match && nftMatchesFlow(r.match, probeFlow) === true);
    return [...countedSince(before.get(n)!, after), ...uncounted].map((r) => {
      const pod = r.calico && node?.pods.find((x) => x.hostVeth.name === r.calico!.iface);
      return pod ? { ...r, calico: { ...r.calico!, workload: pod.k8s ? `${pod.k8s.namespace}/${pod.k8s.name}` : pod.name } } : r;
    });
  };
  return diagnose({
    paths: paths.filter((p) => !full(p)),
    mtuProbe: opts.passive ? null : { size: podMtu, podMtu, paths: paths.filter(full) },
    reach: (n) => facts.get(n)?.reach ?? { route: null },
    dropRules: (n) => facts.get(n)?.dropRules ?? [],
    dropHits: hits,
    flow: probeFlow,
    mtu: (n, dev) => facts.get(n)?.mtus[dev] ?? null,
    dst: f.dst,
    lostRecords: { records: lost.records, why: [...lost.why] },
  });
}
