// Rebuild each packet's path from hop records: group by what the packet carries unchanged
// end to end (docs/architecture.md#packet-identity), order by the step model, emit when the last hop is seen or after a grace time.
import { RECORD_KIND, type HopRecord } from '../probe/layout.generated';
import { deviceKey, type ClusterTopology, type Device, findPodByIp } from '../topology/model';
import { FINAL_ORDER, hookPoint, presentRoles, skippedSteps, STEP_NAMES, stepOn, type Side } from '../topology/steps';
import type { DeviceRole } from '../topology/model';
import type { HopView, PacketPath } from './path';
import type { FlowSpec } from './spec';
import { addrString } from '../probe/addr';

interface Seen {
  order: number;
  step: number;
  device: Device;
  hook: 'ingress' | 'egress';
  ts: number;
  /** the addresses the packet carried there: they change where a Service is translated */
  addrs: string;
}

interface Pending {
  first: HopRecord;
  kernelDrop?: { reason: string; device: string | null };
  direction: 'request' | 'reply';
  hops: Map<number, Seen>;
  lastSeenMs: number;
}

const TCP_FLAGS = 'FSRPAUEC';

function tcpFlags(bits: number): string {
  let s = '';
  for (let i = 0; i < 8; i++) if (bits & (1 << i)) s += TCP_FLAGS[i];
  return s;
}

function endpoint(addr: string, port: number, proto: number): string {
  return proto === 6 || proto === 17 ? `${addr}:${port}` : addr;
}

/** What the packet carries unchanged across every hop of both nodes (not skb->hash nor tstamp). */
export function packetKey(r: HopRecord): string {
  return `${r.flow_id}/${r.direction}/${r.ip_id}/${r.sport}/${r.dport}/${r.seq}/${r.ack}/${r.ip_len}`;
}

export interface AssemblerOptions {
  /** how long a path may wait for its next hop before it is reported incomplete */
  graceMs: number;
  /** name of a kernel drop reason (enum skb_drop_reason value) */
  dropReason?: (reason: number) => string;
  /** when the flow's destination is a ClusterIP: the endpoints it is translated to */
  endpoints?: string[];
  now?: () => number;
}

export class PathAssembler {
  private readonly devices = new Map<string, Device>();
  private readonly pending = new Map<string, Pending>();
  private readonly podIps = new Map<string, Set<string>>();
  private readonly sideOf: Record<'request' | 'reply', Map<string, Side>>;
  private readonly roles = new Map<string, Set<DeviceRole>>();
  private readonly now: () => number;

  constructor(private readonly flow: FlowSpec, topology: ClusterTopology, private readonly opts: AssemblerOptions) {
    this.now = opts.now ?? Date.now;
    for (const n of topology.nodes) {
      this.roles.set(n.name, presentRoles(n));
      for (const p of n.pods) this.podIps.set(p.name, new Set(p.ips));
      for (const d of [n.underlay, n.tunnel, n.bridge, ...n.pods.flatMap((p) => [p.hostVeth, p.eth])]) {
        if (d) this.devices.set(deviceKey(d.netns.ino, d.ifindex), d);
      }
    }
    // The sender's node is the source side of a request; the reply's sides are mirrored.
    const srcNode = findPodByIp(topology, flow.src)?.node;
    const dstNode = [flow.dst, ...(opts.endpoints ?? [])].map((ip) => findPodByIp(topology, ip)?.node).find(Boolean);
    const sides = (from: string | undefined, to: string | undefined) => {
      const m = new Map<string, Side>();
      if (to) m.set(to, 'destination');
      if (from) m.set(from, 'source');
      return m;
    };
    this.sideOf = { request: sides(srcNode, dstNode), reply: sides(dstNode, srcNode) };
  }

  /** Take one record; returns the path when this record completed it. */
  add(r: HopRecord): PacketPath | null {
    if (r.kind === RECORD_KIND.DROP) return this.dropped(r);
    const device = this.devices.get(deviceKey(r.netns_ino, r.ifindex));
    if (!device) return null;
    const direction = r.direction === 0 ? 'request' : 'reply';
    const side = this.sideOf[direction].get(device.node);
    if (!side) return null;
    // a pod-side device belongs to the path only for the pod at that end
    if (device.pod && !this.podIps.get(device.pod)?.has(addrString(side === 'source' ? r.saddr : r.daddr, r.family))) return null;
    const hook = r.hook === 0 ? 'ingress' : 'egress';
    const point = hookPoint(side, device.role, hook);
    if (!point) return null;
    const key = packetKey(r);
    let p = this.pending.get(key);
    if (!p) {
      p = { first: r, direction, hops: new Map(), lastSeenMs: this.now() };
      this.pending.set(key, p);
    }
    const step = stepOn(side, device.role, hook, this.roles.get(device.node) ?? new Set()) ?? point.step;
    const addrs = `${endpoint(addrString(r.saddr, r.family), r.sport, r.proto)} -> ${endpoint(addrString(r.daddr, r.family), r.dport, r.proto)}`;
    if (!p.hops.has(point.order)) p.hops.set(point.order, { order: point.order, step, device, hook, ts: r.ts_ns, addrs });
    p.lastSeenMs = this.now();
    if (point.order === FINAL_ORDER) {
      this.pending.delete(key);
      return this.build(p, true);
    }
    return null;
  }

  /** The kernel freed a packet of the flow: its path ends here, with the kernel's reason. */
  private dropped(r: HopRecord): PacketPath | null {
    const key = packetKey(r);
    const p = this.pending.get(key);
    if (!p) return null; // died before the first hook: nothing to place it on
    this.pending.delete(key);
    const reason = this.opts.dropReason?.(r.reason) ?? `reason ${r.reason}`;
    p.kernelDrop = { reason, device: this.devices.get(deviceKey(r.netns_ino, r.ifindex))?.name ?? null };
    return this.build(p, false);
  }

  /** Paths whose next hop has not come within the grace time (all of them with force). */
  expire(force = false): PacketPath[] {
    const out: PacketPath[] = [];
    const limit = this.now() - this.opts.graceMs;
    for (const [key, p] of this.pending) {
      if (force || p.lastSeenMs <= limit) {
        this.pending.delete(key);
        out.push(this.build(p, false));
      }
    }
    return out;
  }

  get pendingCount(): number {
    return this.pending.size;
  }

  private build(p: Pending, complete: boolean): PacketPath {
    const r = p.first;
    const hops = [...p.hops.values()].sort((a, b) => a.order - b.order);
    let prev = hops[0]?.ts ?? 0;
    const steps: HopView[] = hops.map((h) => {
      const view: HopView = {
        step: h.step, name: STEP_NAMES[h.step] ?? '', node: h.device.node, device: h.device.name, hook: h.hook,
        ts_ns: h.ts, latency_ns: Math.max(0, h.ts - prev),
      };
      if (h.device.role === 'pod') view.pod = h.device.pod;
      prev = Math.max(prev, h.ts);
      return view;
    });
    const src = addrString(r.saddr, r.family);
    const dst = addrString(r.daddr, r.family);
    const f = this.flow;
    const packet: PacketPath['packet'] = {
      src, sport: r.proto === 1 || r.proto === 58 ? 0 : r.sport, dst, dport: r.dport,
      ip_id: r.ip_id, len: r.ip_len, payload_len: r.payload_len, gso_segs: Math.max(1, r.gso_segs),
    };
    if (r.proto === 6) Object.assign(packet, { seq: r.seq, ack: r.ack, tcp_flags: tcpFlags(r.tcp_flags) });
    if (r.proto === 1 || r.proto === 58) Object.assign(packet, { icmp_type: r.icmp_type, icmp_id: r.sport, icmp_seq: r.seq });
    const last = hops[hops.length - 1];
    // a Service's DNAT (or the reply's reverse NAT) shows as the addresses changing between two hops
    const translations = hops.slice(1).flatMap((h, i) => (h.addrs === hops[i]!.addrs ? [] : [{
      node: h.device.node, after: `${hops[i]!.device.name} ${hops[i]!.hook}`, before_step: h.step, from: hops[i]!.addrs, to: h.addrs,
    }]));
    const skipped = [...new Set(hops.map((h) => h.device.node))].flatMap((node) => {
      const side = this.sideOf[p.direction].get(node);
      return side ? skippedSteps(side, this.roles.get(node) ?? new Set()).map((s) => ({ step: s.step, name: STEP_NAMES[s.step] ?? '', node, reason: s.reason })) : [];
    });
    return {
      flow: { src: f.src, sport: f.sport, dst: f.dst, dport: f.dport, proto: f.proto },
      direction: p.direction,
      packet,
      steps,
      ...(skipped.length ? { skipped } : {}),
      ...(translations.length ? { translations } : {}),
      total_ns: steps.reduce((s, h) => s + h.latency_ns, 0),
      complete,
      drop: complete || !last ? null : {
        step: last.step, device: last.device.name, node: last.device.node,
        reason: p.kernelDrop
          ? `dropped by the kernel (${p.kernelDrop.reason}) after ${last.device.name} ${last.hook} (step ${last.step}, ${STEP_NAMES[last.step]})`
          : `not seen after ${last.device.name} ${last.hook} (step ${last.step}, ${STEP_NAMES[last.step]})`,
        ...(p.kernelDrop ? { kernel_reason: p.kernelDrop.reason, ...(p.kernelDrop.device ? { dropped_on: p.kernelDrop.device } : {}) } : {}),
      },
    };
  }
}
