// nettrace follow: attach to every device of the nodes, print each packet's path of the flow.
import { NettraceError } from '../errors';
import { readBtfEnum } from '../libbpf';
import { pathToJsonLine } from '../export/json';
import { formatPathTable } from '../export/table';
import { PathAssembler } from '../flow/assemble';
import type { PacketPath } from '../flow/path';
import { formatFlow, PROTO_NUMBERS, type FlowSpec } from '../flow/spec';
import { attachAll, type AttachMechanism } from '../probe/attach';
import { ipBytesOf } from '../probe/addr';
import { reverse, type FlowRule } from '../probe/flowrule';
import { HopProbe } from '../probe/hop';
import { decodeHopRecord } from '../probe/layout.generated';
import { discoverCluster } from '../topology/discover';
import { nodeServices } from '../topology/services';
import { allDevices, findPodByIp } from '../topology/model';
import type { NetnsRef } from '../topology/netns';

export interface FollowOptions {
  flow: FlowSpec;
  nodes: NetnsRef[];
  output: 'table' | 'json';
  count: number | null;
  timeoutS: number | null;
  graceMs: number;
  attach: AttachMechanism;
  /** the CNI mode named by the user, over the one detected */
  cni?: string;
  write: (s: string) => void;
  log: (s: string) => void;
}

const POLL_MS = 5;
const EXPIRE_MS = 100;

/** Resolves with the number of paths printed once --count, --timeout or stop() ends it. */
export function follow(opts: FollowOptions): { done: Promise<number>; stop: () => void } {
  const topology = discoverCluster(opts.nodes);
  if (opts.cni) for (const n of topology.nodes) n.cni = opts.cni;
  const f = opts.flow;
  // a ClusterIP: follow the packets to each endpoint too, as the same flow
  const service = topology.nodes.flatMap(nodeServices).find((s) => s.clusterIp === f.dst && (!f.dport || s.port === f.dport));
  const endpoints = service?.endpoints ?? [];
  if (!findPodByIp(topology, f.src) && !findPodByIp(topology, f.dst) && !endpoints.some((e) => findPodByIp(topology, e.ip))) {
    throw new NettraceError('NOT_FOUND', `neither ${f.src} nor ${f.dst} is a pod in ${opts.nodes.map((n) => n.name).join(', ')}`,
      'check the addresses, or name the namespaces that act as nodes with --nodes');
  }
  const vxlanPorts = topology.nodes.flatMap((n) => (n.tunnel?.vxlan ? [n.tunnel.vxlan.port] : []));
  const probe = HopProbe.load({ vxlanPorts: vxlanPorts.length ? vxlanPorts : [8472, 4789] });
  let hooks: ReturnType<typeof attachAll> | null = null;
  try {
    const request: FlowRule = {
      family: f.family, proto: PROTO_NUMBERS[f.proto], saddr: ipBytesOf(f.src), daddr: ipBytesOf(f.dst),
      sport: f.sport, dport: f.dport, flowId: 1, direction: 'request',
    };
    probe.follow(request);
    probe.follow(reverse(request));
    for (const ep of endpoints) {
      const translated: FlowRule = { ...request, daddr: ipBytesOf(ep.ip), dport: f.dport ? ep.port : 0 };
      probe.follow(translated);
      probe.follow(reverse(translated));
    }
    const devices = allDevices(topology);
    hooks = attachAll(devices, { ingress: probe.ingress, egress: probe.egress }, opts.attach);
    const modes = [...new Set(topology.nodes.map((n) => n.cni))].join(', ');
    opts.log(`ready: following ${formatFlow(f)} on ${devices.length} devices in ${new Set(devices.map((d) => d.netns.name)).size} namespaces (${opts.attach}; ${modes})`);
  } catch (err) {
    hooks?.detach();
    probe.close();
    throw err;
  }

  const reasons = readBtfEnum('skb_drop_reason');
  const assembler = new PathAssembler(f, topology, {
    graceMs: opts.graceMs, endpoints: endpoints.map((e) => e.ip), dropReason: (n) => (reasons.get(n) ?? `REASON_${n}`).replace(/^SKB_DROP_REASON_/, ''),
  });
  let printed = 0;
  let finished = false;
  let resolveDone: (n: number) => void = () => {};
  const done = new Promise<number>((resolve) => (resolveDone = resolve));

  const emit = (p: PacketPath) => {
    if (opts.count !== null && printed >= opts.count) return;
    opts.write(opts.output === 'json' ? pathToJsonLine(p) + '\n' : formatPathTable(p) + '\n');
    printed++;
    // not from inside a drain: stop() drains and unmaps the ring itself
    if (opts.count !== null && printed >= opts.count) setImmediate(stop);
  };
  const poll = () => {
    probe.drain((view, offset) => {
      const p = assembler.add(decodeHopRecord(view, offset));
      if (p) emit(p);
    });
  };
  let lastExpire = Date.now();
  const timer = setInterval(() => {
    poll();
    if (Date.now() - lastExpire >= EXPIRE_MS) {
      lastExpire = Date.now();
      for (const p of assembler.expire()) emit(p);
    }
  }, POLL_MS);
  const timeout = opts.timeoutS !== null ? setTimeout(() => stop(), opts.timeoutS * 1000) : null;

  function stop(): void {
    if (finished) return;
    finished = true;
    clearInterval(timer);
    if (timeout) clearTimeout(timeout);
    hooks?.detach();
    poll();
    for (const p of assembler.expire(true)) emit(p);
    const lost = probe.lostRecords();
    if (lost > 0) opts.log(`warning: ${lost} records lost (ring buffer full): some paths may be incomplete`);
    probe.close();
    resolveDone(printed);
  }
  return { done, stop };
}
