// Which source of names to use: the one named on the command line (--kubeconfig, else
// --cri-socket); else the API server when there is a way to it (the pod's service account, a
// kubeconfig), else the container runtime's CRI socket. A source the user named must
// work (its error is theirs to fix); one found by looking around that fails is said in one line
// and left out: pods are then named by their network namespace, as without any.
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import path from 'node:path';
import { NettraceError } from '../errors';
import type { IdentitySource } from './identity';

// loaded only when chosen: the Kubernetes client is 30 MB of JS heap and 60 MB of RSS, gRPC a few,
// which an agent or a follow without a source of names must not carry
const kubeSource = async (o: Parameters<typeof import('./kubeApi').createKubeSource>[0]) => (await import('./kubeApi')).createKubeSource(o);
const criSource = async (sockets: string[]) => (await import('./cri')).createCriSource(sockets);

export interface IdentityOptions {
  kubeconfig?: string;
  criSockets?: string[];
  /** only this node's pods (the agent); absent: every pod (follow, diagnose) */
  node?: string;
}

export const DEFAULT_CRI_SOCKETS = ['/run/containerd/containerd.sock', '/run/crio/crio.sock'];

/** $KUBECONFIG's first existing file, else ~/.kube/config when it exists. */
function defaultKubeconfig(): string | undefined {
  const env = process.env.KUBECONFIG;
  if (env) return env.split(path.delimiter).find((f) => f && existsSync(f));
  const home = path.join(homedir(), '.kube', 'config');
  return existsSync(home) ? home : undefined;
}

type Choice = { what: string; explicit: boolean; open: () => Promise<IdentitySource> };

function choose(o: IdentityOptions): Choice | null {
  const node = o.node !== undefined ? { node: o.node } : {};
  if (o.kubeconfig !== undefined) return { what: `--kubeconfig ${o.kubeconfig}`, explicit: true, open: () => kubeSource({ kubeconfig: o.kubeconfig, ...node }) };
  // what the user named wins over what is found by looking around
  if (o.criSockets?.length) return { what: `--cri-socket ${o.criSockets.join(',')}`, explicit: true, open: () => criSource(o.criSockets!) };
  if (process.env.KUBERNETES_SERVICE_HOST) return { what: 'the in-cluster service account', explicit: false, open: () => kubeSource({ ...node }) };
  const kubeconfig = defaultKubeconfig();
  if (kubeconfig) return { what: `the kubeconfig ${kubeconfig}`, explicit: false, open: () => kubeSource({ kubeconfig, ...node }) };
  const found = DEFAULT_CRI_SOCKETS.filter((s) => existsSync(s));
  if (found.length) return { what: `the CRI socket ${found.join(', ')}`, explicit: false, open: () => criSource(found) };
  return null;
}

/**
 * The source of names these options lead to, ready (its first list is in); null when there is
 * none, or when one found by looking around failed (said in one line on stderr).
 */
export async function openIdentitySource(o: IdentityOptions, log: (line: string) => void = (s) => process.stderr.write(s + '\n')): Promise<IdentitySource | null> {
  const c = choose(o);
  if (!c) return null;
  let source: IdentitySource | null = null;
  try {
    source = await c.open();
    await source.ready();
    return source;
  } catch (err) {
    source?.close();
    if (c.explicit || !(err instanceof NettraceError)) throw err;
    log(`warning: no pod names from ${c.what}: ${err.message}; ${err.next}`);
    return null;
  }
}
