// What `testbed up` built, as saved in its state file and read by status, down and the tests.
import type { CniMode } from '../topology/cni';
import type { NetPolicy } from './netpol';

export interface TestbedPod {
  name: string;
  netns: string;
  ip: string;
  node: string;
  /** its Kubernetes labels, what NetworkPolicies select (app=NAME when an older state file has none) */
  labels?: Record<string, string>;
}

/** One containerd per node (`testbed up --cri`): its directory, socket and process. */
export interface TestbedCriNode {
  /** the node's namespace */
  netns: string;
  /** STATE_DIR/NETNS.cri: config, socket, root, state, CNI config and IPAM data, nothing else */
  dir: string;
  socket: string;
  pid: number | null;
  /** the CNI network's name: libcni's cache files are /var/lib/cni/results/NAME-ID-eth0 */
  network: string;
}

/** A pod sandbox made through the CRI, as RunPodSandbox and PodSandboxStatus told it. */
export interface TestbedSandbox {
  id: string;
  /** the node's namespace */
  node: string;
  namespace: string;
  name: string;
  uid: string;
  ip: string;
  /** the sandbox's network namespace, cni-<uuid> (in /run/netns) */
  netns: string;
}

export interface TestbedCri {
  /** containerd's version, as its Version call answered */
  runtime: string;
  nodes: TestbedCriNode[];
  sandboxes: TestbedSandbox[];
}

export interface TestbedState {
  cni: CniMode;
  prefix: string;
  nodes: { name: string; netns: string; ip: string; podCidr: string }[];
  pods: TestbedPod[];
  /** ClusterIP services, kube-proxy style (iptables DNAT in every node) */
  services: { name: string; clusterIp: string; port: number; endpoints: string[]; proto?: 'tcp' | 'udp'; namespace?: string }[];
  /** the cluster DNS (src/testbed/dns.ts): its pod, the files up writes and unbound's pid; down removes exactly these */
  dns?: { pod: string; conf: string; pidFile: string; resolvConfs: string[]; pid?: number };
  /**
   * Written before the first namespace is made and cleared when up succeeds: a killed or failed
   * up still has a state file naming what it may have made, which down removes (and nothing else).
   */
  building?: boolean;
  /** NetworkPolicies applied (Calico modes), as `testbed policy apply` read them */
  policies?: NetPolicy[];
  /** pods made through a real containerd's CRI (`testbed up --cri`) */
  cri?: TestbedCri;
}
