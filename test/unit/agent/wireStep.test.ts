// The agent's wire step over real HTTP: /v1/departures behind the agents' token, and two agents
// pairing a packet's departure on one node with its arrival on the other (step 6).
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import type { Server } from 'node:http';
import { test, type TestContext } from 'node:test';
import { WireStep, type Departure } from '../../../src/agent/wireStep';
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
async function agent(t: TestContext, node: string, peers: string[], token: string | null): Promise<Agent> {
  const emitted: Agent['emitted'] = [];
  const logs: string[] = [];
  const wire = new WireStep({ node, peers, clock, token, emit: (p, d) => emitted.push({ p, d }), log: (l) => logs.push(l) });
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
  assert.deepEqual(a.wire.stats, { departuresRecorded: 1, departuresDropped: 0, peerInvalidAnswers: 0, peerInvalidEntries: 0, peerEvicted: 0, unauthorized: 7 });
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
