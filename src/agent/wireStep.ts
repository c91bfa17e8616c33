// Step 6, the wire between nodes, as this agent times it: sampled packets leaving through the
// underlay are logged with their wall-clock departure for peers to fetch; packets arriving
// from the underlay wait (a bounded time) for the sending peer's departure to pair with.
import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Route } from '../export/http';
import type { SampledPacket } from '../flow/sampled';
import { DepartureLog, Log2Histogram, PAGE_MAX, PeerDepartures } from '../flow/wire';
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
  /** the agent's token (--token-file): sent to peers, and required from them on /v1/departures */
  token?: string | null;
  /** how long an arrival waits for its departure (default 2 s) */
  waitMs?: number;
}

/** What the agent exports as metrics (all counters, since the start). */
export interface WireStats {
  /** departures this node kept for its peers */
  departuresRecorded: number;
  /** departures overwritten in the log before any peer read them */
  departuresDropped: number;
  /** answers from peers refused as a whole (shape, size, redirect, node name) */
  peerInvalidAnswers: number;
  /** departures refused in peers' answers (types, trace id, time window) */
  peerInvalidEntries: number;
  /** peers' departures forgotten to stay bounded */
  peerEvicted: number;
  /** requests to /v1/departures without the token */
  unauthorized: number;
  /** arrivals from the underlay paired with a peer's departure: step 6 timed */
  arrivalsPaired: number;
  /** arrivals no peer reported a departure for in time: no step 6 for them */
  arrivalsUnpaired: number;
  /** step-6 times the nodes' clocks made negative, counted as 0 in the histogram */
  clamped: number;
}

const sha256 = (s: string): Buffer => createHash('sha256').update(s).digest();
const json = (status: number, body: unknown) => ({ status, type: 'application/json', body: JSON.stringify(body) });

export class WireStep {
  readonly histogram = new Log2Histogram();
  private readonly departures = new DepartureLog();
  private readonly peers: PeerDepartures;
  private readonly waiting: { p: SampledPacket; sinceMs: number }[] = [];
  private readonly peerWarned = new Map<string, number>();
  private timer: NodeJS.Timeout | null = null;
  private readonly expected: Buffer | null;
  private unauthorized = 0;
  private counts = { paired: 0, unpaired: 0, clamped: 0 };

  constructor(private readonly opts: WireStepOptions) {
    this.expected = opts.token ? sha256(opts.token) : null;
    // a peer that does not answer means no step 6: say so, once a minute at most
    this.peers = new PeerDepartures(opts.peers, {
      token: opts.token ?? null,
      self: opts.node,
      nowWallNs: () => opts.clock.now().wallNs,
      onFailure: (peer, err) => {
        if (Date.now() - (this.peerWarned.get(peer) ?? 0) < 60_000) return;
        this.peerWarned.set(peer, Date.now());
        opts.log(`warning: peer ${peer} did not answer${err.name === 'InvalidAnswer' ? ' as an agent does' : ''} (${err.message}): no step-6 timing from it`);
      },
    });
  }

  get stats(): WireStats {
    return {
      departuresRecorded: this.departures.recorded,
      departuresDropped: this.departures.dropped,
      peerInvalidAnswers: this.peers.invalidAnswers,
      peerInvalidEntries: this.peers.invalidEntries,
      peerEvicted: this.peers.evicted,
      unauthorized: this.unauthorized,
      arrivalsPaired: this.counts.paired,
      arrivalsUnpaired: this.counts.unpaired,
      clamped: this.counts.clamped,
    };
  }

  get enabled(): boolean {
    return this.peers.enabled;
  }

  /**
   * The agent's HTTP route peers fetch departures from: GET /v1/departures?after=SEQ[&limit=N],
   * answering { node, departures: [{ trace_id, wall_ns }], next, more }. With a token, only
   * requests that bring it (Authorization: Bearer) are answered; the others get 401.
   */
  route(): Route {
    return async (url, req) => {
      if (this.expected && !this.authorized(req)) {
        this.unauthorized++;
        return json(401, { error: 'a valid bearer token is required (--token-file)' });
      }
      const after = url.searchParams.get('after') ?? '0';
      const limit = url.searchParams.get('limit') ?? String(PAGE_MAX);
      if (!/^\d{1,15}$/.test(after)) return json(400, { error: 'after: give the "next" of the previous answer, or 0' });
      if (!/^\d{1,9}$/.test(limit) || Number(limit) < 1) return json(400, { error: 'limit: give a number of departures, at least 1' });
      return json(200, { node: this.opts.node, ...this.departures.read(Number(after), Number(limit)) });
    };
  }

  private authorized(req: IncomingMessage): boolean {
    const m = /^Bearer ([^\s]{1,4096})$/.exec(req.headers.authorization ?? '');
    return !!m && timingSafeEqual(sha256(m[1]!), this.expected!);
  }

  start(): void {
    if (!this.peers.enabled) return;
    let busy = false;
    const tick = () => {
      if (busy) return;
      busy = true;
      void this.poll().finally(() => (busy = false));
    };
    this.timer = setInterval(tick, PEER_POLL_MS);
    // at once: a peer keeps departures only once we read it, so the first packets are paired too
    tick();
  }

  /** Fetch the peers' new departures once (start() does it every PEER_POLL_MS). */
  poll(): Promise<void> {
    return this.peers.poll();
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
    const waitMs = this.opts.waitMs ?? WIRE_WAIT_MS;
    for (let i = 0; i < this.waiting.length; ) {
      const { p, sinceMs } = this.waiting[i]!;
      const d = this.peers.get(p.traceId);
      if (d || now - sinceMs > waitMs) {
        this.waiting.splice(i, 1);
        if (d) {
          this.counts.paired++;
          // the sender's clock ahead of ours: never a negative latency, but say how often
          const ns = Number(this.opts.clock.wallNs(p.hops[0]!.tsNs) - d.wallNs);
          if (ns < 0) this.counts.clamped++;
          this.histogram.observe(Math.max(0, ns));
        } else {
          this.counts.unpaired++;
        }
        this.opts.emit(p, d ?? null);
      } else {
        i++;
      }
    }
  }

  /** Stop polling; every waiting packet goes out unpaired. */
  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.peers.close();
    for (const { p } of this.waiting.splice(0)) this.opts.emit(p, null);
  }
}
