// What a hook point or a drop is called in metrics and spans on this node: its step (collapsed
// where the node's mode lacks a device), the device, the hook. Pod-side devices are summed
// over pods, so series do not grow with the pods.
import type { HookLabels } from '../export/prometheus';
import type { Device, NodeTopology } from '../topology/model';
import { failedStep, ORDER_POINTS, presentRoles, STEP_NAMES, stepOn } from '../topology/steps';

const POD_DEVICE_LABEL: Record<string, string> = { pod: 'pod-eth', 'host-veth': 'pod-veths' };

function roleDevice(t: NodeTopology, role: string): Device | null {
  return role === 'underlay' ? t.underlay : role === 'tunnel' ? t.tunnel : role === 'bridge' ? t.bridge : null;
}

export function hookLabels(t: NodeTopology, order: number): HookLabels | null {
  const p = ORDER_POINTS[order];
  if (!p) return null;
  const device = POD_DEVICE_LABEL[p.role] ?? roleDevice(t, p.role)?.name;
  if (!device) return null;
  // a mode without a tunnel or a bridge: the hook ends another step (host-gw: routing ends at eth0)
  const step = stepOn(p.side, p.role, p.hook, presentRoles(t)) ?? p.step;
  return { step, step_name: STEP_NAMES[step]!, device, hook: p.hook };
}

/** A drop last seen at `order`: the step that failed (as follow and diagnose number it), and where it was last seen. */
export function dropLabels(t: NodeTopology, order: number): HookLabels | null {
  // ORDER.NONE (seen on no hook of a path) is on no path either: no label
  const step = failedStep(order, presentRoles(t));
  if (step === null) return null;
  const seenAt = hookLabels(t, order);
  return { step, step_name: STEP_NAMES[step]!, device: seenAt?.device ?? '', hook: seenAt?.hook ?? '' };
}
