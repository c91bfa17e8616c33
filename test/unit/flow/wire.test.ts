// Step 6 timing between agents: the departures a node keeps and serves, a receiving node
// learning its peers' over real HTTP, and the userspace log2 histogram of wire latencies.
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { test, type TestContext } from 'node:test';
import { DepartureLog, Log2Histogram, PeerDepartures } from '../../../src/flow/wire';

const S = 1_000_000_000n;
const T0 = 1_700_000_000n * S; // a wall clock in ns, beyond 2^53

test('DepartureLog: since() returns departures after a time, oldest first, wall_ns exact beyond 2^53', () => {
  const log = new DepartureLog();
  log.record('a', T0 + 1n);
  log.record('b', T0 + 2n);
  log.record('c', T0 + 3n);
  assert.deepEqual(log.since(0n), [
    { trace_id: 'a', wall_ns: (T0 + 1n).toString() },
    { trace_id: 'b', wall_ns: (T0 + 2n).toString() },
    { trace_id: 'c', wall_ns: (T0 + 3n).toString() },
  ]);
  assert.deepEqual(log.since(T0 + 2n).map((d) => d.trace_id), ['c'], 'strictly after');
  assert.deepEqual(log.since(T0 + 3n), []);
  assert.equal(log.since(0n)[0]!.wall_ns, '1700000000000000001');
});

test('DepartureLog: keeps 30 s behind the newest departure, forgets what is older', () => {
  const log = new DepartureLog();
  log.record('old', T0);
  log.record('edge', T0 + 1n);
  log.record('mid', T0 + 10n * S);
  assert.equal(log.since(0n).length, 3);
  log.record('new', T0 + 30n * S + 1n); // 'old' is now 30 s + 1 ns behind, 'edge' exactly 30 s
  assert.deepEqual(log.since(0n).map((d) => d.trace_id), ['edge', 'mid', 'new']);
  log.record('later', T0 + 45n * S);
  assert.deepEqual(log.since(0n).map((d) => d.trace_id), ['new', 'later'], 'edge and mid are more than 30 s behind');
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

/** A peer agent: serves its DepartureLog at /v1/departures like `nettrace agent` does; records each query. */
async function peer(t: TestContext, node: string, log: DepartureLog): Promise<{ url: string; queries: string[] }> {
  const queries: string[] = [];
  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname !== '/v1/departures') {
      res.writeHead(404).end();
      return;
    }
    const since = url.searchParams.get('since') ?? '';
    queries.push(since);
    res.writeHead(200, { 'content-type': 'application/json' })
      .end(JSON.stringify({ node, departures: log.since(BigInt(/^\d+$/.test(since) ? since : '0')) }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => new Promise<void>((r) => server.close(() => r())));
  return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}`, queries };
}

test('PeerDepartures: learns a peer\'s departures by trace id; the next poll asks only for newer ones', async (t) => {
  const log = new DepartureLog();
  log.record('t1', T0 + 100n);
  log.record('t2', T0 + 200n);
  const p = await peer(t, 'node1', log);
  const failures: string[] = [];
  const peers = new PeerDepartures([p.url + '/'], (who, err) => failures.push(`${who}: ${err.message}`));
  assert.equal(peers.enabled, true);
  assert.equal(peers.get('t1'), undefined);

  await peers.poll();
  assert.deepEqual(peers.get('t1'), { wallNs: T0 + 100n, node: 'node1' });
  assert.deepEqual(peers.get('t2'), { wallNs: T0 + 200n, node: 'node1' });
  assert.equal(peers.get('t3'), undefined);

  log.record('t3', T0 + 300n);
  await peers.poll();
  assert.deepEqual(peers.get('t3'), { wallNs: T0 + 300n, node: 'node1' });
  assert.deepEqual(peers.get('t1'), { wallNs: T0 + 100n, node: 'node1' }, 'what was learned stays');
  await peers.poll();
  assert.deepEqual(p.queries, ['0', (T0 + 200n).toString(), (T0 + 300n).toString()], 'the cursor is the newest departure seen (a trailing / on the peer is fine)');
  assert.deepEqual(failures, []);
});

test('PeerDepartures: each peer has its own cursor and node', async (t) => {
  const log1 = new DepartureLog();
  const log2 = new DepartureLog();
  log1.record('from1', T0 + 5n);
  log2.record('from2', T0 + 7n);
  const p1 = await peer(t, 'node1', log1);
  const p2 = await peer(t, 'node3', log2);
  const peers = new PeerDepartures([p1.url, p2.url]);
  await peers.poll();
  await peers.poll();
  assert.equal(peers.get('from1')?.node, 'node1');
  assert.equal(peers.get('from2')?.node, 'node3');
  assert.deepEqual(p1.queries, ['0', (T0 + 5n).toString()]);
  assert.deepEqual(p2.queries, ['0', (T0 + 7n).toString()]);
});

test('PeerDepartures: a peer that fails is reported through onFailure; the others are still learned', async (t) => {
  const good = new DepartureLog();
  good.record('ok', T0);
  const p = await peer(t, 'node1', good);
  // answers 500
  const broken = createServer((_req, res) => res.writeHead(500).end('no'));
  await new Promise<void>((r) => broken.listen(0, '127.0.0.1', r));
  t.after(() => new Promise<void>((r) => broken.close(() => r())));
  const brokenUrl = `http://127.0.0.1:${(broken.address() as { port: number }).port}`;
  // nothing listens: a closed port
  const gone = createServer();
  await new Promise<void>((r) => gone.listen(0, '127.0.0.1', r));
  const goneUrl = `http://127.0.0.1:${(gone.address() as { port: number }).port}`;
  await new Promise<void>((r) => gone.close(() => r()));
  // not our JSON
  const odd = createServer((_req, res) => res.writeHead(200, { 'content-type': 'text/html' }).end('<html>'));
  await new Promise<void>((r) => odd.listen(0, '127.0.0.1', r));
  t.after(() => new Promise<void>((r) => odd.close(() => r())));
  const oddUrl = `http://127.0.0.1:${(odd.address() as { port: number }).port}`;

  const failures: { peer: string; err: Error }[] = [];
  const peers = new PeerDepartures([brokenUrl, p.url, goneUrl, oddUrl], (peer, err) => failures.push({ peer, err }));
  await peers.poll();
  assert.deepEqual(peers.get('ok'), { wallNs: T0, node: 'node1' });
  const byPeer = new Map(failures.map((f) => [f.peer, f.err]));
  assert.deepEqual([...byPeer.keys()].sort(), [brokenUrl, goneUrl, oddUrl].sort());
  assert.equal(byPeer.get(brokenUrl)!.message, 'HTTP 500');
  assert.ok(byPeer.get(goneUrl) instanceof Error);
  assert.ok(byPeer.get(oddUrl) instanceof Error);
});

test('PeerDepartures: a peer slower than the fetch timeout is a failure, not a hang', async (t) => {
  const slow = createServer(() => {}); // never answers
  await new Promise<void>((r) => slow.listen(0, '127.0.0.1', r));
  t.after(() => {
    slow.closeAllConnections();
    return new Promise<void>((r) => slow.close(() => r()));
  });
  const url = `http://127.0.0.1:${(slow.address() as { port: number }).port}`;
  const failures: string[] = [];
  const peers = new PeerDepartures([url], (_peer, err) => failures.push(err.name), 50);
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
});
