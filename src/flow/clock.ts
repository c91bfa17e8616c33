// This node's clock: BPF stamps hops with bpf_ktime_get_ns (CLOCK_MONOTONIC, the same clock as
// process.hrtime); wall time is that plus an offset re-measured while running, since NTP
// slews the wall clock (docs/architecture.md#clocks).
import type { PacketPath } from './path';

export class WallClock {
  private offset = 0n;

  /** skewNs: added to every reading; simulates a node whose wall clock is off (tests only) */
  constructor(private readonly skewNs = 0n) {
    this.measure();
  }

  /**
   * Pairs a wall-clock reading with a monotonic one. Date.now() is the wall clock as it is now
   * (NTP's steps and slews included; performance.timeOrigin + performance.now() is the wall clock
   * of the process's start plus monotonic time, which never follows them), but in whole
   * milliseconds: read at the moment it ticks, the pair is good to a few microseconds. Waits up
   * to 1 ms.
   */
  measure(): void {
    const start = Date.now();
    let mono = process.hrtime.bigint();
    let now = Date.now();
    const deadline = mono + 2_000_000n;
    while (now === start && mono < deadline) {
      mono = process.hrtime.bigint();
      now = Date.now();
    }
    this.offset = BigInt(now) * 1_000_000n - mono + this.skewNs;
  }

  /** wall-clock ns minus monotonic ns, as last measured */
  get offsetNs(): bigint {
    return this.offset;
  }

  /** a monotonic timestamp (a hop's ts_ns) as wall-clock ns */
  wallNs(tsNs: number | bigint): bigint {
    return (typeof tsNs === 'bigint' ? tsNs : BigInt(Math.round(tsNs))) + this.offset;
  }

  /** now: the monotonic and the wall reading that belong together */
  now(): { monoNs: bigint; wallNs: bigint } {
    const monoNs = process.hrtime.bigint();
    return { monoNs, wallNs: monoNs + this.offset };
  }
}

/** Wall-clock ns as ISO 8601 in UTC with microseconds: 2026-11-29T14:04:05.123456Z. */
export function isoMicros(wallNs: bigint): string {
  const sec = wallNs / 1_000_000_000n;
  return isoOf(Number(sec), Math.floor(Number(wallNs - sec * 1_000_000_000n) / 1000));
}

function isoOf(sec: number, micros: number): string {
  // every hop of a path, and most paths of a second, share the date and time: formatted once a second
  if (sec !== isoSecond) {
    isoSecond = sec;
    isoPrefix = new Date(sec * 1000).toISOString().slice(0, 19);
  }
  // 1e6 + micros has seven digits: its last six are micros zero-padded, with one string fewer than padStart
  return `${isoPrefix}.${String(1_000_000 + micros).slice(1)}Z`;
}
let isoSecond = -1;
let isoPrefix = '';

/**
 * Gives each hop its wall-clock time (HopView.time) from its ts_ns, which is on the monotonic
 * clock offsetNs maps to the wall clock (WallClock.offsetNs): this machine's, also for another
 * node's hops once their clock correction placed them on it. In numbers, not BigInts: a BigInt
 * is a heap object, and this runs for every hop of every path.
 */
export function stampWallTimes(p: PacketPath, offsetNs: bigint): PacketPath {
  let sec = Number(offsetNs / 1_000_000_000n);
  let frac = Number(offsetNs % 1_000_000_000n);
  if (frac < 0) {
    frac += 1e9;
    sec -= 1;
  }
  for (const h of p.steps) {
    // ts_ns + frac stays below 2^53 for ~100 days of uptime, and microseconds survive beyond
    const t = h.ts_ns + frac;
    const s = Math.floor(t / 1e9);
    h.time = isoOf(sec + s, Math.floor((t - s * 1e9) / 1000));
  }
  return p;
}
