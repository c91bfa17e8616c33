// What a node knows about reaching an address: its route, the neighbour entry for the next
// hop, the FDB entry that tells a VXLAN device where that neighbour lives, and its DROP rules.
// The entries flannel and calico write; diagnose reads them where a packet stopped.
import { ipJson, run } from '../exec';
import type { NodeTopology } from './model';
import { ipNs } from './netns';

export interface ReachCheck {
  route: { dev: string; gateway?: string } | null;
  /** the next hop's link-layer address, when the route has a gateway; null if the entry is missing */
  neighbour?: { ip: string; mac: string | null };
  /** for a VXLAN device: the node the neighbour's MAC is sent to; null if the entry is missing */
  fdb?: { mac: string; dst: string | null };
}

export function checkReach(node: NodeTopology, dst: string): ReachCheck {
  const ns = ipNs(node.netns);
  let route: ReachCheck['route'] = null;
  try {
    const r = ipJson<{ dev: string; gateway?: string }[]>(ns, ['route', 'get', dst])[0];
    if (r) route = { dev: r.dev, ...(r.gateway ? { gateway: r.gateway } : {}) };
  } catch {
    return { route: null };
  }
  if (!route?.gateway) return { route };
  const neighs = ipJson<{ dst: string; lladdr?: string; state?: string[] }[]>(ns, ['neigh', 'show', 'dev', route.dev]);
  const n = neighs.find((x) => x.dst === route!.gateway && x.lladdr && !(x.state ?? []).includes('FAILED') && !(x.state ?? []).includes('INCOMPLETE'));
  const out: ReachCheck = { route, neighbour: { ip: route.gateway, mac: n?.lladdr ?? null } };
  if (n?.lladdr && node.tunnel?.vxlan && node.tunnel.name === route.dev) {
    const fdb = JSON.parse(run('bridge', [...(ns ? ['-n', ns] : []), '-j', 'fdb', 'show', 'dev', route.dev]) || '[]') as { mac: string; dst?: string }[];
    out.fdb = { mac: n.lladdr, dst: fdb.find((f) => f.mac === n.lladdr && f.dst)?.dst ?? null };
  }
  return out;
}

/**
 * The filter table's DROP and REJECT rules in FORWARD (iptables, nft backend or legacy), and
 * kube-proxy's REJECTs in KUBE-SERVICES (jumped to from FORWARD: Services without endpoints),
 * only those for dst when given: a cluster has one per Service without endpoints.
 */
export function forwardDropRules(node: NodeTopology, dst?: string): string[] {
  const ns = ipNs(node.netns);
  const out = ns ? run('ip', ['netns', 'exec', ns, 'iptables-save', '-t', 'filter'], { allowFail: true }) : run('iptables-save', ['-t', 'filter'], { allowFail: true });
  return out.split('\n').filter((l) => /^-A FORWARD\b.*-j (DROP|REJECT)\b/.test(l)
    || (/^-A KUBE-SERVICES\b.*-j REJECT\b/.test(l) && (!dst || l.includes(` -d ${dst}/32 `))));
}
