// Hop records of one flow from this machine's kernel: the hop program loaded once, the flow
// (and any service translation of it) in its map, attached to every device of the given nodes.
// follow reads it directly; the agent's trace API streams it to a remote caller.
import { readBtfEnum } from '../libbpf';
import { PROTO_NUMBERS, type FlowSpec } from '../flow/spec';
import { withAdvice } from '../probe/advice';
import { ipBytesOf } from '../probe/addr';
import { attachAll, type AttachMechanism, type HookSet } from '../probe/attach';
import { reverse, type FlowRule } from '../probe/flowrule';
import { HopProbe } from '../probe/hop';
import { decodeHopRecordInto, type HopRecord } from '../probe/layout.generated';
import { ipJson } from '../exec';
import { allDevices, type ClusterTopology, type Device } from '../topology/model';
import { ipNs } from '../topology/netns';

export interface LocalFeed {
  readonly devices: Device[];
  /**
   * hand every record written since the last call to fn, decoded and as its bytes in the ring (valid
   * during the call): length bytes, HOP_RECORD_SIZE, or more with snaplen (decodeHopCapture). The
   * decoded record is one object reused for every record: what keeps one copies it.
   */
  drain(fn: (r: HopRecord, view: DataView, offset: number, length: number) => void): void;
  /** records the kernel could not write (ring full) */
  lost(): number;
  /** detach every hook; records still in the ring stay readable until close() */
  detach(): void;
  close(): void;
}

/**
 * endpoints: where a ClusterIP destination is translated to, followed as the same flow. snaplen: each
 * hop's record also carries the packet's first snaplen bytes (follow -w); 0, records as they are.
 * every: keep 1 in every TCP packets in the kernel (follow --every; flow/every); 1, all.
 */
export function openLocalFeed(
  flow: FlowSpec, topology: ClusterTopology, endpoints: { ip: string; port: number }[], attach: AttachMechanism, snaplen = 0, every = 1,
): LocalFeed {
  const vxlanPorts = topology.nodes.flatMap((n) => (n.tunnel?.vxlan ? [n.tunnel.vxlan.port] : []));
  const probe = withAdvice(() => HopProbe.load({ vxlanPorts: vxlanPorts.length ? vxlanPorts : [8472, 4789], snaplen, every }));
  let hooks: HookSet | null = null;
  const devices = allDevices(topology);
  try {
    const request: FlowRule = {
      family: flow.family, proto: PROTO_NUMBERS[flow.proto], saddr: ipBytesOf(flow.src), daddr: ipBytesOf(flow.dst),
      sport: flow.sport, dport: flow.dport, flowId: 1, direction: 'request',
    };
    withAdvice(() => {
      probe.follow(request);
      probe.follow(reverse(request));
      for (const ep of endpoints) {
        const translated: FlowRule = { ...request, daddr: ipBytesOf(ep.ip), dport: flow.dport ? ep.port : 0 };
        probe.follow(translated);
        probe.follow(reverse(translated));
      }
      // ICMP errors that answer the flow: a closed UDP port's from the destination (the Service's
      // address once conntrack reverses the DNAT in it), a REJECT's or a missing route's from a node.
      // The hop program keys an error by the ports it quotes, swapped: it matches like a reply
      if ((flow.proto === 'udp' || flow.proto === 'tcp') && flow.family === 4) {
        const errors = (to: FlowRule) => ({ ...reverse(to), proto: 1 });
        probe.follow(errors(request));
        for (const ep of endpoints) probe.follow(errors({ ...request, daddr: ipBytesOf(ep.ip), dport: flow.dport ? ep.port : 0 }));
        for (const addr of nodeAddresses(topology)) probe.follow(errors({ ...request, daddr: ipBytesOf(addr) }));
      }
    });
    hooks = attachAll(devices, { ingress: probe.ingress, egress: probe.egress }, attach);
  } catch (err) {
    probe.close();
    throw err;
  }
  // one decoded record for all: a record per hop would be most of what the collector allocates
  const scratch = {} as HopRecord;
  return {
    devices,
    drain: (fn) => {
      probe.drain((view, offset, length) => {
        const r = decodeHopRecordInto(view, offset, scratch);
        // of ICMP, a TCP or UDP flow is given only the errors that answer it (no pings)
        if (flow.proto !== 'icmp' && !flowKeeps(r)) return;
        fn(r, view, offset, length);
      });
    },
    lost: () => probe.lostRecords(),
    detach: () => hooks?.detach(),
    close: () => {
      hooks?.detach();
      probe.close();
    },
  };
}

/**
 * The IPv4 addresses of the nodes' own namespaces, which a node's ICMP errors come from; at most
 * 64 a node (a node with kube-ipvs0 holds every ClusterIP)
 */
function nodeAddresses(topology: ClusterTopology): string[] {
  return topology.nodes.flatMap((n) => {
    try {
      const links = ipJson<{ addr_info?: { local?: string }[] }[]>(ipNs(n.netns), ['-4', 'addr', 'show']);
      return links.flatMap((l) => (l.addr_info ?? []).flatMap((a) => (a.local && !a.local.startsWith('127.') ? [a.local] : []))).slice(0, 64);
    } catch {
      return [];
    }
  });
}

/** A TCP or UDP flow keeps its own packets and the ICMP errors for it (unreachable, time exceeded, parameter problem), not pings. */
function flowKeeps(r: HopRecord): boolean {
  if (r.proto === 1) return r.icmp_type === 3 || r.icmp_type === 11 || r.icmp_type === 12;
  if (r.proto === 58) return r.icmp_type < 128;
  return true;
}

let reasons: Map<number, string> | null = null;

/** The kernel's name of a drop reason (enum skb_drop_reason of the running kernel), without its prefix. */
export function dropReasonName(n: number): string {
  reasons ??= withAdvice(() => readBtfEnum('skb_drop_reason'));
  return (reasons.get(n) ?? `REASON_${n}`).replace(/^SKB_DROP_REASON_/, '');
}
