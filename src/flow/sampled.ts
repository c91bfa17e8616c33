// Packets the consistent sampler picked (the same packets on every node), grouped from the agent's ring
// records into one node's view of each packet: its hops on this node, in path order.
import { createHash } from 'node:crypto';
import { ORDER, RECORD_KIND, type HopRecord } from '../probe/layout.generated';
import { addrString } from '../probe/addr';

export interface SampledHop {
  order: number;
  tsNs: number;
  netnsIno: number;
  ifindex: number;
}

export interface SampledPacket {
  /** derived from what the packet carries unchanged: equal on every node, so spans join one trace */
  traceId: string;
  rootSpanId: string;
  family: number;
  proto: number;
  src: string;
  dst: string;
  sport: number;
  dport: number;
  ipLen: number;
  hops: SampledHop[];
  drop: { reason: number; order: number; tsNs: number } | null;
}

export interface Retransmit {
  /** the flow's trace: every retransmit of one connection lands in it */
  traceId: string;
  src: string;
  dst: string;
  sport: number;
  dport: number;
  seq: number;
  segments: number;
  tsNs: number;
}

function hex(s: string): string {
  return createHash('sha256').update(s).digest('hex');
}

export function packetIdentity(r: HopRecord): string {
  return [r.family, addrString(r.saddr, r.family), addrString(r.daddr, r.family), r.proto, r.sport, r.dport, r.ip_id, r.seq, r.ack, r.ip_len].join('|');
}

/** Span id of a step of a packet: every node derives the same one. */
export function stepSpanId(traceId: string, order: number): string {
  return hex(`${traceId}|${order}`).slice(0, 16);
}

interface Pending {
  packet: SampledPacket;
  lastMs: number;
}

/**
 * Groups hop records by packet. A packet is complete on this node when it reaches
 * the last hook a node can see (leaving: underlay egress; arriving: pod ingress)
 * or was dropped, or after quietMs without a new hop.
 */
export class SampleGrouper {
  private readonly pending = new Map<string, Pending>();

  constructor(private readonly quietMs = 300, private readonly now: () => number = Date.now) {}

  /** Returns packets completed by this record, and any retransmit it describes. */
  add(r: HopRecord): { packet?: SampledPacket; retransmit?: Retransmit } {
    if (r.kind === RECORD_KIND.RETRANS) {
      const src = addrString(r.saddr, r.family);
      const dst = addrString(r.daddr, r.family);
      return {
        retransmit: {
          traceId: hex(`flow|${r.family}|${src}|${dst}|${r.proto}|${r.sport}|${r.dport}`).slice(0, 32),
          src, dst, sport: r.sport, dport: r.dport, seq: r.seq, segments: r.gso_segs, tsNs: r.ts_ns,
        },
      };
    }
    const id = packetIdentity(r);
    let p = this.pending.get(id);
    if (!p) {
      const h = hex(id);
      p = {
        packet: {
          traceId: h.slice(0, 32), rootSpanId: h.slice(32, 48), family: r.family, proto: r.proto,
          src: addrString(r.saddr, r.family), dst: addrString(r.daddr, r.family), sport: r.sport, dport: r.dport, ipLen: r.ip_len,
          hops: [], drop: null,
        },
        lastMs: this.now(),
      };
      this.pending.set(id, p);
    }
    p.lastMs = this.now();
    if (r.kind === RECORD_KIND.DROP) {
      p.packet.drop = { reason: r.reason, order: r.order, tsNs: r.ts_ns };
    } else if (!p.packet.hops.some((h) => h.order === r.order)) {
      p.packet.hops.push({ order: r.order, tsNs: r.ts_ns, netnsIno: r.netns_ino, ifindex: r.ifindex });
    }
    const last = r.order === ORDER.UNDERLAY_EGRESS || r.order === ORDER.POD_INGRESS;
    if (r.kind === RECORD_KIND.DROP || last) {
      this.pending.delete(id);
      return { packet: finish(p.packet) };
    }
    return {};
  }

  /** Packets that went quiet (or all of them, when flushing). */
  expire(all = false): SampledPacket[] {
    const out: SampledPacket[] = [];
    const now = this.now();
    for (const [id, p] of this.pending) {
      if (all || now - p.lastMs >= this.quietMs) {
        this.pending.delete(id);
        out.push(finish(p.packet));
      }
    }
    return out;
  }
}

function finish(p: SampledPacket): SampledPacket {
  p.hops.sort((a, b) => a.order - b.order);
  return p;
}
