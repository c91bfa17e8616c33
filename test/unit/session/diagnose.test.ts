// runDiagnose with a scripted target: when the follow under it lost hop records, a `loss` verdict
// says that part of the loss may be nettrace's own, in the JSON and in the table a user reads.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatDiagnosis } from '../../../src/export/diagnosis';
import type { PacketPath } from '../../../src/flow/path';
import { parseFlowSpec } from '../../../src/flow/spec';
import { runDiagnose, type DiagnoseTarget } from '../../../src/session/diagnose';
import type { NodeTopology } from '../../../src/topology/model';
import { STEP_NAMES } from '../../../src/topology/steps';

const A = '10.244.1.5';
const B = '10.244.2.8';
const N1 = 'nt1-node1';
const HOOKS: [number, string, string, 'ingress' | 'egress'][] = [
  [1, N1, 'eth0', 'egress'], [2, N1, 'veth1a', 'ingress'], [3, N1, 'cni0', 'ingress'], [4, N1, 'flannel.1', 'egress'], [5, N1, 'eth0', 'egress'],
  [6, 'nt1-node2', 'eth0', 'ingress'], [7, 'nt1-node2', 'flannel.1', 'ingress'], [8, 'nt1-node2', 'cni0', 'egress'], [9, 'nt1-node2', 'veth2b', 'egress'],
  [9, 'nt1-node2', 'eth0', 'ingress'],
];

/** A probe's request path; upTo hooks saw it (all: complete). */
function path(ipId: number, upTo = HOOKS.length): PacketPath {
  let ts = 1_000_000_000 + ipId * 1_000_000;
  const steps = HOOKS.slice(0, upTo).map(([step, node, device, hook], i) => {
    const latency = i === 0 ? 0 : 20_000;
    ts += latency;
    return { step, name: STEP_NAMES[step]!, node, device, hook, ts_ns: ts, latency_ns: latency };
  });
  const last = steps[steps.length - 1]!;
  const complete = upTo === HOOKS.length;
  return {
    flow: { src: A, sport: 0, dst: B, dport: 0, proto: 'icmp' }, direction: 'request',
    packet: { src: A, sport: 0, dst: B, dport: 0, ip_id: ipId, len: 84, payload_len: 56, icmp_type: 8, icmp_id: 7, icmp_seq: ipId, gso_segs: 1 },
    steps, total_ns: steps.reduce((s, h) => s + h.latency_ns, 0), complete,
    drop: complete ? null : {
      // flannel-vxlan has every hook: the step that failed is the next hook's
      step: HOOKS[upTo]![0], step_name: STEP_NAMES[HOOKS[upTo]![0]]!, device: last.device, node: last.node,
      reason: `not seen after ${last.device} ${last.hook} (last seen step ${last.step}, ${STEP_NAMES[last.step]}): step ${HOOKS[upTo]![0]} (${STEP_NAMES[HOOKS[upTo]![0]]}) failed`,
      last_seen: { step: last.step, name: last.name, node: last.node, device: last.device, hook: last.hook },
    },
  };
}

const node = (name: string): NodeTopology => ({
  name, netns: { name, path: `/run/netns/${name}`, ino: 1 }, ip: null, underlay: null, bridge: null, tunnel: null, pods: [], cni: 'flannel-vxlan',
});

/** Watches real traffic (--passive): 3 probes cross, 2 stop after eth0; `lost` records are reported as a follow reports them, when it closes. */
function target(lost: number): DiagnoseTarget {
  return {
    where: 'the test nodes', topology: { nodes: [node(N1), node('nt1-node2')] }, services: [],
    follow: (h) => {
      let end: (n: number) => void = () => {};
      const done = new Promise<number>((r) => (end = r));
      setTimeout(() => {
        h.onReady({ devices: 10, namespaces: 2, attach: 'tcx', modes: ['flannel-vxlan'], atNs: 0 });
        for (const p of [path(1), path(2), path(3), path(4, 5), path(5, 5)]) h.onPath(p);
      }, 10);
      return {
        done,
        stop: () => {
          if (lost) h.onLost?.(lost, 'the ring buffer was full');
          end(5);
        },
      };
    },
    sendProbes: async () => {},
    inspect: async () => ({ reach: { route: { dev: 'flannel.1', gateway: '10.244.2.0' }, neighbour: { ip: '10.244.2.0', mac: '0e:6e:74:00:00:02' }, fdb: { mac: '0e:6e:74:00:00:02', dst: '192.168.1.102' } }, dropRules: [], mtus: {} }),
  };
}

const flow = parseFlowSpec(`${A} -> ${B}`, 'icmp');

test('diagnose: a loss verdict while records were lost carries a caveat, in JSON and in the table', async () => {
  const d = await runDiagnose({ flow, target: target(7), passive: true, seconds: 0 });
  assert.equal(d.cause, 'loss');
  assert.equal(d.step, 6, 'last seen at eth0 egress (step 5): the wire failed');
  const caveat = '7 hop records were lost before nettrace read them (the ring buffer was full): some probes counted as lost may have arrived, '
    + "so part of the loss may be nettrace's own; run diagnose again to confirm";
  const json = JSON.parse(JSON.stringify(d)) as { caveats: string[] };
  assert.deepEqual(json.caveats, [caveat]);
  const table = formatDiagnosis(flow, d);
  const lines = table.split('\n');
  assert.ok(lines.includes(`caveat: ${caveat}`), table);
  assert.ok(lines.indexOf(`caveat: ${caveat}`) < lines.findIndex((l) => l.startsWith('next: ')), 'the caveat comes with the cause, before what to do next');
});

test('diagnose: the same loss with no record lost has no caveat', async () => {
  const d = await runDiagnose({ flow, target: target(0), passive: true, seconds: 0 });
  assert.equal(d.cause, 'loss');
  assert.deepEqual((JSON.parse(JSON.stringify(d)) as { caveats: string[] }).caveats, []);
  assert.doesNotMatch(formatDiagnosis(flow, d), /caveat/);
});
