// follow --every N: which TCP packets of a followed flow the hop program keeps, and the byte that
// names a kept data skb on every node. The kernel keeps a data skb (a FIN on it too) iff it holds a
// byte whose sequence number is a multiple of N x 64 KiB: a stateless rule every hook of both nodes
// applies alike, however TSO/GSO and GRO cut the stream into skbs. SYN, RST and a FIN without data
// always; 1 in N pure ACKs; drops of the kept packets.

/** the most --every takes: one data skb per 64 MiB of the stream */
export const EVERY_MAX = 1024;

/** 64 KiB: the largest skb without BIG TCP, so a kept skb holds one sampled byte */
const UNIT_SHIFT = 16;

export function validEvery(n: number): boolean {
  return Number.isInteger(n) && n >= 1 && n <= EVERY_MAX && (n & (n - 1)) === 0;
}

/** log2 of the sampled bytes' spacing; 0 for every packet (N = 1) */
export function everyShift(n: number): number {
  if (!validEvery(n)) throw new RangeError(`--every ${n} is not a power of two from 1 to ${EVERY_MAX}`);
  return n === 1 ? 0 : UNIT_SHIFT + Math.log2(n);
}

const SYN = 0x02;
const RST = 0x04;

/**
 * The sampled byte that names a kept TCP data skb across nodes, or -1 when its whole range does:
 * skbs on the other node hold other unsampled bytes around it, so only the sampled byte is the same
 * packet on both. A SYN or RST with data is kept for its flag and never merged: all of it. Without
 * sampling (shift 0), always -1. A number, not a range object: this runs for every new TCP data entry.
 */
export function sampledByte(seq: number, len: number, tcpFlags: number, shift: number): number {
  if (shift === 0 || len === 0 || tcpFlags & (SYN | RST)) return -1;
  const unit = 2 ** shift;
  // the first multiple of unit at or after seq, in 32-bit sequence space
  const b = (Math.ceil(seq / unit) * unit) >>> 0;
  return ((b - seq) >>> 0) < len ? b : -1;
}
