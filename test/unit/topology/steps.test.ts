// The step model in TypeScript and the hook orders in bpf/nettrace.h must agree.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ORDER } from '../../../src/probe/layout.generated';
import { ORDER_POINTS, orderOf, stepAfter } from '../../../src/topology/steps';

test('every nt_order constant is the hook point of the same role and hook', () => {
  const expect: Record<string, number> = {
    'pod/egress': ORDER.POD_EGRESS, 'host-veth/ingress': ORDER.VETH_INGRESS, 'bridge/ingress': ORDER.BRIDGE_INGRESS,
    'tunnel/egress': ORDER.TUNNEL_EGRESS, 'underlay/egress': ORDER.UNDERLAY_EGRESS, 'underlay/ingress': ORDER.UNDERLAY_INGRESS,
    'tunnel/ingress': ORDER.TUNNEL_INGRESS, 'bridge/egress': ORDER.BRIDGE_EGRESS, 'host-veth/egress': ORDER.VETH_EGRESS,
    'pod/ingress': ORDER.POD_INGRESS,
  };
  assert.equal(ORDER_POINTS.length, ORDER.COUNT);
  for (const [rh, order] of Object.entries(expect)) {
    const [role, hook] = rh.split('/') as ['pod', 'egress'];
    assert.equal(orderOf(role, hook).order, order, rh);
  }
  assert.deepEqual(ORDER_POINTS.map((p) => p.order), [...Array(ORDER.COUNT).keys()]);
});

test('a packet last seen at a hook died in the step after it', () => {
  assert.equal(stepAfter(ORDER.BRIDGE_INGRESS), 4); // cni0 ingress, then FORWARD: routing
  assert.equal(stepAfter(ORDER.UNDERLAY_EGRESS), 6); // left node1, never reached node2: the wire
  assert.equal(stepAfter(ORDER.POD_INGRESS), 9); // inside pod B
});
