// Encoding of the followed-flow map's key and value (layouts generated from bpf/nettrace.h).
import { endianness } from 'node:os';
import { FLOW_KEY_FIELDS as K, FLOW_KEY_SIZE, FLOW_RULE_FIELDS as R, FLOW_RULE_SIZE, PAIR_FILTER_FIELDS } from './layout.generated';

export type Family = 4 | 6;
export type Direction = 'request' | 'reply';

export interface FlowRule {
  family: Family;
  proto: number;
  /** 4 or 16 bytes */
  saddr: Uint8Array;
  daddr: Uint8Array;
  /** 0: any */
  sport: number;
  dport: number;
  flowId: number;
  direction: Direction;
}

export function encodeFlowKey(rule: FlowRule): Buffer {
  const b = Buffer.alloc(FLOW_KEY_SIZE);
  b.set(rule.saddr, K.saddr.offset);
  b.set(rule.daddr, K.daddr.offset);
  b.writeUInt8(rule.family, K.family.offset);
  b.writeUInt8(rule.proto, K.proto.offset);
  return b;
}

export function encodeFlowRule(rule: FlowRule): Buffer {
  const b = Buffer.alloc(FLOW_RULE_SIZE);
  b.writeUInt16LE(rule.sport, R.sport.offset);
  b.writeUInt16LE(rule.dport, R.dport.offset);
  b.writeUInt32LE(rule.flowId, R.flow_id.offset);
  b.writeUInt8(rule.direction === 'request' ? 0 : 1, R.direction.offset);
  return b;
}

/** The same flow seen from the other end: addresses and ports swapped. */
export function reverse(rule: FlowRule): FlowRule {
  return {
    ...rule, saddr: rule.daddr, daddr: rule.saddr, sport: rule.dport, dport: rule.sport,
    direction: rule.direction === 'request' ? 'reply' : 'request',
  };
}

/**
 * The bit of the kernel's pair filter (struct nt_pair_filter) a rule's address pair sets: its
 * key's eight address words XORed, as the program loads them (host order), with the protocol,
 * then mixed; the same for both directions.
 */
export function pairBit(rule: FlowRule): number {
  const key = encodeFlowKey(rule);
  const le = endianness() === 'LE';
  let fold = rule.proto;
  for (let o = 0; o < 32; o += 4) fold ^= le ? key.readUInt32LE(K.saddr.offset + o) : key.readUInt32BE(K.saddr.offset + o);
  return Math.imul(fold, 0x9e3779b1) >>> 22;
}

/** Sets a rule's bit in a struct nt_pair_filter's bytes; false when it was set already. */
export function setPairBit(filter: Buffer, rule: FlowRule): boolean {
  const bit = pairBit(rule);
  // bit b of 64-bit word b >> 6, in the byte order the kernel loads the word in
  const byte = (bit & 63) >> 3;
  const at = PAIR_FILTER_FIELDS.bits.offset + (bit >> 6) * 8 + (endianness() === 'LE' ? byte : 7 - byte);
  const had = filter[at]!;
  filter[at] = had | (1 << (bit & 7));
  return filter[at] !== had;
}
