// A packet's path as follow prints it: the JSON shape users script against (add fields, never rename).
import type { Proto } from './spec';

export interface HopView {
  step: number;
  name: string;
  node: string;
  device: string;
  /** for a device on the pod side: the pod (its namespace) */
  pod?: string;
  hook: 'ingress' | 'egress';
  ts_ns: number;
  /** since the previous hop; 0 for the first */
  latency_ns: number;
}

export interface PacketPath {
  flow: { src: string; sport: number; dst: string; dport: number; proto: Proto };
  direction: 'request' | 'reply';
  packet: {
    src: string; sport: number; dst: string; dport: number;
    ip_id: number; len: number; payload_len: number;
    seq?: number; ack?: number; tcp_flags?: string; icmp_type?: number; icmp_id?: number; icmp_seq?: number;
    gso_segs: number; vni?: number;
  };
  steps: HopView[];
  /** steps this CNI mode does not have (host-gw: 5 and 7, "no encapsulation"); absent when none */
  skipped?: { step: number; name: string; node: string; reason: string }[];
  /** address translations on the way (a ClusterIP's DNAT): on which node, after which hop, from and to */
  translations?: { node: string; after: string; before_step: number; from: string; to: string }[];
  total_ns: number;
  complete: boolean;
  /** where an incomplete path stopped: the last hop that saw it */
  drop: null | {
    step: number; device: string; node: string; reason: string;
    /** the kernel's drop reason (enum skb_drop_reason without its prefix), when it dropped the packet */
    kernel_reason?: string;
    /** the device the kernel had the packet on when it dropped it */
    dropped_on?: string;
  };
}
