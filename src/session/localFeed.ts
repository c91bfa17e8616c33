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
import { decodeHopRecord, type HopRecord } from '../probe/layout.generated';
import { allDevices, type ClusterTopology, type Device } from '../topology/model';

export interface LocalFeed {
  readonly devices: Device[];
  /** hand every record written since the last call to fn, decoded and as its bytes in the ring (valid during the call) */
  drain(fn: (r: HopRecord, view: DataView, offset: number) => void): void;
  /** records the kernel could not write (ring full) */
  lost(): number;
  /** detach every hook; records still in the ring stay readable until close() */
  detach(): void;
  close(): void;
}

/** endpoints: where a ClusterIP destination is translated to, followed as the same flow. */
export function openLocalFeed(flow: FlowSpec, topology: ClusterTopology, endpoints: { ip: string; port: number }[], attach: AttachMechanism): LocalFeed {
  const vxlanPorts = topology.nodes.flatMap((n) => (n.tunnel?.vxlan ? [n.tunnel.vxlan.port] : []));
  const probe = withAdvice(() => HopProbe.load({ vxlanPorts: vxlanPorts.length ? vxlanPorts : [8472, 4789] }));
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
    });
    hooks = attachAll(devices, { ingress: probe.ingress, egress: probe.egress }, attach);
  } catch (err) {
    probe.close();
    throw err;
  }
  return {
    devices,
    drain: (fn) => {
      probe.drain((view, offset) => fn(decodeHopRecord(view, offset), view, offset));
    },
    lost: () => probe.lostRecords(),
    detach: () => hooks?.detach(),
    close: () => {
      hooks?.detach();
      probe.close();
    },
  };
}

let reasons: Map<number, string> | null = null;

/** The kernel's name of a drop reason (enum skb_drop_reason of the running kernel), without its prefix. */
export function dropReasonName(n: number): string {
  reasons ??= withAdvice(() => readBtfEnum('skb_drop_reason'));
  return (reasons.get(n) ?? `REASON_${n}`).replace(/^SKB_DROP_REASON_/, '');
}
