// Step 6, the wire, is the one step no single node sees both ends of. Each agent keeps
// the wall-clock departures of its sampled packets and serves them; a receiving agent
// pulls its peers' and pairs them with its arrivals. Sampling is consistent (every node picks the same packets),
// so both nodes hold the same packets. Clocks: the nodes' wall clocks (NTP); a skewed
// clock never yields a negative latency: it is clamped (docs/architecture.md#clocks).
//
// Both sides are bounded: the log is a fixed ring read by sequence number, in pages; what a peer
// answers is checked field by field, capped per answer, per poll and in total, and kept apart per peer.
import * as http from 'node:http';
import * as https from 'node:https';

export interface Departure {
  trace_id: string;
  /** wall-clock ns, as a decimal string (beyond 2^53) */
  wall_ns: string;
}

/** One answer of GET /v1/departures?after=SEQ&limit=N (besides `node`). */
export interface DeparturePage {
  /** oldest first */
  departures: Departure[];
  /** the cursor for the next read: `?after=next` */
  next: number;
  /** more departures are there already: read again now */
  more: boolean;
}

const KEEP_NS = 30n * 1_000_000_000n;
/** departures a log holds */
export const LOG_CAPACITY = 65_536;
/** departures in one answer, at most */
export const PAGE_MAX = 4096;
/** a log records only while a peer read it this recently */
export const ACTIVE_MS = 10_000;

export interface DepartureLogOptions {
  capacity?: number;
  pageMax?: number;
  activeMs?: number;
  /** ms clock (tests) */
  now?: () => number;
}

/**
 * This node's departures (packets leaving through the underlay): a fixed ring, O(1) a record.
 * Entry n (from 1) has sequence number n; readers pass the last one they got (`read(after)`).
 * Nothing is kept unless a peer read the log in the last `activeMs`. An entry overwritten before
 * any reader got past it is counted in `dropped`; a reader is not served entries more than 30 s
 * behind the newest (no receiver waits for them that long).
 */
export class DepartureLog {
  private readonly capacity: number;
  private readonly pageMax: number;
  private readonly activeMs: number;
  private readonly now: () => number;
  private readonly ids: string[];
  private readonly walls: BigInt64Array;
  /** sequence number of the newest entry; 0: none yet */
  private last = 0;
  /** the furthest any reader got */
  private readUpTo = 0;
  private lastReadMs = -Infinity;
  private droppedCount = 0;

  constructor(opts: DepartureLogOptions = {}) {
    this.capacity = Math.max(1, Math.floor(opts.capacity ?? LOG_CAPACITY));
    this.pageMax = Math.max(1, Math.floor(opts.pageMax ?? PAGE_MAX));
    this.activeMs = opts.activeMs ?? ACTIVE_MS;
    this.now = opts.now ?? Date.now;
    this.ids = new Array<string>(this.capacity).fill('');
    this.walls = new BigInt64Array(this.capacity);
  }

  /** some peer read the log recently: departures are being kept */
  get active(): boolean {
    return this.now() - this.lastReadMs <= this.activeMs;
  }

  /** departures kept since the start */
  get recorded(): number {
    return this.last;
  }

  /** departures overwritten before any peer read them */
  get dropped(): number {
    return this.droppedCount;
  }

  /** departures held now */
  get size(): number {
    return Math.min(this.last, this.capacity);
  }

  /** Keep a departure, if a peer is reading; false when nobody is. */
  record(traceId: string, wallNs: bigint): boolean {
    if (!this.active) return false;
    this.last++;
    const overwritten = this.last - this.capacity;
    if (overwritten > this.readUpTo) this.droppedCount++;
    const i = (this.last - 1) % this.capacity;
    this.ids[i] = traceId;
    this.walls[i] = wallNs;
    return true;
  }

  /**
   * The departures after sequence number `after`, oldest first, at most `limit` (and the log's page
   * size). A cursor beyond the newest entry (this agent restarted) reads from the oldest held.
   * Reading marks the log active.
   */
  read(after: number, limit = this.pageMax): DeparturePage {
    this.lastReadMs = this.now();
    const oldest = Math.max(1, this.last - this.capacity + 1);
    let seq = after > this.last || !(after >= 0) ? oldest : Math.max(Math.floor(after) + 1, oldest);
    const newestWall = this.last ? this.walls[(this.last - 1) % this.capacity]! : 0n;
    // skip what is too old to be waited for
    while (seq <= this.last && this.walls[(seq - 1) % this.capacity]! < newestWall - KEEP_NS) seq++;
    const n = Math.max(0, Math.min(this.last - seq + 1, Math.floor(limit), this.pageMax));
    const departures: Departure[] = new Array(n);
    for (let k = 0; k < n; k++) {
      const i = (seq + k - 1) % this.capacity;
      departures[k] = { trace_id: this.ids[i]!, wall_ns: this.walls[i]!.toString() };
    }
    const next = seq + n - 1;
    if (next > this.readUpTo) this.readUpTo = next;
    return { departures, next, more: next < this.last };
  }
}

/** A peer's answer was not what an agent sends: counted in `invalidAnswers`. */
export class InvalidAnswer extends Error {
  override name = 'InvalidAnswer';
}

export interface PeerDeparturesOptions {
  /** a peer did not answer, or answered nonsense */
  onFailure?: (peer: string, err: Error) => void;
  /** per request */
  timeoutMs?: number;
  /** sent as `Authorization: Bearer TOKEN` (the agents' --token-file) */
  token?: string | null;
  /** our own node name: no peer may claim it */
  self?: string;
  /** our wall clock, ns */
  nowWallNs?: () => bigint;
  /** departures further than this from our clock are refused (default 5 min) */
  windowNs?: bigint;
  /** departures asked for in one request; an answer with more is refused */
  pageLimit?: number;
  /** departures taken from one peer in one poll (pages are read until this) */
  maxPerPoll?: number;
  /** departures held in all, from all peers; the oldest learned go first */
  maxEntries?: number;
  /**
   * how long a departure is kept after we learned it (default 30 s): an arrival waits for its
   * departure only seconds, so holding one for the whole time window only grows memory
   */
  retainMs?: number;
  /** ms clock (tests) */
  nowMs?: () => number;
  /** bytes of one answer, at most */
  maxBytes?: number;
  /** extra CA certificates (PEM) for https:// peers */
  ca?: string;
}

const TRACE_ID = /^[0-9a-f]{32}$/;
const WALL_NS = /^[1-9][0-9]{0,19}$/;
// a node name as the peer reports it: printable ASCII, no spaces
const NODE = /^[\x21-\x7e]{1,253}$/;

/**
 * Departures learned from the other nodes' agents (`--peers`), kept per peer: a peer's answer can
 * only add or replace its own entries. Which node a peer is, is fixed by its first valid answer; a
 * peer that later claims another name, or a name another peer (or this node) already has, is refused.
 *
 * `get(traceId)` gives the earliest departure of that packet across peers: a packet normally departs
 * from one node only, and the earliest is the same whatever order the peers were polled in.
 */
export class PeerDepartures {
  private readonly known = new Map<string, { wallNs: bigint; peer: number; atMs: number }>();
  private readonly cursor: number[];
  private readonly nodes: (string | undefined)[];
  private readonly agents: { http: http.Agent; https: https.Agent };
  private readonly o: Required<Omit<PeerDeparturesOptions, 'token' | 'self' | 'ca'>> & Pick<PeerDeparturesOptions, 'token' | 'self' | 'ca'>;
  private counts = { invalidAnswers: 0, invalidEntries: 0, evicted: 0, expired: 0, learned: 0 };

  constructor(private readonly peers: string[], opts: PeerDeparturesOptions = {}) {
    this.o = {
      onFailure: opts.onFailure ?? (() => {}),
      timeoutMs: opts.timeoutMs ?? 1000,
      token: opts.token, self: opts.self, ca: opts.ca,
      nowWallNs: opts.nowWallNs ?? (() => BigInt(Date.now()) * 1_000_000n),
      windowNs: opts.windowNs ?? 300n * 1_000_000_000n,
      pageLimit: Math.max(1, opts.pageLimit ?? PAGE_MAX),
      maxPerPoll: Math.max(1, opts.maxPerPoll ?? 4 * PAGE_MAX),
      maxEntries: Math.max(1, opts.maxEntries ?? LOG_CAPACITY),
      retainMs: opts.retainMs ?? 30_000,
      nowMs: opts.nowMs ?? Date.now,
      maxBytes: opts.maxBytes ?? 1 << 20,
    };
    this.cursor = peers.map(() => 0);
    this.nodes = peers.map(() => undefined);
    this.agents = { http: new http.Agent({ keepAlive: true, maxSockets: 1 }), https: new https.Agent({ keepAlive: true, maxSockets: 1, ...(opts.ca ? { ca: opts.ca } : {}) }) };
  }

  get enabled(): boolean {
    return this.peers.length > 0;
  }

  /** answers refused as a whole: not JSON, wrong shape, too large, a redirect, a node name it may not have */
  get invalidAnswers(): number {
    return this.counts.invalidAnswers;
  }

  /** departures refused in answers otherwise taken: wrong types, a malformed trace id, a time outside the window */
  get invalidEntries(): number {
    return this.counts.invalidEntries;
  }

  /** departures forgotten to stay within maxEntries, before their time: a pairing may be lost */
  get evicted(): number {
    return this.counts.evicted;
  }

  /** departures forgotten after their time (retainMs, or out of the window): no arrival waits for them */
  get expired(): number {
    return this.counts.expired;
  }

  /** departures taken */
  get learned(): number {
    return this.counts.learned;
  }

  /** departures held now */
  get size(): number {
    return this.known.size;
  }

  /** The earliest departure of a packet any peer reported, with that peer's node. */
  get(traceId: string): { wallNs: bigint; node: string } | undefined {
    let best: { wallNs: bigint; peer: number } | undefined;
    for (let i = 0; i < this.peers.length; i++) {
      const d = this.known.get(`${i} ${traceId}`);
      if (d && (!best || d.wallNs < best.wallNs)) best = d;
    }
    return best && { wallNs: best.wallNs, node: this.nodes[best.peer]! };
  }

  async poll(): Promise<void> {
    await Promise.all(this.peers.map(async (peer, i) => {
      try {
        let taken = 0;
        for (let page = 0; page * this.o.pageLimit < this.o.maxPerPoll; page++) {
          const limit = Math.min(this.o.pageLimit, this.o.maxPerPoll - taken);
          const body = await this.request(peer, this.cursor[i]!, limit);
          const answer = this.check(i, body, limit);
          this.take(i, answer.departures);
          this.cursor[i] = answer.next;
          taken += answer.departures.length;
          if (!answer.more || !answer.departures.length) break;
        }
      } catch (err) {
        if (err instanceof InvalidAnswer) this.counts.invalidAnswers++;
        this.o.onFailure(peer, err as Error);
      }
    }));
    this.evict();
  }

  /** Drop kept-alive connections (the agent stops). */
  close(): void {
    this.agents.http.destroy();
    this.agents.https.destroy();
  }

  /** The answer's shape, and the node name it claims; the departures are checked one by one in take(). */
  private check(i: number, body: unknown, limit: number): { departures: unknown[]; next: number; more: boolean } {
    if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new InvalidAnswer('the answer is not a JSON object');
    const b = body as Record<string, unknown>;
    if (typeof b.node !== 'string' || !NODE.test(b.node)) throw new InvalidAnswer('"node" is not a node name');
    if (!Array.isArray(b.departures)) throw new InvalidAnswer('"departures" is not an array');
    if (b.departures.length > limit) throw new InvalidAnswer(`${b.departures.length} departures in one answer, ${limit} asked for`);
    if (typeof b.next !== 'number' || !Number.isSafeInteger(b.next) || b.next < 0) throw new InvalidAnswer('"next" is not a sequence number');
    if (typeof b.more !== 'boolean') throw new InvalidAnswer('"more" is not a boolean');
    const pinned = this.nodes[i];
    if (pinned === undefined) {
      if (b.node === this.o.self) throw new InvalidAnswer(`it says it is ${b.node}, this node`);
      const other = this.nodes.indexOf(b.node);
      if (other >= 0) throw new InvalidAnswer(`it says it is ${b.node}, which peer ${this.peers[other]} is`);
      this.nodes[i] = b.node;
    } else if (b.node !== pinned) {
      throw new InvalidAnswer(`it says it is ${b.node}, but it was ${pinned}`);
    }
    return { departures: b.departures, next: b.next, more: b.more };
  }

  private take(i: number, departures: unknown[]): void {
    const now = this.o.nowWallNs();
    for (const d of departures) {
      const e = d as Partial<Record<string, unknown>> | null;
      if (typeof e !== 'object' || e === null || typeof e.trace_id !== 'string' || typeof e.wall_ns !== 'string' || !TRACE_ID.test(e.trace_id) || !WALL_NS.test(e.wall_ns)) {
        this.counts.invalidEntries++;
        continue;
      }
      const wallNs = BigInt(e.wall_ns);
      if (wallNs > now + this.o.windowNs || wallNs < now - this.o.windowNs) {
        this.counts.invalidEntries++;
        continue;
      }
      const key = `${i} ${e.trace_id}`;
      this.known.delete(key); // newest last: eviction goes oldest first
      this.known.set(key, { wallNs, peer: i, atMs: this.o.nowMs() });
      this.counts.learned++;
    }
    this.evict();
  }

  /** Oldest learned first: what is past its time or has left the window, then beyond maxEntries. */
  private evict(): void {
    const oldest = this.o.nowWallNs() - this.o.windowNs;
    const since = this.o.nowMs() - this.o.retainMs;
    for (const [key, d] of this.known) {
      const expired = d.atMs < since || d.wallNs < oldest;
      if (!expired && this.known.size <= this.o.maxEntries) break;
      this.known.delete(key);
      if (expired) this.counts.expired++;
      else this.counts.evicted++;
    }
  }

  /** GET one page: no redirects followed, the body bounded, a deadline on the whole exchange. */
  private request(peer: string, after: number, limit: number): Promise<unknown> {
    const url = new URL(`${peer.replace(/\/$/, '')}/v1/departures?after=${after}&limit=${limit}`);
    const secure = url.protocol === 'https:';
    const max = this.o.maxBytes;
    return new Promise((resolve, reject) => {
      let done = false;
      const finish = (err: Error | null, value?: unknown) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        if (err) {
          req.destroy();
          reject(err);
        } else {
          resolve(value);
        }
      };
      const req = (secure ? https : http).request(url, {
        method: 'GET',
        agent: secure ? this.agents.https : this.agents.http,
        headers: { accept: 'application/json', ...(this.o.token ? { authorization: `Bearer ${this.o.token}` } : {}) },
      }, (res) => {
        const status = res.statusCode ?? 0;
        if (status >= 300 && status < 400) return finish(new InvalidAnswer(`HTTP ${status}: redirects are not followed`));
        if (status !== 200) return finish(new Error(`HTTP ${status}`));
        if (Number(res.headers['content-length'] ?? 0) > max) return finish(new InvalidAnswer(`the answer is larger than ${max} bytes`));
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > max) finish(new InvalidAnswer(`the answer is larger than ${max} bytes`));
          else chunks.push(c);
        });
        res.on('error', (err) => finish(err));
        res.on('end', () => {
          try {
            finish(null, JSON.parse(Buffer.concat(chunks).toString('utf8')));
          } catch {
            finish(new InvalidAnswer('the answer is not JSON'));
          }
        });
      });
      const timer = setTimeout(() => {
        const err = new Error(`no answer in ${this.o.timeoutMs} ms`);
        err.name = 'TimeoutError';
        finish(err);
      }, this.o.timeoutMs);
      req.on('error', (err) => finish(err));
      req.end();
    });
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
