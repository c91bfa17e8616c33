// What a hook point or a drop is called in metrics and spans on this node: its step (collapsed
// where the node's mode lacks a device), the device, the hook. Pod-side devices are summed
// over pods, so series do not grow with the pods. And what an address is called (its pod, workload).
import { BlockList, isIPv4, isIPv6 } from 'node:net';
import type { HookLabels } from '../export/prometheus';
import type { PodIdentity, ServiceIdentity } from '../k8s/identity';
import type { Device, NodeTopology } from '../topology/model';
import { failedStep, ORDER_POINTS, presentRoles, STEP_NAMES, stepOn } from '../topology/steps';

const POD_DEVICE_LABEL: Record<string, string> = { pod: 'pod-eth', 'host-veth': 'pod-veths' };

function roleDevice(t: NodeTopology, role: string): Device | null {
  return role === 'underlay' ? t.underlay : role === 'tunnel' ? t.tunnel : role === 'bridge' ? t.bridge : null;
}

export function hookLabels(t: NodeTopology, order: number): HookLabels | null {
  const p = ORDER_POINTS[order];
  if (!p) return null;
  const device = POD_DEVICE_LABEL[p.role] ?? roleDevice(t, p.role)?.name;
  if (!device) return null;
  // a mode without a tunnel or a bridge: the hook ends another step (host-gw: routing ends at eth0)
  const step = stepOn(p.side, p.role, p.hook, presentRoles(t)) ?? p.step;
  return { step, step_name: STEP_NAMES[step]!, device, hook: p.hook };
}

/** A drop last seen at `order`: the step that failed (as follow and diagnose number it), and where it was last seen. */
export function dropLabels(t: NodeTopology, order: number): HookLabels | null {
  // ORDER.NONE (seen on no hook of a path) is on no path either: no label
  const step = failedStep(order, presentRoles(t));
  if (step === null) return null;
  const seenAt = hookLabels(t, order);
  return { step, step_name: STEP_NAMES[step]!, device: seenAt?.device ?? '', hook: seenAt?.hook ?? '' };
}

/** What metric labels and spans call an address this node's sockets talk from or to. */
export interface AddressName {
  /** the Kubernetes namespace; '' when no source of names knows the address */
  namespace: string;
  /**
   * the pod's workload (PodRef.workload), else its name (a bare pod); a pod of another node known
   * only as a Service's endpoint: that Service's name; a pod of this node no source names: its
   * network namespace; else 'node' (this node's address), 'unknown' (in the pod network, but no
   * source names it) or 'external'
   */
  workload: string;
  /** the Kubernetes pod name, else the network namespace of a pod on this node, else '' */
  pod: string;
  /** a pod on this node */
  local: boolean;
  /** the pod's Kubernetes name, when a source of names knows it */
  k8s: { namespace: string; name: string } | null;
}

/** A route of the node, as `ip -j route show` prints it. */
export interface RouteEntry {
  dst: string;
  dev?: string;
  gateway?: string;
  type?: string;
}

/**
 * The prefixes of the node's routes that lead to pods: through the bridge, the tunnel or a pod's
 * veth, via another node (host-gw, BGP: a gateway on the underlay), or a blackholed pod block (Calico).
 * The default route and the underlay's own subnet lead to the rest of the world.
 */
export function podNetworks(t: NodeTopology, routes: RouteEntry[]): string[] {
  const podDevs = new Set([t.bridge?.name, t.tunnel?.name, ...t.pods.map((p) => p.hostVeth.name)].filter((d): d is string => !!d));
  return routes.filter((r) => r.dst !== 'default' && (r.type === 'blackhole' || (r.dev !== undefined && podDevs.has(r.dev)) || (r.gateway !== undefined && r.dev === t.underlay?.name)))
    .map((r) => r.dst);
}

const NAME_CACHE = 4096;

function ipv4Number(ip: string): number {
  const [a = 0, b = 0, c = 0, d = 0] = ip.split('.').map(Number);
  return ((a << 24) | (b << 16) | (c << 8) | d) >>> 0;
}

/**
 * Names addresses for labels and spans: pods of this node first (by their Kubernetes identity when
 * joined, else their network namespace), then the node itself, then what the source of names knows
 * of other pods (the agent's source lists its own node's pods; other nodes' pods are known as the
 * endpoints of Services, from EndpointSlices), then the pod network. Every value comes from a bounded
 * set (pods, workloads, Services, four words): never an address, so series do not grow with the peers.
 */
export class AddressNames {
  private local = new Map<string, AddressName>();
  private remote = new Map<string, AddressName>();
  private nodeIps = new Set<string>();
  private nets = new BlockList();
  /** the IPv4 ones as (base, mask): BlockList.check allocates per call, and a scrape may ask for 200k addresses */
  private nets4: [number, number][] = [];
  private cache = new Map<string, AddressName>();

  /** t: this node (pods' ips as learned so far, k8s when joined); identities, services: the source's, [] without one */
  update(t: NodeTopology, identities: PodIdentity[], services: ServiceIdentity[], networks: string[]): void {
    this.local = new Map();
    for (const p of t.pods) {
      const name: AddressName = p.k8s
        ? { namespace: p.k8s.namespace, workload: p.k8s.workload ?? p.k8s.name, pod: p.k8s.name, local: true, k8s: { namespace: p.k8s.namespace, name: p.k8s.name } }
        : { namespace: '', workload: p.name, pod: p.name, local: true, k8s: null };
      for (const ip of p.ips) this.local.set(ip, name);
    }
    this.nodeIps = new Set(t.ip ? [t.ip] : []);
    // an address several pods claim is a node's (host-network pods): it names none of them
    const claims = new Map<string, number>();
    for (const id of identities) for (const ip of id.ips) claims.set(ip, (claims.get(ip) ?? 0) + 1);
    this.remote = new Map();
    for (const id of identities) {
      const name = { namespace: id.namespace, workload: id.workload ?? id.name, pod: id.name, local: false, k8s: { namespace: id.namespace, name: id.name } };
      for (const ip of id.ips) if (claims.get(ip) === 1) this.remote.set(ip, name);
    }
    // a pod behind two Services takes the first by namespace and name: the same label every time
    const sorted = [...services].sort((a, b) => (a.namespace + '/' + a.name < b.namespace + '/' + b.name ? -1 : 1));
    for (const svc of sorted) {
      for (const e of svc.endpoints) {
        if (!e.pod || claims.has(e.ip) || this.remote.has(e.ip)) continue;
        this.remote.set(e.ip, { namespace: e.pod.namespace, workload: svc.name, pod: e.pod.name, local: false, k8s: { namespace: e.pod.namespace, name: e.pod.name } });
      }
    }
    this.nets = new BlockList();
    this.nets4 = [];
    for (const n of networks) {
      const [addr = '', len] = n.split('/');
      const family = isIPv6(addr) ? 'ipv6' : isIPv4(addr) ? 'ipv4' : null;
      if (!family) continue;
      try {
        if (len === undefined) this.nets.addAddress(addr, family);
        else this.nets.addSubnet(addr, Number(len), family);
        const bits = len === undefined ? 32 : Number(len);
        if (family === 'ipv4' && bits >= 0 && bits <= 32) {
          const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
          this.nets4.push([(ipv4Number(addr) & mask) >>> 0, mask]);
        }
      } catch {
        // a prefix length out of range: not a route to pods we can use
      }
    }
    this.cache.clear();
  }

  of(ip: string): AddressName {
    const hit = this.local.get(ip) ?? this.cache.get(ip);
    if (hit) return hit;
    const name = this.lookup(ip);
    // peers are the network's to choose: the cache is bounded, and starts again when full
    if (this.cache.size >= NAME_CACHE) this.cache.clear();
    this.cache.set(ip, name);
    return name;
  }

  private lookup(ip: string): AddressName {
    const none = { namespace: '', pod: '', local: false, k8s: null };
    if (this.nodeIps.has(ip)) return { ...none, workload: 'node' };
    const known = this.remote.get(ip);
    if (known) return known;
    const family = isIPv6(ip) ? 'ipv6' : 'ipv4';
    const inPodNetwork = family === 'ipv4' ? this.nets4.some(([base, mask]) => ((ipv4Number(ip) & mask) >>> 0) === base) : this.nets.check(ip, family);
    return { ...none, workload: inPodNetwork ? 'unknown' : 'external' };
  }
}
