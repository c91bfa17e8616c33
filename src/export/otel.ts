// Sampled packets as OpenTelemetry traces over OTLP/HTTP. Ids come from
// the packet, not from chance: every node's agent puts its spans of one packet in the
// same trace, under the same root span id, with no aggregator in between.
import { context, trace, TraceFlags, type Context, type HrTime, type Tracer } from '@opentelemetry/api';
import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { detectResources, envDetector, resourceFromAttributes } from '@opentelemetry/resources';
import {
  BatchSpanProcessor, TracerProvider, type BatchSpanProcessorOptions, type IdGenerator, type ReadableSpan, type Span, type SpanExporter, type SpanProcessor,
} from '@opentelemetry/sdk-trace';
import { otlpTracesUrl } from './otlpUrl';
import { stepSpanId, type Retransmit, type SampledPacket } from '../flow/sampled';
import { ORDER } from '../probe/layout.generated';
import type { HookLabels } from './prometheus';

/** Hands out the ids we derived; random ones only if asked without (never, in practice). */
class DerivedIds implements IdGenerator {
  nextTraceId: string | null = null;
  nextSpanId: string | null = null;

  generateTraceId(): string {
    const id = this.nextTraceId ?? randomHex(32);
    this.nextTraceId = null;
    return id;
  }

  generateSpanId(): string {
    const id = this.nextSpanId ?? randomHex(16);
    this.nextSpanId = null;
    return id;
  }
}

function randomHex(n: number): string {
  let s = '';
  while (s.length < n) s += Math.floor(Math.random() * 16).toString(16);
  return s;
}

/** Counts and reports failed exports; the agent carries on whatever the collector does. */
class CountingExporter implements SpanExporter {
  private lastLogMs = 0;

  constructor(private readonly inner: SpanExporter, private readonly onResult: (ok: boolean, spans: number, err?: Error) => void) {}

  export(spans: ReadableSpan[], done: (r: ExportResult) => void): void {
    this.inner.export(spans, (r) => {
      this.onResult(r.code === ExportResultCode.SUCCESS, spans.length, r.error);
      done(r);
    });
  }

  shutdown(): Promise<void> {
    return this.inner.shutdown();
  }

  forceFlush(): Promise<void> {
    return this.inner.forceFlush?.() ?? Promise.resolve();
  }

  /** At most one line every 30 s: a collector that is down must not flood the log. */
  shouldLog(): boolean {
    const now = Date.now();
    if (now - this.lastLogMs < 30_000) return false;
    this.lastLogMs = now;
    return true;
  }
}

/**
 * A BatchSpanProcessor whose overflow is counted: when its queue is full the SDK drops spans with
 * a debug line only. Its queue holds the spans handed over and not yet given to the exporter, so
 * this keeps that count too and refuses, and counts, what the queue would drop.
 */
export class CountedBatchProcessor implements SpanProcessor {
  private readonly inner: BatchSpanProcessor;
  private readonly maxQueueSize: number;
  private readonly onDropped: (spans: number) => void;
  private queued = 0;
  private closed = false;
  private droppedCount = 0;

  constructor(opts: BatchSpanProcessorOptions & { maxQueueSize: number; onDropped(spans: number): void }) {
    const { onDropped, exporter, ...rest } = opts;
    this.maxQueueSize = opts.maxQueueSize;
    this.onDropped = onDropped;
    // spans leave the queue when the processor hands them to its exporter
    const leaving: SpanExporter = {
      export: (spans, done) => {
        this.queued = Math.max(0, this.queued - spans.length);
        exporter.export(spans, done);
      },
      shutdown: () => exporter.shutdown(),
      forceFlush: () => exporter.forceFlush?.() ?? Promise.resolve(),
    };
    this.inner = new BatchSpanProcessor({ ...rest, exporter: leaving });
  }

  /** spans refused because the queue was full, since the start */
  get dropped(): number {
    return this.droppedCount;
  }

  onStart(span: Span, parent: Context): void {
    this.inner.onStart(span, parent);
  }

  onEnd(span: ReadableSpan): void {
    // the processor ignores unsampled spans, and takes nothing once shut down
    if (!this.closed && span.spanContext().traceFlags & TraceFlags.SAMPLED) {
      if (this.queued >= this.maxQueueSize) {
        this.droppedCount++;
        this.onDropped(1);
        return;
      }
      this.queued++;
    }
    this.inner.onEnd(span);
  }

  forceFlush(): Promise<void> {
    return this.inner.forceFlush();
  }

  shutdown(): Promise<void> {
    this.closed = true;
    return this.inner.shutdown();
  }
}

export interface SpanSinkOptions {
  endpoint: string;
  node: string;
  /** wall-clock ns of a bpf_ktime_get_ns() value */
  wallNs: (tsNs: number) => bigint;
  hookLabels: (order: number) => HookLabels | null;
  /** a drop last seen at this order: the step that failed (as nettrace_drops_total labels it) */
  dropLabels: (order: number) => HookLabels | null;
  dropReason: (reason: number) => string;
  onExport: (ok: boolean, spans: number) => void;
  /** spans dropped because the export queue was full */
  onDropped?: (spans: number) => void;
  /** the Kubernetes node name (the resource's k8s.node.name); absent off Kubernetes */
  k8sNode?: string;
  /** an address's pod: whether it runs on this node, and its Kubernetes name when a source of names knows it */
  podOf?: (ip: string) => { local: boolean; k8s: { namespace: string; name: string } | null };
  log: (line: string) => void;
}

/**
 * The resource of the agent's spans: ours, then what OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES
 * say, which win (the environment is how a deployment names its services).
 */
export function agentResource(node: string, k8sNode?: string) {
  return resourceFromAttributes({ 'service.name': 'nettrace-agent', 'host.name': node, 'nettrace.node': node, ...(k8sNode ? { 'k8s.node.name': k8sNode } : {}) })
    .merge(detectResources({ detectors: [envDetector] }));
}

/**
 * The pod a packet belongs to on this node, as OpenTelemetry names it (k8s.namespace.name,
 * k8s.pod.name): the sender when it runs here, else the receiver. The other end is the peer; OTel
 * has no peer-pod convention, so it is nettrace.peer.*. Nothing for an end no source of names knows.
 */
export function podAttributes(podOf: SpanSinkOptions['podOf'], src: string, dst: string): Record<string, string> {
  if (!podOf) return {};
  const s = podOf(src);
  const d = podOf(dst);
  const [own, peer] = s.local ? [s, d] : d.local ? [d, s] : [null, null];
  const out: Record<string, string> = {};
  if (own?.k8s) {
    out['k8s.namespace.name'] = own.k8s.namespace;
    out['k8s.pod.name'] = own.k8s.name;
  }
  if (peer?.k8s) {
    out['nettrace.peer.namespace'] = peer.k8s.namespace;
    out['nettrace.peer.pod'] = peer.k8s.name;
  }
  return out;
}

/** OpenTelemetry's network.io.direction for a tc hook. */
const IO_DIRECTION: Record<string, string> = { ingress: 'receive', egress: 'transmit' };

export class SpanSink {
  // the trace SDK alone, not @opentelemetry/sdk-node: one tracer, nothing global, no instrumentations
  private readonly provider: TracerProvider;
  private readonly ids = new DerivedIds();
  private readonly tracer: Tracer;

  constructor(private readonly opts: SpanSinkOptions) {
    const counting: CountingExporter = new CountingExporter(new OTLPTraceExporter({ url: otlpTracesUrl(opts.endpoint), timeoutMillis: 5000 }), (ok, n, err) => {
      opts.onExport(ok, n);
      if (!ok && counting.shouldLog()) opts.log(`warning: OTLP export of ${n} spans to ${opts.endpoint} failed: ${err?.message ?? 'unknown error'} (counted in nettrace_agent_export_failures_total; retrying with the next batch)`);
    });
    let lastDropLogMs = 0;
    this.provider = new TracerProvider({
      resource: agentResource(opts.node, opts.k8sNode),
      spanProcessors: [new CountedBatchProcessor({
        exporter: counting, scheduledDelayMillis: 500, maxQueueSize: 8192, maxExportBatchSize: 512,
        onDropped: (n) => {
          opts.onDropped?.(n);
          if (Date.now() - lastDropLogMs < 30_000) return;
          lastDropLogMs = Date.now();
          opts.log(`warning: the OTLP export queue to ${opts.endpoint} is full: spans are dropped (counted in nettrace_agent_spans_dropped_total)`);
        },
      })],
      idGenerator: this.ids,
    });
    this.tracer = this.provider.getTracer('nettrace');
  }

  /**
   * One span per step this node saw. A step's span runs from the previous hook on this
   * node to the hook that ends the step; the first hook of the sending node is step 1
   * (a point), and step 6 spans the wire when the sender's departure is known.
   */
  packet(p: SampledPacket, departure: { wallNs: bigint; node: string } | null): number {
    const parent = trace.setSpanContext(context.active(), { traceId: p.traceId, spanId: p.rootSpanId, traceFlags: TraceFlags.SAMPLED, isRemote: true });
    // OpenTelemetry's semantic conventions where they have a name for it, nettrace.* where not
    const common = {
      'nettrace.node': this.opts.node, 'network.transport': protoName(p.proto), 'network.type': p.family === 6 ? 'ipv6' : 'ipv4',
      'source.address': p.src, 'destination.address': p.dst, 'source.port': p.sport, 'destination.port': p.dport,
      ...podAttributes(this.opts.podOf, p.src, p.dst),
    };
    let spans = 0;
    const first = p.hops[0];
    if (first && first.order === ORDER.POD_EGRESS) {
      // the sender's node opens the trace: its root span is the packet
      this.ids.nextTraceId = p.traceId;
      this.ids.nextSpanId = p.rootSpanId;
      const last = p.hops[p.hops.length - 1]!;
      // span names stay few (a backend groups by them): the addresses are attributes
      const root = this.tracer.startSpan(`packet ${protoName(p.proto)}`, { root: true, startTime: this.wall(first.tsNs), attributes: common });
      root.end(this.wall(last.tsNs));
      spans++;
    }
    for (let i = 0; i < p.hops.length; i++) {
      const hop = p.hops[i]!;
      const prev = i > 0 ? p.hops[i - 1]! : null;
      const l = this.opts.hookLabels(hop.order);
      if (!l) continue;
      let start: HrTime = this.wall(prev?.tsNs ?? hop.tsNs);
      // the step's latency is the span's duration: no attribute repeats it
      const attrs: Record<string, string | number> = {
        ...common, 'nettrace.step': l.step, 'nettrace.step_name': l.step_name, 'network.interface.name': l.device, 'network.io.direction': IO_DIRECTION[l.hook] ?? l.hook,
      };
      if (!prev && hop.order === ORDER.UNDERLAY_INGRESS && departure) {
        // clocks of two nodes: never a negative latency (docs/architecture.md#clocks)
        const arrival = this.opts.wallNs(hop.tsNs);
        const d = departure.wallNs < arrival ? departure.wallNs : arrival;
        start = hrTime(d);
        attrs['nettrace.from_node'] = departure.node;
        // the sender's clock put its departure after our arrival: the span starts at the arrival instead
        if (departure.wallNs > arrival) attrs['nettrace.clock.clamped_ns'] = Number(departure.wallNs - arrival);
      }
      this.ids.nextSpanId = stepSpanId(p.traceId, hop.order);
      const span = this.tracer.startSpan(`step ${l.step} ${l.step_name}`, { startTime: start, attributes: attrs }, parent);
      span.end(this.wall(hop.tsNs));
      spans++;
    }
    if (p.drop) {
      const l = this.opts.hookLabels(p.drop.order);
      const failed = this.opts.dropLabels(p.drop.order);
      this.ids.nextSpanId = stepSpanId(p.traceId, 100 + p.drop.order);
      const attributes: Record<string, string | number> = {
        ...common, 'nettrace.drop_reason': this.opts.dropReason(p.drop.reason), 'nettrace.last_device': l?.device ?? '', 'nettrace.last_hook': l?.hook ?? '',
      };
      if (l) attributes['nettrace.last_step'] = l.step;
      // the step that failed, numbered as nettrace_drops_total and diagnose number it; last_* is where it was last seen
      if (failed) {
        attributes['nettrace.step'] = failed.step;
        attributes['nettrace.step_name'] = failed.step_name;
      }
      const span = this.tracer.startSpan('drop', { startTime: this.wall(p.drop.tsNs), attributes }, parent);
      span.end(this.wall(p.drop.tsNs));
      spans++;
    }
    return spans;
  }

  private wall(tsNs: number): HrTime {
    return hrTime(this.opts.wallNs(tsNs));
  }

  /** A retransmit is a span in its connection's trace, carrying how many segments went again. */
  retransmit(r: Retransmit): void {
    this.ids.nextTraceId = r.traceId;
    this.ids.nextSpanId = stepSpanId(r.traceId, r.seq);
    const at = this.wall(r.tsNs);
    const span = this.tracer.startSpan('tcp retransmit', {
      root: true, startTime: at,
      attributes: {
        'nettrace.node': this.opts.node, 'network.transport': 'tcp', 'network.type': r.src.includes(':') ? 'ipv6' : 'ipv4', 'source.address': r.src, 'source.port': r.sport,
        'destination.address': r.dst, 'destination.port': r.dport, 'nettrace.tcp.seq': r.seq, 'nettrace.tcp.segments': r.segments,
        ...podAttributes(this.opts.podOf, r.src, r.dst),
      },
    });
    span.addEvent('retransmit', { segments: r.segments, seq: r.seq }, at);
    span.end(at);
  }

  async shutdown(): Promise<void> {
    await this.provider.shutdown();
  }
}

function hrTime(ns: bigint): HrTime {
  return [Number(ns / 1_000_000_000n), Number(ns % 1_000_000_000n)];
}

function protoName(p: number): string {
  return p === 6 ? 'tcp' : p === 17 ? 'udp' : p === 1 ? 'icmp' : p === 58 ? 'icmpv6' : String(p);
}
