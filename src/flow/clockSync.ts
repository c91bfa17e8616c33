// Placing another machine's clock on ours (docs/architecture.md#clocks). Two estimates:
// - an NTP-style exchange: we send at t0, the agent reads its clock (a), we receive at t2;
//   its offset is a - (t0 + t2) / 2, wrong by at most (t2 - t0) / 2. The sample with the
//   shortest round trip of a recent window wins: queueing only ever adds delay.
// - the wire step's symmetry: a request's step 6 (A -> B) and a reply's (B -> A) cross the
//   same cable; with B's offset off by e, the first reads d + e and the second d - e, so half
//   their difference estimates e. It refines the exchange, within the exchange's bound.
import { median } from './stats';

export interface ClockSample {
  /** our wall clock when the question left, ns */
  t0: bigint;
  /** the agent's wall clock when it answered, ns */
  agentNs: bigint;
  /** our wall clock when the answer came, ns */
  t2: bigint;
}

const WINDOW = 16;

export class OffsetEstimate {
  private readonly samples: ClockSample[] = [];
  private best: { offset: bigint; halfRtt: bigint } | null = null;

  add(s: ClockSample): void {
    if (s.t2 < s.t0) return;
    this.samples.push(s);
    if (this.samples.length > WINDOW) this.samples.shift();
    let best: { offset: bigint; halfRtt: bigint } | null = null;
    for (const x of this.samples) {
      const halfRtt = (x.t2 - x.t0 + 1n) / 2n;
      if (!best || halfRtt < best.halfRtt) best = { offset: x.agentNs - (x.t0 + x.t2) / 2n, halfRtt };
    }
    this.best = best;
  }

  get known(): boolean {
    return this.best !== null;
  }

  /** agent clock minus ours, ns */
  get offsetNs(): bigint {
    return this.best?.offset ?? 0n;
  }

  /** the offset is right within this many ns */
  get uncertaintyNs(): number {
    return Number(this.best?.halfRtt ?? 0n);
  }
}

/** Wire-step times of one node pair, both directions, for the symmetry correction. */
export class WireSymmetry {
  private readonly ab: number[] = [];
  private readonly ba: number[] = [];

  /** wireNs: step 6 as measured with the current offsets (may be negative); forward: from the pair's first node */
  add(forward: boolean, wireNs: number): void {
    const list = forward ? this.ab : this.ba;
    list.push(wireNs);
    if (list.length > 64) list.shift();
  }

  /**
   * How much to add to the second node's offset estimate (ns), bounded by `bound`; null until
   * both directions have a few samples. Medians: one queued packet must not move it.
   */
  correction(bound: number, minSamples = 3): number | null {
    if (this.ab.length < minSamples || this.ba.length < minSamples) return null;
    const e = (median(this.ab) - median(this.ba)) / 2;
    return Math.max(-bound, Math.min(bound, e));
  }
}

