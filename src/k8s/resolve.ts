// --flow ends given by name, made addresses: NAMESPACE/POD[:PORT], POD[:PORT] in the -n namespace,
// svc/NAMESPACE/NAME:PORT (the ClusterIP and the port, by number or name). A name that is no pod
// but the workload of exactly one pod (a Deployment of one replica) is that pod.
import { isIPv4 } from 'node:net';
import { NettraceError, usageError } from '../errors';
import { flowBetween, parseFlowEndpoints, type FlowEndpoint, type FlowSpec, type Proto } from '../flow/spec';
import type { PodIdentity, ServiceIdentity } from './identity';

/** Where names come from, for the errors to say. */
export interface NameSource {
  /** e.g. "the Kubernetes API at https://10.0.0.1:6443", "the agents' nodes" */
  what: string;
  pods(): PodIdentity[];
  /** null: this source knows no Services (the CRI, the agents): svc/ names need --kubeconfig */
  services(): ServiceIdentity[] | null;
}

export interface ResolvedFlow {
  flow: FlowSpec;
  /** the pods the ends named (null: an address, or a Service) */
  pods: { src: PodIdentity | null; dst: PodIdentity | null };
}

const NEXT_FOR_SOURCE = 'name pods with --kubeconfig FILE (the API server) or --cri-socket PATH (the container runtime on this node), or write addresses';

export function flowHasNames(text: string): boolean {
  const { src, dst } = parseFlowEndpoints(text);
  return src.kind !== 'ip' || dst.kind !== 'ip';
}

const some = (names: string[], n = 3) => names.slice(0, n).join(', ') + (names.length > n ? `, ... (${names.length} in all)` : '');

/** A pod name's pod: the pod itself, else the one pod of that workload. */
export function findPod(source: NameSource, namespace: string, name: string): PodIdentity {
  const all = source.pods();
  const inNs = all.filter((p) => p.namespace === namespace);
  const exact = inNs.find((p) => p.name === name);
  if (exact) return exact;
  const ref = `${namespace}/${name}`;
  if (inNs.length === 0) {
    const known = [...new Set(all.map((p) => p.namespace))].sort();
    throw usageError(`no namespace "${namespace}" among the pods ${source.what} knows (namespaces: ${known.length ? some(known, 5) : 'none'})`,
      `check the namespace (kubectl get namespaces), or give it: NAMESPACE/POD, or -n NAMESPACE`);
  }
  const owned = inNs.filter((p) => p.workload === name);
  if (owned.length === 1) return owned[0]!;
  if (owned.length > 1) {
    throw usageError(`ambiguous: ${ref} is the workload of ${owned.length} pods (${some(owned.map((p) => p.name).sort())})`, 'name one');
  }
  const near = inNs.map((p) => p.name).filter((n) => n.startsWith(name.slice(0, 3))).sort();
  throw usageError(`no pod "${name}" in namespace "${namespace}" (${source.what})${near.length ? `; there: ${some(near)}` : ''}`,
    `check the name (kubectl get pods -n ${namespace})`);
}

function findService(source: NameSource, e: Extract<FlowEndpoint, { kind: 'svc' }>): { service: ServiceIdentity; port: number; protocol: string } {
  const services = source.services();
  if (services === null) throw usageError(`--flow: ${e.text} names a Service, and ${source.what} knows no Services`, 'give --kubeconfig FILE: Services come from the API server');
  const inNs = services.filter((s) => s.namespace === e.namespace);
  if (inNs.length === 0) {
    throw usageError(`no namespace "${e.namespace}" among the Services ${source.what} knows`, 'check the namespace (kubectl get namespaces)');
  }
  const service = inNs.find((s) => s.name === e.name);
  if (!service) throw usageError(`no Service "${e.name}" in namespace "${e.namespace}" (${source.what})`, `check the name (kubectl get services -n ${e.namespace})`);
  const p = /^\d+$/.test(e.port) ? service.ports.find((x) => x.port === Number(e.port)) : service.ports.find((x) => x.name === e.port);
  if (!p) {
    const ports = service.ports.map((x) => (x.name ? `${x.name}=${x.port}` : String(x.port)));
    throw usageError(`Service ${e.namespace}/${e.name} has no port "${e.port}" (ports: ${ports.join(', ') || 'none'})`, `give one of its ports, e.g. svc/${e.namespace}/${e.name}:${service.ports[0]?.port ?? 80}`);
  }
  if (service.clusterIps.length === 0) {
    throw usageError(`Service ${e.namespace}/${e.name} is headless (no ClusterIP)`, 'name one of its pods instead: NAMESPACE/POD');
  }
  return { service, port: p.port, protocol: p.protocol };
}

interface Candidate { addrs: string[]; port: number; pod: PodIdentity | null; proto?: Proto }

function candidate(e: FlowEndpoint, namespace: string, source: NameSource | null): Candidate {
  if (e.kind === 'ip') return { addrs: [e.addr], port: e.port, pod: null };
  if (!source) throw usageError(`--flow: ${e.text} is a name, and there is no source of names`, NEXT_FOR_SOURCE);
  if (e.kind === 'svc') {
    const s = findService(source, e);
    return { addrs: s.service.clusterIps, port: s.port, pod: null, ...(s.protocol === 'UDP' ? { proto: 'udp' as const } : {}) };
  }
  const pod = findPod(source, e.namespace ?? namespace, e.name);
  if (pod.ips.length === 0) {
    throw new NettraceError('NOT_FOUND', `pod ${pod.namespace}/${pod.name} has no IP address (not running yet, or finished)`, `check it: kubectl get pod -n ${pod.namespace} ${pod.name} -o wide`);
  }
  return { addrs: pod.ips, port: e.port, pod };
}

/**
 * --flow resolved to addresses. namespace: -n's, for a pod written without one (default
 * "default", as kubectl). A flow of addresses only needs no source (source may be null).
 */
export function resolveFlow(text: string, opts: { proto?: Proto; namespace?: string; source: NameSource | null }): ResolvedFlow {
  const { src, dst } = parseFlowEndpoints(text);
  const namespace = opts.namespace ?? 'default';
  const s = candidate(src, namespace, opts.source);
  const d = candidate(dst, namespace, opts.source);
  // dual-stack pods and Services: the family both ends have, IPv4 first
  const pick = (c: Candidate, family: 4 | 6) => c.addrs.find((a) => (isIPv4(a) ? 4 : 6) === family);
  const family = ([4, 6] as const).find((f) => pick(s, f) && pick(d, f));
  if (family === undefined) {
    throw usageError(`--flow: ${src.text} (${s.addrs.join(', ')}) and ${dst.text} (${d.addrs.join(', ')}) have no IP family in common`, 'name two ends of the same family');
  }
  const proto = opts.proto ?? d.proto;
  return { flow: flowBetween({ addr: pick(s, family)!, port: s.port }, { addr: pick(d, family)!, port: d.port }, proto), pods: { src: s.pod, dst: d.pod } };
}

/** An open source of names as the resolver asks it: the CRI knows no Services. */
export function nameSourceOf(source: { kind: 'kubernetes' | 'cri'; pods(): PodIdentity[]; services(): ServiceIdentity[] }): NameSource {
  return {
    what: source.kind === 'kubernetes' ? 'the Kubernetes API' : 'the container runtime (CRI)',
    pods: () => source.pods(),
    services: () => (source.kind === 'kubernetes' ? source.services() : null),
  };
}
