// The CNI modes nettrace knows, and how a node's devices and routes say which one it runs.
// Each mode changes the devices of the nine steps, not the steps
// (docs/architecture.md#hook-points-and-steps).

export const CNI_MODES = ['flannel-vxlan', 'flannel-host-gw', 'calico-bgp', 'calico-vxlan', 'calico-ipip', 'weave'] as const;
export type CniMode = (typeof CNI_MODES)[number];
/** what a node is when nothing on it matches a mode */
export type DetectedCni = CniMode | 'unknown';

export function isCniMode(s: string): s is CniMode {
  return (CNI_MODES as readonly string[]).includes(s);
}

/** What detection looks at on a node. */
export interface CniEvidence {
  /** the tunnel device's kind (vxlan, ipip) and its UDP port for VXLAN */
  tunnel?: { kind?: string; port?: number };
  bridge: boolean;
  /** BGP-learned routes, or each pod reached by a /32 route through its own veth */
  calicoRouted: boolean;
}

/** The mode from the tunnel's kind and port, a bridge, and BGP-learned or Calico pod routes. */
export function detectCni(e: CniEvidence): DetectedCni {
  const { kind, port } = e.tunnel ?? {};
  if (kind === 'ipip') return 'calico-ipip';
  if (kind === 'vxlan') return port === 8472 ? 'flannel-vxlan' : port === 6784 ? 'weave' : !e.bridge ? 'calico-vxlan' : 'flannel-vxlan';
  if (e.bridge) return 'flannel-host-gw';
  return e.calicoRouted ? 'calico-bgp' : 'unknown';
}
