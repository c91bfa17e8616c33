// The trace API between a client (follow/diagnose with --agents) and the agent on each node.
// Requests are small JSON; a follow answer is a stream of newline-delimited JSON messages.
// Hop records travel as their raw bytes (base64): the layout stays the one generated from
// bpf/nettrace.h, so there is no second encoding of it to drift. Everything read from the
// other side is checked: an agent treats every request as hostile, a client every answer.
import { isIP } from 'node:net';
import { NettraceError } from '../errors';
import { EVERY_MAX, validEvery } from '../flow/every';
import type { FlowSpec, Proto } from '../flow/spec';
import { decodeHopRecord, HOP_RECORD_SIZE, type HopRecord } from '../probe/layout.generated';
import type { DetectedCni } from '../topology/cni';
import type { Device, NodeTopology, Pod, PodRef } from '../topology/model';
import type { Service } from '../topology/services';

export const API_PORT = 9966;
/** a request body is a flow and a few numbers: anything larger is refused */
export const MAX_BODY_BYTES = 16 * 1024;
/** a client refuses a stream line longer than this */
export const MAX_LINE_BYTES = 4 * 1024 * 1024;

/** What an agent serves about its node: enough for a client to place every hop record. */
export interface NodeInfo {
  api: 1;
  node: string;
  node_ip: string | null;
  cni: DetectedCni;
  underlay: DeviceInfo | null;
  tunnel: DeviceInfo | null;
  bridge: DeviceInfo | null;
  /** k8s: the pod's Kubernetes identity, when the agent has a source of names */
  pods: { name: string; ips: string[]; eth: DeviceInfo; host_veth: DeviceInfo; k8s?: PodRef }[];
  services: Service[];
}

type DeviceInfo = Pick<Device, 'name' | 'ifindex' | 'role' | 'mtu'> & { netns_ino: number; netns: string };

function deviceInfo(d: Device): DeviceInfo {
  return { name: d.name, ifindex: d.ifindex, role: d.role, mtu: d.mtu, netns_ino: d.netns.ino, netns: d.netns.name };
}

export function nodeInfo(t: NodeTopology, services: Service[]): NodeInfo {
  return {
    api: 1, node: t.name, node_ip: t.ip, cni: t.cni,
    underlay: t.underlay && deviceInfo(t.underlay), tunnel: t.tunnel && deviceInfo(t.tunnel), bridge: t.bridge && deviceInfo(t.bridge),
    pods: t.pods.map((p) => ({ name: p.name, ips: p.ips, eth: deviceInfo(p.eth), host_veth: deviceInfo(p.hostVeth), ...(p.k8s ? { k8s: p.k8s } : {}) })),
    services,
  };
}

const ROLES = new Set(['pod', 'host-veth', 'bridge', 'tunnel', 'underlay']);

function bad(what: string): NettraceError {
  return new NettraceError('INTERNAL', `an agent answered with a malformed ${what}`, 'check the agent runs the same nettrace version as this client');
}

const str = (v: unknown, max = 256): v is string => typeof v === 'string' && v.length <= max;
const uint = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 0xffffffff;

// DNS-1123 names (namespace, pod, workload) and a uid: anything else from an agent is refused
const K8S_NAME = /^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$/;
const K8S_UID = /^[A-Za-z0-9-]{1,64}$/;

function podRef(raw: unknown): PodRef {
  const r = raw as Partial<PodRef> | null;
  if (!r || !str(r.namespace, 63) || !K8S_NAME.test(r.namespace) || !str(r.name, 253) || !K8S_NAME.test(r.name) || !str(r.uid, 64) || !K8S_UID.test(r.uid) ||
    (r.workload !== undefined && (!str(r.workload, 253) || !K8S_NAME.test(r.workload)))) throw bad('pod identity');
  const out: PodRef = { namespace: r.namespace, name: r.name, uid: r.uid };
  if (r.workload !== undefined) out.workload = r.workload;
  return out;
}

/** An agent's NodeInfo as the topology the assembler places hops on; throws on anything malformed. */
export function topologyOf(raw: unknown): { topology: NodeTopology; services: Service[] } {
  const n = raw as Partial<NodeInfo> | null;
  if (!n || n.api !== 1 || !str(n.node) || !/^[\w.-]+$/.test(n.node) || !Array.isArray(n.pods) || !Array.isArray(n.services)) throw bad('node description');
  const node = n.node;
  const device = (d: unknown, pod?: string): Device => {
    const x = d as Partial<DeviceInfo> | null;
    if (!x || !str(x.name, 64) || !uint(x.ifindex) || !str(x.role) || !ROLES.has(x.role) || !uint(x.mtu) || !uint(x.netns_ino) || !str(x.netns)) throw bad('device');
    const out: Device = { node, netns: { name: x.netns, path: null, ino: x.netns_ino }, ifindex: x.ifindex, name: x.name, role: x.role as Device['role'], mtu: x.mtu };
    if (pod) out.pod = pod;
    return out;
  };
  const optional = (d: unknown) => (d === null || d === undefined ? null : device(d));
  if (n.pods.length > 10_000 || n.services.length > 10_000) throw bad('node description (too many pods or services)');
  const pods: Pod[] = n.pods.map((p) => {
    if (!p || !str(p.name) || !Array.isArray(p.ips) || !p.ips.every((ip) => str(ip, 64) && isIP(ip) !== 0)) throw bad('pod');
    const eth = device(p.eth, p.name);
    const pod: Pod = { name: p.name, node, netns: eth.netns, ips: p.ips, eth, hostVeth: device(p.host_veth, p.name) };
    if (p.k8s !== undefined) pod.k8s = podRef(p.k8s);
    return pod;
  });
  const services: Service[] = n.services.map((s) => {
    if (!s || !str(s.clusterIp, 64) || isIP(s.clusterIp) === 0 || !uint(s.port) || !str(s.proto, 8) || !Array.isArray(s.endpoints) ||
      !s.endpoints.every((e) => e && str(e.ip, 64) && isIP(e.ip) !== 0 && uint(e.port))) throw bad('service');
    return { clusterIp: s.clusterIp, port: s.port, proto: s.proto, endpoints: s.endpoints.map((e) => ({ ip: e.ip, port: e.port })) };
  });
  const nodeIp = n.node_ip === null || (str(n.node_ip, 64) && isIP(n.node_ip) !== 0) ? (n.node_ip ?? null) : null;
  const topology: NodeTopology = {
    name: node, netns: { name: node, path: null, ino: 0 }, ip: nodeIp, cni: (str(n.cni, 32) ? n.cni : 'unknown') as DetectedCni,
    underlay: optional(n.underlay), tunnel: optional(n.tunnel), bridge: optional(n.bridge), pods,
  };
  return { topology, services };
}

/** A follow request: the flow, and how long the agent may keep it attached. */
export interface FollowRequest {
  flow: { src: string; dst: string; sport: number; dport: number; proto: Proto };
  timeout_s: number;
  /** follow --every: of a TCP flow, 1 in every packets (a power of two); absent: all */
  every?: number;
}

export const MAX_SESSION_S = 3600;

/** A request body as a flow, or a one-line reason it is not one (the agent answers 400). */
export function parseFollowRequest(raw: unknown): { flow: FlowSpec; timeoutS: number; every: number } | string {
  const r = raw as Partial<FollowRequest> | null;
  if (!r || typeof r !== 'object' || !r.flow || typeof r.flow !== 'object') return 'the body must be {"flow": {...}, "timeout_s": N}';
  const f = r.flow;
  if (!str(f.src, 64) || !str(f.dst, 64) || isIP(f.src) === 0 || isIP(f.src) !== isIP(f.dst)) return 'flow.src and flow.dst must be IP addresses of one family';
  if (f.proto !== 'tcp' && f.proto !== 'udp' && f.proto !== 'icmp') return 'flow.proto must be tcp, udp or icmp';
  const port = (p: unknown) => p === undefined || (Number.isInteger(p) && (p as number) >= 0 && (p as number) <= 65535);
  if (!port(f.sport) || !port(f.dport)) return 'flow.sport and flow.dport must be ports (0-65535, 0 for any)';
  if (f.proto === 'icmp' && (f.sport || f.dport)) return 'an icmp flow has no ports';
  const t = r.timeout_s ?? MAX_SESSION_S;
  if (typeof t !== 'number' || !(t > 0) || t > MAX_SESSION_S) return `timeout_s must be a number of seconds in (0, ${MAX_SESSION_S}]`;
  const every = r.every ?? 1;
  if (typeof every !== 'number' || !validEvery(every)) return `every must be a power of two from 1 to ${EVERY_MAX}`;
  if (every > 1 && f.proto !== 'tcp') return 'every samples TCP flows only';
  return { flow: { src: f.src, dst: f.dst, sport: f.sport ?? 0, dport: f.dport ?? 0, proto: f.proto, family: isIP(f.src) === 6 ? 6 : 4 }, timeoutS: t, every };
}

export function followRequest(flow: FlowSpec, timeoutS: number, every = 1): FollowRequest {
  const req: FollowRequest = { flow: { src: flow.src, dst: flow.dst, sport: flow.sport, dport: flow.dport, proto: flow.proto }, timeout_s: timeoutS };
  // only when sampling: an agent of before --every refuses no request it used to take
  if (every > 1) req.every = every;
  return req;
}

/** The messages of a follow stream, one JSON object a line. */
export type StreamMessage =
  /** every hook is on; mono_ns/wall_ns: the agent's CLOCK_MONOTONIC (the clock of ts_ns) and its wall clock, read together */
  /** every: the --every the agent's kernel programs sample by (absent from agents that predate it: 1) */
  | { type: 'ready'; session: string; node: string; devices: number; mono_ns: string; wall_ns: string; every?: number }
  /** raw hop records, HOP_RECORD_SIZE bytes each, base64 */
  | { type: 'hops'; n: number; b64: string }
  /** records lost on the agent: the ring was full, or the client read too slowly */
  | { type: 'lost'; records: number; why: string }
  /** once a second, so a client notices a dead agent */
  | { type: 'tick' }
  | { type: 'end'; reason: string };

/** The first n records of a buffer of packed records. */
export function encodeHops(records: Buffer, n: number): StreamMessage {
  return { type: 'hops', n, b64: records.toString('base64', 0, n * HOP_RECORD_SIZE) };
}

export function decodeHops(m: { n: number; b64: string }): HopRecord[] {
  const bytes = Buffer.from(m.b64, 'base64');
  if (bytes.length % HOP_RECORD_SIZE !== 0 || bytes.length / HOP_RECORD_SIZE !== m.n) throw bad('hop batch');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: HopRecord[] = [];
  for (let o = 0; o < bytes.length; o += HOP_RECORD_SIZE) out.push(decodeHopRecord(view, o));
  return out;
}

/** One line of a stream, checked for shape; null for a kind this client does not know (newer agent). */
export function parseStreamLine(line: string): StreamMessage | null {
  let m: Partial<StreamMessage> & { type?: unknown };
  try {
    m = JSON.parse(line) as typeof m;
  } catch {
    throw bad('stream line (not JSON)');
  }
  if (!m || typeof m !== 'object' || Array.isArray(m) || typeof m.type !== 'string') throw bad('stream line');
  switch (m.type) {
    case 'ready': {
      const r = m as Extract<StreamMessage, { type: 'ready' }>;
      if (!str(r.session) || !str(r.node) || !uint(r.devices) || !/^\d{1,20}$/.test(String(r.mono_ns)) || !/^\d{1,20}$/.test(String(r.wall_ns))
        || (r.every !== undefined && (typeof r.every !== 'number' || !validEvery(r.every)))) throw bad('ready message');
      return r;
    }
    case 'hops': {
      const h = m as Extract<StreamMessage, { type: 'hops' }>;
      if (!uint(h.n) || typeof h.b64 !== 'string') throw bad('hops message');
      return h;
    }
    case 'lost': {
      const l = m as Extract<StreamMessage, { type: 'lost' }>;
      if (!uint(l.records) || !str(l.why)) throw bad('lost message');
      return l;
    }
    case 'tick': return { type: 'tick' };
    case 'end': return { type: 'end', reason: str((m as { reason?: unknown }).reason) ? (m as { reason: string }).reason : 'unknown' };
    default: return null;
  }
}
