// Prometheus metrics of one node's agent: read from the kernel's maps at
// scrape time, so nothing is counted twice and an idle agent does no work.
import { collectDefaultMetrics, Counter, Gauge, Registry, type Metric } from 'prom-client';
import type { DropCount, LatencyHistogram, MapFailures, RetransmitCount } from '../probe/agentProbe';
import { ORDER } from '../probe/layout.generated';

/** Labels of a hook point on this node; null when the node has no device there. */
export interface HookLabels {
  step: number;
  step_name: string;
  device: string;
  hook: string;
}

export interface MetricsSource {
  node: string;
  /** shown as labels of nettrace_agent_info */
  settings?: Record<string, string>;
  latency(): LatencyHistogram[];
  /** step-6 (cross-node) latencies measured in userspace on sampled packets, in ns, since start */
  wireLatency(): { counts: number[]; sumNs: number } | null;
  /** the wire step's bookkeeping: departures kept and lost, peers' answers refused, arrivals paired or not (all since start) */
  wireStats?(): {
    departuresRecorded: number; departuresDropped: number; peerInvalidAnswers: number; peerInvalidEntries: number; peerEvicted: number; unauthorized: number;
    arrivalsPaired: number; arrivalsUnpaired: number; clamped: number;
  };
  drops(): DropCount[];
  retransmits(): RetransmitCount[];
  lostRecords(): number;
  /** counts the kernel could not store because a map was full, since load */
  mapFailures(): MapFailures;
  hookLabels(order: number): HookLabels | null;
  /** a drop last seen at this order: the step that failed (failedStep) and the hook last seen; null when the packet was on no path */
  dropLabels(order: number): HookLabels | null;
  dropReason(reason: number): string;
  podOf(family: number, addr: Uint8Array): { pod: string; ip: string };
}

/** Retransmit series per scrape at most; beyond, flows are summed into destination_ip="other". */
export const MAX_FLOW_SERIES = 1000;

/** underlay ingress: where step 6 (the wire between nodes) ends */

// Bucket bounds: log2 of nanoseconds, 2^7 ns (128 ns) to 2^34 ns (17 s), then +Inf.
const FIRST_BOUND = 7;
const LAST_BOUND = 34;

export const METRIC_NAMES = {
  latency: 'nettrace_hop_latency_seconds',
  drops: 'nettrace_drops_total',
  retransmits: 'nettrace_tcp_retransmits_total',
  retransmitSegments: 'nettrace_tcp_retransmit_segments_total',
  lost: 'nettrace_lost_events_total',
  mapFailures: 'nettrace_map_update_failures_total',
  attachedHooks: 'nettrace_agent_attached_hooks',
  attachErrors: 'nettrace_agent_attach_errors_total',
  sampled: 'nettrace_agent_sampled_packets_total',
  spans: 'nettrace_agent_spans_exported_total',
  exportFailures: 'nettrace_agent_export_failures_total',
  spansDropped: 'nettrace_agent_spans_dropped_total',
  traceSessions: 'nettrace_agent_trace_sessions',
  traceRecords: 'nettrace_agent_trace_records_total',
  wireDepartures: 'nettrace_wire_departures_total',
  wirePeerRefused: 'nettrace_wire_peer_refused_total',
  wireArrivals: 'nettrace_wire_arrivals_total',
  wireClamped: 'nettrace_wire_skew_clamped_total',
  info: 'nettrace_agent_info',
} as const;

type Values = { metricName?: string; labels: Record<string, string | number>; value: number }[];

/**
 * A histogram whose buckets the kernel already counted (log2 ns). prom-client's
 * Histogram can only observe() values one by one, so this is a registry metric
 * of its own that prints the standard _bucket/_sum/_count series.
 */
function kernelHistogram(name: string, help: string, read: () => { labels: Record<string, string | number>; counts: number[]; sumNs: number }[]): Metric {
  const metric = {
    name, help, type: 'histogram', aggregator: 'sum',
    get: async () => {
      const values: Values = [];
      for (const { labels, counts, sumNs } of read()) {
        // bucket b counts [2^b, 2^(b+1)) ns, so everything below b = k is at most 2^k ns
        let cumulative = 0;
        for (let b = 0; b < FIRST_BOUND; b++) cumulative += counts[b] ?? 0;
        for (let k = FIRST_BOUND; k <= LAST_BOUND; k++) {
          if (k > FIRST_BOUND) cumulative += counts[k - 1] ?? 0;
          values.push({ metricName: `${name}_bucket`, labels: { ...labels, le: 2 ** k / 1e9 }, value: cumulative });
        }
        const total = counts.reduce((a, b) => a + b, 0);
        values.push({ metricName: `${name}_bucket`, labels: { ...labels, le: '+Inf' }, value: total });
        values.push({ metricName: `${name}_sum`, labels, value: sumNs / 1e9 });
        values.push({ metricName: `${name}_count`, labels, value: total });
      }
      return { name, help, type: 'histogram', values, aggregator: 'sum' };
    },
    reset: () => {},
  };
  return metric as unknown as Metric;
}

export interface AgentMetrics {
  registry: Registry;
  attachedHooks: Gauge;
  attachErrors: Counter;
  sampled: Counter;
  spans: Counter;
  exportFailures: Counter<'exporter'>;
  /** spans the OTLP queue had no room for: inc({ node }, n) */
  spansDropped: Counter<'node'>;
  traceSessions: Gauge;
  traceRecords: Counter<'outcome'>;
}

export function createMetrics(src: MetricsSource): AgentMetrics {
  const registry = new Registry();
  const node = src.node;
  // the standard process_* and nodejs_* names, without a prefix: what every dashboard and alert for a
  // process already reads. The event-loop lag monitor samples every 10 ms by default: an idle agent should sleep
  collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: 1000 });

  registry.registerMetric(kernelHistogram(METRIC_NAMES.latency,
    'Time from the previous hook point to this one, per step of the path: 1 in latency_every packets (nettrace_agent_info), matched in the kernel; step 6 from sampled packets between agents.',
    () => {
      const out: { labels: Record<string, string | number>; counts: number[]; sumNs: number }[] = [];
      for (const h of src.latency()) {
        // the first hook a receiving node sees (step 6) has no earlier hook on the node: the wire is timed below
        if (h.order === ORDER.UNDERLAY_INGRESS) continue;
        const l = src.hookLabels(h.order);
        if (l) out.push({ labels: { node, step: l.step, step_name: l.step_name, device: l.device, hook: l.hook }, counts: h.counts, sumNs: h.sumNs });
      }
      const wire = src.wireLatency();
      const w = src.hookLabels(ORDER.UNDERLAY_INGRESS);
      if (wire && w) out.push({ labels: { node, step: w.step, step_name: w.step_name, device: w.device, hook: w.hook }, ...wire });
      return out;
    }));

  new Counter({
    name: METRIC_NAMES.drops, help: 'Packets the kernel dropped in this node\'s namespaces, by drop reason and the step that failed (the first the packet did not complete, as diagnose names it).',
    labelNames: ['node', 'reason', 'step', 'step_name', 'device'], registers: [registry],
    collect() {
      this.reset();
      for (const d of src.drops()) {
        const l = src.dropLabels(d.order);
        this.inc({ node, reason: src.dropReason(d.reason), step: l ? String(l.step) : 'none', step_name: l?.step_name ?? 'not on a pod path', device: l?.device ?? '' }, d.count);
      }
    },
  });

  const retransmitLabels = ['node', 'source_pod', 'destination_pod', 'source_ip', 'destination_ip', 'destination_port'] as const;
  // the kernel keys retransmits without the source port: one series per endpoint pair, not per connection
  // both counters read the same map: once per scrape
  let flowCache: { at: number; flows: ReturnType<typeof readFlows> } | null = null;
  const byFlow = () => {
    if (!flowCache || Date.now() - flowCache.at > 500) flowCache = { at: Date.now(), flows: readFlows() };
    return flowCache.flows;
  };
  const readFlows = () => {
    // bounded cardinality: the flows that resend most keep their own series, the rest add up in one
    const all = src.retransmits().sort((a, b) => b.segments - a.segments);
    const keep = all.length <= MAX_FLOW_SERIES ? all : all.slice(0, MAX_FLOW_SERIES - 1);
    const out = keep.map((r) => {
      const s = src.podOf(r.family, r.saddr);
      const d = src.podOf(r.family, r.daddr);
      return {
        labels: { node, source_pod: s.pod, destination_pod: d.pod, source_ip: s.ip, destination_ip: d.ip, destination_port: String(r.dport) },
        retransmits: r.retransmits, segments: r.segments,
      };
    });
    // always there, at 0 until the cap is passed: the series exists before the first retransmit
    const rest = { labels: { node, source_pod: '', destination_pod: '', source_ip: 'other', destination_ip: 'other', destination_port: 'other' }, retransmits: 0, segments: 0 };
    for (let i = keep.length; i < all.length; i++) {
      rest.retransmits += all[i]!.retransmits;
      rest.segments += all[i]!.segments;
    }
    out.push(rest);
    return out;
  };
  for (const [name, help, field] of [
    [METRIC_NAMES.retransmits, 'TCP retransmits (tcp_retransmit_skb calls) by the sockets of this node\'s pods, by flow endpoints (the 1000 worst; the rest under destination_ip="other").', 'retransmits'],
    [METRIC_NAMES.retransmitSegments, 'TCP segments sent again (sum of gso_segs of retransmitted skbs), by flow endpoints.', 'segments'],
  ] as const) {
    new Counter({
      name, help, labelNames: retransmitLabels, registers: [registry],
      collect() {
        this.reset();
        for (const f of byFlow()) this.inc(f.labels, f[field]);
      },
    });
  }
  /** A counter whose values are read at scrape time: one series per value of `label` (none: one series). */
  const readCounter = (name: string, help: string, label: string | null, read: () => Record<string, number>) => new Counter({
    name, help, labelNames: label ? ['node', label] : ['node'], registers: [registry],
    collect() {
      const values = read();
      this.reset();
      for (const [k, v] of Object.entries(values)) this.inc(label ? { node, [label]: k } : { node }, v);
    },
  });
  readCounter(METRIC_NAMES.lost, 'Per-packet records the kernel could not hand over because the ring buffer was full.', null,
    () => ({ all: src.lostRecords() }));
  readCounter(METRIC_NAMES.mapFailures,
    'Kernel map updates that failed because the map was full (or out of memory): map="retransmits" is a new flow\'s retransmit missing from nettrace_tcp_retransmits_total, map="drops" a drop missing from nettrace_drops_total.',
    'map', () => {
      const f = src.mapFailures();
      return { retransmits: f.retransmits, drops: f.drops };
    });
  if (src.wireStats) {
    const stats = src.wireStats;
    readCounter(METRIC_NAMES.wireDepartures, 'Departures of sampled packets this agent logged for its peers (outcome="kept"), and those overwritten before any peer read them ("dropped").',
      'outcome', () => {
        const s = stats();
        return { kept: s.departuresRecorded, dropped: s.departuresDropped };
      });
    readCounter(METRIC_NAMES.wirePeerRefused, 'What the wire step refused: peers\' answers of the wrong shape ("answer"), entries out of shape or time ("entry"), entries evicted at the cap ("evicted"), requests without the token ("unauthorized").',
      'kind', () => {
        const s = stats();
        return { answer: s.peerInvalidAnswers, entry: s.peerInvalidEntries, evicted: s.peerEvicted, unauthorized: s.unauthorized };
      });
    readCounter(METRIC_NAMES.wireArrivals,
      'Sampled packets that arrived from the underlay while peers are set: paired with a peer\'s departure, so step 6 is timed (outcome="paired"), or no peer reported their departure within 2 s ("no_departure": the sending node is not in --peers, its agent did not answer, or it lost the departure): those packets have no step 6.',
      'outcome', () => {
        const s = stats();
        return { paired: s.arrivalsPaired, no_departure: s.arrivalsUnpaired };
      });
    readCounter(METRIC_NAMES.wireClamped,
      'Step-6 times that came out negative because the two nodes\' wall clocks disagree, counted as 0 in nettrace_hop_latency_seconds: a rising rate means step 6 reads low; check NTP on both nodes.',
      null, () => ({ all: stats().clamped }));
  }
  const settings = src.settings ?? {};
  new Gauge({ name: METRIC_NAMES.info, help: 'Always 1; labels tell the node this agent watches and its sampling (latency_every: 1 in N packets timed).', labelNames: ['node', ...Object.keys(settings)], registers: [registry] }).set({ node, ...settings }, 1);

  const exportFailures = new Counter({ name: METRIC_NAMES.exportFailures, help: 'Export batches that failed (the agent keeps running).', labelNames: ['exporter'], registers: [registry] });
  exportFailures.inc({ exporter: 'otlp' }, 0); // a zero series from the start: rate() and alerts see it
  const spansDropped = new Counter({
    name: METRIC_NAMES.spansDropped,
    help: 'Spans dropped because the OTLP export queue was full (the collector is slow or down): those packets\' traces are missing or partial.',
    labelNames: ['node'], registers: [registry],
  });
  spansDropped.inc({ node }, 0);
  return {
    registry,
    attachedHooks: new Gauge({ name: METRIC_NAMES.attachedHooks, help: 'tc hooks the agent has a program on.', registers: [registry] }),
    attachErrors: new Counter({ name: METRIC_NAMES.attachErrors, help: 'Devices the agent failed to attach to.', registers: [registry] }),
    sampled: new Counter({ name: METRIC_NAMES.sampled, help: 'Packets picked by the consistent sampler that became traces.', registers: [registry] }),
    spans: new Counter({ name: METRIC_NAMES.spans, help: 'Spans handed to the OTLP exporter.', registers: [registry] }),
    exportFailures,
    spansDropped,
    traceSessions: new Gauge({ name: METRIC_NAMES.traceSessions, help: 'Trace API sessions open (remote follow/diagnose).', registers: [registry] }),
    traceRecords: new Counter({
      name: METRIC_NAMES.traceRecords, help: 'Hop records of trace sessions: streamed to the caller, or lost because it read too slowly.',
      labelNames: ['outcome'], registers: [registry],
    }),
  };
}
