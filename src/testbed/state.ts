// What `testbed up` built, as saved in its state file and read by status, down and the tests.
import type { CniMode } from '../topology/cni';

export interface TestbedPod {
  name: string;
  netns: string;
  ip: string;
  node: string;
}

export interface TestbedState {
  cni: CniMode;
  prefix: string;
  nodes: { name: string; netns: string; ip: string; podCidr: string }[];
  pods: TestbedPod[];
  /** ClusterIP services, kube-proxy style (iptables DNAT in every node) */
  services: { name: string; clusterIp: string; port: number; endpoints: string[] }[];
  /**
   * Written before the first namespace is made and cleared when up succeeds: a killed or failed
   * up still has a state file naming what it may have made, which down removes (and nothing else).
   */
  building?: boolean;
}
