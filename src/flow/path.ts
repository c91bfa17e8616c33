// A packet's path as follow prints it: the JSON shape users script against (add fields, never rename).
import type { PodRef } from '../topology/model';
import type { Proto } from './spec';

export interface HopView {
  step: number;
  name: string;
  node: string;
  device: string;
  /** for a device on the pod side: the pod (its namespace) */
  pod?: string;
  /** for the pod's eth0: its Kubernetes namespace, name and uid, when a source of names knows it */
  k8s?: PodRef;
  hook: 'ingress' | 'egress';
  ts_ns: number;
  /**
   * ts_ns on the wall clock, ISO 8601 in UTC with microseconds (2026-11-29T14:04:05.123456Z): the
   * clock of the machine running follow, onto which another node's hops are placed by their clock
   * correction (set by the session, not by the assembler)
   */
  time?: string;
  /** since the previous hop; 0 for the first */
  latency_ns: number;
  /**
   * the hop's time came out earlier than the previous hop's by this much (two nodes' clocks, after
   * the correction): latency_ns shows 0, never a negative time; absent when not clamped
   */
  clamped_ns?: number;
  /**
   * when the hop came from another machine's agent: the clock correction applied to its ts_ns
   * (set by the caller that placed the node's clock, not by the assembler)
   */
  clock?: { node: string; correction_ns: number; uncertainty_ns: number; method: string };
}

/** The last hop that saw a packet that did not arrive. */
export interface LastSeen {
  step: number; name: string; node: string; device: string; hook: 'ingress' | 'egress';
}

export interface PacketPath {
  flow: { src: string; sport: number; dst: string; dport: number; proto: Proto };
  direction: 'request' | 'reply';
  packet: {
    src: string; sport: number; dst: string; dport: number;
    ip_id: number; len: number; payload_len: number;
    seq?: number; ack?: number; tcp_flags?: string; icmp_type?: number; icmp_id?: number; icmp_seq?: number;
    gso_segs: number; vni?: number;
    /**
     * TSO/GSO on the sending node and GRO on the receiving node cut this skb's bytes into other skbs
     * (matched by TCP byte range, docs/architecture.md#packet-identity); absent when the boundaries did not change
     */
    segments?: {
      /** segments the sending node's skb carried (its gso_segs) */
      sent: number;
      // One meaning when the receiving node regroups twice (none or GRO at the underlay, gro_cells after decapsulation): the skbs at step 6.
      /** the receiving node's skbs that hold its bytes where it first saw them: its underlay ingress (step 6), else its first hook after */
      received_as: number;
      /** the receiving node, where they were regrouped */
      node: string;
      /** those skbs also hold bytes of other skbs of the sender (GRO merged them) */
      merged: boolean;
    };
  };
  steps: HopView[];
  /** steps this CNI mode does not have (host-gw: 5 and 7, "no encapsulation"); absent when none */
  skipped?: { step: number; name: string; node: string; reason: string }[];
  /** address translations on the way (a ClusterIP's DNAT): on which node, after which hop, from and to */
  translations?: { node: string; after: string; before_step: number; from: string; to: string }[];
  total_ns: number;
  complete: boolean;
  /** where an incomplete path stopped: the step that failed, and the last hop that saw it */
  drop: null | {
    /** the step that failed: the first the packet did not complete (failedStep in src/topology/steps.ts) */
    step: number; step_name: string;
    /** the last hop's device and node: the packet stopped after them */
    device: string; node: string; reason: string;
    last_seen: LastSeen;
    /** the kernel's drop reason (enum skb_drop_reason without its prefix), when it dropped the packet */
    kernel_reason?: string;
    /** the device the kernel had the packet on when it dropped it */
    dropped_on?: string;
  };
  /**
   * the other end of the path is on a node nettrace gets no records from: the path stops there with
   * complete false and drop null; the steps on that node
   */
  not_watched?: { node: string; reason: string; steps: number[] };
  /**
   * the flow's two pods by their Kubernetes names (for a Service, the pod the path reached); null
   * for an end no source of names knows; absent when no pod has a name
   */
  pods?: { src: PodRef | null; dst: PodRef | null };
}
