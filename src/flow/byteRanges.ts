// TCP byte ranges of one flow direction, sorted by sequence number: how skbs are matched across
// the nodes when TSO/GSO and GRO cut their bytes differently (docs/architecture.md#packet-identity).
// It knows sequence space only; what an entry is stays the caller's (E).
import type { Side } from '../topology/steps';

/** relative seqs stay within ±2^30 of the base; further away, the index rebases (a flow moved 1 GB since) */
const REL_LIMIT = 2 ** 30;

/** [seq, seq + len) in 32-bit sequence space */
export interface SeqRange {
  readonly seq: number;
  readonly len: number;
}

/**
 * An entry's range in a FlowRanges. The caller builds it with its own fields besides these (one object
 * per entry, one shape), then hands it to add().
 */
export interface ByteRange<E> extends SeqRange {
  /** what lookups yield */
  readonly entry: E;
  /** the side of the hop that created the entry: a new range is matched against the other side's */
  readonly side: Side;
  /** seq relative to the index's base, signed: the order in the index whatever the wrap (set by add()) */
  rel: number;
  /** false once removed, or forgotten by a rebase: lookups skip it */
  indexed: boolean;
}

interface RangeList<E> {
  items: ByteRange<E>[];
  dead: number;
  /** longest range ever inserted: how far back an overlap can start */
  maxLen: number;
}

/** the signed distance a - b in 32-bit sequence space */
export function seqDiff(a: number, b: number): number {
  return (a - b) | 0;
}

/** Bytes of s that d holds too. */
export function overlap(s: SeqRange, d: SeqRange): number {
  const a = seqDiff(d.seq, s.seq);
  return Math.max(0, Math.min(s.len, a + d.len) - Math.max(0, a));
}

/** Whether the entries' ranges cover all of target's, each clipped to it; rangeOf returns null for an entry that does not count. */
export function covers<E>(target: SeqRange, entries: readonly E[], rangeOf: (e: E) => SeqRange | null): boolean {
  const iv: [number, number][] = [];
  for (const e of entries) {
    const r = rangeOf(e);
    if (!r) continue;
    const a = seqDiff(r.seq, target.seq);
    iv.push([Math.max(0, a), Math.min(target.len, a + r.len)]);
  }
  iv.sort((x, y) => x[0] - y[0]);
  let reach = 0;
  for (const [a, b] of iv) {
    if (a > reach) return false;
    if (b > reach) reach = b;
  }
  return reach >= target.len;
}

/** One flow direction's ranges, each side in its own list sorted by rel. Removed ranges stay in the lists (dead) until compacted. */
export class FlowRanges<E> {
  private base: number;
  /** indexed ranges, both sides */
  private live = 0;
  private readonly lists: Record<Side, RangeList<E>> = {
    source: { items: [], dead: 0, maxLen: 0 },
    destination: { items: [], dead: 0, maxLen: 0 },
  };

  constructor(base: number) {
    this.base = base;
  }

  get empty(): boolean {
    return this.live === 0;
  }

  /** Forget every range (all removed: empty) and count seqs from base. */
  reset(base: number): void {
    this.base = base;
    this.live = 0;
    for (const l of [this.lists.source, this.lists.destination]) {
      l.items.length = 0;
      l.dead = 0;
      l.maxLen = 0;
    }
  }

  /**
   * Index a new range: first calls onOverlap with each range of the other side it overlaps, then inserts it.
   * onOverlap gets r too, so one function can serve every call (no closure per record).
   */
  add(r: ByteRange<E>, onOverlap: (q: E, r: ByteRange<E>) => void): void {
    let rel = seqDiff(r.seq, this.base);
    if (rel >= REL_LIMIT || rel <= -REL_LIMIT) {
      this.rebase(r.seq);
      rel = 0;
    }
    r.rel = rel;
    r.indexed = true;
    this.overlapping(r.side === 'source' ? 'destination' : 'source', r, onOverlap);
    // insert in seq order: mostly at the end
    const own = this.lists[r.side];
    const list = own.items;
    const at = list.length;
    if (at > 0 && list[at - 1]!.rel > rel) {
      let lo = 0;
      let hi = at;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if (list[mid]!.rel <= rel) lo = mid + 1;
        else hi = mid;
      }
      list.splice(lo, 0, r);
    } else {
      list.push(r);
    }
    if (r.len > own.maxLen) own.maxLen = r.len;
    this.live++;
    if (own.dead > 64 && own.dead > list.length / 2) this.compactList(own);
  }

  /** Take a range out of the lookups (its list drops it at the next compaction); no-op if it is not indexed. */
  remove(r: ByteRange<E>): void {
    if (!r.indexed) return;
    r.indexed = false;
    this.lists[r.side].dead++;
    this.live--;
  }

  /** Calls fn with the entry of each indexed range of a side that overlaps r (binary search: no scan of the whole list). */
  overlapping(side: Side, r: ByteRange<E>, fn: (q: E, r: ByteRange<E>) => void): void {
    const l = this.lists[side];
    const items = l.items;
    let lo = 0;
    let hi = items.length;
    const from = r.rel - l.maxLen;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (items[mid]!.rel <= from) lo = mid + 1;
      else hi = mid;
    }
    const end = r.rel + r.len;
    for (let i = lo; i < items.length; i++) {
      const q = items[i]!;
      if (q.rel >= end) break;
      if (q.indexed && q.rel + q.len > r.rel) fn(q.entry, r);
    }
  }

  /** Drop removed ranges from both lists. */
  compact(): void {
    this.compactList(this.lists.source);
    this.compactList(this.lists.destination);
  }

  /** A flow moved on by a gigabyte: count seqs from here, forget ranges that far behind. */
  private rebase(base: number): void {
    this.base = base;
    for (const l of [this.lists.source, this.lists.destination]) {
      for (const r of l.items) {
        if (!r.indexed) continue;
        r.rel = seqDiff(r.seq, base);
        if (r.rel >= REL_LIMIT || r.rel <= -REL_LIMIT) {
          r.indexed = false;
          this.live--;
        }
      }
      l.items = l.items.filter((r) => r.indexed).sort((a, b) => a.rel - b.rel);
      l.dead = 0;
    }
  }

  private compactList(l: RangeList<E>): void {
    if (l.dead === 0) return;
    l.items = l.items.filter((r) => r.indexed);
    l.dead = 0;
  }
}
