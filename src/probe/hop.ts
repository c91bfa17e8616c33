// The hop program (bpf/hop.bpf.c) loaded once per run: its config, flow map, ring and lost counter.
import { BpfObject, possibleCpus, RingReader } from '../libbpf';
import type { BpfMap, BpfProgram, RecordHandler } from '../libbpf';
import { encodeFlowKey, encodeFlowRule, setPairBit, type FlowRule } from './flowrule';
import { writeEvery, writeSnaplen, writeVxlanPorts } from './config';
import { HOP, PAIR_FILTER_SIZE } from './layout.generated';
import { bpfObjectPath } from './paths';
import { NettraceError } from '../errors';

const { programs: P, maps: M } = HOP;

export interface HopOptions {
  /** UDP ports whose payload is VXLAN (8472 flannel, 4789 IANA) */
  vxlanPorts: number[];
  /** ring size in bytes, a power of two */
  ringBytes?: number;
  /** also report followed packets the kernel drops, with its reason (tp_btf/kfree_skb; default true) */
  drops?: boolean;
  /** copy each hop's first snaplen bytes after its record (follow -w); 0 or absent: plain records */
  snaplen?: number;
  /** follow --every: keep 1 in n of a TCP flow's packets (SYN, RST and FIN without data always; see flow/every); 1 or absent: all */
  every?: number;
}

export class HopProbe {
  readonly ingress: BpfProgram;
  readonly egress: BpfProgram;
  private readonly flows: BpfMap;
  /** struct nt_pair_filter: the kernel tests a packet's bit before it looks up nt_flows */
  private readonly pairs: BpfMap;
  private readonly pairBits = Buffer.alloc(PAIR_FILTER_SIZE);
  private readonly lost: BpfMap;
  private readonly ring: RingReader;
  private dropLink: { detach(): void } | null = null;

  private constructor(private readonly obj: BpfObject, capture: boolean) {
    this.ingress = obj.program(capture ? P.nt_ingress_cap : P.nt_ingress);
    this.egress = obj.program(capture ? P.nt_egress_cap : P.nt_egress);
    this.flows = obj.map(M.nt_flows);
    this.pairs = obj.map('.data.pairs');
    if (this.pairs.valueSize !== PAIR_FILTER_SIZE) {
      throw new NettraceError('BPF', `hop object: section .data.pairs holds ${this.pairs.valueSize} bytes, struct nt_pair_filter ${PAIR_FILTER_SIZE}`, 'the BPF object does not match this nettrace: rebuild with `make build`');
    }
    this.lost = obj.map(M.nt_lost);
    this.ring = new RingReader(obj.map(M.nt_records).fd, obj.maxEntries(M.nt_records));
  }

  static load(opts: HopOptions): HopProbe {
    const obj = BpfObject.open(bpfObjectPath('hop'));
    try {
      const cfg = obj.sectionData('.rodata');
      writeVxlanPorts(cfg, opts.vxlanPorts);
      const capture = (opts.snaplen ?? 0) > 0;
      writeSnaplen(cfg, opts.snaplen ?? 0);
      writeEvery(cfg, opts.every ?? 1);
      // only one pair is loaded: without snaplen the programs that have no copy in them at all
      for (const p of [P.nt_ingress_cap, P.nt_egress_cap]) obj.setAutoload(p, capture);
      for (const p of [P.nt_ingress, P.nt_egress]) obj.setAutoload(p, !capture);
      if (opts.ringBytes) obj.setMaxEntries(M.nt_records, opts.ringBytes);
      if (opts.drops === false) obj.setAutoload(P.nt_drop, false);
      obj.load();
      const probe = new HopProbe(obj, capture);
      if (opts.drops !== false) probe.dropLink = obj.attach(P.nt_drop);
      return probe;
    } catch (err) {
      obj.close();
      throw err;
    }
  }

  follow(rule: FlowRule): void {
    // the bit first: a packet of the flow that finds the rule but not its bit would be missed
    if (setPairBit(this.pairBits, rule)) this.pairs.update(Buffer.alloc(4), this.pairBits);
    this.flows.update(encodeFlowKey(rule), encodeFlowRule(rule));
  }

  /** Records the kernel could not write because the ring was full, summed over CPUs. */
  lostRecords(): number {
    const value = this.lost.lookup(Buffer.alloc(4), Buffer.alloc(8 * possibleCpus()));
    let sum = 0;
    for (let i = 0; value && i < value.length; i += 8) sum += Number(value.readBigUInt64LE(i));
    return sum;
  }

  drain(fn: RecordHandler, max?: number): number {
    return this.ring.drain(fn, max);
  }

  close(): void {
    this.dropLink?.detach();
    this.ring.close();
    this.obj.close();
  }
}
