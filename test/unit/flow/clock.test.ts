// Wall-clock time on every hop (JSON `time`) and on the table's packet line, from each hop's
// monotonic ts_ns and a fixed monotonic -> wall mapping.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isoMicros, stampWallTimes, WallClock } from '../../../src/flow/clock';
import type { PacketPath } from '../../../src/flow/path';
import { pathToJsonLine } from '../../../src/export/json';
import { formatPathTable } from '../../../src/export/table';

// 2025-11-29T14:04:05.123456789Z
const WALL0 = 1_764_425_045_123_456_789n;
/** a fixed clock: monotonic 5 s is WALL0 */
const fixed = WALL0 - 5_000_000_000n;

function path(): PacketPath {
  const hop = (step: number, device: string, hook: 'ingress' | 'egress', ts: number, node = 'node1') =>
    ({ step, name: `step ${step}`, node, device, hook, ts_ns: ts, latency_ns: 0 });
  return {
    flow: { src: '10.244.1.5', sport: 40000, dst: '10.244.2.8', dport: 80, proto: 'tcp' },
    direction: 'request',
    packet: { src: '10.244.1.5', sport: 40000, dst: '10.244.2.8', dport: 80, ip_id: 7, len: 60, payload_len: 0, seq: 1, ack: 0, tcp_flags: 'S', gso_segs: 0 },
    steps: [hop(1, 'eth0', 'egress', 5_000_000_000), hop(2, 'veth1234', 'ingress', 5_000_003_900), hop(6, 'ens5', 'ingress', 5_000_117_500, 'node2')],
    total_ns: 117_500, complete: true, drop: null,
  };
}

test('ISO 8601 in UTC with microseconds, truncated, never rounded up into the next second', () => {
  assert.equal(isoMicros(WALL0), '2025-11-29T14:04:05.123456Z');
  assert.equal(isoMicros(1_764_425_045_999_999_999n), '2025-11-29T14:04:05.999999Z');
  assert.equal(isoMicros(1_764_425_045_000_000_999n), '2025-11-29T14:04:05.000000Z');
  assert.equal(isoMicros(0n), '1970-01-01T00:00:00.000000Z');
});

test('every hop gets its wall time; JSON carries it as `time`, the table\'s packet line starts with the first hop\'s', () => {
  const p = stampWallTimes(path(), fixed);
  assert.deepEqual(p.steps.map((h) => h.time), ['2025-11-29T14:04:05.123456Z', '2025-11-29T14:04:05.123460Z', '2025-11-29T14:04:05.123574Z']);
  const json = JSON.parse(pathToJsonLine(p)) as PacketPath;
  assert.equal(json.steps[0]!.time, '2025-11-29T14:04:05.123456Z');
  assert.equal(json.steps[2]!.time, '2025-11-29T14:04:05.123574Z');
  assert.match(formatPathTable(p).split('\n')[0]!, /^2025-11-29T14:04:05\.123456Z request 10\.244\.1\.5:40000 -> 10\.244\.2\.8:80 tcp ip-id 7 len 60 seq 1 ack 0 \[S\]$/);
  // a hop in the last microsecond of a second, and one whose ts and offset carry into the next
  const edge = path();
  edge.steps[0]!.ts_ns = 5_876_543_210; // WALL0 + 0.876543210 s: 14:04:05.999999999
  edge.steps[1]!.ts_ns = 5_876_543_211;
  assert.deepEqual(stampWallTimes(edge, fixed).steps.slice(0, 2).map((h) => h.time), ['2025-11-29T14:04:05.999999Z', '2025-11-29T14:04:06.000000Z']);
  // the same as isoMicros of the BigInt sum, for a negative offset too
  assert.equal(stampWallTimes(path(), -1_500n).steps[0]!.time, isoMicros(5_000_000_000n - 1_500n));
  // a path nothing stamped (an older producer) prints as before
  assert.match(formatPathTable(path()).split('\n')[0]!, /^request 10\.244\.1\.5:40000 /);
});

test('WallClock: the monotonic clock placed on the wall clock as it is now, plus the test skew', () => {
  const c = new WallClock();
  const { monoNs, wallNs } = c.now();
  assert.equal(c.wallNs(monoNs), wallNs);
  // Date.now() is whole ms: within 2 ms of it
  const diffMs = Number(wallNs / 1_000_000n) - Date.now();
  assert.ok(Math.abs(diffMs) <= 2, `${diffMs} ms from Date.now()`);
  const skewed = new WallClock(25_000_000n);
  const d = Number(skewed.wallNs(monoNs) - c.wallNs(monoNs));
  assert.ok(Math.abs(d - 25_000_000) < 2_000_000, `skew ${d} ns`);
});
