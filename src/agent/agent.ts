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
import type { AttachMechanism } from '../probe/attach';
import { cleanupNetns } from '../probe/cleanup';
import { decodeHopRecord } from '../probe/layout.generated';
import type { NetnsRef } from '../topology/netns';
import { ipNs } from '../topology/netns';
import { dropReasonName } from '../session/localFeed';
import { WallClock } from '../flow/clock';
import { NodeHooks } from './hooks';
import { dropLabels, hookLabels } from './labels';
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
  attach: AttachMechanism;
  /** full rescan of the node's devices even without a link event */
  rescanMs: number;
  /** the trace API for remote follow/diagnose; null: off */
  api: { addr: ListenAddress | null; token: string; tls: { certFile: string; keyFile: string } | null; maxSessions: number } | null;
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
  const hooks = new NodeHooks({
    node: opts.node, attach: opts.attach, log: opts.log,
    program: (order) => probe!.program(order),
    watchNetns: (inos) => probe!.watchNetns(inos),
    onAttachError: (message) => {
      metrics?.attachErrors.inc();
      opts.log(`warning: ${message}`);
    },
    onSynced: () => metrics?.attachedHooks.set(hooks.attachments),
  });
  const vxlanPort = hooks.topology.tunnel?.vxlan?.port;
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
      mapFailures: () => loaded.mapFailures(),
      hookLabels: (order) => hookLabels(hooks.topology, order),
      dropLabels: (order) => dropLabels(hooks.topology, order),
      dropReason: dropReasonName,
      podOf: (family, addr) => {
        const ip = addrString(addr, family);
        return { ip, pod: hooks.podOf(ip) };
      },
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
          body: JSON.stringify({ status: ok ? 'ok' : 'no hook attached', node: nodeName, attached_hooks: hooks.attachments }) + '\n',
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
        onExport: (ok) => { if (!ok) m.exportFailures.inc({ exporter: 'otlp' }); },
        onDropped: (n) => m.spansDropped.inc({ node: nodeName }, n),
      });
    }
    if (opts.attach === 'tc') {
      // classic tc filters outlive a killed agent: the next start removes them
      const removed = [opts.node, ...hooks.topology.pods.map((p) => p.netns)].flatMap(cleanupNetns);
      if (removed.length) opts.log(`removed ${removed.length} tc filters a previous nettrace left behind`);
    }
    if (opts.api) {
      // default: the node's underlay address, where other machines reach it
      const addr = opts.api.addr ?? { host: hooks.topology.ip ?? '127.0.0.1', port: API_PORT };
      api = await startTraceApi({
        addr, token: opts.api.token, tls: opts.api.tls, node: opts.node, clock, maxSessions: opts.api.maxSessions, log: opts.log,
        onStats: (s) => {
          m.traceSessions.set(s.sessions);
          if (s.streamed) m.traceRecords.inc({ outcome: 'streamed' }, s.streamed);
          if (s.lost) m.traceRecords.inc({ outcome: 'lost' }, s.lost);
        },
      });
    }
    const t0 = performance.now();
    await hooks.sync();
    const attachMs = performance.now() - t0;

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
    timers.push(setInterval(() => clock.measure(), 60_000));
    wire.start();
    const address = server.address();
    const port = typeof address === 'object' && address ? address.port : opts.metricsAddr.port;
    opts.log(`ready: agent on ${nodeName} (${hooks.topology.cni}): ${hooks.attachments} hooks on ${hooks.devices} devices in ${attachMs.toFixed(0)} ms, metrics on ${opts.metricsAddr.host}:${port}${sink ? `, spans to ${opts.otlpEndpoint}` : ''}${api ? `, trace API on ${opts.api!.tls ? 'https' : 'http'}://${hostPort(opts.api!.addr?.host ?? hooks.topology.ip ?? '127.0.0.1', api.port)}` : ', trace API off (no --token-file)'}`);

    let stopped = false;
    const running = server;
    const runningApi = api;
    return {
      port,
      apiPort: api?.port ?? null,
      async stop() {
        if (stopped) return;
        stopped = true;
        for (const t of timers) clearInterval(t);
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
        loaded.close();
        await Promise.race([sink?.shutdown().catch(() => {}), new Promise((r) => setTimeout(r, 3000))]);
      },
    };
  } catch (err) {
    server?.closeAllConnections();
    server?.close();
    await api?.close();
    await hooks.detachAll();
    loaded.close();
    await sink?.shutdown().catch(() => {});
    throw err;
  }
}
