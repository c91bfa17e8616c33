// The packet bytes of hop records (follow -w), kept until the path their hop lands on is handed out.
// The assembler keeps only what a path needs; the bytes wait here, keyed by what a hop of the path
// says (node, device, hook, kernel time), so the assembler stays as it is and a record that never
// makes a path is forgotten by age. Bounded in count and time; a hop whose bytes were dropped is counted.
import type { HopView, PacketPath } from './path';
import { allDevices, type ClusterTopology, type Device } from '../topology/model';
import type { HopRecord } from '../probe/layout.generated';

type HookName = HopView['hook'];

export interface HopBytes {
  /** the packet's first bytes at this hop, as the kernel copied them (empty when it could not) */
  data: Uint8Array;
  /** the packet's whole length there (skb->len) */
  originalLength: number;
  /** whether data starts at a MAC header; false on a device without one (IPIP's tunl0): at the IP header */
  ethernet: boolean;
}

export interface CaptureIndexOptions {
  /** records kept at most; the oldest go first (default 65536: 16 MiB of bytes at most) */
  maxEntries?: number;
  /** a record older than the newest by this much is forgotten (default 30 s: paths wait at most their grace time) */
  retainNs?: number;
}

const key = (node: string, device: string, pod: string, hook: HookName, ts: number): string => `${node}\0${device}\0${pod}\0${hook}\0${ts}`;

/** ARPHRD_ETHER and ARPHRD_LOOPBACK (include/uapi/linux/if_arp.h): their tc hooks see an Ethernet header first. */
const ARPHRD_WITH_ETHERNET = new Set([1, 772]);

/**
 * Whether a device of this kernel type (net_device->type, read where the bytes were copied) puts an
 * Ethernet header in front: veths, bridges, VXLAN devices, NICs do; IPIP's tunl0 (ARPHRD_TUNNEL, 768),
 * GRE or WireGuard start at the IP header.
 */
export function hasMacHeader(devType: number): boolean {
  return ARPHRD_WITH_ETHERNET.has(devType);
}

export class CaptureIndex {
  private readonly byIno = new Map<number, Map<number, Device>>();
  private readonly kept = new Map<string, { ts: number; bytes: HopBytes }>();
  private readonly maxEntries: number;
  private readonly retainNs: number;
  private newest = 0;
  /** hops of handed-out paths whose bytes were no longer (or never) here */
  missing = 0;

  constructor(topology: ClusterTopology, opts: CaptureIndexOptions = {}) {
    for (const d of allDevices(topology)) {
      let t = this.byIno.get(d.netns.ino);
      if (!t) this.byIno.set(d.netns.ino, (t = new Map()));
      t.set(d.ifindex, d);
    }
    this.maxEntries = opts.maxEntries ?? 65536;
    this.retainNs = opts.retainNs ?? 30e9;
  }

  /** Keep a hop record's bytes (devType: its device's ARPHRD_*); a record of a device we do not hook, or a drop record, is ignored. */
  add(r: HopRecord, data: Uint8Array, devType: number): void {
    const d = this.byIno.get(r.netns_ino)?.get(r.ifindex);
    if (!d || r.kind !== 0) return;
    const hook: HookName = r.hook === 0 ? 'ingress' : 'egress';
    this.kept.set(key(d.node, d.name, d.role === 'pod' ? d.pod ?? '' : '', hook, r.ts_ns), {
      ts: r.ts_ns, bytes: { data, originalLength: r.skb_len, ethernet: hasMacHeader(devType) },
    });
    if (r.ts_ns > this.newest) this.newest = r.ts_ns;
    while (this.kept.size > this.maxEntries) this.kept.delete(this.kept.keys().next().value!);
  }

  /** The bytes of each hop of p (by index of p.steps), taken out of the index; undefined where none were kept. */
  take(p: PacketPath): (HopBytes | undefined)[] {
    const out = p.steps.map((h: HopView) => {
      const k = key(h.node, h.device, h.pod ?? '', h.hook, h.ts_ns);
      const e = this.kept.get(k);
      if (!e) {
        this.missing++;
        return undefined;
      }
      this.kept.delete(k);
      return e.bytes;
    });
    this.prune();
    return out;
  }

  /** records kept now */
  get size(): number {
    return this.kept.size;
  }

  /** forget records far older than the newest: no path will ask for them (insertion order is nearly time order) */
  private prune(): void {
    for (const [k, e] of this.kept) {
      if (e.ts >= this.newest - this.retainNs) break;
      this.kept.delete(k);
    }
  }
}
