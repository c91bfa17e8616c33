// Pod names from the container runtime's CRI socket (containerd, CRI-O), for a node without API
// access: the ready pod sandboxes with their namespace, name, uid, IPs and network namespace path.
// Polled: the CRI has no watch for sandboxes. A sandbox's IPs and netns do not change while it is
// ready, so each sandbox's status is asked for once, when it first appears.
import { accessSync, constants, statSync } from 'node:fs';
import { isIP } from 'node:net';
import { NettraceError } from '../errors';
import { LABEL, SUBDOMAIN } from '../flow/spec';
import { CriClient, GrpcStatus, isGrpcError, type CriSandbox, type CriSandboxStatus } from './criClient';
import type { IdentitySource, PodIdentity, ServiceIdentity } from './identity';

export interface CriSourceOptions {
  /** how often each socket's sandbox list is read again (default 2 s) */
  pollMs?: number;
}

const DEFAULT_POLL_MS = 2_000;
/** each call's deadline: a runtime that hangs must not stall ready() */
const CALL_DEADLINE_MS = 5_000;
/** sandboxes kept per socket (a node runs at most a few hundred pods); the rest are counted, not kept */
const MAX_SANDBOXES = 4_096;
/** status calls in flight per socket */
const STATUS_CONCURRENCY = 8;
/** addresses kept per pod, and the largest verbose info value parsed */
const MAX_IPS = 8;
const MAX_INFO_CHARS = 1 << 20;
/** Kubernetes names are at most 253 characters, uids 36: anything longer is not a pod's */
const MAX_NAME = 253;

const NEXT = 'give --cri-socket PATH of containerd/CRI-O, or --kubeconfig';

/** Why a socket cannot be used, as the one line the user sees. */
export function criSocketError(socket: string, err?: unknown): NettraceError {
  if (err === undefined) {
    let st;
    try {
      st = statSync(socket);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EACCES') return new NettraceError('PERMISSION', `cannot reach the CRI socket ${socket}: permission denied`, 'run as root (the runtime\'s socket belongs to root)');
      return new NettraceError('NOT_FOUND', `no CRI socket at ${socket}`, NEXT);
    }
    if (!st.isSocket()) return new NettraceError('NOT_FOUND', `${socket} is not a socket, so no CRI runtime listens there`, NEXT);
    return new NettraceError('INTERNAL', `the CRI socket ${socket} failed`, NEXT);
  }
  if (isGrpcError(err)) {
    // grpc-js wraps the connection's error in its own words, with a time stamp: keep the cause
    const details = (err.details || err.message).split('\n')[0]!
      .replace(/^No connection established\. Last error: /, '').replace(/ \(\d{4}-\d\d-\d\dT[^)]*\)/, '').replace(/\.? ?Resolution note:.*$/, '')
      .slice(0, 200);
    switch (err.code) {
      case GrpcStatus.UNIMPLEMENTED:
        return new NettraceError('NOT_FOUND', `${socket} is not a CRI v1 runtime (runtime.v1.RuntimeService: ${details})`, `give the socket of containerd 1.6+ or CRI-O 1.23+ with --cri-socket, or --kubeconfig`);
      case GrpcStatus.DEADLINE_EXCEEDED:
        return new NettraceError('NOT_FOUND', `the CRI socket ${socket} did not answer within ${CALL_DEADLINE_MS / 1000} s`, `check a CRI runtime (containerd, CRI-O) serves that socket, or ${NEXT}`);
      case GrpcStatus.UNAVAILABLE:
        if (/EACCES|permission denied/i.test(details)) return new NettraceError('PERMISSION', `cannot connect to the CRI socket ${socket}: permission denied`, 'run as root (the runtime\'s socket belongs to root)');
        if (/ECONNREFUSED/.test(details)) return new NettraceError('NOT_FOUND', `nothing listens on the CRI socket ${socket} (connection refused)`, `start containerd/CRI-O, or ${NEXT}`);
        return new NettraceError('NOT_FOUND', `${socket} does not answer as a CRI runtime (${details})`, NEXT);
      default:
        return new NettraceError('NOT_FOUND', `${socket} does not answer as a CRI runtime (${GrpcStatus[err.code] ?? err.code}: ${details})`, NEXT);
    }
  }
  return new NettraceError('INTERNAL', `reading the CRI socket ${socket} failed: ${(err as Error).message}`, NEXT);
}

/** Before connecting: a missing socket or one we may not open is named without a gRPC timeout. */
function checkSocket(socket: string): void {
  let st;
  try {
    st = statSync(socket);
    if (!st.isSocket()) throw criSocketError(socket);
    accessSync(socket, constants.R_OK | constants.W_OK);
  } catch (e) {
    if (e instanceof NettraceError) throw e;
    if ((e as NodeJS.ErrnoException).code === 'EACCES' && st) throw new NettraceError('PERMISSION', `cannot open the CRI socket ${socket}: permission denied`, 'run as root (the runtime\'s socket belongs to root)');
    throw criSocketError(socket);
  }
}

interface Namespaces { linux?: { namespaces?: { type?: string; path?: string }[] } }

/**
 * The sandbox's network namespace from its verbose info: the OCI runtime spec's network namespace
 * path (containerd and CRI-O both put the spec under "runtimeSpec"). null: the sandbox shares the
 * node's network (no network namespace of its own); undefined: the info does not say.
 */
export function netnsFromInfo(info: Record<string, string>): string | null | undefined {
  for (const text of Object.values(info)) {
    if (typeof text !== 'string' || text.length > MAX_INFO_CHARS || !text.includes('runtimeSpec')) continue;
    let parsed: { runtimeSpec?: Namespaces };
    try {
      parsed = JSON.parse(text) as { runtimeSpec?: Namespaces };
    } catch {
      continue;
    }
    const nss = parsed?.runtimeSpec?.linux?.namespaces;
    if (!Array.isArray(nss)) continue;
    const net = nss.find((n) => n && n.type === 'network');
    if (!net) return null;
    return typeof net.path === 'string' && net.path.startsWith('/') && net.path.length <= 4096 ? net.path : undefined;
  }
  return undefined;
}

/**
 * The owning workload, from the labels the controllers put on their pods (which kubelet copies
 * onto the sandbox): a Deployment's ReplicaSet adds pod-template-hash, a Job job-name, a
 * StatefulSet statefulset.kubernetes.io/pod-name. A DaemonSet's pods carry only
 * controller-revision-hash, with the DaemonSet's name and one random suffix.
 */
export function workloadFromLabels(name: string, labels: Record<string, string>): string | undefined {
  const hash = labels['pod-template-hash'];
  if (hash) {
    const m = /^(.+)-([a-z0-9]+)-[a-z0-9]+$/.exec(name);
    if (m && m[2] === hash) return m[1];
  }
  const job = labels['batch.kubernetes.io/job-name'] ?? labels['job-name'];
  if (job) return job;
  if (labels['statefulset.kubernetes.io/pod-name'] === name) {
    const m = /^(.+)-\d+$/.exec(name);
    if (m) return m[1];
  }
  if (labels['controller-revision-hash']) {
    const m = /^(.+)-[a-z0-9]{5}$/.exec(name);
    if (m) return m[1];
  }
  return undefined;
}

function validName(s: unknown): s is string {
  return typeof s === 'string' && s.length > 0 && s.length <= MAX_NAME;
}

/** A sandbox's identity from its status; null when it has none worth joining (host network, no IP). */
export function identityOf(sandbox: CriSandbox, status: CriSandboxStatus): PodIdentity | null {
  const md = status.status?.metadata ?? sandbox.metadata;
  // Kubernetes names only: a sandbox made straight through the socket may be called anything, and
  // names are printed and put in labels as they are
  if (!md || typeof md.namespace !== 'string' || !LABEL.test(md.namespace) || typeof md.name !== 'string' || !SUBDOMAIN.test(md.name) || !validName(md.uid)) return null;
  const netnsPath = netnsFromInfo(status.info ?? {});
  if (netnsPath === null) return null;
  const net = status.status?.network;
  const ips = [net?.ip, ...(net?.additional_ips ?? []).map((x) => x?.ip)]
    .filter((ip): ip is string => typeof ip === 'string' && isIP(ip) !== 0)
    .filter((ip, i, all) => all.indexOf(ip) === i)
    .slice(0, MAX_IPS);
  if (ips.length === 0) return null;
  const id: PodIdentity = { namespace: md.namespace, name: md.name, uid: md.uid, ips };
  const workload = workloadFromLabels(md.name, sandbox.labels ?? {});
  if (workload !== undefined) id.workload = workload;
  if (netnsPath !== undefined) id.netnsPath = netnsPath;
  return id;
}

/** One runtime socket: its sandboxes by id, read again every poll. */
class SocketPoller {
  readonly client: CriClient;
  /** sandbox id -> identity (null: a sandbox with nothing to join, not asked again) */
  private known = new Map<string, PodIdentity | null>();
  /** sandboxes past MAX_SANDBOXES in the last list */
  overflow = 0;

  constructor(readonly socket: string) {
    this.client = new CriClient(socket, CALL_DEADLINE_MS);
  }

  async poll(): Promise<void> {
    const items = await this.client.listReadySandboxes();
    const kept = items.filter((s) => validName(s?.id)).slice(0, MAX_SANDBOXES);
    this.overflow = Math.max(0, items.length - kept.length);
    const next = new Map<string, PodIdentity | null>();
    const todo: CriSandbox[] = [];
    for (const s of kept) {
      if (this.known.has(s.id)) next.set(s.id, this.known.get(s.id)!);
      else todo.push(s);
    }
    const worker = async () => {
      for (let s = todo.pop(); s; s = todo.pop()) {
        try {
          next.set(s.id, identityOf(s, await this.client.sandboxStatus(s.id, true)));
        } catch (err) {
          // removed between the list and the status: gone from the next list; else asked again then
          if (!isGrpcError(err) || err.code !== GrpcStatus.NOT_FOUND) throw err;
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(STATUS_CONCURRENCY, todo.length) }, worker));
    this.known = next;
  }

  pods(): PodIdentity[] {
    return [...this.known.values()].filter((p): p is PodIdentity => p !== null);
  }
}

export function createCriSource(sockets: string[], opts: CriSourceOptions = {}): IdentitySource {
  const pollMs = Math.max(100, opts.pollMs ?? DEFAULT_POLL_MS);
  const pollers: SocketPoller[] = [];
  let closed = false;
  let timer: NodeJS.Timeout | undefined;
  let first: Promise<void> | undefined;

  const pollAll = () => Promise.all(pollers.map((p) => p.poll().catch((err) => {
    throw err instanceof NettraceError ? err : criSocketError(p.socket, err);
  })));

  const schedule = () => {
    if (closed) return;
    timer = setTimeout(() => {
      // a later failure keeps the last list (a runtime restarting); the next poll tries again
      void pollAll().catch(() => undefined).finally(schedule);
    }, pollMs);
    timer.unref();
  };

  const start = async (): Promise<void> => {
    if (sockets.length === 0) throw new NettraceError('USAGE', 'no CRI socket given', NEXT);
    for (const s of sockets) checkSocket(s);
    for (const s of sockets) pollers.push(new SocketPoller(s));
    // Version first: a socket that is not a CRI runtime says so here, not as a failed list
    await Promise.all(pollers.map((p) => p.client.version().catch((err) => { throw criSocketError(p.socket, err); })));
    await pollAll();
    if (closed) for (const p of pollers) p.client.close();
    schedule();
  };

  return {
    kind: 'cri',
    ready() {
      first ??= start().catch((err) => {
        for (const p of pollers) p.client.close();
        closed = true;
        throw err;
      });
      return first;
    },
    pods() {
      return pollers.flatMap((p) => p.pods());
    },
    services(): ServiceIdentity[] {
      return [];
    },
    close() {
      closed = true;
      if (timer) clearTimeout(timer);
      for (const p of pollers) p.client.close();
    },
  };
}
