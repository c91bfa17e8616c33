// Step 6, the wire, is the one step no single node sees both ends of. Each agent keeps
// the wall-clock departures of its sampled packets and serves them; a receiving agent
// pulls its peers' and pairs them with its arrivals. Sampling is consistent (every node picks the same packets),
// so both nodes hold the same packets. Clocks: the nodes' wall clocks (NTP); a skewed
// clock never yields a negative latency: it is clamped (docs/architecture.md#clocks).

export interface Departure {
  trace_id: string;
  /** wall-clock ns, as a decimal string (beyond 2^53) */
  wall_ns: string;
}

const KEEP_NS = 30n * 1_000_000_000n;

/** This node's departures (packets leaving through the underlay), newest last. */
export class DepartureLog {
  private readonly entries: { traceId: string; wallNs: bigint }[] = [];

  record(traceId: string, wallNs: bigint): void {
    this.entries.push({ traceId, wallNs });
    const cutoff = wallNs - KEEP_NS;
    let drop = 0;
    while (drop < this.entries.length && this.entries[drop]!.wallNs < cutoff) drop++;
    if (drop) this.entries.splice(0, drop);
  }

  since(wallNs: bigint): Departure[] {
    return this.entries.filter((e) => e.wallNs > wallNs).map((e) => ({ trace_id: e.traceId, wall_ns: e.wallNs.toString() }));
  }
}

/** Departures learned from the other nodes' agents, by trace id. */
export class PeerDepartures {
  private readonly known = new Map<string, { wallNs: bigint; node: string }>();
  private readonly cursor = new Map<string, bigint>();
  constructor(private readonly peers: string[], private readonly onFailure: (peer: string, err: Error) => void = () => {}, private readonly fetchTimeoutMs = 1000) {}

  get enabled(): boolean {
    return this.peers.length > 0;
  }

  get(traceId: string): { wallNs: bigint; node: string } | undefined {
    return this.known.get(traceId);
  }

  async poll(): Promise<void> {
    await Promise.all(this.peers.map(async (peer) => {
      const since = this.cursor.get(peer) ?? 0n;
      try {
        const res = await fetch(`${peer.replace(/\/$/, '')}/v1/departures?since=${since}`, { signal: AbortSignal.timeout(this.fetchTimeoutMs) });
        if (!res.ok) throw new Error(`HTTP ${res.status}`);
        const body = (await res.json()) as { node: string; departures: Departure[] };
        for (const d of body.departures) {
          const wallNs = BigInt(d.wall_ns);
          this.known.set(d.trace_id, { wallNs, node: body.node });
          if (wallNs > (this.cursor.get(peer) ?? 0n)) this.cursor.set(peer, wallNs);
        }
      } catch (err) {
        this.onFailure(peer, err as Error);
      }
    }));
    // forget what is too old to still be waited for
    if (this.known.size > 100_000) {
      const newest = [...this.cursor.values()].reduce((a, b) => (a > b ? a : b), 0n);
      for (const [id, d] of this.known) if (d.wallNs < newest - KEEP_NS) this.known.delete(id);
    }
  }
}

/** Log2-of-ns histogram kept in userspace (the same buckets the kernel uses). */
export class Log2Histogram {
  readonly counts: number[] = new Array(64).fill(0);
  sumNs = 0;

  observe(ns: number): void {
    const v = Math.max(0, Math.floor(ns));
    const b = v < 1 ? 0 : Math.min(63, Math.floor(Math.log2(v)));
    this.counts[b]! += 1;
    this.sumNs += v;
  }
}
