// --flow by pod and Service names for follow and diagnose: which source of names, resolving the
// names to addresses, and the pods' names joined onto the discovered cluster for the output.
// A flow of addresses only opens no source unless one is asked for (--kubeconfig, --cri-socket).
import { usageError } from '../errors';
import { parseFlowEndpoints, parseFlowSpec, type FlowSpec, type Proto } from '../flow/spec';
import type { IdentitySource, PodIdentity } from '../k8s/identity';
import { joinIdentities, podRefOf } from '../k8s/join';
import { openIdentitySource } from '../k8s/open';
import { flowHasNames, nameSourceOf, resolveFlow, type NameSource } from '../k8s/resolve';
import type { RemoteCluster } from '../session/remote';
import { findPodByIp, type ClusterTopology, type PodRef } from '../topology/model';

export interface NameOptions {
  namespace?: string;
  kubeconfig?: string;
  criSocket?: string;
}

export interface NamedFlow {
  flow: FlowSpec;
  /** the pods the names resolved to (null: an address, or a Service) */
  pods: { src: PodIdentity | null; dst: PodIdentity | null };
  /** the open source, to join names onto the discovered cluster; close it after */
  source: IdentitySource | null;
}

function criSockets(o: NameOptions): string[] | undefined {
  if (o.criSocket === undefined) return undefined;
  const list = o.criSocket.split(',').map((s) => s.trim()).filter(Boolean);
  if (list.length === 0) throw usageError('--cri-socket is empty', 'give the runtime\'s socket, e.g. --cri-socket /run/containerd/containerd.sock');
  return list;
}

/** Before anything else: the --flow syntax and the flags that go together (no network yet). */
export function checkFlowText(text: string, o: NameOptions, remote: boolean): void {
  parseFlowEndpoints(text);
  if (o.namespace !== undefined && !/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/.test(o.namespace)) {
    throw usageError(`--namespace "${o.namespace}" is not a namespace name`, 'give a DNS-1123 label, e.g. -n default');
  }
  if (remote && o.criSocket !== undefined) {
    throw usageError('--cri-socket and --agents do not go together', 'with --agents the pods\' names come from the agents; give --kubeconfig for Services');
  }
  criSockets(o);
}

/** On this machine: the source the options lead to (when asked for or needed), and the flow resolved. */
export async function resolveLocalFlow(text: string, proto: Proto | undefined, o: NameOptions): Promise<NamedFlow> {
  const names = flowHasNames(text);
  const sockets = criSockets(o);
  if (!names && o.kubeconfig === undefined && sockets === undefined) return { flow: parseFlowSpec(text, proto), pods: { src: null, dst: null }, source: null };
  const source = await openIdentitySource({ ...(o.kubeconfig !== undefined ? { kubeconfig: o.kubeconfig } : {}), ...(sockets ? { criSockets: sockets } : {}) });
  try {
    const r = resolveFlow(text, { proto, namespace: o.namespace, source: source ? nameSourceOf(source) : null });
    return { ...r, source };
  } catch (err) {
    source?.close();
    throw err;
  }
}

/** The names the agents' nodes carry (each agent's own source of names), as the resolver asks them. */
function agentNames(rc: RemoteCluster): NameSource {
  return {
    what: `the agents' nodes (${[...rc.nodes.keys()].join(', ')})`,
    pods: () => rc.topology.nodes.flatMap((n) => n.pods.flatMap((p) => (p.k8s ? [{
      namespace: p.k8s.namespace, name: p.k8s.name, uid: p.k8s.uid, ips: p.ips, node: n.name, ...(p.k8s.workload ? { workload: p.k8s.workload } : {}),
    }] : []))),
    services: () => null,
  };
}

/**
 * Through the agents: pod names from the agents' node descriptions; with --kubeconfig, from the
 * API server (which also knows Services), joined onto the agents' pods too.
 */
export async function resolveRemoteFlow(text: string, proto: Proto | undefined, o: NameOptions, rc: RemoteCluster): Promise<NamedFlow> {
  if (o.kubeconfig === undefined) {
    if (!flowHasNames(text)) return { flow: parseFlowSpec(text, proto), pods: { src: null, dst: null }, source: null };
    const src = agentNames(rc);
    const ends = parseFlowEndpoints(text);
    if (src.pods().length === 0 && (ends.src.kind === 'pod' || ends.dst.kind === 'pod')) {
      throw usageError(`--flow names pods, and no agent (${[...rc.nodes.keys()].join(', ')}) knows pods' names`,
        'give the agents a source of names (their service account, --kubeconfig or --cri-socket), or give --kubeconfig here');
    }
    return { ...resolveFlow(text, { proto, namespace: o.namespace, source: src }), source: null };
  }
  const { createKubeSource } = await import('../k8s/kubeApi'); // loaded only here: the Kubernetes client is large
  const source = createKubeSource({ kubeconfig: o.kubeconfig });
  try {
    await source.ready();
    joinIdentities(rc.topology, source);
    return { ...resolveFlow(text, { proto, namespace: o.namespace, source: nameSourceOf(source) }), source };
  } catch (err) {
    source.close();
    throw err;
  }
}

/** Sets the pods' names on the discovered cluster and closes the source: the session needs no more of it. */
export function joinAndClose(topology: ClusterTopology, named: NamedFlow): void {
  if (!named.source) return;
  try {
    joinIdentities(topology, named.source);
  } finally {
    named.source.close();
    named.source = null;
  }
}

/** The flow's two pods by name for diagnose's output: the discovered pod's, else the resolved one's. */
export function flowPods(topology: ClusterTopology, named: NamedFlow): { src: PodRef | null; dst: PodRef | null } | null {
  const f = named.flow;
  const src = findPodByIp(topology, f.src)?.k8s ?? (named.pods.src ? podRefOf(named.pods.src) : null);
  const dst = findPodByIp(topology, f.dst)?.k8s ?? (named.pods.dst ? podRefOf(named.pods.dst) : null);
  return src || dst ? { src, dst } : null;
}

/** --flow resolved, locally or through the agents; nothing is attached before this succeeded. */
export function resolveFlowNames(text: string, proto: Proto | undefined, o: NameOptions, remote: RemoteCluster | null): Promise<NamedFlow> {
  return remote ? resolveRemoteFlow(text, proto, o, remote) : resolveLocalFlow(text, proto, o);
}
