// Names from the Kubernetes API server: pods (this node's, by spec.nodeName, when a node is given),
// Services and their discovery.k8s.io/v1 EndpointSlices, listed (paged) and then watched with
// @kubernetes/client-node's list and our bounded watch (./watch.ts), so they stay current while a session runs.
// EndpointSlices rather than iptables rules: they name a Service's endpoints whatever implements
// it (kube-proxy in iptables, IPVS or nftables mode, or a CNI without kube-proxy).
import { isIP } from 'node:net';
import { CoreV1Api, DiscoveryV1Api, KubeConfig, Observable, type ObservableMiddleware, type RequestContext, type ResponseContext } from '@kubernetes/client-node';
import { NettraceError, usageError } from '../errors';
import { LABEL, SUBDOMAIN } from '../flow/spec';
import type { IdentitySource, PodIdentity, ServiceEndpoint, ServiceIdentity } from './identity';
import { openWatch, type WatchHandlers, type WatchParams } from './watch';

export interface KubeSourceOptions {
  /** a kubeconfig file; without it, the in-cluster service account (KUBERNETES_SERVICE_HOST) */
  kubeconfig?: string;
  /** only the pods of this node (fieldSelector spec.nodeName) */
  node?: string;
  /** where lines about the source go (watch failures, objects over the caps); default stderr */
  log?: (line: string) => void;
  /** how long the first list of everything may take (default 10 s) */
  readyTimeoutMs?: number;
  /** objects kept per resource; what is over is counted and logged, not kept */
  caps?: Partial<Record<Resource, number>>;
  /** objects a list page asks for (default 500) */
  pageSize?: number;
  /** the longest watch event line (default MAX_WATCH_LINE, 8 MiB) */
  maxWatchLine?: number;
}

type WatchFn = (path: string, params: WatchParams, signal: AbortSignal, h: WatchHandlers) => Promise<void>;

type Resource = 'pods' | 'services' | 'endpointslices';

const DEFAULT_CAPS: Record<Resource, number> = { pods: 100_000, services: 50_000, endpointslices: 100_000 };
const PAGE = 500;
/** a watch the server ends sooner than this after it began was no success: wait before the next */
const MIN_WATCH_MS = 1000;
const MAX_BACKOFF_MS = 30_000;
const LOG_EVERY_MS = 60_000;
/** per EndpointSlice: at most 1000 endpoints (the API's own limit) × its ports; more is hostile */
const MAX_SLICE_ENTRIES = 10_000;
const MAX_IPS = 8;
const RBAC_NEXT = 'grant get, list and watch on pods, services and endpointslices (discovery.k8s.io) to this user or service account: kubectl apply -f deploy/rbac.yaml has the ClusterRole';

/** What we read of an API object: typed list items and raw watch objects both have these fields. */
interface Meta {
  name?: unknown; namespace?: unknown; uid?: unknown; resourceVersion?: unknown;
  labels?: Record<string, unknown>; ownerReferences?: { kind?: unknown; name?: unknown; controller?: unknown }[];
}
interface ApiObject { metadata?: Meta; spec?: Record<string, unknown>; status?: Record<string, unknown>; [k: string]: unknown }
interface ApiList { items: ApiObject[]; metadata?: { resourceVersion?: string; _continue?: string; remainingItemCount?: number } }

const str = (v: unknown, max = 253): string | undefined => (typeof v === 'string' && v.length > 0 && v.length <= max ? v : undefined);
const ipsOf = (v: unknown): string[] => (Array.isArray(v) ? v : []).filter((ip): ip is string => typeof ip === 'string' && isIP(ip) !== 0).slice(0, MAX_IPS);
const protocolOf = (v: unknown): 'TCP' | 'UDP' | 'SCTP' => (v === 'UDP' || v === 'SCTP' ? v : 'TCP');
const portOf = (v: unknown): number | undefined => (typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= 65535 ? v : undefined);

/**
 * The workload that owns a pod: its controller's name, except that a ReplicaSet made by a
 * Deployment is named after the Deployment, i.e. without the pod-template-hash suffix the
 * Deployment controller appends (reading the ReplicaSet itself would need one more watch).
 */
export function workloadOf(meta: Meta): string | undefined {
  const refs = Array.isArray(meta.ownerReferences) ? meta.ownerReferences : [];
  const owner = refs.find((r) => r?.controller === true) ?? refs[0];
  const name = str(owner?.name);
  if (!name) return undefined;
  const hash = str(meta.labels?.['pod-template-hash'], 63);
  if (owner!.kind === 'ReplicaSet' && hash && name.endsWith(`-${hash}`)) return name.slice(0, -hash.length - 1);
  return name;
}

export function podOf(o: ApiObject): PodIdentity | null {
  const m = o.metadata;
  const namespace = str(m?.namespace, 63);
  const name = str(m?.name);
  const uid = str(m?.uid, 128);
  if (!m || !namespace || !name || !uid || !LABEL.test(namespace) || !SUBDOMAIN.test(name)) return null;
  const status = o.status ?? {};
  const phase = status.phase;
  // a finished pod's address is free to be given to another pod
  const ips = phase === 'Succeeded' || phase === 'Failed' ? []
    : ipsOf(Array.isArray(status.podIPs) ? (status.podIPs as { ip?: unknown }[]).map((x) => x?.ip) : [status.podIP]);
  const pod: PodIdentity = { namespace, name, uid, ips };
  const node = str(o.spec?.nodeName);
  if (node) pod.node = node;
  const workload = workloadOf(m);
  if (workload) pod.workload = workload;
  return pod;
}

type ServiceBase = Omit<ServiceIdentity, 'endpoints'>;

export function serviceOf(o: ApiObject): ServiceBase | null {
  const m = o.metadata;
  const namespace = str(m?.namespace, 63);
  const name = str(m?.name, 63);
  // names are printed and become labels as they are: Kubernetes names only
  if (!namespace || !name || !LABEL.test(namespace) || !LABEL.test(name)) return null;
  const spec = o.spec ?? {};
  const clusterIps = ipsOf(Array.isArray(spec.clusterIPs) ? spec.clusterIPs : [spec.clusterIP]);
  const ports = (Array.isArray(spec.ports) ? spec.ports as Record<string, unknown>[] : []).slice(0, 100).flatMap((p) => {
    const port = portOf(p?.port);
    if (!port) return [];
    const name = str(p.name, 63);
    return [{ ...(name ? { name } : {}), port, protocol: protocolOf(p.protocol) }];
  });
  return { namespace, name, clusterIps, ports };
}

interface Slice { namespace: string; service: string; endpoints: ServiceEndpoint[] }

export function sliceOf(o: ApiObject): Slice | null {
  const m = o.metadata;
  const namespace = str(m?.namespace, 63);
  const service = str(m?.labels?.['kubernetes.io/service-name'], 63);
  if (!namespace || !service || (o.addressType !== 'IPv4' && o.addressType !== 'IPv6')) return null;
  const ports = (Array.isArray(o.ports) ? o.ports as Record<string, unknown>[] : []).slice(0, 100)
    .flatMap((p) => (portOf(p?.port) ? [{ port: portOf(p.port)!, protocol: protocolOf(p.protocol) }] : []));
  const endpoints: ServiceEndpoint[] = [];
  for (const e of (Array.isArray(o.endpoints) ? o.endpoints as Record<string, unknown>[] : []).slice(0, 1000)) {
    const ref = e?.targetRef as Record<string, unknown> | undefined;
    const podNs = ref?.kind === 'Pod' ? str(ref.namespace, 63) : undefined;
    const podName = ref?.kind === 'Pod' ? str(ref.name) : undefined;
    // "ready" absent means ready, as kube-proxy reads it
    const ready = (e.conditions as { ready?: unknown } | undefined)?.ready !== false;
    for (const ip of ipsOf(e.addresses)) {
      for (const p of ports) {
        if (endpoints.length >= MAX_SLICE_ENTRIES) break;
        endpoints.push({ ip, port: p.port, protocol: p.protocol, ready, ...(podNs && podName ? { pod: { namespace: podNs, name: podName } } : {}) });
      }
    }
  }
  return { namespace, service, endpoints };
}

/** The API server's one-line reason out of an ApiException's body (a Status object). */
function statusMessage(err: { body?: unknown }): string {
  let body = err.body;
  if (typeof body === 'string') {
    try {
      body = JSON.parse(body);
    } catch {
      // not JSON: the text itself
    }
  }
  const msg = typeof body === 'string' ? body : (body as { message?: unknown } | null)?.message;
  return typeof msg === 'string' ? msg.replace(/\s+/g, ' ').slice(0, 200) : '';
}

const GROUP: Record<Resource, string> = { pods: 'pods', services: 'services', endpointslices: 'endpointslices.discovery.k8s.io' };

/** A failure of the first list or watch as the one line that says what to fix. */
export function apiError(err: unknown, server: string, verb: 'list' | 'watch', what: Resource): NettraceError {
  const e = err as { code?: unknown; statusCode?: unknown; message?: string; body?: unknown; cause?: { code?: unknown } };
  const status = typeof e.code === 'number' ? e.code : typeof e.statusCode === 'number' ? e.statusCode : null;
  const reason = statusMessage(e);
  if (status === 401) {
    return new NettraceError('PERMISSION', `the Kubernetes API server at ${server} does not accept the credentials to ${verb} ${GROUP[what]} (401 Unauthorized${reason ? `: ${reason}` : ''})`,
      'check the kubeconfig\'s user and its token or certificate (kubectl auth whoami), or the pod\'s service account token');
  }
  if (status === 403) {
    return new NettraceError('PERMISSION', `the Kubernetes API server at ${server} denies ${verb} on ${GROUP[what]} (403 Forbidden${reason ? `: ${reason}` : ''})`, RBAC_NEXT);
  }
  if (status !== null) {
    return new NettraceError('NOT_FOUND', `the Kubernetes API server at ${server} answered ${status} to ${verb} ${GROUP[what]}${reason ? ` (${reason})` : ''}`,
      what === 'endpointslices' && status === 404 ? 'nettrace needs discovery.k8s.io/v1 EndpointSlices (Kubernetes 1.21+)' : 'check the server is a Kubernetes API server and the kubeconfig\'s context');
  }
  const code = typeof e.code === 'string' ? e.code : typeof e.cause?.code === 'string' ? e.cause.code : null;
  const why = (code ?? (e.message ?? String(err))).replace(/\s+/g, ' ').slice(0, 200);
  return new NettraceError('NOT_FOUND', `cannot reach the Kubernetes API server at ${server} (${why})`,
    'check the kubeconfig\'s server address and certificate (kubectl config view --minify) and that this machine reaches it');
}

class TimedOut extends Error {}

/**
 * One resource kept current: a paged list (stopping at the cap), then a watch from the list's
 * resourceVersion; a watch that ends is resumed, one the server no longer can resume (410) or
 * that fails is replaced by a fresh list after a backoff.
 */
class Reflector<T> {
  private store = new Map<string, T>();
  private rv = '';
  private stopped = false;
  private abort: AbortController | null = null;
  private backoff = MIN_WATCH_MS;
  private timer: NodeJS.Timeout | null = null;
  private lastLog = 0;
  /** objects not kept because the store was full, since the last list */
  over = 0;

  constructor(
    private readonly what: Resource,
    private readonly path: string,
    private readonly listPage: (cont: string | undefined, limit: number, signal: AbortSignal) => Promise<ApiList>,
    private readonly convert: (o: ApiObject) => T | null,
    private readonly watch: WatchFn,
    private readonly cap: number,
    private readonly server: string,
    private readonly log: (s: string) => void,
    private readonly fieldSelector?: string,
    private readonly pageSize = PAGE,
  ) {}

  values(): IterableIterator<T> {
    return this.store.values();
  }

  /** The first list and watch; rejects with the one-line error. */
  async start(): Promise<void> {
    try {
      await this.list();
    } catch (err) {
      throw err instanceof TimedOut || this.stopped ? err : apiError(err, this.server, 'list', this.what);
    }
    await this.startWatch(true);
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.abort?.abort();
  }

  private async list(): Promise<void> {
    const ac = new AbortController();
    this.abort = ac;
    const store = new Map<string, T>();
    let over = 0;
    let cont: string | undefined;
    let rv = '';
    do {
      const page = await this.listPage(cont, this.pageSize, ac.signal);
      if (this.stopped) return;
      rv = page.metadata?.resourceVersion ?? '';
      for (const o of page.items ?? []) {
        const uid = str(o?.metadata?.uid, 128);
        const v = uid ? this.convert(o) : null;
        if (!uid || v === null) continue;
        if (store.size >= this.cap && !store.has(uid)) over++;
        else store.set(uid, v);
      }
      cont = page.metadata?._continue || undefined;
      if (cont && store.size >= this.cap) {
        // the rest is not read: the server says how many remain, when it knows
        over += page.metadata?.remainingItemCount ?? 0;
        cont = undefined;
      }
    } while (cont);
    this.store = store;
    this.rv = rv;
    this.over = over;
    if (over > 0) this.say(`kubernetes: ${over} ${this.what} over the cap of ${this.cap} are not kept: their names are unknown to nettrace`, true);
  }

  private async startWatch(first: boolean): Promise<void> {
    if (this.stopped) return;
    const began = Date.now();
    const params: WatchParams = { resourceVersion: this.rv, allowWatchBookmarks: true, timeoutSeconds: 300 };
    if (this.fieldSelector) params.fieldSelector = this.fieldSelector;
    // ours before the request is made: stop() ends it also while the server has not answered
    const ac = new AbortController();
    this.abort = ac;
    try {
      await this.watch(this.path, params, ac.signal, { event: (type, obj) => this.event(type, obj as ApiObject), done: (err) => this.ended(err, began) });
    } catch (err) {
      // no watch began (an HTTP status, no connection)
      if (this.stopped) return;
      if (first) throw apiError(err, this.server, 'watch', this.what);
      this.ended(err, began);
    }
  }

  private event(type: string, obj: ApiObject): void {
    if (!obj || typeof obj !== 'object') return;
    if (type === 'ERROR') {
      // 410 Gone: the resourceVersion is too old; the watch ends and a fresh list follows
      if ((obj as { code?: unknown }).code === 410) this.rv = '';
      return;
    }
    const rv = str(obj.metadata?.resourceVersion, 64);
    if (rv) this.rv = rv;
    if (type === 'BOOKMARK') return;
    const uid = str(obj.metadata?.uid, 128);
    if (!uid) return;
    if (type === 'DELETED') {
      this.store.delete(uid);
      return;
    }
    if (type !== 'ADDED' && type !== 'MODIFIED') return;
    const v = this.convert(obj);
    if (v === null) {
      this.store.delete(uid);
    } else if (this.store.size >= this.cap && !this.store.has(uid)) {
      this.over++;
      this.say(`kubernetes: ${this.over} ${this.what} over the cap of ${this.cap} are not kept: their names are unknown to nettrace`);
    } else {
      this.store.set(uid, v);
    }
  }

  /** The watch ended: resume it, or list again after a backoff when it failed or cannot resume. */
  private ended(err: unknown, began: number): void {
    if (this.stopped) return;
    const status = (err as { statusCode?: unknown; code?: unknown } | null)?.statusCode ?? (err as { code?: unknown } | null)?.code;
    if (status === 410) this.rv = '';
    const quick = Date.now() - began < MIN_WATCH_MS;
    if (err && status !== 410) this.say(`kubernetes: the watch of ${this.what} at ${this.server} failed (${apiError(err, this.server, 'watch', this.what).message}); retrying`);
    const delay = err || quick ? this.backoff : 0;
    this.backoff = err || quick ? Math.min(MAX_BACKOFF_MS, this.backoff * 2) : MIN_WATCH_MS;
    this.timer = setTimeout(() => {
      this.timer = null;
      void (async () => {
        try {
          // a failed watch may have missed events: start over from a list
          if (err || !this.rv) await this.list();
          await this.startWatch(false);
        } catch (e) {
          if (!this.stopped) this.ended(e, Date.now());
        }
      })();
    }, delay);
    this.timer.unref();
  }

  /** At most one line a minute, unless it must be said. */
  private say(line: string, always = false): void {
    const now = Date.now();
    if (!always && now - this.lastLog < LOG_EVERY_MS) return;
    this.lastLog = now;
    this.log(line);
  }
}

/** The abort signal a list request is made with, through the generated client's middleware. */
function withSignal(signal: AbortSignal): { middleware: ObservableMiddleware[]; middlewareMergeStrategy: 'append' } {
  return {
    middleware: [{
      pre: (ctx: RequestContext) => {
        ctx.setSignal(signal);
        return new Observable(Promise.resolve(ctx));
      },
      post: (rsp: ResponseContext) => new Observable(Promise.resolve(rsp)),
    }],
    middlewareMergeStrategy: 'append',
  };
}

function loadConfig(kubeconfig: string | undefined): KubeConfig {
  const kc = new KubeConfig();
  if (kubeconfig !== undefined) {
    try {
      kc.loadFromFile(kubeconfig);
    } catch (err) {
      throw usageError(`--kubeconfig ${kubeconfig}: ${(err as Error).message.split('\n')[0]}`, 'give a kubeconfig file kubectl can use (kubectl --kubeconfig FILE get pods)');
    }
    if (!kc.getCurrentCluster()) throw usageError(`--kubeconfig ${kubeconfig}: its current context names no cluster`, 'set one: kubectl --kubeconfig FILE config use-context NAME');
    return kc;
  }
  if (!process.env.KUBERNETES_SERVICE_HOST) {
    throw usageError('no kubeconfig given and not in a pod (no KUBERNETES_SERVICE_HOST)', 'give --kubeconfig FILE, or run nettrace in a pod with a service account');
  }
  kc.loadFromCluster();
  return kc;
}

export function createKubeSource(opts: KubeSourceOptions): IdentitySource {
  const kc = loadConfig(opts.kubeconfig);
  const server = kc.getCurrentCluster()!.server;
  const log = opts.log ?? ((s: string) => process.stderr.write(s + '\n'));
  const caps = { ...DEFAULT_CAPS, ...opts.caps };
  const core = kc.makeApiClient(CoreV1Api);
  const discovery = kc.makeApiClient(DiscoveryV1Api);
  const watch: WatchFn = (path, params, signal, h) => openWatch(kc, path, params, signal, h, opts.maxWatchLine);
  const fieldSelector = opts.node !== undefined ? `spec.nodeName=${opts.node}` : undefined;
  const o = withSignal;
  const pods = new Reflector<PodIdentity>('pods', '/api/v1/pods',
    (cont, limit, signal) => core.listPodForAllNamespaces({ _continue: cont, limit, ...(fieldSelector ? { fieldSelector } : {}) }, o(signal)) as Promise<ApiList>,
    podOf, watch, caps.pods, server, log, fieldSelector, opts.pageSize);
  const services = new Reflector<ServiceBase>('services', '/api/v1/services',
    (cont, limit, signal) => core.listServiceForAllNamespaces({ _continue: cont, limit }, o(signal)) as Promise<ApiList>,
    serviceOf, watch, caps.services, server, log, undefined, opts.pageSize);
  const slices = new Reflector<Slice>('endpointslices', '/apis/discovery.k8s.io/v1/endpointslices',
    (cont, limit, signal) => discovery.listEndpointSliceForAllNamespaces({ _continue: cont, limit }, o(signal)) as unknown as Promise<ApiList>,
    sliceOf, watch, caps.endpointslices, server, log, undefined, opts.pageSize);
  const all = [pods, services, slices];
  const close = () => {
    for (const r of all) r.stop();
  };

  const timeoutMs = opts.readyTimeoutMs ?? 10_000;
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new TimedOut()), timeoutMs);
  });
  const readyP = Promise.race([Promise.all(all.map((r) => r.start())), timedOut]).then(
    () => {
      clearTimeout(timer);
    },
    (err: unknown) => {
      clearTimeout(timer);
      close();
      if (err instanceof TimedOut) {
        throw new NettraceError('NOT_FOUND', `the Kubernetes API server at ${server} did not answer in ${timeoutMs / 1000} s`,
          'check the kubeconfig\'s server address (kubectl config view --minify) and that this machine reaches it');
      }
      throw err;
    },
  );
  // ready() may be called late, or never: a rejection is not unhandled meanwhile
  readyP.catch(() => {});

  return {
    kind: 'kubernetes',
    ready: () => readyP,
    pods: () => [...pods.values()],
    services: () => {
      const bySvc = new Map<string, ServiceEndpoint[]>();
      for (const s of slices.values()) {
        const key = `${s.namespace}/${s.service}`;
        const list = bySvc.get(key) ?? [];
        for (const e of s.endpoints) list.push(e);
        bySvc.set(key, list);
      }
      return [...services.values()].map((s) => ({ ...s, endpoints: bySvc.get(`${s.namespace}/${s.name}`) ?? [] }));
    },
    close,
  };
}
