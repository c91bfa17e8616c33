// What Kubernetes calls the pods and Services nettrace sees, wherever the names come from: the API
// server (list/watch) or, on a node without API access, the container runtime's CRI socket.
// Discovery by devices and routes (src/topology) knows a pod only by its network namespace; these
// identities are joined to it by IP address.

export interface PodIdentity {
  namespace: string;
  name: string;
  uid: string;
  /** status.podIPs, or the sandbox's network status */
  ips: string[];
  /** spec.nodeName, when the source knows it */
  node?: string;
  /** the owning workload's name (a ReplicaSet's Deployment, a DaemonSet, ...); absent for a bare pod */
  workload?: string;
  /** the sandbox's network namespace path (CRI verbose status), when known */
  netnsPath?: string;
}

export interface ServiceEndpoint {
  ip: string;
  port: number;
  protocol: 'TCP' | 'UDP' | 'SCTP';
  ready: boolean;
  /** the endpoint's targetRef, when it is a pod */
  pod?: { namespace: string; name: string };
}

export interface ServiceIdentity {
  namespace: string;
  name: string;
  /** spec.clusterIPs; empty for a headless Service */
  clusterIps: string[];
  ports: { name?: string; port: number; protocol: 'TCP' | 'UDP' | 'SCTP' }[];
  /** from the Service's EndpointSlices */
  endpoints: ServiceEndpoint[];
}

/** One source of names, kept current while it is open. */
export interface IdentitySource {
  readonly kind: 'kubernetes' | 'cri';
  /** resolves once the first complete list is in; rejects with a NettraceError naming what to fix */
  ready(): Promise<void>;
  pods(): PodIdentity[];
  /** the CRI knows no Services: [] */
  services(): ServiceIdentity[];
  close(): void;
}
