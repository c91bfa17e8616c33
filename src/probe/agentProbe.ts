// The agent's programs (bpf/agent.bpf.c): tc programs per hook point, the drop and retransmit
// tracepoints, and the maps userspace reads on scrape (see docs/architecture.md, data path).
import { BpfObject, possibleCpus, RingReader } from '../libbpf';
import type { BpfMap, BpfProgram, RecordHandler } from '../libbpf';
import { AGENT, CONFIG_FIELDS, DROP_KEY_FIELDS, LATENCY_FIELDS, LATENCY_SIZE, MAP_FAIL, RETRANS_KEY_FIELDS, RETRANS_VALUE_FIELDS, STEP_COUNT_FIELDS, STEP_COUNT_SIZE } from './layout.generated';
import { DNS_RCODE_KEY_FIELDS, DNS_SERVER_KEY_FIELDS } from './layout.generated';
import { writeVxlanPorts } from './config';
import { bpfObjectPath } from './paths';

export interface AgentProbeOptions {
  vxlanPorts: number[];
  /** 1 in N packets become ring records (span material); 0 = none */
  sampleEvery: number;
  /** time the hops of 1 in N packets (a power of two; default 8) */
  latencyEvery?: number;
  /** attach the drop and retransmit tracepoints (default true) */
  tracepoints?: boolean;
}

/** One hook point's latency histogram, summed over CPUs. */
export interface LatencyHistogram {
  order: number;
  /** counts[b]: hops 2^b..2^(b+1) ns after the previous one */
  counts: number[];
  sumNs: number;
}

/** Every packet one hook point saw, summed over CPUs. */
export interface StepCount {
  order: number;
  /** wire packets (a GSO skb counts its segments) */
  packets: number;
  /** skb->len as the hook saw it */
  bytes: number;
}

export interface DropCount {
  reason: number;
  /** last hook seen on this node, ORDER.NONE when the packet was on no path */
  order: number;
  count: number;
}

export interface RetransmitCount {
  /** the kernel entry's key bytes (latin1): one string per entry, cheaper than one made of its fields */
  id?: string;
  family: number;
  saddr: Uint8Array;
  daddr: Uint8Array;
  dport: number;
  retransmits: number;
  segments: number;
}

/** Kernel map updates that failed (the map was full): counts missing from that map. */
export interface MapFailures {
  retransmits: number;
  drops: number;
  /** DNS queries not timed, or answers not counted (absent: a source without the DNS maps) */
  dns?: number;
}

/** DNS latency to one server (the address its clients asked), summed over CPUs. */
export interface DnsLatency {
  family: number;
  server: Uint8Array;
  counts: number[];
  sumNs: number;
}

export interface DnsRcodeCount {
  family: number;
  server: Uint8Array;
  rcode: number;
  count: number;
}

/** An unanswered DNS query older than this leaves the pending map (its answer would come too late to matter). */
export const DNS_PENDING_MAX_AGE_NS = 30e9;

export const DEFAULT_LATENCY_EVERY = 8;
export const LAT_BUCKETS = LATENCY_FIELDS.buckets.length / 8;

/** One nt_latency histogram summed over the CPUs of a per-CPU map value at base. */
function sumLatency(values: Buffer, base: number, cpus: number, stride: number): { counts: number[]; sumNs: number } {
  const counts = new Array<number>(LAT_BUCKETS).fill(0);
  let sumNs = 0;
  for (let c = 0; c < cpus; c++) {
    const at = base + c * stride;
    for (let b = 0; b < LAT_BUCKETS; b++) counts[b]! += Number(values.readBigUInt64LE(at + LATENCY_FIELDS.buckets.offset + 8 * b));
    sumNs += Number(values.readBigUInt64LE(at + LATENCY_FIELDS.sum_ns.offset));
  }
  return { counts, sumNs };
}
const { programs: P, maps: M } = AGENT;
const TRACEPOINTS = [P.nt_kfree_skb, P.nt_tcp_retransmit] as const;

function sum64(values: Buffer, at: number, cpus: number, stride: number): number {
  let s = 0;
  for (let c = 0; c < cpus; c++) s += Number(values.readBigUInt64LE(at + c * stride));
  return s;
}

export class AgentProbe {
  private readonly seenNetns = new Set<number>();
  private readonly tracepoints: { detach(): void }[] = [];
  private readonly ring: RingReader;
  private readonly cpus = possibleCpus();

  private constructor(private readonly obj: BpfObject) {
    this.ring = new RingReader(obj.map(M.nt_records).fd, obj.maxEntries(M.nt_records));
  }

  static load(opts: AgentProbeOptions): AgentProbe {
    const obj = BpfObject.open(bpfObjectPath('agent'));
    try {
      const cfg = obj.sectionData('.rodata');
      writeVxlanPorts(cfg, opts.vxlanPorts);
      // 1 in N: the top 32 bits of the packet hash below 2^32 / N (N = 1: every packet)
      const below = opts.sampleEvery > 0 ? Math.min(0xffffffff, Math.ceil(2 ** 32 / opts.sampleEvery)) : 0;
      cfg.writeUInt32LE(below, CONFIG_FIELDS.sample_below.offset);
      cfg.writeUInt32LE((opts.latencyEvery ?? DEFAULT_LATENCY_EVERY) - 1, CONFIG_FIELDS.latency_mask.offset);
      obj.load();
      const probe = new AgentProbe(obj);
      if (opts.tracepoints !== false) for (const tp of TRACEPOINTS) probe.tracepoints.push(obj.attach(tp));
      return probe;
    } catch (err) {
      obj.close();
      throw err;
    }
  }

  /** The tc program for a hook point (an ORDER value, 0-9). */
  program(order: number): BpfProgram {
    const name = AGENT.byOrder[order];
    if (name === undefined) throw new RangeError(`no agent program for hook point ${order}`);
    return this.obj.program(name);
  }

  /** Count drops and retransmits only in these namespaces (the node's and its pods'). */
  watchNetns(inos: Iterable<number>): void {
    const want = new Set(inos);
    const map = this.obj.map(M.nt_netns);
    for (const ino of want) {
      if (!this.seenNetns.has(ino)) map.update(u32(ino), u32(1));
    }
    for (const ino of this.seenNetns) if (!want.has(ino)) map.delete(u32(ino));
    this.seenNetns.clear();
    for (const ino of want) this.seenNetns.add(ino);
  }

  latency(): LatencyHistogram[] {
    const map = this.obj.map(M.nt_lat);
    const stride = Math.ceil(LATENCY_SIZE / 8) * 8; // per-CPU values are 8-byte aligned
    const { keys, values, count } = map.lookupAll(stride * this.cpus);
    const out: LatencyHistogram[] = [];
    for (let i = 0; i < count; i++) out.push({ order: keys.readUInt32LE(i * 4), ...sumLatency(values, i * stride * this.cpus, this.cpus, stride) });
    return out;
  }

  steps(): StepCount[] {
    const stride = Math.ceil(STEP_COUNT_SIZE / 8) * 8;
    const { keys, values, count } = this.obj.map(M.nt_steps).lookupAll(stride * this.cpus);
    const out: StepCount[] = [];
    for (let i = 0; i < count; i++) {
      const base = i * stride * this.cpus;
      out.push({
        order: keys.readUInt32LE(i * 4),
        packets: sum64(values, base + STEP_COUNT_FIELDS.packets.offset, this.cpus, stride),
        bytes: sum64(values, base + STEP_COUNT_FIELDS.bytes.offset, this.cpus, stride),
      });
    }
    return out;
  }

  drops(): DropCount[] {
    const map = this.obj.map(M.nt_drops);
    const stride = 8;
    const { keys, values, count } = map.lookupAll(stride * this.cpus);
    const out: DropCount[] = [];
    for (let i = 0; i < count; i++) {
      const k = i * map.keySize;
      out.push({
        reason: keys.readUInt32LE(k + DROP_KEY_FIELDS.reason.offset),
        order: keys.readUInt8(k + DROP_KEY_FIELDS.order.offset),
        count: sum64(values, i * stride * this.cpus, this.cpus, stride),
      });
    }
    return out;
  }

  /**
   * Retransmits by (source, destination, port): the kernel keys them without the source port.
   * Read a batch at a time, so 100k flows in the map do not mean 100k objects at once.
   */
  *retransmits(): Generator<RetransmitCount> {
    const map = this.obj.map(M.nt_retrans);
    const K = RETRANS_KEY_FIELDS;
    const V = RETRANS_VALUE_FIELDS;
    // one object for every entry, its address views into the batch buffer: 100k entries in the map make
    // no garbage that lives past a young-generation collection (the caller keeps nothing of it)
    const e: RetransmitCount = { id: '', family: 0, saddr: new Uint8Array(0), daddr: new Uint8Array(0), dport: 0, retransmits: 0, segments: 0 };
    for (const { keys, values, got } of map.batches()) {
      for (let i = 0; i < got; i++) {
        const k = i * map.keySize;
        const v = i * map.valueSize;
        e.id = keys.toString('latin1', k, k + map.keySize);
        e.family = keys.readUInt8(k + K.family.offset);
        e.saddr = keys.subarray(k + K.saddr.offset, k + K.saddr.offset + K.saddr.length);
        e.daddr = keys.subarray(k + K.daddr.offset, k + K.daddr.offset + K.daddr.length);
        e.dport = keys.readUInt16LE(k + K.dport.offset);
        e.retransmits = Number(values.readBigUInt64LE(v + V.retransmits.offset));
        e.segments = Number(values.readBigUInt64LE(v + V.segments.offset));
        yield e;
      }
    }
  }

  mapFailures(): MapFailures {
    const n = this.perCpuArray(this.obj.map(M.nt_map_fail));
    return { retransmits: n[MAP_FAIL.RETRANS] ?? 0, drops: n[MAP_FAIL.DROPS] ?? 0, dns: n[MAP_FAIL.DNS] ?? 0 };
  }

  dnsLatency(): DnsLatency[] {
    const map = this.obj.map(M.nt_dns_lat);
    const stride = Math.ceil(LATENCY_SIZE / 8) * 8;
    const { keys, values, count } = map.lookupAll(stride * this.cpus);
    const K = DNS_SERVER_KEY_FIELDS;
    const out: DnsLatency[] = [];
    for (let i = 0; i < count; i++) {
      const k = i * map.keySize;
      out.push({
        family: keys.readUInt8(k + K.family.offset), server: Uint8Array.from(keys.subarray(k + K.server.offset, k + K.server.offset + K.server.length)),
        ...sumLatency(values, i * stride * this.cpus, this.cpus, stride),
      });
    }
    return out;
  }

  dnsRcodes(): DnsRcodeCount[] {
    const map = this.obj.map(M.nt_dns_rcodes);
    const stride = 8;
    const { keys, values, count } = map.lookupAll(stride * this.cpus);
    const K = DNS_RCODE_KEY_FIELDS;
    const out: DnsRcodeCount[] = [];
    for (let i = 0; i < count; i++) {
      const k = i * map.keySize;
      out.push({
        family: keys.readUInt8(k + K.family.offset), server: Uint8Array.from(keys.subarray(k + K.server.offset, k + K.server.offset + K.server.length)),
        rcode: keys.readUInt8(k + K.rcode.offset), count: sum64(values, i * stride * this.cpus, this.cpus, stride),
      });
    }
    return out;
  }

  /**
   * Removes DNS queries still waiting for an answer after maxAgeNs (on the kernel's monotonic
   * clock, which is process.hrtime's): a lost answer must not hold its slot forever. Returns how many.
   */
  sweepDnsPending(maxAgeNs = DNS_PENDING_MAX_AGE_NS, nowNs = process.hrtime.bigint()): number {
    const map = this.obj.map(M.nt_dns_pending);
    const old: Buffer[] = [];
    map.lookupChunks((keys, values, got) => {
      for (let i = 0; i < got; i++) {
        if (nowNs - values.readBigUInt64LE(i * map.valueSize) > BigInt(maxAgeNs)) old.push(Buffer.from(keys.subarray(i * map.keySize, (i + 1) * map.keySize)));
      }
    });
    for (const k of old) map.delete(k);
    return old.length;
  }

  /** Pending DNS queries now in the kernel (tests). */
  dnsPending(): number {
    return this.obj.map(M.nt_dns_pending).lookupAll().count;
  }

  lostRecords(): number {
    return this.perCpuArray(this.obj.map(M.nt_lost))[0] ?? 0;
  }

  drain(fn: RecordHandler, max?: number): number {
    return this.ring.drain(fn, max);
  }

  close(): void {
    for (const tp of this.tracepoints.splice(0)) tp.detach();
    this.ring.close();
    this.obj.close();
  }

  /** Every u64 slot of a per-CPU array, summed over CPUs, in one batch read. */
  private perCpuArray(map: BpfMap): number[] {
    const stride = 8;
    const { keys, values, count } = map.lookupAll(stride * this.cpus);
    const out: number[] = [];
    for (let i = 0; i < count; i++) out[keys.readUInt32LE(i * 4)] = sum64(values, i * stride * this.cpus, this.cpus, stride);
    return out;
  }
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0);
  return b;
}
