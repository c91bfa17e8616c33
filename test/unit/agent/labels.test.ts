// One meaning of "step" for a packet that stopped: the agent's nettrace_drops_total (and its drop
// spans) and follow's/diagnose's drop name the same step, the one that failed, in every node model.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { dropLabels } from '../../../src/agent/labels';
import { PathAssembler } from '../../../src/flow/assemble';
import { parseFlowSpec } from '../../../src/flow/spec';
import { ORDER } from '../../../src/probe/layout.generated';
import type { ClusterTopology, NodeTopology } from '../../../src/topology/model';
import { tcpHopRecord as rec, twoNodeTopology } from '../../helpers/records';

const flow = parseFlowSpec('10.244.1.5 -> 10.244.2.8:80', 'tcp');

/** The request's hooks in path order: [order, netns ino, ifindex, tc hook (0 ingress, 1 egress)] on twoNodeTopology. */
const HOOKS: [number, number, number, 0 | 1][] = [
  [ORDER.POD_EGRESS, 2001, 2, 1], [ORDER.VETH_INGRESS, 1001, 5, 0], [ORDER.BRIDGE_INGRESS, 1001, 3, 0], [ORDER.TUNNEL_EGRESS, 1001, 4, 1],
  [ORDER.UNDERLAY_EGRESS, 1001, 2, 1], [ORDER.UNDERLAY_INGRESS, 1002, 2, 0], [ORDER.TUNNEL_INGRESS, 1002, 4, 0], [ORDER.BRIDGE_EGRESS, 1002, 3, 1],
  [ORDER.VETH_EGRESS, 1002, 5, 1],
];

/** twoNodeTopology with some devices taken away, as a mode without them has. */
function model(without: ('tunnel' | 'bridge')[]): ClusterTopology {
  const t = twoNodeTopology();
  for (const n of t.nodes) for (const role of without) (n as NodeTopology)[role] = null;
  return t;
}

/** For a packet last seen at each hook its mode has: [last order, follow's drop.step, the agent's drop step label]. */
function stopped(t: ClusterTopology): [number, number | undefined, number | undefined][] {
  const present = HOOKS.filter(([, ino, ifx]) => ino > 2000 || t.nodes.some((n) => [n.underlay, n.tunnel, n.bridge, n.pods[0]!.hostVeth].some((d) => d?.netns.ino === ino && d.ifindex === ifx)));
  return present.map((_, i) => {
    let now = 0;
    const a = new PathAssembler(flow, t, { graceMs: 10, now: () => now });
    for (const [, ino, ifx, hook] of present.slice(0, i + 1)) a.add(rec(ino, ifx, hook, 100 * (i + 1)));
    now = 100;
    const [p] = a.expire();
    const [order, ino] = present[i]!;
    const node = t.nodes.find((n) => n.netns.ino === ino || n.pods[0]!.netns.ino === ino)!;
    return [order, p?.drop?.step, dropLabels(node, order)?.step];
  });
}

test('flannel-vxlan: the step that failed is the next hook\'s, the same in follow and the agent', () => {
  assert.deepEqual(stopped(model([])), [
    [ORDER.POD_EGRESS, 2, 2], [ORDER.VETH_INGRESS, 3, 3], [ORDER.BRIDGE_INGRESS, 4, 4], [ORDER.TUNNEL_EGRESS, 5, 5], [ORDER.UNDERLAY_EGRESS, 6, 6],
    [ORDER.UNDERLAY_INGRESS, 7, 7], [ORDER.TUNNEL_INGRESS, 8, 8], [ORDER.BRIDGE_EGRESS, 9, 9], [ORDER.VETH_EGRESS, 9, 9],
  ]);
});

test('host-gw (no tunnel): steps 5 and 7 are passed over, the same in follow and the agent', () => {
  assert.deepEqual(stopped(model(['tunnel'])), [
    [ORDER.POD_EGRESS, 2, 2], [ORDER.VETH_INGRESS, 3, 3], [ORDER.BRIDGE_INGRESS, 4, 4], [ORDER.UNDERLAY_EGRESS, 6, 6],
    [ORDER.UNDERLAY_INGRESS, 8, 8], [ORDER.BRIDGE_EGRESS, 9, 9], [ORDER.VETH_EGRESS, 9, 9],
  ]);
});

test('Calico BGP (no bridge, no tunnel): step 3 is passed over, routing on the receiving node ends at the veth', () => {
  assert.deepEqual(stopped(model(['tunnel', 'bridge'])), [
    [ORDER.POD_EGRESS, 2, 2], [ORDER.VETH_INGRESS, 4, 4], [ORDER.UNDERLAY_EGRESS, 6, 6], [ORDER.UNDERLAY_INGRESS, 8, 8], [ORDER.VETH_EGRESS, 9, 9],
  ]);
});

test('a drop label names the step that failed and where the packet was last seen; no order, no label', () => {
  const node = twoNodeTopology().nodes[0]!;
  assert.deepEqual(dropLabels(node, ORDER.BRIDGE_INGRESS), { step: 4, step_name: 'routing', device: 'cni0', hook: 'ingress' });
  assert.deepEqual(dropLabels(node, ORDER.TUNNEL_EGRESS), { step: 5, step_name: 'encapsulation', device: 'flannel.1', hook: 'egress' });
  assert.equal(dropLabels(node, ORDER.NONE), null);
});
