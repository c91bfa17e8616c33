// This node's clock: BPF stamps hops with bpf_ktime_get_ns (CLOCK_MONOTONIC, the same clock as
// process.hrtime); wall time is that plus an offset re-measured while running, since NTP
// slews the wall clock (docs/architecture.md#clocks).

export class WallClock {
  private offset = 0n;

  /** skewNs: added to every reading; simulates a node whose wall clock is off (tests only) */
  constructor(private readonly skewNs = 0n) {
    this.measure();
  }

  measure(): void {
    const wall = BigInt(Math.round((performance.timeOrigin + performance.now()) * 1e3)) * 1000n;
    this.offset = wall - process.hrtime.bigint() + this.skewNs;
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
