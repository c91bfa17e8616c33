// The agent's wire step over real HTTP: /v1/departures behind the agents' token, and two agents
// pairing a packet's departure on one node with its arrival on the other (step 6).
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import type { Server } from 'node:http';
import { test, type TestContext } from 'node:test';
import { WireStep, type Departure } from '../../../src/agent/wireStep';
import { createMetrics, type MetricsSource } from '../../../src/export/prometheus';
import { serve } from '../../../src/export/http';
import { WallClock } from '../../../src/flow/clock';
import type { SampledPacket } from '../../../src/flow/sampled';
import { ORDER } from '../../../src/probe/layout.generated';

const TOKEN = 'the-agents-token-0123456789';
const id = (s: string) => createHash('sha256').update(s).digest('hex').slice(0, 32);
const clock = new WallClock();

function packet(traceId: string, order: number, tsNs: number): SampledPacket {
  return {
    traceId, rootSpanId: '0'.repeat(16), family: 2, proto: 6, src: '10.244.1.5', dst: '10.244.2.8', sport: 40000, dport: 5201, ipLen: 1500,
    hops: [{ order, tsNs, netnsIno: 1, ifindex: 2 }], drop: null,
  };
}

interface Agent {
  wire: WireStep;
  url: string;
  emitted: { p: SampledPacket; d: Departure | null }[];
  logs: string[];
}

/** A WireStep as the agent runs it: its route served on 127.0.0.1 (the metrics server). */
async function agent(t: TestContext, node: string, peers: string[], token: string | null, waitMs?: number): Promise<Agent> {
  const emitted: Agent['emitted'] = [];
  const logs: string[] = [];
  const wire = new WireStep({ node, peers, clock, token, waitMs, emit: (p, d) => emitted.push({ p, d }), log: (l) => logs.push(l) });
  const server: Server = await serve({ host: '127.0.0.1', port: 0 }, { '/v1/departures': wire.route() });
  t.after(() => {
    wire.stop();
    server.closeAllConnections();
    return new Promise<void>((r) => server.close(() => r()));
  });
  return { wire, url: `http://127.0.0.1:${(server.address() as { port: number }).port}`, emitted, logs };
}

async function get(url: string, authorization?: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(url, { headers: authorization ? { authorization } : {} });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

test('WireStep: with a token, /v1/departures answers only requests that bring it; the others get 401 and do not start the log', async (t) => {
  const a = await agent(t, 'node1', [], TOKEN);
  const url = `${a.url}/v1/departures?after=0`;
  for (const auth of [undefined, 'Bearer wrong-token-0123456789', `Bearer ${TOKEN}x`, `Bearer ${TOKEN.slice(0, -1)}`, `Basic ${TOKEN}`, `Bearer  ${TOKEN}`, `bearer ${TOKEN}`]) {
    const r = await get(url, auth);
    assert.equal(r.status, 401, String(auth));
    assert.deepEqual(r.body, { error: 'a valid bearer token is required (--token-file)' });
  }
  assert.equal(a.wire.stats.unauthorized, 7);
  const ts = Number(process.hrtime.bigint());
  a.wire.add(packet(id('early'), ORDER.UNDERLAY_EGRESS, ts));
  assert.equal(a.wire.stats.departuresRecorded, 0, 'no peer has read the log: nothing is kept');

  const first = await get(url, `Bearer ${TOKEN}`);
  assert.deepEqual([first.status, first.body], [200, { node: 'node1', departures: [], next: 0, more: false }]);
  a.wire.add(packet(id('later'), ORDER.UNDERLAY_EGRESS, ts + 1000));
  const second = await get(`${a.url}/v1/departures?after=0&limit=10`, `Bearer ${TOKEN}`);
  assert.deepEqual(second.body, { node: 'node1', departures: [{ trace_id: id('later'), wall_ns: clock.wallNs(ts + 1000).toString() }], next: 1, more: false });
  assert.deepEqual(a.wire.stats, {
    departuresRecorded: 1, departuresDropped: 0, peerInvalidAnswers: 0, peerInvalidEntries: 0, peerEvicted: 0, unauthorized: 7,
    arrivalsPaired: 0, arrivalsUnpaired: 0, clamped: 0,
  });
  assert.equal(a.emitted.length, 2, 'departures go on as spans at once');
});

test('WireStep: without a token /v1/departures is open; a malformed cursor or limit is a 400', async (t) => {
  const a = await agent(t, 'node1', [], null);
  assert.equal((await get(`${a.url}/v1/departures`)).status, 200);
  assert.equal((await get(`${a.url}/v1/departures?after=3`, 'Bearer anything-at-all-here')).status, 200);
  for (const q of ['after=x', 'after=-1', 'after=1e3', 'after=1234567890123456', 'limit=0', 'limit=-5', 'limit=ten', 'since=0&after=']) {
    assert.equal((await get(`${a.url}/v1/departures?${q}`)).status, 400, q);
  }
});

test('WireStep: two agents with the same token time step 6; an agent with another token is refused and pairs nothing', async (t) => {
  const sender = await agent(t, 'node1', [], TOKEN);
  const receiver = await agent(t, 'node2', [sender.url], TOKEN);
  const stranger = await agent(t, 'node3', [sender.url], 'some-other-token-0123456789');
  assert.equal(receiver.wire.enabled, true);
  assert.equal(sender.wire.enabled, false);

  await receiver.wire.poll(); // the receiver asks: the sender starts keeping departures
  const ts = Number(process.hrtime.bigint());
  const dep = packet(id('p1'), ORDER.UNDERLAY_EGRESS, ts);
  sender.wire.add(dep);
  assert.deepEqual(sender.emitted, [{ p: dep, d: null }]);
  const arr = packet(id('p1'), ORDER.UNDERLAY_INGRESS, ts + 30_000);
  receiver.wire.add(arr);
  receiver.wire.pair();
  assert.deepEqual(receiver.emitted, [], 'waits for the departure');
  await receiver.wire.poll();
  receiver.wire.pair();
  assert.deepEqual(receiver.emitted, [{ p: arr, d: { wallNs: clock.wallNs(ts), node: 'node1' } }]);
  assert.equal(receiver.wire.histogram.counts[14], 1, '30 µs: bucket [2^14, 2^15) ns');
  assert.equal(receiver.wire.histogram.sumNs, 30_000);

  const arr3 = packet(id('p1'), ORDER.UNDERLAY_INGRESS, ts + 30_000);
  stranger.wire.add(arr3);
  await stranger.wire.poll();
  stranger.wire.pair();
  assert.deepEqual(stranger.emitted, []);
  assert.match(stranger.logs.join('\n'), /warning: peer http:\/\/127\.0\.0\.1:\d+ did not answer \(HTTP 401\): no step-6 timing from it/);
  stranger.wire.stop();
  assert.deepEqual(stranger.emitted, [{ p: arr3, d: null }], 'stopped: what waits goes out unpaired');
  assert.equal(sender.wire.stats.unauthorized, 1);
});

/** The agent's /metrics text with this wire step's counters (the kernel's maps empty). */
function scrape(node: string, wire: WireStep): Promise<string> {
  const src: MetricsSource = {
    node, latency: () => [], wireLatency: () => ({ counts: wire.histogram.counts, sumNs: wire.histogram.sumNs }), wireStats: () => wire.stats,
    drops: () => [], retransmits: () => [], lostRecords: () => 0, mapFailures: () => ({ retransmits: 0, drops: 0 }),
    hookLabels: (order) => (order === ORDER.UNDERLAY_INGRESS ? { step: 6, step_name: 'physical network', device: 'eth0', hook: 'ingress' } : null),
    dropLabels: () => null, dropReason: String, addressName: () => ({ namespace: '', workload: 'external', pod: '' }),
  };
  return createMetrics(src).registry.metrics();
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('WireStep: an arrival whose departure no peer reports is counted, not timed, once it gave up waiting', async (t) => {
  const sender = await agent(t, 'node1', [], TOKEN);
  const receiver = await agent(t, 'node2', [sender.url], TOKEN, 20);
  assert.match(await scrape('node2', receiver.wire), /nettrace_wire_arrivals_total\{node="node2",outcome="no_departure"\} 0\n/, 'a series from the start');
  await receiver.wire.poll();
  const ts = Number(process.hrtime.bigint());
  sender.wire.add(packet(id('seen'), ORDER.UNDERLAY_EGRESS, ts));
  receiver.wire.add(packet(id('seen'), ORDER.UNDERLAY_INGRESS, ts + 40_000));
  // its departure left a node that is no peer of ours, or its agent lost it
  const orphan = packet(id('orphan'), ORDER.UNDERLAY_INGRESS, ts + 50_000);
  receiver.wire.add(orphan);
  await receiver.wire.poll();
  receiver.wire.pair();
  assert.equal(receiver.emitted.length, 1, 'the paired one goes out; the orphan still waits');
  await sleep(30);
  receiver.wire.pair();
  assert.deepEqual(receiver.emitted[1], { p: orphan, d: null });
  const text = await scrape('node2', receiver.wire);
  assert.match(text, /# HELP nettrace_wire_arrivals_total Sampled packets that arrived from the underlay/);
  assert.match(text, /nettrace_wire_arrivals_total\{node="node2",outcome="paired"\} 1\n/);
  assert.match(text, /nettrace_wire_arrivals_total\{node="node2",outcome="no_departure"\} 1\n/);
  assert.match(text, /nettrace_hop_latency_seconds_count\{node="node2",step="6",[^}]*\} 1\n/, 'only the paired one is timed');
});

test('WireStep: a departure after the arrival (the sender\'s clock ahead) is timed as 0 and counted as clamped', async (t) => {
  const sender = await agent(t, 'node1', [], TOKEN);
  const receiver = await agent(t, 'node2', [sender.url], TOKEN);
  assert.match(await scrape('node2', receiver.wire), /nettrace_wire_skew_clamped_total\{node="node2"\} 0\n/, 'a series from the start');
  await receiver.wire.poll();
  const ts = Number(process.hrtime.bigint());
  // the sender stamps 1 ms later than we see the packet arrive: its clock is ahead of ours
  sender.wire.add(packet(id('ahead'), ORDER.UNDERLAY_EGRESS, ts + 1_000_000));
  sender.wire.add(packet(id('fine'), ORDER.UNDERLAY_EGRESS, ts + 2_000_000));
  receiver.wire.add(packet(id('ahead'), ORDER.UNDERLAY_INGRESS, ts));
  receiver.wire.add(packet(id('fine'), ORDER.UNDERLAY_INGRESS, ts + 2_030_000));
  await receiver.wire.poll();
  receiver.wire.pair();
  assert.equal(receiver.emitted.length, 2);
  assert.equal(receiver.wire.histogram.counts[0], 1, 'never negative: 0 ns');
  assert.equal(receiver.wire.histogram.sumNs, 30_000);
  const text = await scrape('node2', receiver.wire);
  assert.match(text, /# HELP nettrace_wire_skew_clamped_total Step-6 times that came out negative/);
  assert.match(text, /nettrace_wire_skew_clamped_total\{node="node2"\} 1\n/);
  assert.match(text, /nettrace_wire_arrivals_total\{node="node2",outcome="paired"\} 2\n/);
});
