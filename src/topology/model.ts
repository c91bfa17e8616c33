// What a node looks like to nettrace: its devices by role and its pods.

import type { DetectedCni } from './cni';
import type { NetnsRef } from './netns';

export type DeviceRole = 'pod' | 'host-veth' | 'bridge' | 'tunnel' | 'underlay';

export interface Device {
  node: string;
  netns: NetnsRef;
  ifindex: number;
  name: string;
  role: DeviceRole;
  mtu: number;
  /** for pod and host-veth devices: the pod's name */
  pod?: string;
  vxlan?: { id: number; port: number; local: string };
}

/** A pod's Kubernetes identity, joined by IP from the API server or the CRI (src/k8s). */
export interface PodRef {
  namespace: string;
  name: string;
  uid: string;
  /** the owning workload (a Deployment, a DaemonSet, ...); absent for a bare pod */
  workload?: string;
}

export interface Pod {
  /** the pod's network namespace name, as discovered from its devices */
  name: string;
  /** its Kubernetes identity, when a source of names (API server, CRI) knows the pod's IP */
  k8s?: PodRef;
  node: string;
  netns: NetnsRef;
  ips: string[];
  eth: Device;
  hostVeth: Device;
}

export interface NodeTopology {
  name: string;
  netns: NetnsRef;
  /** the address the underlay carries (VXLAN local, or the underlay's first address) */
  ip: string | null;
  underlay: Device | null;
  bridge: Device | null;
  tunnel: Device | null;
  pods: Pod[];
  /** the CNI mode its devices and routes say, e.g. flannel-vxlan */
  cni: DetectedCni;
}

export interface ClusterTopology {
  nodes: NodeTopology[];
}

/** Every device nettrace hooks, host and pod side. */
export function allDevices(cluster: ClusterTopology): Device[] {
  return cluster.nodes.flatMap((n) => [
    ...[n.underlay, n.tunnel, n.bridge].filter((d): d is Device => d !== null),
    ...n.pods.flatMap((p) => [p.hostVeth, p.eth]),
  ]);
}

export function findPodByIp(cluster: ClusterTopology, ip: string): Pod | undefined {
  for (const n of cluster.nodes) for (const p of n.pods) if (p.ips.includes(ip)) return p;
  return undefined;
}
