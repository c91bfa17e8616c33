// The agent's trace API: a remote caller (follow/diagnose --agents) asks this node to follow a
// flow; the agent attaches the hop program on this node only, streams this node's hop records
// back, and detaches when the caller goes away, its time is up, or it asks to stop.
// Every request must carry the bearer token; every byte of a request is checked; a failure
// answers 4xx/5xx and the agent goes on serving.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { isIP } from 'node:net';
import { NettraceError, usageError } from '../errors';
import type { WallClock } from '../flow/clock';
import { listen, type ListenAddress } from '../export/http';
import type { IdentitySource } from '../k8s/identity';
import { joinIdentities } from '../k8s/join';
import { HOP_RECORD_SIZE, RECORD_KIND } from '../probe/layout.generated';
import { findPodByIp } from '../topology/model';
import type { NetnsRef } from '../topology/netns';
import { requireFlowPods, serviceAt, viewCluster } from '../session/cluster';
import { nodeFacts } from '../session/diagnose';
import { openLocalFeed, type LocalFeed } from '../session/localFeed';
import { sendProbes } from '../session/probes';
import { encodeHops, MAX_BODY_BYTES, nodeInfo, parseFollowRequest, type StreamMessage } from '../session/protocol';

export interface TraceApiOptions {
  addr: ListenAddress;
  token: string;
  tls: { certFile: string; keyFile: string } | null;
  node: NetnsRef;
  clock: WallClock;
  /** sessions at once; each holds its own programs and ring */
  maxSessions: number;
  log(line: string): void;
  /** the node's source of pod names: /v1/node gives each pod its Kubernetes identity */
  identities?: IdentitySource | null;
  /** sessions open, records streamed, records lost: for the agent's metrics */
  onStats?(s: { sessions: number; streamed?: number; lost?: number }): void;
}

export interface TraceApi {
  port: number;
  sessions(): number;
  close(): Promise<void>;
}

const POLL_MS = 5;
const TICK_MS = 1000;
/** what may wait in the socket for a slow client before records are dropped (and counted) */
const MAX_PENDING_BYTES = 8 * 1024 * 1024;
const MAX_BATCH = 4096;

class HttpError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

function sha256(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

function reply(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', ...headers }).end(JSON.stringify(body) + '\n');
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  const type = req.headers['content-type'] ?? '';
  if (!/^application\/json\b/.test(type)) throw new HttpError(415, 'send the body as application/json');
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY_BYTES) throw new HttpError(413, `the body is larger than ${MAX_BODY_BYTES} bytes`);
    chunks.push(chunk as Buffer);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown;
  } catch {
    throw new HttpError(400, 'the body is not JSON');
  }
}

interface Session {
  id: string;
  stop(reason: string): void;
}

export async function startTraceApi(opts: TraceApiOptions): Promise<TraceApi> {
  const expected = sha256(opts.token);
  const sessions = new Map<string, Session>();
  const stats = (extra: { streamed?: number; lost?: number } = {}) => opts.onStats?.({ sessions: sessions.size, ...extra });

  const authorized = (req: IncomingMessage): boolean => {
    const m = /^Bearer ([^\s]{1,4096})$/.exec(req.headers.authorization ?? '');
    return !!m && timingSafeEqual(sha256(m[1]!), expected);
  };

  const follow = async (req: IncomingMessage, res: ServerResponse) => {
    const parsed = parseFollowRequest(await readJson(req));
    if (typeof parsed === 'string') throw new HttpError(400, parsed);
    if (sessions.size >= opts.maxSessions) throw new HttpError(503, `this agent already runs ${sessions.size} trace sessions (its limit): try again later`);
    const view = viewCluster([opts.node]);
    const endpoints = serviceAt(view, parsed.flow.dst, parsed.flow.dport || undefined)?.endpoints ?? [];
    try {
      requireFlowPods(view, parsed.flow.src, parsed.flow.dst, endpoints.map((e) => e.ip));
    } catch (err) {
      throw new HttpError(404, (err as Error).message);
    }
    // tcx: sessions (and other tools) each have their own link on a hook
    const feed: LocalFeed = openLocalFeed(parsed.flow, view.topology, endpoints, 'tcx', 0, parsed.every);
    const id = randomBytes(8).toString('hex');
    // the kfree_skb tracepoint sees the whole kernel: only this node's drops are ours to report
    const ours = new Set([opts.node.ino, ...view.topology.nodes.flatMap((n) => n.pods.map((p) => p.netns.ino))]);
    const send = (m: StreamMessage) => res.write(JSON.stringify(m) + '\n');
    // records are copied out of the ring into one batch buffer, sent as a message when full or each poll
    const batch = Buffer.allocUnsafe(MAX_BATCH * HOP_RECORD_SIZE);
    let lostReported = 0;
    let slowLost = 0;
    const pump = () => {
      let n = 0;
      let streamed = 0;
      let dropped = 0;
      const flush = () => {
        if (!n) return;
        send(encodeHops(batch, n));
        streamed += n;
        n = 0;
      };
      feed.drain((r, view, offset) => {
        if (r.kind === RECORD_KIND.DROP && !ours.has(r.netns_ino)) return;
        if (res.writableLength > MAX_PENDING_BYTES) {
          dropped++;
          return;
        }
        batch.set(new Uint8Array(view.buffer, view.byteOffset + offset, HOP_RECORD_SIZE), n * HOP_RECORD_SIZE);
        if (++n >= MAX_BATCH) flush();
      });
      flush();
      slowLost += dropped;
      const ringLost = feed.lost();
      if (dropped) send({ type: 'lost', records: dropped, why: 'the client reads too slowly' });
      if (ringLost > lostReported) {
        send({ type: 'lost', records: ringLost - lostReported, why: 'the ring buffer was full' });
        lostReported = ringLost;
      }
      if (streamed || dropped) stats({ streamed, lost: dropped });
    };
    let stopped = false;
    const poller = setInterval(pump, POLL_MS);
    const ticker = setInterval(() => send({ type: 'tick' }), TICK_MS);
    const timeout = setTimeout(() => session.stop('its time is up'), parsed.timeoutS * 1000);
    const session: Session = {
      id,
      stop(reason: string) {
        if (stopped) return;
        stopped = true;
        clearInterval(poller);
        clearInterval(ticker);
        clearTimeout(timeout);
        feed.detach();
        if (!res.destroyed) pump();
        feed.close();
        sessions.delete(id);
        stats();
        if (!res.destroyed) {
          send({ type: 'end', reason });
          res.end();
        }
        opts.log(`trace session ${id} ended: ${reason}${slowLost ? ` (${slowLost} records lost to a slow client)` : ''}`);
      },
    };
    sessions.set(id, session);
    stats();
    res.on('close', () => session.stop('the client went away'));
    res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' });
    const now = opts.clock.now();
    send({ type: 'ready', session: id, node: opts.node.name, devices: feed.devices.length, mono_ns: now.monoNs.toString(), wall_ns: now.wallNs.toString(), every: parsed.every });
    opts.log(`trace session ${id} for ${req.socket.remoteAddress}: ${parsed.flow.src} -> ${parsed.flow.dst} ${parsed.flow.proto} on ${feed.devices.length} devices`);
  };

  const probe = async (req: IncomingMessage, res: ServerResponse) => {
    const parsed = parseFollowRequest(await readJson(req));
    if (typeof parsed === 'string') throw new HttpError(400, parsed);
    const view = viewCluster([opts.node]);
    const pod = findPodByIp(view.topology, parsed.flow.src);
    if (!pod) throw new HttpError(404, `${parsed.flow.src} is not a pod on ${opts.node.name}`);
    await sendProbes(pod.netns.name, parsed.flow, pod.eth.mtu);
    reply(res, 200, { sent: true, pod: pod.name, pod_mtu: pod.eth.mtu });
  };

  const inspect = (url: URL, res: ServerResponse) => {
    const dst = url.searchParams.get('dst') ?? '';
    if (isIP(dst) === 0) throw new HttpError(400, 'give ?dst=IP');
    const view = viewCluster([opts.node]);
    const node = view.topology.nodes[0]!;
    const facts = nodeFacts(node, dst);
    reply(res, 200, { node: node.name, node_ip: node.ip, reach: facts.reach, drop_rules: facts.dropRules, filter_rules: facts.filterRules ?? [], mtus: facts.mtus });
  };

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    let url: URL;
    try {
      url = new URL(req.url ?? '/', 'http://agent');
    } catch {
      throw new HttpError(400, 'malformed request target');
    }
    if (!authorized(req)) {
      reply(res, 401, { error: 'a valid bearer token is required (--token-file)' }, { 'www-authenticate': 'Bearer' });
      return;
    }
    const route = `${req.method} ${url.pathname}`;
    if (route === 'GET /v1/node') {
      const view = viewCluster([opts.node]);
      if (opts.identities) joinIdentities(view.topology, opts.identities);
      reply(res, 200, nodeInfo(view.topology.nodes[0]!, view.services));
    } else if (route === 'GET /v1/time') {
      reply(res, 200, { wall_ns: opts.clock.now().wallNs.toString() });
    } else if (route === 'POST /v1/follow') {
      await follow(req, res);
    } else if (route === 'POST /v1/probe') {
      await probe(req, res);
    } else if (route === 'GET /v1/inspect') {
      inspect(url, res);
    } else if (req.method === 'DELETE' && /^\/v1\/sessions\/[0-9a-f]{16}$/.test(url.pathname)) {
      const s = sessions.get(url.pathname.slice('/v1/sessions/'.length));
      if (!s) throw new HttpError(404, 'no such session');
      s.stop('stopped by the client');
      res.writeHead(204).end();
    } else {
      throw new HttpError(404, `no ${route}`);
    }
  };

  const onRequest = (req: IncomingMessage, res: ServerResponse) => {
    handle(req, res).catch((err: unknown) => {
      const status = err instanceof HttpError ? err.status : 500;
      if (status === 500) opts.log(`warning: trace API ${req.method} ${req.url?.slice(0, 100)}: ${(err as Error).message}`);
      reply(res, status, { error: err instanceof NettraceError ? err.line() : (err as Error).message });
    });
  };
  let server: Server;
  if (opts.tls) {
    const read = (f: string, flag: string) => {
      try {
        return readFileSync(f);
      } catch (err) {
        throw usageError(`${flag} ${f}: ${(err as Error).message}`, 'give the PEM file of the agent\'s certificate and key');
      }
    };
    server = createHttpsServer({ cert: read(opts.tls.certFile, '--tls-cert'), key: read(opts.tls.keyFile, '--tls-key'), connectionsCheckingInterval: 1000 }, onRequest);
  } else {
    // the header and request timeouts are enforced on this interval (Node's default is 30 s)
    server = createHttpServer({ connectionsCheckingInterval: 1000 }, onRequest);
  }
  // a request must arrive whole and quickly; a stream, once answered, lasts as long as its session
  server.headersTimeout = 10_000;
  server.requestTimeout = 15_000;
  server.maxHeadersCount = 64;
  // a stranger may open connections and send nothing: bound how many are held at once
  server.maxConnections = 64;
  await listen(server, opts.addr, '--api-addr');
  const address = server.address();
  return {
    port: typeof address === 'object' && address ? address.port : opts.addr.port,
    sessions: () => sessions.size,
    async close() {
      for (const s of [...sessions.values()]) s.stop('the agent is stopping');
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await closed;
    },
  };
}
