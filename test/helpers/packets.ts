// Crafted packets for BPF_PROG_TEST_RUN: Ethernet, VLAN, IPv4/IPv6, TCP/UDP/ICMP, VXLAN.
import { ipBytesOf } from '../../src/probe/addr';

export function ipBytes(addr: string): Buffer {
  return Buffer.from(ipBytesOf(addr));
}

export interface L4 {
  proto: 'tcp' | 'udp' | 'icmp';
  sport?: number;
  dport?: number;
  seq?: number;
  ack?: number;
  /** TCP flags byte (default PSH|ACK) */
  tcpFlags?: number;
  /** ICMP echo id / seq */
  id?: number;
  icmpSeq?: number;
  icmpType?: number;
  payload?: number;
}

const PROTO = { tcp: 6, udp: 17, icmp: 1 } as const;

function l4(spec: L4, v6: boolean): Buffer {
  const payload = Buffer.alloc(spec.payload ?? 0, 0xab);
  if (spec.proto === 'tcp') {
    const h = Buffer.alloc(20);
    h.writeUInt16BE(spec.sport ?? 40000, 0);
    h.writeUInt16BE(spec.dport ?? 80, 2);
    h.writeUInt32BE(spec.seq ?? 1000, 4);
    h.writeUInt32BE(spec.ack ?? 0, 8);
    h[12] = 5 << 4;
    h[13] = spec.tcpFlags ?? 0x18; // PSH|ACK
    h.writeUInt16BE(65535, 14);
    return Buffer.concat([h, payload]);
  }
  if (spec.proto === 'udp') {
    const h = Buffer.alloc(8);
    h.writeUInt16BE(spec.sport ?? 40000, 0);
    h.writeUInt16BE(spec.dport ?? 53, 2);
    h.writeUInt16BE(8 + payload.length, 4);
    return Buffer.concat([h, payload]);
  }
  const h = Buffer.alloc(8);
  h[0] = spec.icmpType ?? (v6 ? 128 : 8);
  h.writeUInt16BE(spec.id ?? 7, 4);
  h.writeUInt16BE(spec.icmpSeq ?? 1, 6);
  return Buffer.concat([h, payload]);
}

export function ipv4(src: string, dst: string, body: L4, opts: { id?: number; df?: boolean; fragOffset?: number } = {}): Buffer {
  const data = l4(body, false);
  const h = Buffer.alloc(20);
  h[0] = 0x45;
  h.writeUInt16BE(20 + data.length, 2);
  h.writeUInt16BE(opts.id ?? 0x1234, 4);
  h.writeUInt16BE((opts.df ? 0x4000 : 0) | (opts.fragOffset ?? 0), 6);
  h[8] = 64;
  h[9] = PROTO[body.proto];
  ipBytes(src).copy(h, 12);
  ipBytes(dst).copy(h, 16);
  return Buffer.concat([h, data]);
}

export function ipv6(src: string, dst: string, body: L4): Buffer {
  const data = l4(body, true);
  const h = Buffer.alloc(40);
  h[0] = 0x60;
  h.writeUInt16BE(data.length, 4);
  h[6] = body.proto === 'icmp' ? 58 : PROTO[body.proto];
  h[7] = 64;
  ipBytes(src).copy(h, 8);
  ipBytes(dst).copy(h, 24);
  return Buffer.concat([h, data]);
}

export function ether(l3: Buffer, opts: { vlans?: number[]; type?: number } = {}): Buffer {
  const type = opts.type ?? ((l3[0]! >> 4) === 6 ? 0x86dd : 0x0800);
  const parts: Buffer[] = [Buffer.from([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1])];
  for (const vid of opts.vlans ?? []) {
    const t = Buffer.alloc(4);
    t.writeUInt16BE(0x8100, 0);
    t.writeUInt16BE(vid, 2);
    parts.push(t);
  }
  const et = Buffer.alloc(2);
  et.writeUInt16BE(type, 0);
  parts.push(et, l3);
  return Buffer.concat(parts);
}

/** The inner Ethernet frame wrapped as flannel does: outer IPv4/UDP(port)/VXLAN(vni). */
export function vxlan(inner: Buffer, outerSrc: string, outerDst: string, vni = 1, port = 8472): Buffer {
  const vx = Buffer.alloc(8);
  vx[0] = 0x08;
  vx.writeUInt32BE(vni << 8, 4);
  const udpPayload = Buffer.concat([vx, inner]);
  const outer = ipv4(outerSrc, outerDst, { proto: 'udp', sport: 51000, dport: port, payload: 0 }, { id: 0x4321 });
  // replace the empty UDP payload with ours and fix the lengths
  const udp = outer.subarray(20);
  udp.writeUInt16BE(8 + udpPayload.length, 4);
  const pkt = Buffer.concat([outer, udpPayload]);
  pkt.writeUInt16BE(pkt.length, 2);
  return ether(pkt);
}

/** The inner IPv4 packet wrapped as Calico IPIP does: outer IPv4 with protocol 4, no inner Ethernet. */
export function ipip(innerIp: Buffer, outerSrc: string, outerDst: string): Buffer {
  const outer = Buffer.alloc(20);
  outer[0] = 0x45;
  outer.writeUInt16BE(20 + innerIp.length, 2);
  outer.writeUInt16BE(0x5678, 4);
  outer[8] = 64;
  outer[9] = 4;
  ipBytes(outerSrc).copy(outer, 12);
  ipBytes(outerDst).copy(outer, 16);
  return ether(Buffer.concat([outer, innerIp]));
}
