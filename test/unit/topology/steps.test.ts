// The step model in TypeScript and the hook orders in bpf/nettrace.h must agree.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ORDER } from '../../../src/probe/layout.generated';
import type { DeviceRole } from '../../../src/topology/model';
import { failedStep, ORDER_POINTS, orderOf } from '../../../src/topology/steps';

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

const roles = (...r: DeviceRole[]) => new Set<DeviceRole>(['pod', 'host-veth', 'underlay', ...r]);
const VXLAN = roles('bridge', 'tunnel');
const HOST_GW = roles('bridge');
const CALICO_VXLAN = roles('tunnel');
const CALICO_BGP = roles();

test('the step that failed is the next hook point\'s step, the first the packet did not complete', () => {
  assert.equal(failedStep(ORDER.BRIDGE_INGRESS, VXLAN), 4); // cni0 ingress, then FORWARD or the MTU check: routing
  assert.equal(failedStep(ORDER.TUNNEL_EGRESS, VXLAN), 5); // flannel.1 egress, no FDB entry: encapsulation
  assert.equal(failedStep(ORDER.UNDERLAY_EGRESS, VXLAN), 6); // left node1, never reached node2: the wire
  assert.equal(failedStep(ORDER.UNDERLAY_INGRESS, VXLAN), 7);
  assert.equal(failedStep(ORDER.VETH_EGRESS, VXLAN), 9); // at the host veth, not in pod B's eth0
  assert.equal(failedStep(ORDER.POD_INGRESS, VXLAN), 9); // inside pod B
  assert.equal(failedStep(ORDER.NONE, VXLAN), null);
});

test('steps a node\'s mode lacks are passed over, collapsed steps named as the hops are', () => {
  // host-gw: no tunnel, routing ends at the underlay egress (step 4); no step 5 nor 7
  assert.equal(failedStep(ORDER.BRIDGE_INGRESS, HOST_GW), 4);
  assert.equal(failedStep(ORDER.UNDERLAY_EGRESS, HOST_GW), 6);
  assert.equal(failedStep(ORDER.UNDERLAY_INGRESS, HOST_GW), 8);
  // Calico: no bridge, so no step 3 after the host veth
  assert.equal(failedStep(ORDER.VETH_INGRESS, CALICO_VXLAN), 4);
  assert.equal(failedStep(ORDER.VETH_INGRESS, CALICO_BGP), 4);
  assert.equal(failedStep(ORDER.TUNNEL_INGRESS, CALICO_VXLAN), 8); // routing to the pod ends at its veth
  assert.equal(failedStep(ORDER.UNDERLAY_INGRESS, CALICO_BGP), 8);
  // past the sender's last hook the receiving node's underlay ingress comes next, whatever the sender lacks
  assert.equal(failedStep(ORDER.UNDERLAY_EGRESS, CALICO_BGP), 6);
});
