// Entries by packet identity: what a packet carries unchanged across every hop of both nodes (not
// skb->hash nor tstamp): flow, direction, IP ID and length, ports, TCP seq and ack. Looked up once
// per record, so the key is a number hashed from those fields (a string made of them cost more than
// the rest of the assembly); entries whose hashes collide share a bucket and are told apart by the
// fields themselves.
import type { HopRecord } from '../probe/layout.generated';

/** The fields of a packet's identity, as its first record carried them. */
export interface Keyed {
  readonly first: HopRecord;
}

function samePacket(a: HopRecord, b: HopRecord): boolean {
  return a.seq === b.seq && a.ack === b.ack && a.ip_id === b.ip_id && a.ip_len === b.ip_len && a.sport === b.sport
    && a.dport === b.dport && a.flow_id === b.flow_id && a.direction === b.direction;
}

/** 30 bits (a small integer to the engine: no heap number per key) mixed from every identity field. */
export function packetHash(r: HopRecord): number {
  let h = Math.imul(r.seq ^ 0x9e3779b9, 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13) ^ r.ack, 0xc2b2ae35);
  h = Math.imul(h ^ (h >>> 16) ^ ((r.ip_id << 16) | r.ip_len), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13) ^ ((r.sport << 16) | r.dport), 0xc2b2ae35);
  h = Math.imul(h ^ (h >>> 16) ^ ((r.flow_id << 1) | r.direction), 0x85ebca6b);
  return (h ^ (h >>> 15)) & 0x3fffffff;
}

export class PacketTable<T extends Keyed> {
  private readonly buckets = new Map<number, T | T[]>();
  private count = 0;

  /** hash: packetHash, or (tests) one that makes entries collide */
  constructor(private readonly hash: (r: HopRecord) => number = packetHash) {}

  get size(): number {
    return this.count;
  }

  get(r: HopRecord): T | undefined {
    const b = this.buckets.get(this.hash(r));
    if (b === undefined) return undefined;
    if (!Array.isArray(b)) return samePacket(b.first, r) ? b : undefined;
    for (const e of b) if (samePacket(e.first, r)) return e;
    return undefined;
  }

  /** Add e (no entry of the same packet may be in the table). */
  add(e: T): void {
    const h = this.hash(e.first);
    const b = this.buckets.get(h);
    if (b === undefined) this.buckets.set(h, e);
    else if (Array.isArray(b)) b.push(e);
    else this.buckets.set(h, [b, e]);
    this.count++;
  }

  /** Remove e itself (not another entry of the same packet); false when it is not in the table. */
  delete(e: T): boolean {
    const h = this.hash(e.first);
    const b = this.buckets.get(h);
    if (b === undefined) return false;
    if (!Array.isArray(b)) {
      if (b !== e) return false;
      this.buckets.delete(h);
    } else {
      const i = b.indexOf(e);
      if (i < 0) return false;
      b.splice(i, 1);
      if (b.length === 1) this.buckets.set(h, b[0]!);
    }
    this.count--;
    return true;
  }

  *values(): Generator<T> {
    for (const b of this.buckets.values()) {
      if (!Array.isArray(b)) yield b;
      // a copy: the caller may delete entries of this bucket as it goes
      else yield* b.slice();
    }
  }
}
