// Rebuild each packet's path from hop records: group by what the packet carries unchanged
// end to end (docs/architecture.md#packet-identity), order by the step model, emit when the last hop is seen or after a grace time.
// Across nodes, TCP data is also matched by byte range: TSO/GSO and GRO give the two nodes different skb boundaries.
import { ORDER, RECORD_KIND, type HopRecord } from '../probe/layout.generated';
import { type ClusterTopology, type Device, findPodByIp } from '../topology/model';
import { failedStep, FINAL_ORDER, hookPoint, ORDER_POINTS, presentRoles, skippedSteps, STEP_NAMES, stepOn, type Side } from '../topology/steps';
import type { DeviceRole, PodRef } from '../topology/model';
import type { HopView, PacketPath } from './path';
import type { FlowSpec } from './spec';
import { addrString } from '../probe/addr';
import { type ByteRange, covers, FlowRanges, overlap, seqDiff } from './byteRanges';
import { everyShift, sampledByte } from './every';
import { AddrText, tcpFlags } from './headerText';
import { PacketTable } from './packetTable';

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
  /** its identity (src/flow/packetTable.ts): the first record of the packet that came */
  first: HopRecord;
  kernelDrop?: { reason: string; device: string | null };
  direction: 'request' | 'reply';
  /** by order: an array of ORDER.COUNT slots made once, cheaper than a Map per packet or one that grows */
  hops: (Seen | undefined)[];
  /** the highest order in hops; -1 before the first */
  top: number;
  lastSeenMs: number;
  /** the node of its source-side hops, once it has one */
  srcNode?: string;
  hasDst: boolean;
  /** reached the final hook or was dropped by the kernel, but still waits for its source side */
  ended: boolean;
  /** emitted, or retired into another entry's path */
  done: boolean;
  /** TCP data on a path whose both nodes we watch: its byte range, for matching across segmentation */
  span?: Span;
  /** reached its final hop without a step 6 of its own: waits (grace time) for the wire skbs holding its bytes */
  held: boolean;
  /** gso_segs of its first source-side record (0 until one came) */
  srcSegs: number;
}

/** An entry's byte range [seq, seq + len) in its flow's index, and the entries of the other side it overlaps (source entries link to destination entries and back). */
interface Span extends ByteRange<Pending> {
  readonly flow: TcpFlow;
  links: Pending[];
  /** source: bytes of it in linked destination entries that arrived; destination: bytes of it in linked source entries (sums, overlaps count twice) */
  bytes: number;
  /** while held for its step 6: bytes of it in wire skbs that came (a sum, as bytes) */
  wire: number;
}

/** One flow direction's entries by byte range. */
class TcpFlow extends FlowRanges<Pending> {
  /** entries held for their wire skbs: a new wire skb looks for them only when there are some */
  held = 0;

  override reset(base: number): void {
    super.reset(base);
    this.held = 0;
  }
}

/** covers() rangeOf: every entry; only those whose bytes reached the pod */
const spanOf = (p: Pending): Span => p.span!;
const arrivedSpan = (p: Pending): Span | null => (p.hops[FINAL_ORDER] !== undefined && !p.kernelDrop ? p.span! : null);

/** Where a packet seen on a device at a tc hook is on the path, per direction; null: off the path. */
interface Where {
  device: Device;
  /** by direction, then by tc hook (0 ingress, 1 egress) */
  at: Record<Direction, [Place | null, Place | null]>;
}

interface Place {
  side: Side;
  order: number;
  step: number;
  hook: 'ingress' | 'egress';
}

/** devices by netns inode, then ifindex: numbers, no key string per record */
type DeviceTable = Map<number, Map<number, Where>>;

/** A node of the path that sends us no records (no agent there, or nettrace runs on one node alone). */
export interface Unwatched {
  /** where the request's pod is: 'source' for the sender's node, 'destination' for the receiver's; the reply mirrors it */
  side: Side;
  node: string;
  reason: string;
}

export interface AssemblerOptions {
  /** how long a path may wait for its next hop before it is reported incomplete */
  graceMs: number;
  /** name of a kernel drop reason (enum skb_drop_reason value) */
  dropReason?: (reason: number) => string;
  /** when the flow's destination is a ClusterIP: the endpoints it is translated to */
  endpoints?: string[];
  /** nodes of the path we get no records from: their paths end there as not watched, not as drops */
  unwatched?: Unwatched[];
  /**
   * records come over one stream per node (agents on other machines), so one node's may lag
   * another's: a path that reached the pod still waits for its sending node's last hooks
   */
  perNodeStreams?: boolean;
  /** follow --every n: the records are the sampled TCP packets (flow/every); 1 or absent: every packet */
  every?: number;
  now?: () => number;
}

const UNDERLAY_INGRESS: number = ORDER.UNDERLAY_INGRESS;

/**
 * A wire skb: TCP data seen on the receiving node only at its underlay ingress (step 6, before
 * decapsulation), as the tunnel device regrouped its bytes into other skbs after it (gro_cells).
 */
function wireOnly(q: Pending): boolean {
  return q.srcNode === undefined && !q.kernelDrop && q.span?.side === 'destination'
    && q.top === UNDERLAY_INGRESS;
}

/**
 * q carries segments of the skb s sent, not of another transmission of the same bytes (a
 * retransmission): the kernel numbers a GSO skb's segments with consecutive IPv4 IDs from the
 * skb's own (GRO keeps the first), and a retransmission takes new ones. So the ID ranges
 * [id, id + segments) of both intersect (mod 2^16). IPv6 has no ID (0 in both): every q matches.
 */
function sameSend(s: Pending, q: Pending): boolean {
  const a = s.first.ip_id;
  const n = Math.max(1, s.srcSegs || s.first.gso_segs);
  const b = q.first.ip_id;
  // a merged skb whose segment count we were not told holds about as many as its bytes make in s's segments
  const m = Math.max(1, q.first.gso_segs, Math.ceil(q.first.payload_len / Math.max(1, Math.ceil(s.first.payload_len / n))));
  return ((b - a) & 0xffff) < n || ((a - b) & 0xffff) < m;
}

type Direction = 'request' | 'reply';

export class PathAssembler {
  private readonly devices: DeviceTable = new Map();
  private readonly devicesByNode = new Map<string, DeviceTable>();
  private readonly pending = new PacketTable<Pending>();
  private readonly podIps = new Map<string, Set<string>>();
  /** pods' Kubernetes identities (joined from a source of names), by the pod's netns name and by IP */
  private readonly podRefs = new Map<string, PodRef>();
  private readonly podRefByIp = new Map<string, PodRef>();
  private readonly sideOf: Record<Direction, Map<string, Side>>;
  private readonly roles = new Map<string, Set<DeviceRole>>();
  /** the last source-side hook a node has: underlay egress, or what is left without tunnel or bridge */
  private readonly lastSourceOrder = new Map<string, number>();
  /** both ends of the path are on nodes we watch, so TCP data is matched by byte range across them */
  private readonly cross: boolean;
  /** follow --every: a sampled skb is matched across nodes by its sampled byte only */
  private readonly everyShift: number;
  /** per direction: the end of the path on a node we get no records from */
  private readonly notWatched: Record<Direction, { source?: PacketPath['not_watched']; destination?: PacketPath['not_watched'] }>;
  /** by flow id, then flowKey (direction and ports): numbers, no key string per packet */
  private readonly flows = new Map<number, Map<number, TcpFlow>>();
  /** paths completed together with another one by add(), handed out by the next expire() */
  private readonly ready: PacketPath[] = [];
  private readonly addrText = new AddrText();
  private readonly addrTexts = new Map<Uint8Array, string>();
  /** skippedOn's answers by direction, first hop's node, last hop's node */
  private readonly skippedCache: Record<Direction, Map<string, Map<string, NonNullable<PacketPath['skipped']>>>> = { request: new Map(), reply: new Map() };
  private readonly now: () => number;

  constructor(private readonly flow: FlowSpec, topology: ClusterTopology, private readonly opts: AssemblerOptions) {
    this.now = opts.now ?? Date.now;
    for (const n of topology.nodes) {
      const roles = presentRoles(n);
      this.roles.set(n.name, roles);
      this.lastSourceOrder.set(n.name, Math.max(...ORDER_POINTS.filter((o) => o.side === 'source' && roles.has(o.role)).map((o) => o.order)));
      for (const p of n.pods) {
        this.podIps.set(p.name, new Set(p.ips));
        if (p.k8s) {
          this.podRefs.set(p.name, p.k8s);
          for (const ip of p.ips) this.podRefByIp.set(ip, p.k8s);
        }
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
    for (const n of topology.nodes) {
      const own: DeviceTable = new Map();
      this.devicesByNode.set(n.name, own);
      for (const d of [n.underlay, n.tunnel, n.bridge, ...n.pods.flatMap((p) => [p.hostVeth, p.eth])]) {
        if (!d) continue;
        const w: Where = { device: d, at: { request: this.places(d, 'request'), reply: this.places(d, 'reply') } };
        for (const t of [this.devices, own]) {
          let byIndex = t.get(d.netns.ino);
          if (!byIndex) t.set(d.netns.ino, (byIndex = new Map()));
          byIndex.set(d.ifindex, w);
        }
      }
    }

    const u = (side: Side): PacketPath['not_watched'] => {
      const w = opts.unwatched?.find((x) => x.side === side);
      if (!w) return undefined;
      return { node: w.node, reason: w.reason, steps: this.stepsOn(w.node, side) };
    };
    const mirror = (s: PacketPath['not_watched'], side: Side): PacketPath['not_watched'] =>
      s && { ...s, steps: this.stepsOn(s.node, side) };
    const reqSrc = u('source');
    const reqDst = u('destination');
    this.notWatched = {
      request: { source: reqSrc, destination: reqDst },
      reply: { source: mirror(reqDst, 'source'), destination: mirror(reqSrc, 'destination') },
    };
    this.everyShift = everyShift(opts.every ?? 1);
    this.cross = !!srcNode && !!dstNode && srcNode !== dstNode && !reqSrc && !reqDst;
  }

  /** The steps a side's node holds; those its mode does not have are left out when we know the node. */
  private stepsOn(node: string, side: Side): number[] {
    const all = side === 'source' ? [1, 2, 3, 4, 5] : [6, 7, 8, 9];
    const roles = this.roles.get(node);
    if (!roles) return all;
    const skipped = new Set(skippedSteps(side, roles).map((s) => s.step));
    return all.filter((s) => !skipped.has(s));
  }

  /** A device's place on the path at each tc hook, for one direction. */
  private places(d: Device, direction: Direction): [Place | null, Place | null] {
    const side = this.sideOf[direction].get(d.node);
    return (['ingress', 'egress'] as const).map((hook) => {
      const point = side && hookPoint(side, d.role, hook);
      if (!side || !point) return null;
      const step = stepOn(side, d.role, hook, this.roles.get(d.node) ?? new Set()) ?? point.step;
      return { side, order: point.order, step, hook };
    }) as [Place | null, Place | null];
  }

  private where(r: HopRecord, node: string | undefined): Where | undefined {
    const t = node === undefined ? this.devices : this.devicesByNode.get(node);
    return t?.get(r.netns_ino)?.get(r.ifindex);
  }

  /**
   * Take one record; returns the path when this record completed it. `node` is the node the record
   * comes from (NodeTopology.name): its device is looked up among that node's devices only, as
   * (netns inode, ifindex) is unique only inside one kernel. A record that completes several paths
   * at once (GRO merged several sent skbs) returns the first; expire() hands out the others.
   */
  add(r: HopRecord, node?: string): PacketPath | null {
    const out = this.addRecord(r, node);
    for (let i = 1; i < out.length; i++) this.ready.push(out[i]!);
    return out[0] ?? null;
  }

  /** Take one record; returns every path it completed. r may be reused by the caller once this returns. */
  addRecord(r: HopRecord, node?: string): PacketPath[] {
    const out: PacketPath[] = [];
    if (r.kind === RECORD_KIND.DROP) {
      this.dropped(r, node, out);
      return out;
    }
    const w = this.where(r, node);
    if (!w) return out;
    const direction = r.direction === 0 ? 'request' : 'reply';
    const point = w.at[direction][r.hook === 0 ? 0 : 1];
    if (!point) return out;
    const device = w.device;
    const side = point.side;
    // a pod-side device belongs to the path only for the pod at that end
    if (device.pod && !this.podIps.get(device.pod)?.has(this.addrOf(side === 'source' ? r.saddr : r.daddr, r.family))) return out;
    const now = this.now();
    let wire = false;
    let p = this.pending.get(r);
    if (!p) {
      // every field set here, in one order: one object shape for all entries
      p = {
        // a copy: a caller may hand every record in one reused object (the ring reader's)
        first: { ...r }, kernelDrop: undefined, direction, hops: new Array<Seen | undefined>(ORDER.COUNT), top: -1, lastSeenMs: now, srcNode: undefined, hasDst: false, ended: false, done: false,
        span: undefined, held: false, srcSegs: 0,
      };
      this.pending.add(p);
      if (this.cross && r.proto === 6 && r.payload_len > 0) {
        this.index(p, side, r);
        // a wire skb may hold the missing bytes of a path held for its step 6
        if (point.order === UNDERLAY_INGRESS && side === 'destination') wire = true;
      }
    }
    if (p.hops[point.order] === undefined) {
      p.hops[point.order] = { order: point.order, step: point.step, device, hook: point.hook, ts: r.ts_ns, addrs: this.addrText.of(r) };
      if (point.order > p.top) p.top = point.order;
    }
    p.lastSeenMs = now;
    const nw = this.notWatched[direction];
    if (side === 'source') {
      if (p.srcNode === undefined) {
        p.srcNode = device.node;
        p.srcSegs = Math.max(1, r.gso_segs);
      }
      if (nw.destination && point.order === this.lastSourceOrder.get(device.node) && !p.hasDst) {
        // the rest of the path is on a node we do not watch: ours ends here
        this.finish(p);
        out.push(this.build(p, false, { drop: null, notWatched: nw.destination }));
      } else if (p.ended && p.hasDst && this.sourceDone(p)) {
        // the receiving node's hops came first; now the sending node's are all here
        if (p.kernelDrop) {
          this.finish(p);
          out.push(this.build(p, false));
        } else {
          this.arrived(p, out);
        }
      } else if (p.span?.side === 'source') {
        this.trySource(p, out);
      }
      return out;
    }
    p.hasDst = true;
    // bytes of a linked source entry are still moving: it waits for them
    if (p.span) for (const s of p.span.links) s.lastSeenMs = now;
    if (wire) this.wireArrived(p, out);
    if (point.order !== FINAL_ORDER || p.ended) return out;
    p.ended = true;
    if (p.srcNode === undefined && icmpError(p.first)) {
      // an ICMP error a node sent (a REJECT, no route): its path begins on the node that answered
      this.finish(p);
      out.push(this.build(p, true));
    } else if (nw.source && p.srcNode === undefined) {
      this.finish(p);
      out.push(this.build(p, false, { drop: null, notWatched: nw.source }));
    } else if (p.srcNode !== undefined && p.span && !this.sourceDone(p)) {
      // TCP data, as a linked source entry does: the sending node's last hooks may still come over its
      // own stream; they finish the path, or the grace time does
    } else if (p.srcNode !== undefined && p.span) {
      this.arrived(p, out);
    } else if (this.opts.perNodeStreams && this.cross && p.srcNode !== undefined && p.srcNode !== device.node && !this.sourceDone(p)) {
      // the sending node's last hooks come over its own stream and may be behind the receiving
      // node's: they finish the path, or the grace time does (complete, as it reached the pod)
    } else if (p.srcNode !== undefined || (!p.span && !this.cross)) {
      this.finish(p);
      out.push(this.build(p, true));
    } else if (!p.span) {
      // seen only on the receiving node so far while the sending node is watched too: its records
      // may still come (another machine's stream); they finish the path, or the grace time does
    } else {
      // TCP data seen only on the receiving node so far: its bytes belong to the source entries it overlaps
      this.destinationEnded(p, out);
    }
    return out;
  }

  /** The kernel freed a packet of the flow: its path ends here, with the kernel's reason. */
  private dropped(r: HopRecord, node: string | undefined, out: PacketPath[]): void {
    const p = this.pending.get(r);
    if (!p) return; // died before the first hook: nothing to place it on
    // freed after it reached the pod (no socket took it, or a raw socket had a copy): the path is whole
    if (p.hops[FINAL_ORDER] !== undefined || p.held) return;
    const reason = this.opts.dropReason?.(r.reason) ?? `reason ${r.reason}`;
    if (p.span && p.srcNode === undefined) {
      // a destination entry: its source entries (or, unlinked, the grace time) report it
      if (p.ended) return;
      p.kernelDrop = { reason, device: this.where(r, node)?.device.name ?? null };
      p.ended = true;
      p.lastSeenMs = this.now();
      this.destinationEnded(p, out);
      return;
    }
    this.finish(p);
    p.kernelDrop = { reason, device: this.where(r, node)?.device.name ?? null };
    out.push(this.build(p, false));
  }

  /** Paths whose next hop has not come within the grace time (all of them with force). */
  expire(force = false): PacketPath[] {
    const out = this.ready.splice(0);
    const limit = this.now() - this.opts.graceMs;
    const wires: Pending[] = [];
    for (const p of this.pending.values()) {
      if (!force && p.lastSeenMs > limit) continue;
      const sp = p.span;
      // a wire skb of no sent skb: last, as a path expiring now may still take it as its step 6
      if (sp && sp.links.length === 0 && wireOnly(p)) {
        wires.push(p);
        continue;
      }
      const held = p.held;
      this.finish(p);
      if (held) {
        // its wire skbs did not all come: emitted with those that did (or none, as before)
        out.push(p.hasDst ? this.build(p, true) : this.buildLinked(p, true, null));
      } else if (sp && p.srcNode === undefined) {
        // linked: its bytes are in its source entries' paths; alone: a path seen only on the receiving node
        if (sp.links.length === 0) out.push(this.build(p, p.hops[FINAL_ORDER] !== undefined && !p.kernelDrop));
      } else if (sp?.side === 'source' && !p.hasDst && sp.links.length > 0) {
        const f = this.fate(p);
        out.push(this.buildLinked(p, f.arrived >= sp.len, f.drop));
      } else {
        out.push(this.build(p, p.hops[FINAL_ORDER] !== undefined && !p.kernelDrop));
      }
    }
    for (const w of wires) {
      if (w.done) continue; // taken by a path above
      if (!force && this.pathMayTake(w)) continue;
      this.finish(w);
      out.push(this.build(w, false));
    }
    for (const [id, byKey] of this.flows) {
      for (const [k, fi] of byKey) {
        if (fi.empty) byKey.delete(k);
        else fi.compact();
      }
      if (byKey.size === 0) this.flows.delete(id);
    }
    return out;
  }

  get pendingCount(): number {
    return this.pending.size;
  }

  private finish(p: Pending): void {
    p.done = true;
    this.pending.delete(p);
    const sp = p.span;
    if (p.held) {
      p.held = false;
      if (sp && sp.flow.held > 0) sp.flow.held--;
    }
    // out of the index as it is done: lookups never yield a done entry
    sp?.flow.remove(sp);
  }

  private sourceDone(p: Pending): boolean {
    return p.srcNode !== undefined && p.hops[this.lastSourceOrder.get(p.srcNode) ?? ORDER.UNDERLAY_EGRESS] !== undefined;
  }

  // ---- byte ranges (docs/architecture.md#packet-identity: GSO/TSO/GRO) ----

  /** Put a new TCP data entry in its flow's index and link it to the other side's entries it overlaps. */
  private index(p: Pending, side: Side, r: HopRecord): void {
    let byKey = this.flows.get(r.flow_id);
    if (!byKey) this.flows.set(r.flow_id, (byKey = new Map()));
    const fk = flowKey(r);
    let fi = byKey.get(fk);
    if (!fi) byKey.set(fk, (fi = new TcpFlow(r.seq)));
    else if (fi.empty) fi.reset(r.seq);
    // every field set here, in one order: one object shape for all spans (add() sets rel)
    const mark = sampledByte(r.seq, r.payload_len, r.tcp_flags, this.everyShift);
    const sp: Span = {
      entry: p, flow: fi, side, seq: mark < 0 ? r.seq : mark, len: mark < 0 ? r.payload_len : 1, rel: 0, indexed: true, links: [], bytes: 0, wire: 0,
    };
    p.span = sp;
    fi.add(sp, this.linkNew);
    if (side === 'source') for (const d of sp.links) this.maybeRetire(d);
  }

  /** add()'s callback for every new entry (one function, not one per record): q, of the other side, overlaps r */
  private readonly linkNew = (q: Pending, r: ByteRange<Pending>): void => {
    if (r.side === 'source') this.link(r.entry, q);
    else this.link(q, r.entry);
  };

  private link(s: Pending, d: Pending): void {
    const ss = s.span!;
    const ds = d.span!;
    ss.links.push(d);
    ds.links.push(s);
    const n = overlap(ss, ds);
    ds.bytes += n;
    if (d.hops[FINAL_ORDER] !== undefined && !d.kernelDrop) ss.bytes += n;
  }

  /** A destination entry reached the pod or was dropped: its source entries may be done, it may be too. */
  private destinationEnded(d: Pending, out: PacketPath[]): void {
    const ds = d.span!;
    if (!d.kernelDrop) for (const s of ds.links) s.span!.bytes += overlap(s.span!, ds);
    for (const s of ds.links) this.trySource(s, out);
    this.maybeRetire(d);
  }

  /** An ended destination entry whose bytes all belong to linked source entries has nothing left to wait for. */
  private maybeRetire(d: Pending): void {
    const ds = d.span!;
    if (!d.ended || d.done || ds.bytes < ds.len) return;
    if (covers(ds, ds.links, spanOf)) this.finish(d);
  }

  /** Emit a source entry once its node's hops are all here and its bytes all arrived (or some were dropped). */
  private trySource(s: Pending, out: PacketPath[]): void {
    const sp = s.span;
    if (s.done || s.held || s.hasDst || !sp || sp.side !== 'source' || sp.links.length === 0 || !this.sourceDone(s)) return;
    if (sp.bytes >= sp.len && covers(sp, sp.links, arrivedSpan)) {
      this.arrived(s, out);
    } else if (sp.links.some((d) => d.kernelDrop)) {
      const f = this.fate(s);
      this.finish(s);
      out.push(this.buildLinked(s, f.arrived >= sp.len, f.drop));
    }
  }

  /**
   * What became of each byte of a source entry: how many arrived, and where the others were last seen
   * (a kernel drop first, else the hop that got least far).
   */
  private fate(s: Pending): { arrived: number; drop: PacketPath['drop'] } {
    const sp = s.span!;
    const links = sp.links.map((d) => {
      const a = seqDiff(d.span!.seq, sp.seq);
      return { d, a, b: a + d.span!.len, last: lastHop(d) };
    });
    const cuts = [...new Set([0, sp.len, ...links.flatMap((l) => [l.a, l.b]).filter((x) => x > 0 && x < sp.len)])].sort((x, y) => x - y);
    const srcLast = lastHop(s);
    let arrived = 0;
    let kernelD: Pending | undefined;
    let kernelBytes = 0;
    const lost = new Map<Seen, number>();
    for (let i = 0; i + 1 < cuts.length; i++) {
      const x = cuts[i]!;
      const y = cuts[i + 1]!;
      const on = links.filter((l) => l.a <= x && l.b >= y);
      if (on.some((l) => l.d.hops[FINAL_ORDER] !== undefined && !l.d.kernelDrop)) arrived += y - x;
      else if (on.some((l) => l.d.kernelDrop)) {
        const d = on.find((l) => l.d.kernelDrop)!.d;
        kernelD ??= d;
        if (kernelD === d) kernelBytes += y - x;
      } else {
        const furthest = on.map((l) => l.last).filter((h): h is Seen => !!h).reduce<Seen | undefined>((m, h) => (!m || h.order > m.order ? h : m), undefined) ?? srcLast;
        if (furthest) lost.set(furthest, (lost.get(furthest) ?? 0) + y - x);
      }
    }
    if (arrived >= sp.len) return { arrived, drop: null };
    const of = (n: number) => ` for ${n} of ${sp.len} bytes`;
    if (kernelD) return { arrived, drop: this.stopped(lastHop(kernelD)!, kernelD.kernelDrop, of(kernelBytes)) };
    const [h, n] = [...lost].reduce((m, e) => (e[0].order < m[0].order ? e : m));
    return { arrived, drop: this.stopped(h, undefined, of(n)) };
  }

  /** Where a packet last seen at `h` stopped: the step that failed, named the same way in follow, diagnose and the agent. */
  private stopped(h: Seen, kernel: Pending['kernelDrop'], bytes = ''): NonNullable<PacketPath['drop']> {
    const step = failedStep(h.order, this.roles.get(h.device.node) ?? new Set()) ?? h.step;
    const after = `after ${h.device.name} ${h.hook} (last seen step ${h.step}, ${STEP_NAMES[h.step]}): step ${step} (${STEP_NAMES[step]}) failed${bytes}`;
    return {
      step, step_name: STEP_NAMES[step] ?? '', device: h.device.name, node: h.device.node,
      reason: kernel ? `dropped by the kernel (${kernel.reason}) ${after}` : `not seen ${after}`,
      last_seen: { step: h.step, name: STEP_NAMES[h.step] ?? '', node: h.device.node, device: h.device.name, hook: h.hook },
      ...(kernel ? { kernel_reason: kernel.reason, ...(kernel.device ? { dropped_on: kernel.device } : {}) } : {}),
    };
  }

  /** The destination entry holding a linked source entry's first byte: the one that arrived, else the one that got furthest. */
  private firstDest(s: Pending): Pending | undefined {
    const sp = s.span!;
    let dest: Pending | undefined;
    for (const d of sp.links) {
      const a = seqDiff(d.span!.seq, sp.seq);
      if (a > 0 || a + d.span!.len <= 0) continue;
      // its own segments before another transmission's of the same bytes
      const rank = (x: Pending) => (sameSend(s, x) ? 1000 : 0) + (x.hops[FINAL_ORDER] !== undefined && !x.kernelDrop ? 100 : 0) + (lastHop(x)?.order ?? 0);
      if (!dest || rank(d) > rank(dest)) dest = d;
    }
    return dest;
  }

  // ---- wire skbs: the receiving node's boundaries change between step 6 and step 7 ----
  // (GRO, or none, at the underlay; the tunnel device regroups the inner packets after decapsulation)

  /**
   * A TCP data path reached its final hop (both ends here, all bytes arrived). Without a step 6 of its
   * own, its bytes crossed the underlay ingress in other skbs: emitted once those cover all its bytes,
   * else held (the grace time from now) as they may still come over the other node's stream.
   */
  private arrived(p: Pending, out: PacketPath[]): void {
    const sp = p.span;
    const dest = p.hasDst || !sp ? undefined : this.firstDest(p);
    const wire = sp && p.hops[UNDERLAY_INGRESS] === undefined && dest?.hops[UNDERLAY_INGRESS] === undefined ? this.wireFor(p) : null;
    if (sp && wire && !covers(sp, wire, spanOf)) {
      sp.wire = wire.reduce((n, w) => n + overlap(sp, w.span!), 0);
      if (!p.held) {
        p.held = true;
        sp.flow.held++;
        p.lastSeenMs = this.now();
      }
      return;
    }
    this.finish(p);
    out.push(p.hasDst ? this.build(p, true) : this.buildLinked(p, true, null));
  }

  /** A new wire skb: the held paths whose bytes it holds may now have all their step 6. */
  private wireArrived(w: Pending, out: PacketPath[]): void {
    const ws = w.span!;
    if (ws.flow.held === 0) return;
    const held: Pending[] = [];
    // held linked sources are linked to it already; held exact entries the receiving node started are in the destination list
    for (const s of ws.links) if (s.held) held.push(s);
    ws.flow.overlapping('destination', ws, (q) => { if (q.held) held.push(q); });
    for (const q of held) {
      const qs = q.span!;
      qs.wire += overlap(qs, ws);
      // look at the boundaries only once the sum says its bytes may all be there
      if (q.held && qs.wire >= qs.len) this.arrived(q, out);
    }
  }

  /** The wire skbs holding bytes of p, in seq order: linked to it (a source entry), or in the destination index. */
  private wireFor(p: Pending): Pending[] {
    const sp = p.span!;
    const found: Pending[] = [];
    const take = (q: Pending) => {
      if (q !== p && wireOnly(q) && overlap(sp, q.span!) > 0 && sameSend(p, q) && !found.includes(q)) found.push(q);
    };
    if (sp.side === 'source') for (const q of sp.links) take(q);
    sp.flow.overlapping('destination', sp, take);
    return found.sort((x, y) => seqDiff(x.span!.seq, sp.seq) - seqDiff(y.span!.seq, sp.seq));
  }

  /** An unlinked wire skb whose bytes a live path of the receiving node still holds: that path takes it when it is emitted. */
  private pathMayTake(w: Pending): boolean {
    let live = false;
    w.span!.flow.overlapping('destination', w.span!, (q) => { live ||= q !== w && !wireOnly(q); });
    return live;
  }

  /**
   * Step 6 of a TCP data path that has hops after decapsulation but no underlay ingress hop of its own:
   * from its wire skbs, the one holding its first byte (else the first by seq, when that one's record is
   * missing). They are taken: retired, not reported on their own.
   */
  private wireStep(p: Pending, dest: Pending | undefined): { hop: Seen; segments: NonNullable<PacketPath['packet']['segments']> | undefined } | null {
    const sp = p.span;
    if (!this.cross || !sp || p.hops[UNDERLAY_INGRESS] !== undefined || dest?.hops[UNDERLAY_INGRESS] !== undefined) return null;
    let after = false;
    for (let o = UNDERLAY_INGRESS + 1; o < ORDER.COUNT && !after; o++) after = (p.hops[o] ?? dest?.hops[o]) !== undefined;
    if (!after) return null;
    const wire = this.wireFor(p);
    if (wire.length === 0) return null;
    for (const w of wire) if (!w.done) this.finish(w);
    const at = (w: Pending) => seqDiff(w.span!.seq, sp.seq);
    const first = wire.find((w) => at(w) <= 0 && at(w) + w.span!.len > 0) ?? wire[0]!;
    const hop = first.hops[UNDERLAY_INGRESS]!;
    const same = wire.length === 1 && at(first) === 0 && first.span!.len === sp.len;
    return {
      hop,
      segments: same ? undefined : {
        sent: Math.max(1, p.srcSegs || p.first.gso_segs),
        received_as: wire.length,
        node: hop.device.node,
        merged: wire.some((w) => at(w) < 0 || at(w) + w.span!.len > sp.len),
      },
    };
  }

  /** A source entry's path: its own hops, then those of the destination entry holding its first byte. */
  private buildLinked(s: Pending, complete: boolean, drop: PacketPath['drop']): PacketPath {
    const sp = s.span!;
    const dest = this.firstDest(s);
    // what this transmission became, not a retransmission's copies of the same bytes
    const own = sp.links.filter((d) => sameSend(s, d));
    const links = own.length > 0 ? own : sp.links;
    const one = links.length === 1 ? links[0]!.span! : null;
    const same = one !== null && one.seq === sp.seq && one.len === sp.len;
    const segments = same ? undefined : {
      sent: Math.max(1, s.first.gso_segs),
      received_as: links.length,
      node: lastHop(dest ?? links[0]!)?.device.node ?? '',
      merged: links.some((d) => {
        const a = seqDiff(d.span!.seq, sp.seq);
        return a < 0 || a + d.span!.len > sp.len;
      }),
    };
    return this.build(s, complete, { dest, segments, drop });
  }

  private build(p: Pending, complete: boolean, x: {
    dest?: Pending; segments?: NonNullable<PacketPath['packet']['segments']>; drop?: PacketPath['drop']; notWatched?: PacketPath['not_watched'];
  } = {}): PacketPath {
    const r = p.first;
    const wire = this.wireStep(p, x.dest);
    // in order, not by time: clocks of two nodes may disagree
    const hops: Seen[] = [];
    const steps: HopView[] = [];
    let prev = 0;
    for (let o = 0; o < ORDER.COUNT; o++) {
      const h = p.hops[o] ?? x.dest?.hops[o] ?? (o === UNDERLAY_INGRESS ? wire?.hop : undefined);
      if (!h) continue;
      if (hops.length === 0) prev = h.ts;
      hops.push(h);
      const view: HopView = {
        step: h.step, name: STEP_NAMES[h.step] ?? '', node: h.device.node, device: h.device.name, hook: h.hook,
        ts_ns: h.ts, latency_ns: Math.max(0, h.ts - prev),
      };
      if (h.device.role === 'pod') {
        view.pod = h.device.pod;
        const ref = h.device.pod !== undefined ? this.podRefs.get(h.device.pod) : undefined;
        if (ref) view.k8s = ref;
      }
      if (h.ts < prev) view.clamped_ns = prev - h.ts;
      // from this hop on, its own clock: a clamp at the wire leaves the next node's steps their times
      prev = h.ts;
      steps.push(view);
    }
    const src = this.addrOf(r.saddr, r.family);
    const dst = this.addrOf(r.daddr, r.family);
    const f = this.flow;
    const packet: PacketPath['packet'] = {
      src, sport: r.proto === 1 || r.proto === 58 ? 0 : r.sport, dst, dport: icmpError(r) ? 0 : r.dport,
      ip_id: r.ip_id, len: r.ip_len, payload_len: r.payload_len, gso_segs: Math.max(1, r.gso_segs),
    };
    if (r.proto === 6) {
      packet.seq = r.seq;
      packet.ack = r.ack;
      packet.tcp_flags = tcpFlags(r.tcp_flags);
    }
    // an error's ports are those it quotes (bpf/parse.h), not an echo id: only its type is shown
    if (icmpError(r)) packet.icmp_type = r.icmp_type;
    else if (r.proto === 1 || r.proto === 58) {
      packet.icmp_type = r.icmp_type;
      packet.icmp_id = r.sport;
      packet.icmp_seq = r.seq;
    }
    // the regrouping at step 6 when the wire skbs had their own boundaries, else the one the linked destination entries show
    const segments = wire ? wire.segments : x.segments;
    if (segments) packet.segments = segments;
    const last = hops[hops.length - 1];
    // a Service's DNAT (or the reply's reverse NAT) shows as the addresses changing between two hops
    let translations: NonNullable<PacketPath['translations']> | undefined;
    for (let i = 1; i < hops.length; i++) {
      const h = hops[i]!;
      const before = hops[i - 1]!;
      if (h.addrs === before.addrs) continue;
      (translations ??= []).push({ node: h.device.node, after: `${before.device.name} ${before.hook}`, before_step: h.step, from: before.addrs, to: h.addrs });
    }
    const skipped = this.skippedOn(p.direction, hops);
    const drop: PacketPath['drop'] = x.drop !== undefined ? x.drop : complete || !last ? null : this.stopped(last, p.kernelDrop);
    let total = 0;
    for (const h of steps) total += h.latency_ns;
    // fields in this order (JSON lines print them so); the optional ones only when there is something
    const out = { flow: { src: f.src, sport: f.sport, dst: f.dst, dport: f.dport, proto: f.proto }, direction: p.direction, packet, steps } as PacketPath;
    if (skipped.length) out.skipped = skipped.map((k) => ({ ...k }));
    if (translations) out.translations = translations;
    out.total_ns = total;
    out.complete = complete;
    out.drop = drop;
    if (x.notWatched) out.not_watched = x.notWatched;
    if (this.podRefs.size) out.pods = this.flowPods(hops);
    return out;
  }

  /** An address's text; an IPv4 one once per address, as the decoder shares their arrays between records (IPv6 ones are new each time). */
  private addrOf(a: Uint8Array, family: number): string {
    if (family !== 4) return addrString(a, family);
    let t = this.addrTexts.get(a);
    if (t === undefined) {
      if (this.addrTexts.size >= 4096) this.addrTexts.clear();
      this.addrTexts.set(a, (t = addrString(a, family)));
    }
    return t;
  }

  /** The steps the nodes of these hops do not have (their CNI mode), the same for every path of a direction and nodes. */
  private skippedOn(direction: Direction, hops: Seen[]): NonNullable<PacketPath['skipped']> {
    if (hops.length === 0) return [];
    // a direction's hops are on its source node, then its destination node (sideOf: one node a side),
    // so the first and the last hop name them; a few entries, looked up without a key string
    const first = hops[0]!.device.node;
    const last = hops[hops.length - 1]!.device.node;
    const byFirst = this.skippedCache[direction];
    let byLast = byFirst.get(first);
    if (!byLast) byFirst.set(first, (byLast = new Map()));
    let s = byLast.get(last);
    if (!s) {
      s = (first === last ? [first] : [first, last]).flatMap((node) => {
        const side = this.sideOf[direction].get(node);
        return side ? skippedSteps(side, this.roles.get(node) ?? new Set()).map((k) => ({ step: k.step, name: STEP_NAMES[k.step] ?? '', node, reason: k.reason })) : [];
      });
      byLast.set(last, s);
    }
    return s;
  }

  /** The flow's two pods by name; a Service's end is the pod the path reached, if it reached one. */
  private flowPods(hops: Seen[]): NonNullable<PacketPath['pods']> {
    const src = this.podRefByIp.get(this.flow.src) ?? null;
    let dst = this.podRefByIp.get(this.flow.dst) ?? null;
    if (!dst) {
      const reached = hops.map((h) => (h.device.pod !== undefined ? this.podRefs.get(h.device.pod) : undefined)).filter((r) => r && r !== src);
      dst = reached[reached.length - 1] ?? null;
    }
    return { src, dst };
  }
}

/** A flow direction's direction and ports as one number below 2^40 (exact as a double). */
function flowKey(r: HopRecord): number {
  return r.direction * 0x100000000 + (((r.sport << 16) | r.dport) >>> 0);
}

/** An ICMPv4 destination unreachable, time exceeded or parameter problem. */
function icmpError(r: HopRecord): boolean {
  return r.proto === 1 && (r.icmp_type === 3 || r.icmp_type === 11 || r.icmp_type === 12);
}

function lastHop(p: Pending): Seen | undefined {
  return p.top < 0 ? undefined : p.hops[p.top];
}
