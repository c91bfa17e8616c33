// nettrace agent: one per node. Keeps the aggregate programs on every step device of the
// node (and on pod veths as pods come and go), serves Prometheus metrics, sends sampled
// packets as OTLP traces, and detaches everything when stopped.
import { spawn, type ChildProcess } from 'node:child_process';
import type { Server } from 'node:http';
import { serve, type ListenAddress } from '../export/http';
import type { SpanSink } from '../export/otel';
import { createMetrics, type MetricsSource } from '../export/prometheus';
import { SampleGrouper, type SampledPacket } from '../flow/sampled';
import { withAdvice } from '../probe/advice';
import { addrString } from '../probe/addr';
import { AgentProbe } from '../probe/agentProbe';
import { trimMalloc } from '../libbpf';
import { cleanupNetns } from '../probe/cleanup';
import { decodeHopRecord } from '../probe/layout.generated';
import type { NetnsRef } from '../topology/netns';
import { ipNs } from '../topology/netns';
import { dropReasonName } from '../session/localFeed';
import { WallClock } from '../flow/clock';
import type { IdentitySource } from '../k8s/identity';
import { joinIdentities } from '../k8s/join';
import { openIdentitySource, type IdentityOptions } from '../k8s/open';
import { NodeHooks, type AgentAttach } from './hooks';
import { AddressNames, dropLabels, hookLabels } from './labels';
import { NetfilterRules, netnsExec } from './netfilter';
import { startTraceApi, type TraceApi } from './traceApi';
import { WireStep, type Departure } from './wireStep';
import { API_PORT } from '../session/protocol';

export interface AgentOptions {
  node: NetnsRef;
  metricsAddr: ListenAddress;
  otlpEndpoint: string | null;
  /** 1 in N packets become traces; 0 = none */
  sample: number;
  /** the hops of 1 in N packets are timed (a power of two) */
  latencyEvery: number;
  /** other agents' base URLs, for the wire step (step 6) */
  peers: string[];
  attach: AgentAttach;
  /** full rescan of the node's devices even without a link event */
  rescanMs: number;
  /** the trace API for remote follow/diagnose; null: off */
  api: { addr: ListenAddress | null; token: string; tls: { certFile: string; keyFile: string } | null; maxSessions: number } | null;
  /** where pods' Kubernetes names come from (API server, else CRI sockets); node: the Kubernetes node name */
  names: IdentityOptions & { node: string };
  /** how often a source of names found by looking around is tried again while there is none (default 60 s) */
  namesRetryMs?: number;
  /** added to this agent's wall clock: simulates a node whose clock is off (tests) */
  clockSkewMs?: number;
  log: (line: string) => void;
}

export interface RunningAgent {
  port: number;
  /** the trace API's port, null when it is off */
  apiPort: number | null;
  stop(): Promise<void>;
}

const POLL_MS = 50;
/** how often free malloc pages go back to the kernel */
const TRIM_MS = 30_000;
/** how often names are joined again: a pod's identity can arrive after its veth */
const NAMES_MS = 2000;
/**
 * A source found by looking around that fails at start (the API server restarting, RBAC applied
 * after the DaemonSet, containerd not up yet) is tried again: else the agent would name no pod for
 * as long as it runs.
 */
const NAMES_RETRY_MS = 60_000;

function hostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

export async function startAgent(opts: AgentOptions): Promise<RunningAgent> {
  const nodeName = opts.node.name;
  const clock = new WallClock(BigInt(Math.round((opts.clockSkewMs ?? 0) * 1e6)));
  let sink: SpanSink | null = null;
  let server: Server | null = null;
  let api: TraceApi | null = null;
  let metrics: ReturnType<typeof createMetrics> | null = null;
  let probe: AgentProbe | null = null;
  let identities: IdentitySource | null = null;
  const names = new AddressNames();
  const joinNames = () => {
    if (identities) joinIdentities([hooks.topology], identities);
    names.update(hooks.topology, identities?.pods() ?? [], identities?.services() ?? [], hooks.podNetworks);
  };
  const hooks: NodeHooks = new NodeHooks({
    node: opts.node, attach: opts.attach, log: opts.log,
    program: (order) => probe!.program(order),
    watchNetns: (inos) => probe!.watchNetns(inos),
    onAttachError: (message) => {
      metrics?.attachErrors.inc();
      opts.log(`warning: ${message}`);
    },
    onSynced: () => metrics?.attachedHooks.set(hooks.attachments),
    onPods: () => joinNames(),
  });
  const vxlanPort = hooks.topology.tunnel?.vxlan?.port;
  const netfilter = new NetfilterRules({ exec: netnsExec(ipNs(opts.node)), log: opts.log });
  const loaded = withAdvice(() => AgentProbe.load({ vxlanPorts: vxlanPort ? [vxlanPort] : [8472, 4789], sampleEvery: opts.sample, latencyEvery: opts.latencyEvery }));
  probe = loaded;
  try {
    const source: MetricsSource = {
      node: nodeName,
      settings: { cni: hooks.topology.cni, sample: String(opts.sample), latency_every: String(opts.latencyEvery) },
      latency: () => loaded.latency(),
      wireLatency: () => (wire.enabled ? { counts: wire.histogram.counts, sumNs: wire.histogram.sumNs } : null),
      wireStats: () => wire.stats,
      drops: () => loaded.drops(),
      retransmits: () => loaded.retransmits(),
      lostRecords: () => loaded.lostRecords(),
      steps: () => loaded.steps(),
      netfilter: () => netfilter.snapshot(),
      mapFailures: () => loaded.mapFailures(),
      dns: () => {
        // on scrape: a query whose answer never came must not hold its kernel slot for ever
        loaded.sweepDnsPending();
        const text = (family: number, a: Uint8Array) => addrString(a, family);
        return {
          latency: loaded.dnsLatency().map((l) => ({ server: text(l.family, l.server), counts: l.counts, sumNs: l.sumNs })),
          rcodes: loaded.dnsRcodes().map((r) => ({ server: text(r.family, r.server), rcode: r.rcode, count: r.count })),
        };
      },
      hookLabels: (order) => hookLabels(hooks.topology, order),
      dropLabels: (order) => dropLabels(hooks.topology, order),
      dropReason: dropReasonName,
      addressName: (family, addr) => names.of(addrString(addr, family)),
    };
    const m = createMetrics(source);
    metrics = m;
    const emit = (p: SampledPacket, departure: Departure | null) => {
      m.sampled.inc();
      if (sink) m.spans.inc(sink.packet(p, departure));
    };
    const wire = new WireStep({ node: nodeName, peers: opts.peers, clock, emit, log: opts.log, token: opts.api?.token ?? null });
    const grouper = new SampleGrouper();
    const poll = () => {
      loaded.drain((view, offset) => {
        const { packet, retransmit } = grouper.add(decodeHopRecord(view, offset));
        if (packet) wire.add(packet);
        if (retransmit && sink) {
          sink.retransmit(retransmit);
          m.spans.inc();
        }
      });
      for (const p of grouper.expire()) wire.add(p);
      wire.pair();
    };

    server = await serve(opts.metricsAddr, {
      '/metrics': async () => ({ status: 200, type: m.registry.contentType, body: await m.registry.metrics() }),
      // an agent with no hook attached sees nothing: unhealthy, so a DaemonSet's probe says so
      '/healthz': async () => {
        const ok = hooks.attachments > 0;
        return {
          status: ok ? 200 : 503, type: 'application/json',
          // attaching_devices: pods' devices still being attached in the background
          body: JSON.stringify({ status: ok ? 'ok' : 'no hook attached', node: nodeName, attached_hooks: hooks.attachments, attaching_devices: hooks.pending }) + '\n',
        };
      },
      '/v1/departures': wire.route(),
    });
    if (opts.otlpEndpoint) {
      // loaded only when spans are wanted: the SDK is most of the agent's memory
      const { SpanSink } = await import('../export/otel');
      sink = new SpanSink({
        endpoint: opts.otlpEndpoint, node: nodeName, wallNs: (ts) => clock.wallNs(ts),
        hookLabels: source.hookLabels, dropLabels: source.dropLabels, dropReason: dropReasonName, log: opts.log,
        k8sNode: opts.names.node, podOf: (ip) => names.of(ip),
        onExport: (ok) => { if (!ok) m.exportFailures.inc({ exporter: 'otlp' }); },
        onDropped: (n) => m.spansDropped.inc({ node: nodeName }, n),
      });
    }
    if (opts.attach !== 'tcx') {
      // classic tc filters outlive a killed agent: the next start removes them, the node's now,
      // pods' (two tool runs a namespace: seconds for 250 pods) in the background once ready
      const removed = cleanupNetns(opts.node);
      if (removed.length) opts.log(`removed ${removed.length} tc filters a previous nettrace left behind`);
    }
    identities = await openNames(opts);
    // the trace API asks whichever source is open at each request: one may come later
    const currentNames: IdentitySource = {
      kind: 'kubernetes', ready: async () => {}, close: () => {},
      pods: () => identities?.pods() ?? [], services: () => identities?.services() ?? [],
    };
    if (opts.api) {
      // default: the node's underlay address, where other machines reach it
      const addr = opts.api.addr ?? { host: hooks.topology.ip ?? '127.0.0.1', port: API_PORT };
      api = await startTraceApi({
        addr, token: opts.api.token, tls: opts.api.tls, node: opts.node, clock, maxSessions: opts.api.maxSessions, log: opts.log, identities: currentNames,
        onStats: (s) => {
          m.traceSessions.set(s.sessions);
          if (s.streamed) m.traceRecords.inc({ outcome: 'streamed' }, s.streamed);
          if (s.lost) m.traceRecords.inc({ outcome: 'lost' }, s.lost);
        },
      });
    }
    // ready once the node's own devices are attached (and pods' for a moment): the rest of the
    // pods' follow in the background, their progress in nettrace_agent_attached_hooks and /healthz
    const t0 = performance.now();
    const firstSync = hooks.sync();
    await hooks.nodeReady;
    const attachMs = performance.now() - t0;
    const readyHooks = hooks.attachments;
    const readyDevices = hooks.devices;
    const attaching = hooks.pending;

    // pods come and go: a link event triggers a rescan; a slow full rescan catches anything missed
    const timers: NodeJS.Timeout[] = [];
    let pending: NodeJS.Timeout | null = null;
    const soon = () => {
      if (!pending) pending = setTimeout(() => { pending = null; void hooks.sync(); }, 50);
    };
    const ns = ipNs(opts.node);
    const monitor: ChildProcess = spawn('ip', [...(ns ? ['-n', ns] : []), 'monitor', 'link'], { stdio: ['ignore', 'pipe', 'ignore'] });
    monitor.stdout?.on('data', soon);
    monitor.on('error', () => opts.log('warning: `ip monitor link` is unavailable; pods are picked up by the periodic rescan only'));
    timers.push(setInterval(() => void hooks.sync(), opts.rescanMs));
    timers.push(setInterval(poll, POLL_MS));
    netfilter.start();
    timers.push(setInterval(() => clock.measure(), 60_000));
    // freed malloc memory (V8's worker threads' arenas, rescans' buffers) back to the kernel: without,
    // RSS creeps by megabytes over hours of pod churn (the soak of `make bench`)
    timers.push(setInterval(trimMalloc, TRIM_MS));
    timers.push(setInterval(() => { if (identities) joinNames(); }, NAMES_MS));
    wire.start();
    const address = server.address();
    const port = typeof address === 'object' && address ? address.port : opts.metricsAddr.port;
    opts.log(`ready: agent on ${nodeName} (${hooks.topology.cni}): ${readyHooks} hooks on ${readyDevices} devices in ${attachMs.toFixed(0)} ms${attaching ? `, ${attaching} pod devices attaching in the background` : ''}, metrics on ${opts.metricsAddr.host}:${port}${sink ? `, spans to ${opts.otlpEndpoint}` : ''}${api ? `, trace API on ${opts.api!.tls ? 'https' : 'http'}://${hostPort(opts.api!.addr?.host ?? hooks.topology.ip ?? '127.0.0.1', api.port)}` : ', trace API off (no --token-file)'}`);

    let stopped = false;
    // after the first attach: both done a namespace a turn would slow each other down
    if (opts.attach !== 'tcx') void firstSync.then(() => cleanupPods(hooks.topology.pods.map((p) => p.netns), () => stopped, opts.log));
    if (attaching) {
      void firstSync.then(() => {
        if (!stopped) opts.log(`attached: ${hooks.attachments} hooks on ${hooks.devices} devices, every pod's, in ${(performance.now() - t0).toFixed(0)} ms`);
      });
    }
    let retrying = false;
    if (!identities) {
      timers.push(setInterval(() => {
        if (identities || retrying) return;
        retrying = true;
        // said once, at start: a retry that fails again is quiet
        void openIdentitySource(opts.names, () => {}).then((s) => {
          if (s && stopped) s.close();
          else if (s) {
            identities = s;
            opts.log(namedFrom(s, opts));
            joinNames();
          }
        }, () => undefined).finally(() => { retrying = false; });
      }, opts.namesRetryMs ?? NAMES_RETRY_MS));
    }
    const running = server;
    const runningApi = api;
    return {
      port,
      apiPort: api?.port ?? null,
      async stop() {
        if (stopped) return;
        stopped = true;
        for (const t of timers) clearInterval(t);
        netfilter.stop();
        if (pending) clearTimeout(pending);
        monitor.kill();
        // servers first: a scrape or a trace request still in flight must not read a closed object
        // (Prometheus keeps its connection open: close it, or close() waits for it)
        const closed = new Promise<void>((resolve) => running.close(() => resolve()));
        running.closeAllConnections();
        await Promise.all([closed, runningApi?.close()]);
        await hooks.detachAll();
        poll();
        for (const p of grouper.expire(true)) emit(p, null);
        wire.stop();
        identities?.close();
        loaded.close();
        await Promise.race([sink?.shutdown().catch(() => {}), new Promise((r) => setTimeout(r, 3000))]);
      },
    };
  } catch (err) {
    server?.closeAllConnections();
    server?.close();
    await api?.close();
    await hooks.detachAll();
    identities?.close();
    loaded.close();
    await sink?.shutdown().catch(() => {});
    throw err;
  }
}

/** Stale filters in pods' namespaces, one namespace a turn of the event loop, until stopped. */
async function cleanupPods(pods: NetnsRef[], stopped: () => boolean, log: (line: string) => void): Promise<void> {
  let removed = 0;
  for (const ns of pods) {
    await new Promise((r) => setImmediate(r));
    if (stopped()) break;
    try {
      removed += cleanupNetns(ns).length;
    } catch {
      // the pod went meanwhile, and its filters with it
    }
  }
  if (removed) log(`removed ${removed} tc filters a previous nettrace left behind in pods' namespaces`);
}

/** The node's source of pod names, its first list in; a source the user named that fails stops the start. */
async function openNames(opts: AgentOptions): Promise<IdentitySource | null> {
  const source = await openIdentitySource(opts.names, opts.log);
  if (!source) {
    opts.log('pods are named by their network namespace: no source of Kubernetes names (give --kubeconfig, or --cri-socket on a node without API access); tried again every minute');
    return null;
  }
  opts.log(namedFrom(source, opts));
  return source;
}

function namedFrom(source: IdentitySource, opts: AgentOptions): string {
  return `pods are named from ${source.kind === 'cri' ? 'the container runtime' : 'the Kubernetes API server'} (${source.pods().length} pods of ${opts.names.node})`;
}
