// Step 6 timing between agents: the departures a node keeps and serves (a bounded ring read by
// sequence number), a receiving node learning its peers' over real HTTP (and refusing what a
// hostile peer answers), and the userspace log2 histogram of wire latencies.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { test, type TestContext } from 'node:test';
import { DepartureLog, Log2Histogram, PeerDepartures } from '../../../src/flow/wire';

const S = 1_000_000_000n;
const T0 = 1_700_000_000n * S; // a wall clock in ns, beyond 2^53
const nowT0 = () => T0 + 1000n * 1_000_000n; // "our" clock for PeerDepartures: T0 + 1 s
/** a trace id as the agent makes them: 32 hex digits */
const id = (s: string) => createHash('sha256').update(s).digest('hex').slice(0, 32);

/** A log some peer already reads (a log nobody reads keeps nothing). */
function activeLog(opts: ConstructorParameters<typeof DepartureLog>[0] = {}): DepartureLog {
  const log = new DepartureLog(opts);
  log.read(0);
  return log;
}

test('DepartureLog: read() returns departures after a sequence number, oldest first, wall_ns exact beyond 2^53', () => {
  const log = activeLog();
  assert.equal(log.record('a', T0 + 1n), true);
  log.record('b', T0 + 2n);
  log.record('c', T0 + 3n);
  assert.deepEqual(log.read(0), {
    departures: [
      { trace_id: 'a', wall_ns: (T0 + 1n).toString() },
      { trace_id: 'b', wall_ns: (T0 + 2n).toString() },
      { trace_id: 'c', wall_ns: (T0 + 3n).toString() },
    ],
    next: 3, more: false,
  });
  assert.deepEqual(log.read(2).departures.map((d) => d.trace_id), ['c'], 'strictly after');
  assert.deepEqual(log.read(3), { departures: [], next: 3, more: false });
  assert.equal(log.read(0).departures[0]!.wall_ns, '1700000000000000001');
  assert.equal(log.recorded, 3);
  assert.equal(log.dropped, 0);
});

test('DepartureLog: keeps nothing unless a peer read it in the last 10 s', () => {
  let now = 0;
  const log = new DepartureLog({ now: () => now });
  assert.equal(log.active, false);
  assert.equal(log.record('nobody-asks', T0), false);
  assert.deepEqual(log.read(0).departures, [], 'an agent no peer asks keeps nothing');
  assert.equal(log.recorded, 0);
  assert.equal(log.record('asked', T0 + 1n), true);
  now = 10_000;
  assert.equal(log.record('still', T0 + 2n), true, '10 s after the read');
  now = 10_001;
  assert.equal(log.record('too-late', T0 + 3n), false);
  assert.equal(log.active, false);
  assert.deepEqual(log.read(0).departures.map((d) => d.trace_id), ['asked', 'still']);
  assert.equal(log.recorded, 2);
});

test('DepartureLog: serves nothing more than 30 s behind the newest departure', () => {
  const log = activeLog();
  log.record('old', T0);
  log.record('edge', T0 + 1n);
  log.record('mid', T0 + 10n * S);
  assert.equal(log.read(0).departures.length, 3);
  log.record('new', T0 + 30n * S + 1n); // 'old' is now 30 s + 1 ns behind, 'edge' exactly 30 s
  assert.deepEqual(log.read(0).departures.map((d) => d.trace_id), ['edge', 'mid', 'new']);
  log.record('later', T0 + 45n * S);
  const page = log.read(0);
  assert.deepEqual(page.departures.map((d) => d.trace_id), ['new', 'later'], 'edge and mid are more than 30 s behind');
  assert.equal(page.next, 5);
});

test('DepartureLog: a fixed ring; what is overwritten before any peer read it is counted', () => {
  const log = activeLog({ capacity: 4 });
  for (let i = 1; i <= 3; i++) log.record(`d${i}`, T0 + BigInt(i));
  assert.deepEqual(log.read(0).departures.map((d) => d.trace_id), ['d1', 'd2', 'd3'], 'read up to 3');
  for (let i = 4; i <= 10; i++) log.record(`d${i}`, T0 + BigInt(i));
  assert.equal(log.size, 4);
  assert.equal(log.recorded, 10);
  assert.equal(log.dropped, 3, 'd4, d5 and d6 were overwritten unread; d1-d3 had been read');
  const page = log.read(3);
  assert.deepEqual(page.departures.map((d) => d.trace_id), ['d7', 'd8', 'd9', 'd10'], 'a reader behind the ring gets the oldest held');
  assert.deepEqual([page.next, page.more], [10, false]);
  for (let i = 11; i <= 14; i++) log.record(`d${i}`, T0 + BigInt(i));
  assert.equal(log.dropped, 3, 'd7-d10 had been read');
});

test('DepartureLog: pages of at most the asked limit and the log\'s page size, with the next cursor and whether more remain', () => {
  const log = activeLog({ pageMax: 3 });
  for (let i = 1; i <= 7; i++) log.record(`d${i}`, T0 + BigInt(i));
  const p1 = log.read(0);
  assert.deepEqual([p1.departures.map((d) => d.trace_id), p1.next, p1.more], [['d1', 'd2', 'd3'], 3, true]);
  const p2 = log.read(p1.next, 2);
  assert.deepEqual([p2.departures.map((d) => d.trace_id), p2.next, p2.more], [['d4', 'd5'], 5, true]);
  const p3 = log.read(p2.next, 100);
  assert.deepEqual([p3.departures.map((d) => d.trace_id), p3.next, p3.more], [['d6', 'd7'], 7, false]);
  // a cursor from before this log existed (the agent restarted): from the oldest held
  assert.deepEqual(log.read(1_000_000).departures.map((d) => d.trace_id), ['d1', 'd2', 'd3']);
});

test('DepartureLog: bounded and O(1) a record at any rate', () => {
  const log = activeLog({ capacity: 65_536 });
  const ids = Array.from({ length: 256 }, (_, i) => id(String(i)));
  const t0 = performance.now();
  // 1 M departures within 30 s of each other (the old log kept all of them, and moved them all on each record)
  for (let i = 0; i < 1_000_000; i++) log.record(ids[i & 255]!, T0 + BigInt(i) * 20_000n);
  const ms = performance.now() - t0;
  assert.ok(ms < 3000, `1 M records took ${ms.toFixed(0)} ms`);
  assert.equal(log.size, 65_536);
  assert.equal(log.recorded, 1_000_000);
  assert.equal(log.dropped, 1_000_000 - 65_536);
  const page = log.read(0);
  assert.equal(page.departures.length, 4096, 'one answer is one page, never the whole log');
  assert.equal(page.more, true);
});

test('Log2Histogram: bucket b counts [2^b, 2^(b+1)) ns, as the kernel does; the sum in ns', () => {
  const h = new Log2Histogram();
  assert.equal(h.counts.length, 64);
  for (const ns of [0, 1, 2, 3, 4, 1023, 1024, 1500.9, 2 ** 40 - 1, -5]) h.observe(ns);
  const nonzero = Object.fromEntries(h.counts.flatMap((c, b) => (c ? [[b, c]] : [])));
  assert.deepEqual(nonzero, { 0: 3, 1: 2, 2: 1, 9: 1, 10: 2, 39: 1 }, '0, 1 and a negative (clamped to 0) in bucket 0; 1500.9 floored');
  assert.equal(h.sumNs, 0 + 1 + 2 + 3 + 4 + 1023 + 1024 + 1500 + (2 ** 40 - 1) + 0);
  const big = new Log2Histogram();
  big.observe(2 ** 70);
  assert.equal(big.counts[63], 1, 'beyond the last bucket: counted in it');
});

/** A local HTTP server on 127.0.0.1: its base URL. */
async function server(t: TestContext, handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<string> {
  const s = createServer(handler);
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  t.after(() => {
    s.closeAllConnections();
    return new Promise<void>((r) => s.close(() => r()));
  });
  return `http://127.0.0.1:${(s.address() as { port: number }).port}`;
}

/** A peer agent: serves its DepartureLog at /v1/departures like `nettrace agent` does; records each query. */
async function peer(t: TestContext, node: string, log: DepartureLog): Promise<{ url: string; queries: string[]; auth: (string | undefined)[] }> {
  const queries: string[] = [];
  const auth: (string | undefined)[] = [];
  const url = await server(t, (req, res) => {
    const u = new URL(req.url ?? '/', 'http://x');
    if (u.pathname !== '/v1/departures') {
      res.writeHead(404).end();
      return;
    }
    const after = u.searchParams.get('after') ?? '';
    queries.push(after);
    auth.push(req.headers.authorization);
    res.writeHead(200, { 'content-type': 'application/json' })
      .end(JSON.stringify({ node, ...log.read(Number(after), Number(u.searchParams.get('limit') ?? 4096)) }));
  });
  return { url, queries, auth };
}

/** A peer that answers whatever `body` gives (JSON-encoded unless it is a string). */
async function hostile(t: TestContext, body: (req: IncomingMessage) => unknown): Promise<string> {
  return server(t, (req, res) => {
    const b = body(req);
    res.writeHead(200, { 'content-type': 'application/json' }).end(typeof b === 'string' ? b : JSON.stringify(b));
  });
}

test('PeerDepartures: learns a peer\'s departures by trace id; the next poll asks only for newer ones', async (t) => {
  const log = activeLog();
  log.record(id('t1'), T0 + 100n);
  log.record(id('t2'), T0 + 200n);
  const p = await peer(t, 'node1', log);
  const failures: string[] = [];
  const peers = new PeerDepartures([p.url + '/'], { onFailure: (who, err) => failures.push(`${who}: ${err.message}`), nowWallNs: nowT0 });
  t.after(() => peers.close());
  assert.equal(peers.enabled, true);
  assert.equal(peers.get(id('t1')), undefined);

  await peers.poll();
  assert.deepEqual(peers.get(id('t1')), { wallNs: T0 + 100n, node: 'node1' });
  assert.deepEqual(peers.get(id('t2')), { wallNs: T0 + 200n, node: 'node1' });
  assert.equal(peers.get(id('t3')), undefined);

  log.record(id('t3'), T0 + 300n);
  await peers.poll();
  assert.deepEqual(peers.get(id('t3')), { wallNs: T0 + 300n, node: 'node1' });
  assert.deepEqual(peers.get(id('t1')), { wallNs: T0 + 100n, node: 'node1' }, 'what was learned stays');
  await peers.poll();
  assert.deepEqual(p.queries, ['0', '2', '3'], 'the cursor is the sequence number of the last departure got (a trailing / on the peer is fine)');
  assert.deepEqual(p.auth, [undefined, undefined, undefined], 'no token, no Authorization');
  assert.deepEqual(failures, []);
  assert.deepEqual([peers.learned, peers.invalidAnswers, peers.invalidEntries], [3, 0, 0]);
});

test('PeerDepartures: each peer has its own cursor and node', async (t) => {
  const log1 = activeLog();
  const log2 = activeLog();
  log1.record(id('from1'), T0 + 5n);
  log2.record(id('from2'), T0 + 7n);
  log2.record(id('from2b'), T0 + 8n);
  const p1 = await peer(t, 'node1', log1);
  const p2 = await peer(t, 'node3', log2);
  const peers = new PeerDepartures([p1.url, p2.url], { nowWallNs: nowT0 });
  t.after(() => peers.close());
  await peers.poll();
  await peers.poll();
  assert.equal(peers.get(id('from1'))?.node, 'node1');
  assert.equal(peers.get(id('from2'))?.node, 'node3');
  assert.deepEqual(p1.queries, ['0', '1']);
  assert.deepEqual(p2.queries, ['0', '2']);
});

test('PeerDepartures: sends the token; follows `more` within a poll up to its cap, the rest next poll', async (t) => {
  const log = activeLog();
  for (let i = 0; i < 10; i++) log.record(id(`p${i}`), T0 + BigInt(i));
  const p = await peer(t, 'node1', log);
  const peers = new PeerDepartures([p.url], { token: 'sixteen-chars-token', nowWallNs: nowT0, pageLimit: 3, maxPerPoll: 7 });
  t.after(() => peers.close());
  await peers.poll();
  assert.deepEqual(p.queries, ['0', '3', '6'], '3 + 3 + 1 departures: the cap of 7 a poll');
  assert.equal(peers.learned, 7);
  assert.equal(peers.get(id('p7')), undefined);
  await peers.poll();
  assert.deepEqual(p.queries, ['0', '3', '6', '7']);
  assert.equal(peers.learned, 10);
  assert.deepEqual(peers.get(id('p9')), { wallNs: T0 + 9n, node: 'node1' });
  assert.ok(p.auth.every((a) => a === 'Bearer sixteen-chars-token'));
});

test('PeerDepartures: a peer that fails is reported through onFailure; the others are still learned', async (t) => {
  const good = activeLog();
  good.record(id('ok'), T0);
  const p = await peer(t, 'node1', good);
  const brokenUrl = await server(t, (_req, res) => res.writeHead(500).end('no'));
  // nothing listens: a closed port
  const gone = createServer();
  await new Promise<void>((r) => gone.listen(0, '127.0.0.1', r));
  const goneUrl = `http://127.0.0.1:${(gone.address() as { port: number }).port}`;
  await new Promise<void>((r) => gone.close(() => r()));
  // not our JSON
  const oddUrl = await server(t, (_req, res) => res.writeHead(200, { 'content-type': 'text/html' }).end('<html>'));

  const failures: { peer: string; err: Error }[] = [];
  const peers = new PeerDepartures([brokenUrl, p.url, goneUrl, oddUrl], { onFailure: (peer, err) => failures.push({ peer, err }), nowWallNs: nowT0 });
  t.after(() => peers.close());
  await peers.poll();
  assert.deepEqual(peers.get(id('ok')), { wallNs: T0, node: 'node1' });
  const byPeer = new Map(failures.map((f) => [f.peer, f.err]));
  assert.deepEqual([...byPeer.keys()].sort(), [brokenUrl, goneUrl, oddUrl].sort());
  assert.equal(byPeer.get(brokenUrl)!.message, 'HTTP 500');
  assert.ok(byPeer.get(goneUrl) instanceof Error);
  assert.equal(byPeer.get(oddUrl)!.name, 'InvalidAnswer');
  assert.equal(peers.invalidAnswers, 1, 'the HTML; a 500 or a closed port is a failure, not an invalid answer');
});

test('PeerDepartures: a peer slower than the fetch timeout is a failure, not a hang', async (t) => {
  const url = await server(t, () => {}); // never answers
  const failures: string[] = [];
  const peers = new PeerDepartures([url], { onFailure: (_peer, err) => failures.push(err.name), timeoutMs: 50 });
  t.after(() => peers.close());
  const t0 = Date.now();
  await peers.poll();
  assert.ok(Date.now() - t0 < 2000);
  assert.deepEqual(failures, ['TimeoutError']);
});

test('PeerDepartures: with no peers it is disabled and polling does nothing', async () => {
  const peers = new PeerDepartures([]);
  assert.equal(peers.enabled, false);
  await peers.poll();
  assert.equal(peers.get('x'), undefined);
  peers.close();
});

test('PeerDepartures, hostile peer: entries of wrong types, malformed ids, times outside ±5 min of our clock are refused one by one', async (t) => {
  const good = { trace_id: id('good'), wall_ns: (T0 + 1n).toString() };
  const url = await hostile(t, () => ({
    node: 'evil', next: 9, more: false,
    departures: [
      good,
      { trace_id: id('huge'), wall_ns: '9'.repeat(20) }, // far in the future
      { trace_id: id('ahead'), wall_ns: (nowT0() + 301n * S).toString() },
      { trace_id: id('behind'), wall_ns: (nowT0() - 301n * S).toString() },
      { trace_id: id('number'), wall_ns: Number(T0) },
      { trace_id: id('neg'), wall_ns: '-1' },
      { trace_id: id('hex'), wall_ns: '0x1' },
      { trace_id: id('long'), wall_ns: '1'.repeat(400) },
      { trace_id: 'short', wall_ns: T0.toString() },
      { trace_id: id('upper').toUpperCase(), wall_ns: T0.toString() },
      { trace_id: 42, wall_ns: T0.toString() },
      { trace_id: id('nul') + '\0', wall_ns: T0.toString() },
      null, 'x', [good.trace_id, good.wall_ns],
      { trace_id: id('edge'), wall_ns: (nowT0() - 300n * S).toString() }, // exactly 5 min behind: taken
    ],
  }));
  const failures: Error[] = [];
  const peers = new PeerDepartures([url], { nowWallNs: nowT0, onFailure: (_p, err) => failures.push(err) });
  t.after(() => peers.close());
  await peers.poll();
  assert.deepEqual(failures, []);
  assert.deepEqual(peers.get(id('good')), { wallNs: T0 + 1n, node: 'evil' });
  assert.ok(peers.get(id('edge')));
  for (const bad of ['huge', 'ahead', 'behind', 'number', 'neg', 'hex', 'long', 'upper']) assert.equal(peers.get(id(bad)), undefined, bad);
  assert.equal(peers.invalidEntries, 14);
  assert.equal(peers.learned, 2);
  assert.equal(peers.size, 2);
});

test('PeerDepartures, hostile peer: answers of the wrong shape are refused whole, the cursor does not move', async (t) => {
  const d = { trace_id: id('x'), wall_ns: T0.toString() };
  const bodies: unknown[] = [
    [d], 'null', '{"node": "n", "departures": [', // not an object, null, truncated
    { departures: [d], next: 1, more: false }, // no node
    { node: 7, departures: [d], next: 1, more: false },
    { node: 'has space', departures: [d], next: 1, more: false },
    { node: 'n'.repeat(254), departures: [d], next: 1, more: false },
    { node: 'n', departures: { 0: d }, next: 1, more: false },
    { node: 'n', departures: [d], next: '1', more: false },
    { node: 'n', departures: [d], next: 1e300, more: false }, // would freeze the cursor
    { node: 'n', departures: [d], next: -1, more: false },
    { node: 'n', departures: [d], next: 1.5, more: false },
    { node: 'n', departures: [d], next: 1, more: 'no' },
  ];
  const afters: string[] = [];
  const urls = await Promise.all(bodies.map((b) => hostile(t, (req) => {
    afters.push(new URL(req.url!, 'http://x').searchParams.get('after')!);
    return b;
  })));
  const failures = new Map<string, Error>();
  const peers = new PeerDepartures(urls, { nowWallNs: nowT0, onFailure: (p, err) => failures.set(p, err) });
  t.after(() => peers.close());
  await peers.poll();
  await peers.poll();
  assert.deepEqual(afters, new Array(2 * bodies.length).fill('0'));
  assert.equal(failures.size, bodies.length);
  for (const err of failures.values()) assert.equal(err.name, 'InvalidAnswer', err.message);
  assert.equal(peers.invalidAnswers, 2 * bodies.length);
  assert.equal(peers.get(id('x')), undefined);
  assert.equal(peers.size, 0);
});

test('PeerDepartures, hostile peer: 1e6 entries, or a body without end, is refused by size; more than asked for is refused', async (t) => {
  const entry = JSON.stringify({ trace_id: id('flood'), wall_ns: T0.toString() });
  const flood = `{"node":"flood","next":1000000,"more":true,"departures":[${new Array(1_000_000).fill(entry).join(',')}]}`;
  const floodUrl = await hostile(t, () => flood);
  // chunked, no content-length, never ending
  const endless = await server(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.write('{"node":"endless","departures":[');
    const chunk = (entry + ',').repeat(1000);
    const timer = setInterval(() => { if (!res.destroyed) res.write(chunk); }, 1);
    res.on('close', () => clearInterval(timer));
  });
  const tooMany = await hostile(t, (req) => {
    const limit = Number(new URL(req.url!, 'http://x').searchParams.get('limit'));
    return { node: 'many', next: limit + 1, more: false, departures: Array.from({ length: limit + 1 }, (_, i) => ({ trace_id: id(`m${i}`), wall_ns: T0.toString() })) };
  });
  const failures = new Map<string, Error>();
  const peers = new PeerDepartures([floodUrl, endless, tooMany], { nowWallNs: nowT0, onFailure: (p, err) => failures.set(p, err), timeoutMs: 5000 });
  t.after(() => peers.close());
  const rss = process.memoryUsage().rss;
  await peers.poll();
  assert.match(failures.get(floodUrl)?.message ?? '', /larger than 1048576 bytes/);
  assert.match(failures.get(endless)?.message ?? '', /larger than 1048576 bytes/);
  assert.match(failures.get(tooMany)?.message ?? '', /4097 departures in one answer, 4096 asked for/);
  assert.equal(peers.invalidAnswers, 3);
  assert.equal(peers.size, 0);
  assert.ok(process.memoryUsage().rss - rss < 200 * 1024 * 1024);
});

test('PeerDepartures: what peers send is bounded in total, the oldest learned forgotten first', async (t) => {
  let n = 0;
  const url = await hostile(t, () => {
    const departures = Array.from({ length: 100 }, () => ({ trace_id: id(`e${n++}`), wall_ns: T0.toString() }));
    return { node: 'busy', next: n, more: false, departures };
  });
  const peers = new PeerDepartures([url], { nowWallNs: nowT0, maxEntries: 250 });
  t.after(() => peers.close());
  for (let i = 0; i < 5; i++) await peers.poll();
  assert.equal(peers.size, 250);
  assert.equal(peers.learned, 500);
  assert.equal(peers.evicted, 250);
  assert.equal(peers.get(id('e249')), undefined);
  assert.ok(peers.get(id('e250')));
  assert.ok(peers.get(id('e499')));
});

test('PeerDepartures: what has left the ±5 min window is forgotten', async (t) => {
  let now = nowT0();
  const log = activeLog();
  log.record(id('then'), T0);
  const p = await peer(t, 'node1', log);
  const peers = new PeerDepartures([p.url], { nowWallNs: () => now });
  t.after(() => peers.close());
  await peers.poll();
  assert.ok(peers.get(id('then')));
  now += 300n * S;
  await peers.poll();
  assert.equal(peers.get(id('then')), undefined);
  assert.deepEqual([peers.evicted, peers.expired], [0, 1], 'out of the window is not a loss');
});

test('PeerDepartures: a departure is kept 30 s after it was learned, then forgotten (memory stays flat)', async (t) => {
  let ms = 1_000_000;
  const log = activeLog();
  log.record(id('old'), T0);
  const p = await peer(t, 'node1', log);
  const peers = new PeerDepartures([p.url], { nowWallNs: nowT0, nowMs: () => ms });
  t.after(() => peers.close());
  await peers.poll();
  ms += 29_000;
  log.record(id('new'), T0);
  await peers.poll();
  assert.ok(peers.get(id('old')) && peers.get(id('new')));
  ms += 2_000;
  await peers.poll();
  assert.equal(peers.get(id('old')), undefined);
  assert.ok(peers.get(id('new')));
  assert.deepEqual([peers.size, peers.evicted, peers.expired], [1, 0, 1]);
});

test('PeerDepartures, hostile peer: a redirect is refused, not followed', async (t) => {
  const hits: string[] = [];
  const target = await server(t, (req, res) => {
    hits.push(req.url ?? '');
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ node: 'target', next: 1, more: false, departures: [{ trace_id: id('r'), wall_ns: T0.toString() }] }));
  });
  const urls = await Promise.all([301, 302, 307, 308].map((code) => server(t, (_req, res) => res.writeHead(code, { location: `${target}/v1/departures?after=0` }).end())));
  const failures: Error[] = [];
  const peers = new PeerDepartures(urls, { nowWallNs: nowT0, onFailure: (_p, err) => failures.push(err), token: 'a-secret-token-16' });
  t.after(() => peers.close());
  await peers.poll();
  assert.deepEqual(hits, [], 'the token never went to where the peer pointed');
  assert.equal(failures.length, 4);
  for (const err of failures) assert.match(err.message, /^HTTP 30\d: redirects are not followed$/);
  assert.equal(peers.invalidAnswers, 4);
  assert.equal(peers.get(id('r')), undefined);
});

test('PeerDepartures, hostile peer: it can neither overwrite another peer\'s departures nor take its node name (or ours)', async (t) => {
  const log = activeLog();
  log.record(id('shared'), T0 + 500n);
  log.record(id('only1'), T0 + 600n);
  const honest = await peer(t, 'node1', log);
  let claim = 'node1';
  let when = T0 + 900n;
  // it answers a little later than the honest peer: the honest peer has its name first
  const liar = await server(t, (_req, res) => setTimeout(() => res.writeHead(200, { 'content-type': 'application/json' })
    .end(JSON.stringify({ node: claim, next: 1, more: false, departures: [{ trace_id: id('shared'), wall_ns: when.toString() }, { trace_id: id('own'), wall_ns: when.toString() }] })), 50));
  const failures: string[] = [];
  const peers = new PeerDepartures([honest.url, liar], { self: 'node2', nowWallNs: nowT0, onFailure: (_p, err) => failures.push(err.message) });
  t.after(() => peers.close());
  await peers.poll();
  assert.deepEqual(peers.get(id('only1')), { wallNs: T0 + 600n, node: 'node1' });
  assert.deepEqual(peers.get(id('shared')), { wallNs: T0 + 500n, node: 'node1' });
  assert.equal(peers.get(id('own')), undefined);
  assert.equal(failures.length, 1);
  assert.match(failures[0]!, /it says it is node1, which peer http:\/\/127\.0\.0\.1:\d+ is/);

  claim = 'node2'; // our own name
  await peers.poll();
  assert.match(failures[1]!, /it says it is node2, this node/);
  claim = 'node9';
  await peers.poll();
  assert.equal(failures.length, 2);
  assert.deepEqual(peers.get(id('own')), { wallNs: T0 + 900n, node: 'node9' });
  assert.deepEqual(peers.get(id('shared')), { wallNs: T0 + 500n, node: 'node1' }, 'kept per peer: the earliest of both wins, the honest one is not overwritten');
  claim = 'node3'; // a name change later on
  await peers.poll();
  assert.match(failures[2]!, /it says it is node3, but it was node9/);
  // an earlier time for the same packet from another peer: the earliest is returned, with that peer's node
  when = T0 + 100n;
  claim = 'node9';
  await peers.poll();
  assert.deepEqual(peers.get(id('shared')), { wallNs: T0 + 100n, node: 'node9' });
  assert.equal(peers.invalidAnswers, 3);
});
