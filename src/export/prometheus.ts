// Prometheus metrics of one node's agent: read from the kernel's maps at
// scrape time, so nothing is counted twice and an idle agent does no work.
import { collectDefaultMetrics, Counter, Gauge, Registry, type Metric } from 'prom-client';
import type { DropCount, LatencyHistogram, MapFailures, RetransmitCount, StepCount } from '../probe/agentProbe';
import { ORDER } from '../probe/layout.generated';
import { rcodeName } from '../flow/dns';

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
  /** read as it is iterated: an entry's object (and its address bytes) may be reused for the next */
  retransmits(): Iterable<RetransmitCount>;
  lostRecords(): number;
  /** every packet and byte each hook point saw, since load */
  steps?(): StepCount[];
  /** the node's netfilter rules by backend and table, as last read (a background refresh; never read on a scrape) */
  netfilter?(): { rules: NetfilterRuleCount[]; failures: Record<string, number> };
  /** counts the kernel could not store because a map was full, since load */
  mapFailures(): MapFailures;
  /** DNS from packets at the clients' host veths, by the server that answered (text: behind a ClusterIP, the DNS pod's address) */
  dns?(): { latency: { server: string; counts: number[]; sumNs: number }[]; rcodes: { server: string; rcode: number; count: number }[] };
  hookLabels(order: number): HookLabels | null;
  /** a drop last seen at this order: the step that failed (failedStep) and the hook last seen; null when the packet was on no path */
  dropLabels(order: number): HookLabels | null;
  dropReason(reason: number): string;
  /** what labels call an address: never the address itself (src/agent/labels.ts AddressNames) */
  addressName(family: number, addr: Uint8Array): { namespace: string; workload: string; pod: string };
}

export interface NetfilterRuleCount {
  /** iptables: what iptables-save shows (legacy or nft); nftables: nft tables iptables-nft did not make */
  backend: 'iptables' | 'nftables';
  table: string;
  rules: number;
}

/** Retransmit series per scrape at most; beyond, the rest are summed into source_workload="other". */
export const MAX_FLOW_SERIES = 1000;
/** a retransmit series that has not grown for this long is no longer shown (its room goes to others) */
export const FLOW_SERIES_IDLE_MS = 60 * 60_000;

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
  dnsDuration: 'nettrace_dns_request_duration_seconds',
  dnsResponses: 'nettrace_dns_responses_total',
  stepPackets: 'nettrace_step_packets_total',
  stepBytes: 'nettrace_step_bytes_total',
  netfilterRules: 'nettrace_netfilter_rules',
  netfilterFailures: 'nettrace_netfilter_read_failures_total',
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

/** DNS servers with series of their own per scrape; the rest add up in server="other". */
export const MAX_DNS_SERVERS = 64;

/**
 * The DNS servers to label: the MAX_DNS_SERVERS that answered most keep their address, the rest
 * are "other" (a pod asking many servers directly must not make the agent's series unbounded).
 */
export function dnsServerLabels(answers: { server: string; count: number }[], max = MAX_DNS_SERVERS): (server: string) => string {
  const total = new Map<string, number>();
  for (const a of answers) total.set(a.server, (total.get(a.server) ?? 0) + a.count);
  if (total.size <= max) return (s) => s;
  const keep = new Set([...total.entries()].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).slice(0, max - 1).map(([s]) => s));
  return (s) => (keep.has(s) ? s : 'other');
}

function dnsMetrics(registry: Registry, node: string, read: NonNullable<MetricsSource['dns']>): void {
  // both metrics read the same maps: once per scrape
  let cache: { at: number; v: ReturnType<typeof read>; label: (s: string) => string } | null = null;
  const snapshot = () => {
    if (!cache || Date.now() - cache.at > 500) {
      const v = read();
      cache = { at: Date.now(), v, label: dnsServerLabels(v.rcodes) };
    }
    return cache;
  };
  registry.registerMetric(kernelHistogram(METRIC_NAMES.dnsDuration,
    'DNS over UDP: time from a query entering its client pod\'s host veth to its answer leaving it towards the client, by the server that answered (behind a ClusterIP such as kube-dns: the DNS pod kube-proxy chose; the least-answering past 64 as server="other").',
    () => {
      const { v, label } = snapshot();
      // server="other" always there, at 0 until the cap is passed: the series exist before the first query
      const by = new Map<string, { counts: number[]; sumNs: number }>([['other', { counts: new Array<number>(64).fill(0), sumNs: 0 }]]);
      for (const l of v.latency) {
        const s = label(l.server);
        const e = by.get(s) ?? { counts: new Array<number>(l.counts.length).fill(0), sumNs: 0 };
        l.counts.forEach((c, i) => (e.counts[i]! += c));
        e.sumNs += l.sumNs;
        by.set(s, e);
      }
      return [...by].map(([server, e]) => ({ labels: { node, server }, ...e }));
    }));
  new Counter({
    name: METRIC_NAMES.dnsResponses,
    help: 'DNS answers (UDP) seen leaving a host veth towards their client pod, by the server that answered (behind a ClusterIP: the DNS pod) and response code (NOERROR, NXDOMAIN, SERVFAIL, REFUSED, ...; else its number).',
    labelNames: ['node', 'server', 'rcode'], registers: [registry],
    collect() {
      const { v, label } = snapshot();
      this.reset();
      this.inc({ node, server: 'other', rcode: 'NOERROR' }, 0);
      for (const r of v.rcodes) this.inc({ node, server: label(r.server), rcode: rcodeName(r.rcode) }, r.count);
    },
  });
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

const ZERO_LATENCY = { counts: [] as number[], sumNs: 0 };

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
      const seen = new Map<number, { counts: number[]; sumNs: number }>();
      for (const h of src.latency()) seen.set(h.order, h);
      // every hook of this node from the first scrape on, at 0 until timed: a series that appears
      // with its first packets already counted has no increase in rate() and histogram_quantile reads NaN
      for (let order = 0; order < ORDER.COUNT; order++) {
        // the first hook a receiving node sees (step 6) has no earlier hook on the node: the wire is timed below
        if (order === ORDER.UNDERLAY_INGRESS) continue;
        const l = src.hookLabels(order);
        const h = seen.get(order) ?? ZERO_LATENCY;
        if (l) out.push({ labels: { node, step: l.step, step_name: l.step_name, device: l.device, hook: l.hook }, counts: h.counts, sumNs: h.sumNs });
      }
      const w = src.hookLabels(ORDER.UNDERLAY_INGRESS);
      const wire = src.wireLatency();
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

  // by namespace and workload, never by address: an address's series would grow with every peer and pod IP
  const retransmitLabels = ['node', 'source_namespace', 'source_workload', 'source_pod', 'destination_namespace', 'destination_workload', 'destination_port'] as const;
  type RetransmitSeries = { labels: Record<(typeof retransmitLabels)[number], string>; retransmits: number; segments: number };
  // the kernel keys retransmits without the source port: one entry per endpoint pair, not per connection
  // both counters read the same map: once per scrape
  let flowCache: { at: number; flows: RetransmitSeries[] } | null = null;
  const byFlow = () => {
    if (!flowCache || Date.now() - flowCache.at > 500) flowCache = { at: Date.now(), flows: readFlows() };
    return flowCache.flows;
  };
  // Counters must never go down, and what an address is called changes (a pod replaced and its IP
  // reused, a name learned late, a flow entering or leaving the worst): each scrape adds what a
  // kernel entry gained since the last one to the series its addresses are called now, so what was
  // counted stays where it was counted. Entries: one per kernel map entry (bounded by the map).
  const seen = new Map<string, { retransmits: number; segments: number; scrape: number }>();
  let scrapes = 0;
  const series = new Map<string, RetransmitSeries & { at: number }>();
  // always there, at 0 until the cap is passed: the series exists before the first retransmit
  const rest: RetransmitSeries = {
    labels: { node, source_namespace: '', source_workload: 'other', source_pod: '', destination_namespace: '', destination_workload: 'other', destination_port: 'other' },
    retransmits: 0, segments: 0,
  };
  // a map key per kernel entry, as cheap as a string can be made of its bytes (100k entries a scrape)
  const bytes = (a: Uint8Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('latin1');
  const readFlows = (): RetransmitSeries[] => {
    const now = Date.now();
    const scrape = ++scrapes;
    // this scrape's gains, flows of one workload pair added up
    const gains = new Map<string, RetransmitSeries>();
    for (const r of src.retransmits()) {
      const id = r.id ?? `${r.family}${bytes(r.saddr)}${bytes(r.daddr)}${r.dport}`;
      const before = seen.get(id);
      const retransmits = Math.max(0, r.retransmits - (before?.retransmits ?? 0));
      const segments = Math.max(0, r.segments - (before?.segments ?? 0));
      // updated in place: no new object per entry and scrape
      if (before) {
        before.retransmits = r.retransmits;
        before.segments = r.segments;
        before.scrape = scrape;
      } else seen.set(id, { retransmits: r.retransmits, segments: r.segments, scrape });
      if (!retransmits && !segments) continue;
      const s = src.addressName(r.family, r.saddr);
      const d = src.addressName(r.family, r.daddr);
      // names never hold a NUL: a cheap key, the labels object only for a new series
      const key = `${s.namespace}\0${s.workload}\0${s.pod}\0${d.namespace}\0${d.workload}\0${r.dport}`;
      const g = gains.get(key);
      if (g) {
        g.retransmits += retransmits;
        g.segments += segments;
      } else {
        const labels = {
          node, source_namespace: s.namespace, source_workload: s.workload, source_pod: s.pod,
          destination_namespace: d.namespace, destination_workload: d.workload, destination_port: String(r.dport),
        };
        gains.set(key, { labels, retransmits, segments });
      }
    }
    // bounded cardinality: a new series while there is room (the worst of a scrape first), else "other"
    for (const [key, g] of [...gains].sort((a, b) => b[1].segments - a[1].segments)) {
      let e = series.get(key);
      if (!e && series.size < MAX_FLOW_SERIES - 1) series.set(key, e = { labels: g.labels, retransmits: 0, segments: 0, at: now });
      const into = e ?? rest;
      into.retransmits += g.retransmits;
      into.segments += g.segments;
      if (e) e.at = now;
    }
    // an entry the kernel map no longer has is forgotten: seen stays the size of the map
    for (const [id, e] of seen) if (e.scrape !== scrape) seen.delete(id);
    // a series that stopped growing goes after a while (its pods are likely gone): the room is for live ones
    for (const [key, e] of series) if (now - e.at > FLOW_SERIES_IDLE_MS) series.delete(key);
    return [...series.values(), rest];
  };
  for (const [name, help, field] of [
    [METRIC_NAMES.retransmits, 'TCP retransmits (tcp_retransmit_skb calls) by the sockets of this node\'s pods, by the namespace and workload (or pod) of both ends and the destination port (at most 1000 series, the worst of a scrape first, each gone after an hour without growing; what has no room is under source_workload="other"). A workload of "unknown" is in the pod network but no source of names knows it, "node" this node\'s own address, "external" anything else (other nodes, outside the cluster).', 'retransmits'],
    [METRIC_NAMES.retransmitSegments, 'TCP segments sent again (sum of gso_segs of retransmitted skbs), by the namespace and workload of both ends and the destination port.', 'segments'],
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
  if (src.steps) {
    const steps = src.steps;
    // both counters read the same map: once per scrape
    let stepCache: { at: number; steps: StepCount[] } | null = null;
    const readSteps = () => {
      if (!stepCache || Date.now() - stepCache.at > 500) stepCache = { at: Date.now(), steps: steps() };
      return stepCache.steps;
    };
    for (const [name, help, field] of [
      [METRIC_NAMES.stepPackets, 'Every packet each hook point of the path saw (not only the timed ones), by step as in nettrace_hop_latency_seconds: wire packets, so a GSO/GRO skb counts as the segments it carries. Pod-side devices are summed as pod-veths / pod-eth.', 'packets'],
      [METRIC_NAMES.stepBytes, 'Bytes each hook point of the path saw: skb->len from the Ethernet header as the hook sees it, so on the underlay (steps 5 and 6) it includes the tunnel\'s encapsulation, and a GSO skb\'s headers count once.', 'bytes'],
    ] as const) {
      new Counter({
        name, help, labelNames: ['node', 'step', 'step_name', 'device', 'hook'], registers: [registry],
        collect() {
          this.reset();
          for (const c of readSteps()) {
            const l = src.hookLabels(c.order);
            if (l) this.inc({ node, step: String(l.step), step_name: l.step_name, device: l.device, hook: l.hook }, c[field]);
          }
        },
      });
    }
  }
  if (src.netfilter) {
    const netfilter = src.netfilter;
    new Gauge({
      name: METRIC_NAMES.netfilterRules,
      help: 'Netfilter rules in this node\'s network namespace by table, read every 30 s: backend="iptables" is what iptables-save and ip6tables-save list (kube-proxy\'s rules), backend="nftables" the rules of nft tables that iptables-nft did not make (table "FAMILY NAME").',
      labelNames: ['node', 'backend', 'table'], registers: [registry],
      collect() {
        this.reset();
        for (const r of netfilter().rules) this.set({ node, backend: r.backend, table: r.table }, r.rules);
      },
    });
    readCounter(METRIC_NAMES.netfilterFailures, 'Reads of the node\'s netfilter rules that failed or timed out, by backend: nettrace_netfilter_rules keeps the last good count.',
      'backend', () => netfilter().failures);
  }
  readCounter(METRIC_NAMES.lost, 'Per-packet records the kernel could not hand over because the ring buffer was full.', null,
    () => ({ all: src.lostRecords() }));
  readCounter(METRIC_NAMES.mapFailures,
    'Kernel map updates that failed because the map was full (or out of memory): map="retransmits" is a new flow\'s retransmit missing from nettrace_tcp_retransmits_total, map="drops" a drop missing from nettrace_drops_total, map="dns" a DNS query not timed or an answer not counted.',
    'map', () => {
      const f = src.mapFailures();
      return { retransmits: f.retransmits, drops: f.drops, dns: f.dns ?? 0 };
    });
  if (src.dns) dnsMetrics(registry, node, src.dns.bind(src));
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
