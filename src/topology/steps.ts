// The nine steps of a cross-node packet and the ten hook points that observe them
// (docs/architecture.md#hook-points-and-steps). Orders are the generated enum nt_order.
import { ORDER } from '../probe/layout.generated';
import type { DeviceRole } from './model';

export const STEP_NAMES: Record<number, string> = {
  1: 'container sends',
  2: 'veth pair',
  3: 'bridge',
  4: 'routing',
  5: 'encapsulation',
  6: 'physical network',
  7: 'receive, decapsulate',
  8: 'route to bridge',
  9: 'veth to pod',
};

export type Hook = 'ingress' | 'egress';
/** The sending pod's node is the source side, the receiving pod's the destination side. */
export type Side = 'source' | 'destination';

export interface HookPoint {
  step: number;
  /** position along the path: orders hops whatever the clocks say */
  order: number;
}

const POINTS: Record<Side, Partial<Record<`${DeviceRole}/${Hook}`, HookPoint>>> = {
  source: {
    'pod/egress': { step: 1, order: ORDER.POD_EGRESS },
    'host-veth/ingress': { step: 2, order: ORDER.VETH_INGRESS },
    'bridge/ingress': { step: 3, order: ORDER.BRIDGE_INGRESS },
    'tunnel/egress': { step: 4, order: ORDER.TUNNEL_EGRESS },
    'underlay/egress': { step: 5, order: ORDER.UNDERLAY_EGRESS },
  },
  destination: {
    'underlay/ingress': { step: 6, order: ORDER.UNDERLAY_INGRESS },
    'tunnel/ingress': { step: 7, order: ORDER.TUNNEL_INGRESS },
    'bridge/egress': { step: 8, order: ORDER.BRIDGE_EGRESS },
    'host-veth/egress': { step: 9, order: ORDER.VETH_EGRESS },
    'pod/ingress': { step: 9, order: ORDER.POD_INGRESS },
  },
};

/** The step a packet is at when seen on a device of this role at this hook, or null off the path. */
export function hookPoint(side: Side, role: DeviceRole, hook: Hook): HookPoint | null {
  return POINTS[side][`${role}/${hook}`] ?? null;
}

/** The last hook of a path: seeing it there means the packet arrived. */
export const FINAL_ORDER: number = ORDER.POD_INGRESS;

/** A hook point by its order, with the side of the path it is on. */
export interface OrderPoint extends HookPoint {
  role: DeviceRole;
  hook: Hook;
  side: Side;
}

export const ORDER_POINTS: readonly OrderPoint[] = (Object.entries(POINTS) as [Side, typeof POINTS[Side]][])
  .flatMap(([side, points]) => Object.entries(points).map(([rh, p]) => {
    const [role, hook] = rh.split('/') as [DeviceRole, Hook];
    return { ...p!, role, hook, side };
  }))
  .sort((a, b) => a.order - b.order);

/** The hook point a device's hook is on a cross-node path; every (role, hook) has exactly one. */
export function orderOf(role: DeviceRole, hook: Hook): OrderPoint {
  const p = ORDER_POINTS.find((x) => x.role === role && x.hook === hook);
  if (!p) throw new Error(`no hook point for ${role}/${hook}`);
  return p;
}


/**
 * The step a hook ends on a node that lacks some devices: a missing device collapses its step. Without a tunnel, routing ends where the packet leaves the node;
 * without a bridge, routing on the receiving node ends at the pod's veth.
 */
export function stepOn(side: Side, role: DeviceRole, hook: Hook, present: ReadonlySet<DeviceRole>): number | null {
  const p = hookPoint(side, role, hook);
  if (!p) return null;
  if (side === 'source' && role === 'underlay' && !present.has('tunnel')) return 4;
  if (side === 'destination' && role === 'host-veth' && !present.has('bridge')) return 8;
  return p.step;
}

/**
 * The step that failed for a packet last seen at `order` on a node with the roles `present`: the first
 * step it did not complete, i.e. the step of the next hook point it would have crossed. Diagnose,
 * follow, the agent's drop metric and its spans all name a stopped packet by this one number.
 * Hook points of devices the node lacks are passed over (host-gw has no tunnel, Calico no bridge), and
 * a collapsed step is named as stepOn names it. Past the sending node's last hook, the next is the
 * receiving node's underlay ingress (step 6), which every node has, so that node's roles are not needed.
 * Seen at the pod's eth0 ingress, it is in the pod: step 9 still. null for an order on no path.
 */
export function failedStep(order: number, present: ReadonlySet<DeviceRole>): number | null {
  const seen = ORDER_POINTS[order];
  if (!seen) return null;
  for (const p of ORDER_POINTS.slice(order + 1)) {
    if (p.side !== seen.side) return p.step;
    if (present.has(p.role)) return stepOn(p.side, p.role, p.hook, present) ?? p.step;
  }
  return ORDER_POINTS[FINAL_ORDER]!.step;
}

/** Steps a node's mode does not have, with the reason printed instead of a hop. */
export function skippedSteps(side: Side, present: ReadonlySet<DeviceRole>): { step: number; reason: string }[] {
  const out: { step: number; reason: string }[] = [];
  if (side === 'source' && !present.has('bridge')) out.push({ step: 3, reason: 'no bridge' });
  if (side === 'source' && !present.has('tunnel')) out.push({ step: 5, reason: 'no encapsulation' });
  if (side === 'destination' && !present.has('tunnel')) out.push({ step: 7, reason: 'no encapsulation' });
  return out;
}

/** Roles a node has devices for. */
export function presentRoles(node: { underlay: unknown; tunnel: unknown; bridge: unknown }): Set<DeviceRole> {
  const s = new Set<DeviceRole>(['pod', 'host-veth']);
  if (node.underlay) s.add('underlay');
  if (node.tunnel) s.add('tunnel');
  if (node.bridge) s.add('bridge');
  return s;
}
