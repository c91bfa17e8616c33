// nettrace agent: one per node. Keeps the aggregate programs on every step device of the
// node (and on pod veths as pods come and go), serves Prometheus metrics, sends sampled
// packets as OTLP traces, and detaches everything when stopped.
import { spawn, type ChildProcess } from 'node:child_process';
import type { Server } from 'node:http';
import { readBtfEnum } from '../libbpf';
import { NettraceError } from '../errors';
import { serve, type ListenAddress } from '../export/http';
import type { SpanSink } from '../export/otel';
import { createMetrics, type HookLabels, type MetricsSource } from '../export/prometheus';
import { addrString } from '../flow/assemble';
import { SampleGrouper, type SampledPacket } from '../flow/sampled';
import { DepartureLog, Log2Histogram, PeerDepartures } from '../flow/wire';
import { AggregateProbe } from '../probe/aggregate';
import { attachEach, type AttachMechanism, type HookSet } from '../probe/attach';
import { cleanupNetns } from '../probe/cleanup';
import { decodeHopRecord, ORDER } from '../probe/layout.generated';
import { discoverNode, podAddresses } from '../topology/discover';
import type { Device, NodeTopology } from '../topology/model';
import type { NetnsRef } from '../topology/netns';
import { ipNs } from '../topology/netns';
import { ORDER_POINTS, orderOf, presentRoles, STEP_NAMES, stepAfter, stepOn } from '../topology/steps';

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
  log: (line: string) => void;
}

export interface RunningAgent {
  port: number;
  stop(): Promise<void>;
}

const POLL_MS = 50;
const PEER_POLL_MS = 500;
const WIRE_WAIT_MS = 2000;
/** what a device's two hooks carry for the aggregate: aggregated over pods for pod-side devices */
const POD_DEVICE_LABEL: Record<string, string> = { pod: 'pod-eth', 'host-veth': 'pod-veths' };

function devKey(d: Device): string {
  return `${d.netns.ino}:${d.ifindex}`;
}

function nodeDevices(t: NodeTopology): Device[] {
  return [t.underlay, t.tunnel, t.bridge, ...t.pods.flatMap((p) => [p.hostVeth, p.eth])].filter((d): d is Device => d !== null);
}

/** Monotonic (bpf_ktime_get_ns, CLOCK_MONOTONIC) to wall-clock ns, re-measured while running (design §4). */
class WallClock {
  private offset = 0n;

  constructor() {
    this.measure();
  }

  measure(): void {
    const wall = BigInt(Math.round((performance.timeOrigin + performance.now()) * 1e3)) * 1000n;
    this.offset = wall - process.hrtime.bigint();
  }

  wallNs(tsNs: number): bigint {
    return BigInt(Math.round(tsNs)) + this.offset;
  }
}

export async function startAgent(opts: AgentOptions): Promise<RunningAgent> {
  const nodeName = opts.node.name;
  // pods' addresses (only labels need them) are read after attaching, a few at a time
  const discover = () => discoverNode(opts.node, new Set(), { podDetails: false });
  let topology = discover();
  const podIpCache = new Map<string, string[]>();
  const vxlanPort = topology.tunnel?.vxlan?.port;
  const dropReasons = readBtfEnum('skb_drop_reason');
  const probe = AggregateProbe.load({ vxlanPorts: vxlanPort ? [vxlanPort] : [8472, 4789], sampleEvery: opts.sample, latencyEvery: opts.latencyEvery });
  const clock = new WallClock();
  const hooks = new Map<string, { device: Device; set: HookSet }>();
  const wire = new Log2Histogram();
  const departures = new DepartureLog();
  // a peer that does not answer means no step 6: say so, once a minute at most
  const peerWarned = new Map<string, number>();
  const peers = new PeerDepartures(opts.peers, (peer, err) => {
    if (Date.now() - (peerWarned.get(peer) ?? 0) < 60_000) return;
    peerWarned.set(peer, Date.now());
    opts.log(`warning: peer ${peer} did not answer (${err.message}): no step-6 timing from it`);
  });
  const grouper = new SampleGrouper();
  const waiting: { p: SampledPacket; sinceMs: number }[] = [];
  let sink: SpanSink | null = null;
  let server: Server | null = null;
  let monitor: ChildProcess | null = null;
  const timers: NodeJS.Timeout[] = [];
  let stopped = false;
  let attachMs = 0;

  const roleDevice = (role: string): Device | null =>
    role === 'underlay' ? topology.underlay : role === 'tunnel' ? topology.tunnel : role === 'bridge' ? topology.bridge : null;
  const hookLabels = (order: number): HookLabels | null => {
    const p = ORDER_POINTS[order];
    if (!p) return null;
    const device = POD_DEVICE_LABEL[p.role] ?? roleDevice(p.role)?.name;
    if (!device) return null;
    // a mode without a tunnel or a bridge: the hook ends another step (host-gw: routing ends at eth0)
    const step = stepOn(p.side, p.role, p.hook, presentRoles(topology)) ?? p.step;
    return { step, step_name: STEP_NAMES[step]!, device, hook: p.hook };
  };
  const dropReason = (r: number) => (dropReasons.get(r) ?? `REASON_${r}`).replace(/^SKB_DROP_REASON_/, '');
  let podByIp = new Map<string, string>();
  const indexPodIps = () => {
    podByIp = new Map(topology.pods.flatMap((p) => (podIpCache.get(p.name) ?? []).map((ip) => [ip, p.name] as const)));
  };
  let learning = false;
  const learnAddresses = async () => {
    if (learning) return;
    learning = true;
    try {
      for (const p of topology.pods) {
        if (stopped) return;
        if (podIpCache.has(p.name)) continue;
        podIpCache.set(p.name, await podAddresses(p).catch(() => [])); // a pod gone meanwhile has none
        indexPodIps();
      }
    } finally {
      learning = false;
    }
  };

  const source: MetricsSource = {
    node: nodeName,
    settings: { cni: topology.cni, sample: String(opts.sample), latency_every: String(opts.latencyEvery) },
    latency: () => probe.latency(),
    wireLatency: () => (peers.enabled ? { counts: wire.counts, sumNs: wire.sumNs } : null),
    drops: () => probe.drops(),
    retransmits: () => probe.retransmits(),
    lostRecords: () => probe.lostRecords(),
    hookLabels,
    dropLabels: (order) => {
      if (order === ORDER.NONE) return null;
      const seenAt = hookLabels(order);
      const step = stepAfter(order);
      return { step, step_name: STEP_NAMES[step]!, device: seenAt?.device ?? '', hook: seenAt?.hook ?? '' };
    },
    dropReason,
    podOf: (family, addr) => {
      const ip = addrString(addr, family);
      return { ip, pod: podByIp.get(ip) ?? '' };
    },
  };
  const metrics = createMetrics(source);

  /** Attach to devices that appeared, release those that went. One at a time: a rescan waits for the last. */
  let syncing: Promise<void> | null = null;
  let again = false;
  const syncOnce = async () => {
    try {
      topology = discover();
    } catch (err) {
      opts.log(`warning: rescanning ${nodeName} failed: ${(err as Error).message}`);
      return;
    }
    const want = new Map(nodeDevices(topology).map((d) => [devKey(d), d]));
    const gone = [...hooks.keys()].filter((key) => !want.has(key));
    for (const key of gone) {
      hooks.get(key)!.set.detach();
      hooks.delete(key);
    }
    const fresh = [...want].filter(([key]) => !hooks.has(key)).map(([, d]) => d);
    const { attached, failed } = attachEach(fresh, (d, dir) => probe.program(orderOf(d.role, dir).order), opts.attach);
    for (const { device, set } of attached) {
      if (stopped) set.detach();
      else hooks.set(devKey(device), { device, set });
    }
    for (const { error } of failed) {
      metrics.attachErrors.inc();
      opts.log(`warning: ${error.message}`);
    }
    probe.watchNetns([opts.node.ino, ...topology.pods.map((p) => p.netns.ino)]);
    const live = new Set(topology.pods.map((p) => p.name));
    for (const name of podIpCache.keys()) if (!live.has(name)) podIpCache.delete(name);
    indexPodIps();
    void learnAddresses();
    metrics.attachedHooks.set([...hooks.values()].reduce((n, h) => n + h.set.attachments.length, 0));
  };
  const sync = (): Promise<void> => {
    if (stopped) return Promise.resolve();
    if (syncing) {
      again = true;
      return syncing;
    }
    syncing = syncOnce().finally(() => {
      syncing = null;
      if (again && !stopped) {
        again = false;
        void sync();
      }
    });
    return syncing;
  };

  const emit = (p: SampledPacket, departure: { wallNs: bigint; node: string } | null) => {
    metrics.sampled.inc();
    if (!sink) return;
    metrics.spans.inc(sink.packet(p, departure));
  };
  const onPacket = (p: SampledPacket) => {
    const last = p.hops[p.hops.length - 1];
    if (last?.order === ORDER.UNDERLAY_EGRESS) departures.record(p.traceId, clock.wallNs(last.tsNs));
    if (p.hops[0]?.order === ORDER.UNDERLAY_INGRESS && peers.enabled) waiting.push({ p, sinceMs: Date.now() });
    else emit(p, null);
  };
  const pairArrivals = () => {
    const now = Date.now();
    for (let i = 0; i < waiting.length; ) {
      const { p, sinceMs } = waiting[i]!;
      const d = peers.get(p.traceId);
      if (d || now - sinceMs > WIRE_WAIT_MS) {
        waiting.splice(i, 1);
        if (d) wire.observe(Math.max(0, Number(clock.wallNs(p.hops[0]!.tsNs) - d.wallNs)));
        emit(p, d ?? null);
      } else {
        i++;
      }
    }
  };
  const poll = () => {
    probe.drain((view, offset) => {
      const { packet, retransmit } = grouper.add(decodeHopRecord(view, offset));
      if (packet) onPacket(packet);
      if (retransmit && sink) {
        sink.retransmit(retransmit);
        metrics.spans.inc();
      }
    });
    for (const p of grouper.expire()) onPacket(p);
    pairArrivals();
  };

  try {
    server = await serve(opts.metricsAddr, {
      '/metrics': async () => ({ status: 200, type: metrics.registry.contentType, body: await metrics.registry.metrics() }),
      '/healthz': async () => ({
        status: 200, type: 'application/json',
        body: JSON.stringify({ status: 'ok', node: nodeName, attached_hooks: [...hooks.values()].reduce((n, h) => n + h.set.attachments.length, 0) }) + '\n',
      }),
      '/v1/departures': async (url) => ({
        status: 200, type: 'application/json',
        body: JSON.stringify({ node: nodeName, departures: departures.since(BigInt(/^\d+$/.test(url.searchParams.get('since') ?? '') ? url.searchParams.get('since')! : '0')) }),
      }),
    });
    if (opts.otlpEndpoint) {
      // loaded only when spans are wanted: the SDK is most of the agent's memory
      const { SpanSink } = await import('../export/otel');
      sink = new SpanSink({
        endpoint: opts.otlpEndpoint, node: nodeName, wallNs: (ts) => clock.wallNs(ts), hookLabels, dropReason, log: opts.log,
        onExport: (ok) => { if (!ok) metrics.exportFailures.inc({ exporter: 'otlp' }); },
      });
    }
    if (opts.attach === 'tc') {
      // classic tc filters outlive a killed agent: the next start removes them
      const removed = [opts.node, ...topology.pods.map((p) => p.netns)].flatMap(cleanupNetns);
      if (removed.length) opts.log(`removed ${removed.length} tc filters a previous nettrace left behind`);
    }
    const t0 = performance.now();
    await sync();
    attachMs = performance.now() - t0;
  } catch (err) {
    for (const h of hooks.values()) h.set.detach();
    hooks.clear();
    probe.close();
    server?.close();
    await sink?.shutdown().catch(() => {});
    throw err;
  }

  // pods come and go: a link event triggers a rescan; a slow full rescan catches anything missed
  let pending: NodeJS.Timeout | null = null;
  const soon = () => {
    if (!pending) pending = setTimeout(() => { pending = null; void sync(); }, 50);
  };
  const ns = ipNs(opts.node);
  monitor = spawn('ip', [...(ns ? ['-n', ns] : []), 'monitor', 'link'], { stdio: ['ignore', 'pipe', 'ignore'] });
  monitor.stdout?.on('data', soon);
  monitor.on('error', () => opts.log('warning: `ip monitor link` is unavailable; pods are picked up by the periodic rescan only'));
  timers.push(setInterval(() => void sync(), opts.rescanMs));
  timers.push(setInterval(poll, POLL_MS));
  timers.push(setInterval(() => clock.measure(), 60_000));
  if (peers.enabled) {
    let busy = false;
    timers.push(setInterval(() => {
      if (busy) return;
      busy = true;
      void peers.poll().finally(() => (busy = false));
    }, PEER_POLL_MS));
  }
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : opts.metricsAddr.port;
  opts.log(`ready: agent on ${nodeName} (${topology.cni}): ${[...hooks.values()].reduce((n, h) => n + h.set.attachments.length, 0)} hooks on ${hooks.size} devices in ${attachMs.toFixed(0)} ms, metrics on ${opts.metricsAddr.host}:${port}${sink ? `, spans to ${opts.otlpEndpoint}` : ''}`);

  return {
    port,
    async stop() {
      if (stopped) return;
      stopped = true;
      for (const t of timers) clearInterval(t);
      if (pending) clearTimeout(pending);
      monitor?.kill();
      await syncing;
      // tcx: each link's release waits for an RCU grace period (~10 ms here)
      for (const h of hooks.values()) h.set.detach();
      hooks.clear();
      poll();
      for (const p of grouper.expire(true)) emit(p, null);
      for (const { p } of waiting.splice(0)) emit(p, null);
      probe.close();
      await Promise.race([sink?.shutdown().catch(() => {}), new Promise((r) => setTimeout(r, 3000))]);
      // Prometheus keeps its connection open: close it, or close() waits for it
      const closed = new Promise<void>((resolve) => server!.close(() => resolve()));
      server!.closeAllConnections();
      await closed;
    },
  };
}

export function agentNodeError(names: string[]): NettraceError {
  return new NettraceError('USAGE', `an agent watches one node, not ${names.length} (${names.join(', ')})`,
    'start one agent per node, e.g. `nettrace agent --nodes node1` and `nettrace agent --nodes node2`');
}
