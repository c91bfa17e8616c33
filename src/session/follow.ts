// follow as a session: attach to every device of the cluster's nodes, rebuild each packet's
// path of the flow, and hand out typed events (ready, path, warning). It prints nothing:
// the CLI formats the events, diagnose judges them, a benchmark counts them.
import { PathAssembler } from '../flow/assemble';
import type { PacketPath } from '../flow/path';
import type { FlowSpec } from '../flow/spec';
import type { AttachMechanism } from '../probe/attach';
import { requireFlowPods, serviceAt, type ClusterView } from './cluster';
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

export interface FollowSessionOptions {
  flow: FlowSpec;
  cluster: ClusterView;
  attach: AttachMechanism;
  /** report a path incomplete when its next hop has not come in this time */
  graceMs: number;
  /** stop after this many paths */
  count?: number | null;
  timeoutS?: number | null;
  onPath(p: PacketPath): void;
  onReady?(r: ReadyEvent): void;
  onWarning?(message: string): void;
}

export interface FollowSession {
  /** resolves with the number of paths handed out, once count, timeout or stop() ends it */
  done: Promise<number>;
  stop(): void;
}

export function startFollow(opts: FollowSessionOptions): FollowSession {
  const f = opts.flow;
  // a ClusterIP: follow the packets to each endpoint too, as the same flow
  const endpoints = serviceAt(opts.cluster, f.dst, f.dport || undefined)?.endpoints ?? [];
  requireFlowPods(opts.cluster, f.src, f.dst, endpoints.map((e) => e.ip));
  const topology = opts.cluster.topology;
  const feed = openLocalFeed(f, topology, endpoints, opts.attach);
  opts.onReady?.({
    devices: feed.devices.length, namespaces: new Set(feed.devices.map((d) => d.netns.name)).size, attach: opts.attach,
    modes: [...new Set(topology.nodes.map((n) => n.cni))], atNs: Number(process.hrtime.bigint()),
  });

  const assembler = new PathAssembler(f, topology, { graceMs: opts.graceMs, endpoints: endpoints.map((e) => e.ip), dropReason: dropReasonName });
  const loop = pathLoop({
    count: opts.count ?? null, timeoutS: opts.timeoutS ?? null, onPath: opts.onPath,
    poll: () => feed.drain((r) => {
      const p = assembler.add(r);
      if (p) loop.emit(p);
    }),
    expire: (force) => assembler.expire(force),
    release: () => feed.detach(),
    close: () => {
      const lost = feed.lost();
      if (lost > 0) opts.onWarning?.(`${lost} records lost (ring buffer full): some paths may be incomplete`);
      feed.close();
    },
  });
  return { done: loop.done, stop: loop.stop };
}
