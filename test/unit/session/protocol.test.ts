// The trace API's messages: what an agent accepts from a caller and a client from an agent.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { HOP_RECORD_SIZE } from '../../../src/probe/layout.generated';
import { decodeHops, encodeHops, nodeInfo, parseFollowRequest, parseStreamLine, topologyOf } from '../../../src/session/protocol';
import { twoNodeTopology } from '../../helpers/records';

test('a follow request: a flow of one family and ports, a bounded time; anything else is a one-line reason', () => {
  const ok = parseFollowRequest({ flow: { src: '10.244.1.5', dst: '10.244.2.8', dport: 80, proto: 'tcp' }, timeout_s: 30 });
  assert.deepEqual(ok, { flow: { src: '10.244.1.5', dst: '10.244.2.8', sport: 0, dport: 80, proto: 'tcp', family: 4 }, timeoutS: 30, every: 1 });
  const sampled = parseFollowRequest({ flow: { src: '10.244.1.5', dst: '10.244.2.8', dport: 80, proto: 'tcp' }, timeout_s: 30, every: 16 });
  assert.equal(typeof sampled === 'object' && sampled.every, 16, 'follow --every through an agent');
  const bad: unknown[] = [
    null, 1, 'x', {}, { flow: 1 },
    { flow: { src: 'a', dst: '10.244.2.8', proto: 'tcp' } },
    { flow: { src: '10.244.1.5', dst: 'fd00::1', proto: 'tcp' } },
    { flow: { src: '10.244.1.5', dst: '10.244.2.8', proto: 'sctp' } },
    { flow: { src: '10.244.1.5', dst: '10.244.2.8', proto: 'tcp', dport: 70000 } },
    { flow: { src: '10.244.1.5', dst: '10.244.2.8', proto: 'icmp', dport: 80 } },
    { flow: { src: '10.244.1.5', dst: '10.244.2.8', proto: 'tcp' }, timeout_s: 1e9 },
    { flow: { src: '10.244.1.5', dst: '10.244.2.8', proto: 'tcp' }, timeout_s: -1 },
    { flow: { src: `10.244.1.5${'x'.repeat(100)}`, dst: '10.244.2.8', proto: 'tcp' } },
    { flow: { src: '10.244.1.5', dst: '10.244.2.8', proto: 'tcp' }, every: 3 },
    { flow: { src: '10.244.1.5', dst: '10.244.2.8', proto: 'tcp' }, every: 4096 },
    { flow: { src: '10.244.1.5', dst: '10.244.2.8', proto: 'tcp' }, every: '16' },
    { flow: { src: '10.244.1.5', dst: '10.244.2.8', proto: 'udp' }, every: 16 },
  ];
  for (const b of bad) {
    const r = parseFollowRequest(b);
    assert.equal(typeof r, 'string', JSON.stringify(b));
    assert.doesNotMatch(r as string, /\n/);
  }
});

test('stream lines: known kinds checked, unknown kinds skipped, garbage refused', () => {
  assert.deepEqual(parseStreamLine('{"type":"tick"}'), { type: 'tick' });
  assert.equal(parseStreamLine('{"type":"from-a-newer-agent"}'), null);
  assert.deepEqual(parseStreamLine('{"type":"lost","records":3,"why":"the ring buffer was full"}'), { type: 'lost', records: 3, why: 'the ring buffer was full' });
  // the --every the agent samples by; an older agent's ready has none
  const ready = { type: 'ready', session: 's1', node: 'node1', devices: 5, mono_ns: '1', wall_ns: '2' };
  assert.deepEqual(parseStreamLine(JSON.stringify({ ...ready, every: 16 })), { ...ready, every: 16 });
  assert.deepEqual(parseStreamLine(JSON.stringify(ready)), ready);
  for (const every of [3, 0, 2048, '16', -1]) assert.throws(() => parseStreamLine(JSON.stringify({ ...ready, every })), /malformed/, String(every));
  for (const line of ['not json', '[]', '{"type":"ready","session":"x"}', '{"type":"hops","n":-1,"b64":""}', '{"type":"lost","records":"many","why":"x"}']) {
    assert.throws(() => parseStreamLine(line), /malformed/, line);
  }
});

test('hop records travel as their bytes: a batch decodes to the same records, a short one is refused', () => {
  const a = Buffer.alloc(HOP_RECORD_SIZE, 0);
  a.writeUInt32LE(77, 0); // ts_ns low word
  const b = Buffer.alloc(HOP_RECORD_SIZE, 0);
  b.writeUInt32LE(88, 0);
  const m = encodeHops(Buffer.concat([a, b]), 2) as { type: 'hops'; n: number; b64: string };
  assert.deepEqual(decodeHops(m).map((r) => r.ts_ns), [77, 88]);
  assert.throws(() => decodeHops({ n: 2, b64: a.toString('base64') }), /malformed hop batch/);
  assert.throws(() => decodeHops({ n: 1, b64: Buffer.alloc(HOP_RECORD_SIZE - 1).toString('base64') }), /malformed hop batch/);
});

test('a node description round-trips to the topology the assembler places hops on; a hostile one is refused', () => {
  const t = twoNodeTopology().nodes[0]!;
  const info = JSON.parse(JSON.stringify(nodeInfo(t, [{ clusterIp: '10.96.0.10', port: 53, proto: 'udp', endpoints: [{ ip: '10.244.2.8', port: 53 }] }])));
  const back = topologyOf(info);
  assert.equal(back.topology.name, t.name);
  assert.deepEqual(back.topology.pods.map((p) => [p.name, p.ips, p.eth.ifindex, p.eth.netns.ino]), t.pods.map((p) => [p.name, p.ips, p.eth.ifindex, p.eth.netns.ino]));
  assert.equal(back.topology.underlay?.name, t.underlay?.name);
  assert.equal(back.services[0]!.endpoints[0]!.ip, '10.244.2.8');
  for (const evil of [
    { ...info, api: 2 },
    { ...info, node: '../etc' },
    { ...info, pods: [{ ...info.pods[0], ips: ['not-an-ip'] }] },
    { ...info, underlay: { ...info.underlay, role: 'root' } },
    { ...info, services: [{ clusterIp: 'x', port: 1, proto: 'tcp', endpoints: [] }] },
    { ...info, pods: new Array(10_001).fill(info.pods[0]) },
  ]) {
    assert.throws(() => topologyOf(evil), /malformed/);
  }
});
