// pcapng blocks as bytes (the IETF pcapng draft, little endian): a section header, one interface
// block per hook point a packet was seen at, one enhanced packet block per hop. Pure: the caller
// writes the bytes where it wants (follow -w appends them to a file as paths come in).

/** Link types of the interface blocks (tcpdump.org/linktypes.html). */
export const LINKTYPE = {
  /** the bytes start at an Ethernet header (veths, bridges, VXLAN devices, the underlay) */
  ETHERNET: 1,
  /** the bytes start at an IPv4 or IPv6 header (a device without a MAC header: IPIP's tunl0) */
  RAW: 101,
} as const;
export type LinkType = (typeof LINKTYPE)[keyof typeof LINKTYPE];

const BLOCK = { SHB: 0x0a0d0d0a, IDB: 0x00000001, EPB: 0x00000006 } as const;
const BYTE_ORDER_MAGIC = 0x1a2b3c4d;
const OPT = { END: 0, COMMENT: 1, SHB_USERAPPL: 4, IF_NAME: 2, IF_DESCRIPTION: 3, IF_TSRESOL: 9 } as const;
/** if_tsresol 9: timestamps count nanoseconds (10^-9 s) */
const TSRESOL_NS = 9;

const pad4 = (n: number): number => (n + 3) & ~3;

/** One option: code, length, value padded to 32 bits. */
function option(code: number, value: Uint8Array): Buffer {
  const b = Buffer.alloc(4 + pad4(value.length));
  b.writeUInt16LE(code, 0);
  b.writeUInt16LE(value.length, 2);
  b.set(value, 4);
  return b;
}

const text = (s: string): Buffer => Buffer.from(s, 'utf8');

/** Options, then opt_endofopt; nothing at all when there are none. */
function options(list: Buffer[]): Buffer {
  return list.length ? Buffer.concat([...list, Buffer.alloc(4)]) : Buffer.alloc(0);
}

/** type, total length, body (a multiple of 4), total length again. */
function block(type: number, body: Buffer): Buffer {
  if (body.length % 4) throw new Error(`pcapng block body of ${body.length} bytes is not 32-bit aligned`);
  const total = 12 + body.length;
  const b = Buffer.alloc(total);
  b.writeUInt32LE(type, 0);
  b.writeUInt32LE(total, 4);
  body.copy(b, 8);
  b.writeUInt32LE(total, total - 4);
  return b;
}

/** The Section Header Block that starts a file: version 1.0, section length unknown (-1). */
export function sectionHeaderBlock(application: string): Buffer {
  const fixed = Buffer.alloc(16);
  fixed.writeUInt32LE(BYTE_ORDER_MAGIC, 0);
  fixed.writeUInt16LE(1, 4);
  fixed.writeUInt16LE(0, 6);
  fixed.writeBigInt64LE(-1n, 8);
  return block(BLOCK.SHB, Buffer.concat([fixed, options([option(OPT.SHB_USERAPPL, text(application))])]));
}

export interface InterfaceSpec {
  /** if_name, e.g. node1/cni0/ingress */
  name: string;
  /** if_description */
  description?: string;
  linkType: LinkType;
  /** the most bytes a packet block of this interface holds */
  snaplen: number;
}

/** An Interface Description Block with if_name, if_description and if_tsresol (nanoseconds). */
export function interfaceBlock(i: InterfaceSpec): Buffer {
  const fixed = Buffer.alloc(8);
  fixed.writeUInt16LE(i.linkType, 0);
  fixed.writeUInt32LE(i.snaplen, 4);
  const opts = [option(OPT.IF_NAME, text(i.name))];
  if (i.description) opts.push(option(OPT.IF_DESCRIPTION, text(i.description)));
  opts.push(option(OPT.IF_TSRESOL, Uint8Array.of(TSRESOL_NS)));
  return block(BLOCK.IDB, Buffer.concat([fixed, options(opts)]));
}

export interface PacketSpec {
  /** the interface block's index in the section, from 0 in the order they were written */
  interfaceId: number;
  /** wall-clock nanoseconds since the Unix epoch (the interface's if_tsresol is 9) */
  timestampNs: bigint;
  /** the bytes captured */
  data: Uint8Array;
  /** the packet's whole length (at least data's) */
  originalLength: number;
  comment?: string;
}

/** An Enhanced Packet Block: the bytes padded to 32 bits, their length and the packet's, and opt_comment. */
export function packetBlock(p: PacketSpec): Buffer {
  if (p.timestampNs < 0n) throw new RangeError('pcapng timestamps count from the epoch: no negative time');
  const fixed = Buffer.alloc(20);
  fixed.writeUInt32LE(p.interfaceId, 0);
  fixed.writeUInt32LE(Number(p.timestampNs >> 32n), 4);
  fixed.writeUInt32LE(Number(p.timestampNs & 0xffffffffn), 8);
  fixed.writeUInt32LE(p.data.length, 12);
  fixed.writeUInt32LE(Math.max(p.originalLength, p.data.length), 16);
  const data = Buffer.alloc(pad4(p.data.length));
  data.set(p.data);
  return block(BLOCK.EPB, Buffer.concat([fixed, data, options(p.comment ? [option(OPT.COMMENT, text(p.comment))] : [])]));
}

/**
 * One section as it grows: the section header first, then each interface's block the first time a
 * packet is seen there (keyed by its name), then the packet's. Returns the bytes to append.
 */
export class PcapngSection {
  private readonly ids = new Map<string, number>();
  private started = false;

  constructor(private readonly application: string) {}

  /** interface blocks written so far, by name, in order */
  get interfaces(): string[] {
    return [...this.ids.keys()];
  }

  packet(iface: InterfaceSpec, p: Omit<PacketSpec, 'interfaceId'>): Buffer {
    const out: Buffer[] = [];
    if (!this.started) {
      this.started = true;
      out.push(sectionHeaderBlock(this.application));
    }
    let id = this.ids.get(iface.name);
    if (id === undefined) {
      id = this.ids.size;
      this.ids.set(iface.name, id);
      out.push(interfaceBlock(iface));
    }
    out.push(packetBlock({ ...p, interfaceId: id }));
    return Buffer.concat(out);
  }

  /** the section header alone, when nothing was written yet (an empty capture still is a pcapng file) */
  start(): Buffer {
    if (this.started) return Buffer.alloc(0);
    this.started = true;
    return sectionHeaderBlock(this.application);
  }
}
