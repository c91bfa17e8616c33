// The cluster a session works on, discovered once: the nodes' devices and pods, and the
// ClusterIP services kube-proxy wrote on them.
import { NettraceError } from '../errors';
import type { CniMode } from '../topology/cni';
import { discoverCluster } from '../topology/discover';
import { findPodByIp, type ClusterTopology } from '../topology/model';
import type { NetnsRef } from '../topology/netns';
import { nodeServices, type Service } from '../topology/services';

export interface ClusterView {
  nodes: NetnsRef[];
  topology: ClusterTopology;
  services: Service[];
}

/** cni: the mode the user named, over the one detected. */
export function viewCluster(nodes: NetnsRef[], cni?: CniMode): ClusterView {
  const topology = discoverCluster(nodes);
  if (cni) for (const n of topology.nodes) n.cni = cni;
  return { nodes, topology, services: topology.nodes.flatMap(nodeServices) };
}

/** The ClusterIP service a destination names, if it is one. */
export function serviceAt(view: ClusterView, ip: string, port?: number): Service | undefined {
  return view.services.find((s) => s.clusterIp === ip && (!port || s.port === port));
}

export function nodeNames(view: ClusterView): string {
  return view.nodes.map((n) => n.name).join(', ');
}

/** At least one end of the flow (or a service endpoint behind it) must be a pod we can see. */
export function requireFlowPods(view: ClusterView, src: string, dst: string, endpoints: string[]): void {
  if (findPodByIp(view.topology, src) || findPodByIp(view.topology, dst) || endpoints.some((ip) => findPodByIp(view.topology, ip))) return;
  throw new NettraceError('NOT_FOUND', `neither ${src} nor ${dst} is a pod in ${nodeNames(view)}`,
    'check the addresses, or name the namespaces that act as nodes with --netns');
}
