// Step 6, the wire between nodes, as this agent times it: sampled packets leaving through the
// underlay are logged with their wall-clock departure for peers to fetch; packets arriving
// from the underlay wait (a bounded time) for the sending peer's departure to pair with.
import type { Route } from '../export/http';
import type { SampledPacket } from '../flow/sampled';
import { DepartureLog, Log2Histogram, PeerDepartures } from '../flow/wire';
import { ORDER } from '../probe/layout.generated';
import type { WallClock } from '../flow/clock';

const PEER_POLL_MS = 500;
const WIRE_WAIT_MS = 2000;

export type Departure = { wallNs: bigint; node: string };

export interface WireStepOptions {
  node: string;
  peers: string[];
  clock: WallClock;
  /** a packet is done with the wire step: paired with its departure, or not */
  emit(p: SampledPacket, departure: Departure | null): void;
  log(line: string): void;
}

export class WireStep {
  readonly histogram = new Log2Histogram();
  private readonly departures = new DepartureLog();
  private readonly peers: PeerDepartures;
  private readonly waiting: { p: SampledPacket; sinceMs: number }[] = [];
  private readonly peerWarned = new Map<string, number>();
  private timer: NodeJS.Timeout | null = null;

  constructor(private readonly opts: WireStepOptions) {
    // a peer that does not answer means no step 6: say so, once a minute at most
    this.peers = new PeerDepartures(opts.peers, (peer, err) => {
      if (Date.now() - (this.peerWarned.get(peer) ?? 0) < 60_000) return;
      this.peerWarned.set(peer, Date.now());
      opts.log(`warning: peer ${peer} did not answer (${err.message}): no step-6 timing from it`);
    });
  }

  get enabled(): boolean {
    return this.peers.enabled;
  }

  /** The agent's HTTP route peers fetch departures from. */
  route(): Route {
    return async (url) => {
      const since = url.searchParams.get('since') ?? '';
      return {
        status: 200, type: 'application/json',
        body: JSON.stringify({ node: this.opts.node, departures: this.departures.since(BigInt(/^\d+$/.test(since) ? since : '0')) }),
      };
    };
  }

  start(): void {
    if (!this.peers.enabled) return;
    let busy = false;
    this.timer = setInterval(() => {
      if (busy) return;
      busy = true;
      void this.peers.poll().finally(() => (busy = false));
    }, PEER_POLL_MS);
  }

  /** A sampled packet is complete on this node. */
  add(p: SampledPacket): void {
    const last = p.hops[p.hops.length - 1];
    if (last?.order === ORDER.UNDERLAY_EGRESS) this.departures.record(p.traceId, this.opts.clock.wallNs(last.tsNs));
    if (p.hops[0]?.order === ORDER.UNDERLAY_INGRESS && this.peers.enabled) this.waiting.push({ p, sinceMs: Date.now() });
    else this.opts.emit(p, null);
  }

  /** Pair arrivals whose departure came in; give up on those that waited too long. */
  pair(): void {
    const now = Date.now();
    for (let i = 0; i < this.waiting.length; ) {
      const { p, sinceMs } = this.waiting[i]!;
      const d = this.peers.get(p.traceId);
      if (d || now - sinceMs > WIRE_WAIT_MS) {
        this.waiting.splice(i, 1);
        if (d) this.histogram.observe(Math.max(0, Number(this.opts.clock.wallNs(p.hops[0]!.tsNs) - d.wallNs)));
        this.opts.emit(p, d ?? null);
      } else {
        i++;
      }
    }
  }

  /** Stop polling; every waiting packet goes out unpaired. */
  stop(): void {
    if (this.timer) clearInterval(this.timer);
    for (const { p } of this.waiting.splice(0)) this.opts.emit(p, null);
  }
}
