// follow as a session: attach to every device of the cluster's nodes, rebuild each packet's
// path of the flow, and hand out typed events (ready, path, warning). It prints nothing:
// the CLI formats the events, diagnose judges them, a benchmark counts them.
import { PathAssembler, type AssemblerOptions } from '../flow/assemble';
import { checkReach } from '../topology/inspect';
import { findPodByIp } from '../topology/model';
import { CaptureIndex, type HopBytes } from '../flow/captures';
import { stampWallTimes, WallClock } from '../flow/clock';
import { decodeHopCapture } from '../probe/layout.generated';
import type { PacketPath } from '../flow/path';
import type { FlowSpec } from '../flow/spec';
import type { AttachMechanism } from '../probe/attach';
import { nodeNames, requireFlowPods, serviceAt, type ClusterView } from './cluster';
import { dropReasonName, openLocalFeed } from './localFeed';
import { pathLoop } from './pathLoop';

export interface ReadyEvent {
  devices: number;
  namespaces: number;
  attach: AttachMechanism;
  /** the CNI modes of the nodes */
  modes: string[];
  /** CLOCK_MONOTONIC ns (the BPF clock) when the last hook was on: packets begun before are partial */
  atNs: number;
}

/** What every follow takes, wherever its records come from. */
export interface FollowRequestOptions {
  flow: FlowSpec;
  /** report a path incomplete when its next hop has not come in this time */
  graceMs: number;
  /** stop after this many paths */
  count?: number | null;
  /** of a TCP flow, follow 1 in every packets (flow/every: SYN, RST and FIN without data always); 1 or absent: all */
  every?: number;
  timeoutS?: number | null;
  /** with snaplen: captured, each hop's packet bytes and wall-clock time (by index of p.steps) */
  onPath(p: PacketPath, captured?: CapturedHop[]): void;
  onReady?(r: ReadyEvent): void;
  onWarning?(message: string): void;
  /** hop records lost before they were read (a full ring, a slow reader): paths may lack hops */
  onLost?(records: number, why: string): void;
}

export interface FollowSessionOptions extends FollowRequestOptions {
  cluster: ClusterView;
  attach: AttachMechanism;
  /** copy each hop's first snaplen bytes in the kernel (1..SNAPLEN_MAX) and hand them to onPath; 0 or absent: none */
  snaplen?: number;
}

/** A hop's packet as follow -w writes it. */
export interface CapturedHop {
  /** undefined when its bytes were not kept (an evicted record) */
  bytes: HopBytes | undefined;
  /** the hop's ts_ns on the wall clock, in ns: the same mapping as its `time` */
  wallNs: bigint;
}

export interface FollowSession {
  /** resolves with the number of paths handed out, once count, timeout or stop() ends it */
  done: Promise<number>;
  stop(): void;
}

/**
 * An end of the flow that is no pod of these nodes (one real node traced alone): the path is
 * followed to where it leaves, and the rest is named after the node the route leads to.
 */
function elsewhere(view: ClusterView, f: FlowSpec, endpoints: { ip: string }[]): AssemblerOptions['unwatched'] {
  const topology = view.topology;
  const src = findPodByIp(topology, f.src);
  const dst = findPodByIp(topology, f.dst) ?? endpoints.map((e) => findPodByIp(topology, e.ip)).find(Boolean);
  if ((src && dst) || (!src && !dst)) return [];
  const [here, there] = src ? [src, endpoints[0]?.ip ?? f.dst] : [dst!, f.src];
  const node = topology.nodes.find((n) => n.name === here.node)!;
  const reach = checkReach(node, there);
  const next = reach.fdb?.dst ?? reach.route?.gateway ?? null;
  const reason = `${there} is not a pod of ${nodeNames(view)}; the rest of the path is on another node${next ? ` (routed via ${reach.route!.dev} to ${next})` : ''}: trace it with --agents`;
  return [{ side: src ? 'destination' : 'source', node: next ?? 'another node', reason }];
}

export function startFollow(opts: FollowSessionOptions): FollowSession {
  const f = opts.flow;
  // a ClusterIP: follow the packets to each endpoint too, as the same flow
  const endpoints = serviceAt(opts.cluster, f.dst, f.dport || undefined)?.endpoints ?? [];
  requireFlowPods(opts.cluster, f.src, f.dst, endpoints.map((e) => e.ip));
  const topology = opts.cluster.topology;
  const snaplen = opts.snaplen ?? 0;
  const feed = openLocalFeed(f, topology, endpoints, opts.attach, snaplen, opts.every ?? 1);
  // bytes wait at least as long as a path may wait for its next hop
  const captures = snaplen > 0 ? new CaptureIndex(topology, { retainNs: Math.max(30e9, (2 * opts.graceMs + 5000) * 1e6) }) : null;
  opts.onReady?.({
    devices: feed.devices.length, namespaces: new Set(feed.devices.map((d) => d.netns.name)).size, attach: opts.attach,
    modes: [...new Set(topology.nodes.map((n) => n.cni))], atNs: Number(process.hrtime.bigint()),
  });

  // the clock is read once a poll, not once a record: a record's arrival is known to the poll's 5 ms anyway
  let polledMs = Date.now();
  const assembler = new PathAssembler(f, topology, {
    graceMs: opts.graceMs, endpoints: endpoints.map((e) => e.ip), dropReason: dropReasonName, unwatched: elsewhere(opts.cluster, f, endpoints),
    every: opts.every, now: () => polledMs,
  });
  // hops are stamped with this kernel's monotonic clock: every node of a local follow shares it
  const clock = new WallClock();
  const remeasure = setInterval(() => clock.measure(), 60_000).unref();
  const loop = pathLoop({
    count: opts.count ?? null, timeoutS: opts.timeoutS ?? null,
    onPath: (p) => {
      stampWallTimes(p, clock.offsetNs);
      if (!captures) return opts.onPath(p);
      const bytes = captures.take(p);
      opts.onPath(p, p.steps.map((h, i) => ({ bytes: bytes[i], wallNs: clock.wallNs(h.ts_ns) })));
    },
    poll: () => {
      polledMs = Date.now();
      feed.drain((r, view, offset, length) => {
        if (captures) {
          const c = decodeHopCapture(view, offset, length);
          captures.add(r, c.data, c.dev_type);
        }
        for (const p of assembler.addRecord(r)) loop.emit(p);
      });
    },
    expire: (force) => assembler.expire(force),
    release: () => feed.detach(),
    close: () => {
      clearInterval(remeasure);
      if (captures && captures.missing > 0) opts.onWarning?.(`${captures.missing} hops had no packet bytes kept (records evicted): written without them`);
      const lost = feed.lost();
      if (lost > 0) {
        opts.onLost?.(lost, 'the ring buffer was full');
        opts.onWarning?.(`${lost} records lost (ring buffer full): some paths may be incomplete`);
      }
      feed.close();
    },
  });
  return { done: loop.done, stop: loop.stop };
}
