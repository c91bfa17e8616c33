// follow through the agents: each node's agent follows the flow on its own node and streams its
// hop records here; this side places every node's clock on its own (an NTP-style exchange per
// agent, refined by the wire step's symmetry) and rebuilds the paths as a local follow does.
import { NettraceError } from '../errors';
import { PathAssembler, type AssemblerOptions } from '../flow/assemble';
import { stampWallTimes, WallClock } from '../flow/clock';
import { OffsetEstimate, WireSymmetry } from '../flow/clockSync';
import type { HopView, PacketPath } from '../flow/path';
import type { FlowSpec } from '../flow/spec';
import type { ReachCheck } from '../topology/inspect';
import { checkedFilterRules } from '../topology/netfilter';
import { findPodByIp, type ClusterTopology, type NodeTopology } from '../topology/model';
import type { Service } from '../topology/services';
import { AgentClient, type ClientAuth, type FollowStream } from './agentClient';
import type { FollowRequestOptions, FollowSession } from './follow';
import { dropReasonName } from './localFeed';
import type { DiagnoseTarget } from './diagnose';
import { pathLoop } from './pathLoop';
import { decodeHops, followRequest, MAX_SESSION_S, topologyOf, type StreamMessage } from './protocol';

export interface RemoteNode {
  client: AgentClient;
  topology: NodeTopology;
}

/** The cluster as the reachable agents describe it, and the agents that did not answer. */
export interface RemoteCluster {
  nodes: Map<string, RemoteNode>;
  topology: ClusterTopology;
  services: Service[];
  failures: { url: string; error: string }[];
  auth: ClientAuth;
}

export async function connectAgents(urls: URL[], auth: ClientAuth): Promise<RemoteCluster> {
  const nodes = new Map<string, RemoteNode>();
  const services: Service[] = [];
  const failures: RemoteCluster['failures'] = [];
  await Promise.all(urls.map(async (url) => {
    const client = new AgentClient(url, auth);
    try {
      const { topology, services: s } = topologyOf(await client.json('GET', '/v1/node'));
      if (nodes.has(topology.name)) throw new Error(`answers for node ${topology.name}, as ${nodes.get(topology.name)!.client.label} does`);
      nodes.set(topology.name, { client, topology });
      services.push(...s);
    } catch (err) {
      client.close();
      failures.push({ url: url.origin, error: (err as Error).message });
    }
  }));
  const rc = { nodes, topology: { nodes: [...nodes.values()].map((n) => n.topology) }, services, failures, auth };
  if (nodes.size === 0) {
    throw new NettraceError('NOT_FOUND', `no agent answered: ${failures.map((f) => `${f.url}: ${f.error}`).join('; ')}`,
      'check the agents run with --token-file, listen where --agents says, and this machine can reach them');
  }
  return rc;
}

export function closeCluster(rc: RemoteCluster): void {
  for (const n of rc.nodes.values()) n.client.close();
}

type Unwatched = NonNullable<AssemblerOptions['unwatched']>[number];

/** Where the end of the flow that no agent serves lives, as the other end's node routes it. */
async function whereIs(rc: RemoteCluster, from: RemoteNode, ip: string): Promise<{ node: string; reason: string }> {
  let nodeIp: string | null = null;
  try {
    const reach = checkedReach((await from.client.json<{ reach?: unknown }>('GET', `/v1/inspect?dst=${encodeURIComponent(ip)}`)).reach);
    nodeIp = reach.fdb?.dst ?? reach.route?.gateway ?? null;
  } catch {
    // the route is only for naming it
  }
  const failed = rc.failures.find((f) => nodeIp !== null && new URL(f.url).hostname.replace(/^\[|\]$/g, '') === nodeIp);
  const node = nodeIp ?? `the node of ${ip}`;
  return { node, reason: failed ? `no agent at ${failed.url}: ${failed.error}` : 'no agent among --agents serves it' };
}

export interface RemoteFollowOptions extends FollowRequestOptions {
  cluster: RemoteCluster;
}

/** How one agent's hop times become ours; see docs/architecture.md#clocks. */
interface AgentClock {
  estimate: OffsetEstimate;
  /** the agent's wall minus its monotonic clock, from its ready message */
  agentWallMinusMono: bigint | null;
  /** ns added by the wire-step symmetry on top of the exchange */
  symmetryNs: number;
  /** added to an agent ts_ns to get our monotonic ns */
  delta: number;
}

const CLOCK_SAMPLES = 10;
const CLOCK_REFRESH_MS = 2000;
/** stream messages held until every agent is ready (each up to 4096 records) */
const MAX_QUEUED = 1000;

export function startRemoteFollow(opts: RemoteFollowOptions): FollowSession {
  const f = opts.flow;
  const rc = opts.cluster;
  const local = new WallClock();
  const wallNow = () => local.now().wallNs;
  const endpoints = rc.services.find((s) => s.clusterIp === f.dst && (!f.dport || s.port === f.dport))?.endpoints ?? [];
  const nodeOf = (ip: string) => findPodByIp(rc.topology, ip)?.node;
  const srcNode = nodeOf(f.src);
  const dstNode = nodeOf(f.dst) ?? endpoints.map((e) => nodeOf(e.ip)).find(Boolean);
  if (!srcNode && !dstNode) {
    const unreachable = rc.failures.length ? `; no answer from ${rc.failures.map((x) => x.url).join(', ')}` : '';
    throw new NettraceError('NOT_FOUND', `neither ${f.src} nor ${f.dst} is a pod on the nodes the agents serve (${[...rc.nodes.keys()].join(', ')})${unreachable}`,
      'check the addresses, and give --agents every node\'s agent (or dns://NAME:PORT of their headless Service)');
  }
  const involved = [...new Set([srcNode, dstNode].filter((n): n is string => !!n))];
  const clocks = new Map<string, AgentClock>(involved.map((n) => [n, { estimate: new OffsetEstimate(), agentWallMinusMono: null, symmetryNs: 0, delta: 0 }]));
  /** per node: its stream, the session id and the --every its ready message gave, and whether we ended it */
  const streams = new Map<string, { stream: FollowStream; state: { session: string | null; endedByUs: boolean; every: number } }>();
  const queued: { node: string; m: StreamMessage }[] = [];
  const symmetry = new WireSymmetry();
  let assembler: PathAssembler | null = null;
  let closed = false;

  const refreshDelta = (node: string) => {
    const c = clocks.get(node)!;
    if (c.agentWallMinusMono === null) return;
    const ours = local.now();
    // agent ts -> agent wall -> our wall (minus the estimated offset) -> our monotonic
    c.delta = Number(c.agentWallMinusMono - c.estimate.offsetNs - (ours.wallNs - ours.monoNs)) - c.symmetryNs;
  };
  const sampleClock = async (node: string, n: number) => {
    const c = clocks.get(node)!;
    for (let i = 0; i < n && !closed; i++) {
      try {
        c.estimate.add(await rc.nodes.get(node)!.client.clockSample(wallNow));
      } catch {
        // a missed exchange: the earlier estimate stands
      }
    }
    refreshDelta(node);
  };
  const clockNote = (node: string): NonNullable<HopView['clock']> | undefined => {
    const c = clocks.get(node);
    if (!c) return undefined;
    return {
      node, correction_ns: Number(c.estimate.offsetNs) + c.symmetryNs, uncertainty_ns: c.estimate.uncertaintyNs,
      method: c.symmetryNs ? 'exchange+wire-symmetry' : 'exchange',
    };
  };

  let queueLost = 0;
  const handle = (node: string, m: StreamMessage) => {
    if (!assembler) {
      // before every agent is ready: held, within bounds
      if (queued.length < MAX_QUEUED) queued.push({ node, m });
      else if (m.type === 'hops') queueLost += m.n;
      return;
    }
    if (m.type === 'hops') {
      const c = clocks.get(node)!;
      for (const r of decodeHops(m)) {
        r.ts_ns += c.delta;
        for (const p of assembler.addRecord(r, node)) loop.emit(p);
      }
    } else if (m.type === 'lost') {
      opts.onLost?.(m.records, `${m.why} on ${node}`);
      opts.onWarning?.(`${m.records} records lost on ${node} (${m.why}): some paths may be incomplete`);
    }
  };

  const onPath = (p: PacketPath) => {
    // symmetry samples from paths that crossed the wire: step 5 on the sender, step 6 on the receiver
    if (srcNode && dstNode && srcNode !== dstNode) {
      const out = p.steps.find((h) => h.step === 5 || (h.step === 4 && h.hook === 'egress' && h.device === rc.nodes.get(h.node)?.topology.underlay?.name));
      const inn = p.steps.find((h) => h.step === 6);
      if (out && inn && out.node !== inn.node) {
        const forward = out.node === srcNode;
        const dstClock = clocks.get(dstNode)!;
        // as the exchange alone would have measured it
        const raw = inn.ts_ns - out.ts_ns + (forward ? dstClock.symmetryNs : -dstClock.symmetryNs);
        symmetry.add(forward, raw);
        const bound = clocks.get(srcNode)!.estimate.uncertaintyNs + dstClock.estimate.uncertaintyNs;
        const e = symmetry.correction(bound);
        if (e !== null) {
          dstClock.symmetryNs = Math.round(e);
          refreshDelta(dstNode);
        }
      }
    }
    for (const h of p.steps) {
      const note = clockNote(h.node);
      if (note) h.clock = note;
    }
    // ts_ns is on our monotonic clock now: the agents' hops were placed on it by their correction
    opts.onPath(stampWallTimes(p, local.offsetNs));
  };

  const loop = pathLoop({
    count: opts.count ?? null, timeoutS: opts.timeoutS ?? null, onPath,
    expire: (force) => assembler?.expire(force) ?? [],
    release: async () => {
      // ask each agent to stop: it detaches, sends what is left and ends the stream
      await Promise.all([...streams].map(async ([node, { stream, state }]) => {
        state.endedByUs = true;
        if (state.session) {
          const stop = rc.nodes.get(node)!.client.json('DELETE', `/v1/sessions/${state.session}`, undefined, 1000).catch(() => {});
          await Promise.race([stream.ended, stop]);
        }
        await Promise.race([stream.ended, new Promise((r) => setTimeout(r, 1000))]);
        stream.close();
      }));
    },
    close: () => {
      closed = true;
      clearInterval(refresher);
      closeCluster(rc);
    },
  });
  const refresher = setInterval(() => {
    for (const n of involved) void sampleClock(n, 2);
  }, CLOCK_REFRESH_MS);

  for (const x of rc.failures) opts.onWarning?.(`no answer from the agent at ${x.url}: ${x.error}`);
  void (async () => {
    const unwatched: Unwatched[] = [];
    if (!srcNode) unwatched.push({ side: 'source', ...(await whereIs(rc, rc.nodes.get(dstNode!)!, f.src)) });
    if (!dstNode) unwatched.push({ side: 'destination', ...(await whereIs(rc, rc.nodes.get(srcNode!)!, endpoints[0]?.ip ?? f.dst)) });
    await Promise.all(involved.map((n) => sampleClock(n, CLOCK_SAMPLES)));
    const timeoutS = Math.min(MAX_SESSION_S, opts.timeoutS != null ? Math.ceil(opts.timeoutS) + 30 : MAX_SESSION_S);
    let devices = 0;
    await Promise.all(involved.map(async (node) => {
      const client = rc.nodes.get(node)!.client;
      const state = { session: null as string | null, endedByUs: false, every: 1 };
      let stream: FollowStream;
      try {
        stream = await client.follow(followRequest(f, timeoutS, opts.every ?? 1), (m) => {
          if (m.type === 'ready') {
            state.session = m.session;
            state.every = m.every ?? 1;
            devices += m.devices;
            clocks.get(node)!.agentWallMinusMono = BigInt(m.wall_ns) - BigInt(m.mono_ns);
            refreshDelta(node);
          }
          handle(node, m);
        });
      } catch (err) {
        unwatched.push({ side: node === srcNode ? 'source' : 'destination', node, reason: `the agent at ${client.label} refused to follow: ${(err as Error).message}` });
        return;
      }
      streams.set(node, { stream, state });
      void stream.ended.then((why) => {
        if (!state.endedByUs) opts.onWarning?.(`the agent of ${node} at ${client.label} went away mid-trace (${why}): ${node}'s hops after this are missing`);
      });
    }));
    if (closed) return;
    if (streams.size === 0) {
      opts.onWarning?.(`no agent follows: ${unwatched.map((u) => `${u.node}: ${u.reason}`).join('; ')}`);
      loop.stop();
      return;
    }
    // wait for every stream's ready: its hooks are on
    const deadline = Date.now() + 10_000;
    while ([...streams.values()].some((s) => s.state.session === null) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    // an agent that predates --every follows every packet: its skbs would not match the other node's samples
    const want = opts.every ?? 1;
    const unlike = [...streams].filter(([, s]) => s.state.session !== null && s.state.every !== want);
    if (unlike.length > 0) {
      opts.onWarning?.(`--every ${want}: ${unlike.map(([node, s]) => `the agent of ${node} at ${rc.nodes.get(node)!.client.label} samples 1 in ${s.state.every}`).join('; ')} (an older agent): upgrade it, or leave --every out`);
      loop.stop();
      return;
    }
    assembler = new PathAssembler(f, rc.topology, { graceMs: opts.graceMs, endpoints: endpoints.map((e) => e.ip), dropReason: dropReasonName, unwatched, perNodeStreams: true, every: opts.every });
    for (const { node, m } of queued.splice(0)) handle(node, m);
    if (queueLost) {
      opts.onLost?.(queueLost, 'held here while waiting for every agent to be ready');
      opts.onWarning?.(`${queueLost} records lost while waiting for every agent to be ready`);
    }
    opts.onReady?.({
      devices, namespaces: involved.length, attach: 'tcx', modes: [...new Set(involved.map((n) => rc.nodes.get(n)!.topology.cni))],
      atNs: Number(process.hrtime.bigint()),
    });
  })().catch((err: unknown) => {
    opts.onWarning?.((err as Error).message);
    loop.stop();
  });
  return { done: loop.done, stop: loop.stop };
}

/** diagnose through the agents: probes sent by the source node's agent, facts read from each node's. */
export function remoteTarget(flow: FlowSpec, rc: RemoteCluster): DiagnoseTarget {
  const agentOf = (node: string) => {
    const n = rc.nodes.get(node);
    if (!n) throw new NettraceError('NOT_FOUND', `no agent serves ${node}`, 'give --agents every node\'s agent');
    return n.client;
  };
  return {
    where: `the nodes the agents serve (${[...rc.nodes.keys()].join(', ')})`,
    topology: rc.topology,
    services: rc.services,
    follow: (h) => startRemoteFollow({ flow, cluster: rc, ...h }),
    sendProbes: async (pod) => {
      // the agent waits for its probes: give it the time they take
      await agentOf(pod.node).json('POST', '/v1/probe', followRequest(flow, 60), 30_000);
    },
    inspect: async (node, dst) => {
      const r = await agentOf(node).json<{ reach?: ReachCheck; drop_rules?: unknown; filter_rules?: unknown; mtus?: unknown }>('GET', `/v1/inspect?dst=${encodeURIComponent(dst)}`);
      const rules = Array.isArray(r.drop_rules) ? r.drop_rules.filter((x): x is string => typeof x === 'string').slice(0, 200) : [];
      const mtus: Record<string, number> = {};
      if (r.mtus && typeof r.mtus === 'object') for (const [k, v] of Object.entries(r.mtus)) if (typeof v === 'number') mtus[k] = v;
      // an agent without filter_rules (older): judged by the FORWARD listing alone
      return { reach: checkedReach(r.reach), dropRules: rules, mtus, ...(Array.isArray(r.filter_rules) ? { filterRules: checkedFilterRules(r.filter_rules) } : {}) };
    },
    filterRules: async (node) => {
      const r = await agentOf(node).json<{ filter_rules?: unknown }>('GET', `/v1/inspect?dst=${encodeURIComponent(flow.dst)}`);
      if (!Array.isArray(r.filter_rules)) throw new Error('no filter_rules');
      return checkedFilterRules(r.filter_rules);
    },
  };
}

/** An agent's ReachCheck with only the fields of the right types kept. */
function checkedReach(raw: unknown): ReachCheck {
  const r = raw as Partial<ReachCheck> | null;
  const s = (v: unknown) => (typeof v === 'string' && v.length < 128 ? v : undefined);
  if (!r || !r.route || typeof r.route !== 'object' || !s(r.route.dev)) return { route: null };
  const out: ReachCheck = { route: { dev: s(r.route.dev)!, ...(s(r.route.gateway) ? { gateway: s(r.route.gateway)! } : {}) } };
  if (r.neighbour && s(r.neighbour.ip)) out.neighbour = { ip: s(r.neighbour.ip)!, mac: s(r.neighbour.mac) ?? null };
  if (r.fdb && s(r.fdb.mac)) out.fdb = { mac: s(r.fdb.mac)!, dst: s(r.fdb.dst) ?? null };
  return out;
}
