// Joins what a source of names knows (pods by IP) onto the pods discovered from devices and routes.
import type { ClusterTopology, NodeTopology, PodRef } from '../topology/model';
import type { IdentitySource, PodIdentity } from './identity';

export function podRefOf(p: PodIdentity): PodRef {
  const ref: PodRef = { namespace: p.namespace, name: p.name, uid: p.uid };
  if (p.workload !== undefined) ref.workload = p.workload;
  return ref;
}

/** IP → identity over the source's current pods; a pod with several IPs appears under each. */
export function identitiesByIp(source: IdentitySource): Map<string, PodIdentity> {
  const byIp = new Map<string, PodIdentity>();
  for (const p of source.pods()) for (const ip of p.ips) byIp.set(ip, p);
  return byIp;
}

/**
 * Sets (or clears) `k8s` on every discovered pod from the source's pods with the same IP.
 * Returns the discovered pods no source pod matched: pods the source does not know, e.g.
 * host-network pods' peers or a source that lags behind the node.
 */
export function joinIdentities(nodes: ClusterTopology | NodeTopology[], source: IdentitySource): number {
  const byIp = identitiesByIp(source);
  let unmatched = 0;
  for (const n of Array.isArray(nodes) ? nodes : nodes.nodes) {
    for (const pod of n.pods) {
      const id = pod.ips.map((ip) => byIp.get(ip)).find((x) => x !== undefined);
      if (id) pod.k8s = podRefOf(id);
      else {
        delete pod.k8s;
        unmatched++;
      }
    }
  }
  return unmatched;
}
