// follow -w FILE: each path's hops appended to a pcapng file as the path comes in, one interface
// block per (node, device, hook) and one packet block per hop, with the step in its comment.
// Written synchronously: what a path wrote is in the file when the next line is printed, and a
// signal or an exit loses nothing that was handed out.
import { closeSync, fsyncSync, openSync, rmSync, writeSync } from 'node:fs';
import { usageError, type NettraceError } from '../errors';
import type { HopView, PacketPath } from '../flow/path';
import { LINKTYPE, PcapngSection, type InterfaceSpec } from './pcapng';

/** A hop's packet as follow hands it out (the session's CapturedHop). */
export interface HopPacket {
  bytes: { data: Uint8Array; originalLength: number; ethernet: boolean } | undefined;
  wallNs: bigint;
}

/** node1/cni0/ingress; a pod's device as the table names it, node1/eth0@pod-a/egress */
export function interfaceName(h: Pick<HopView, 'node' | 'device' | 'pod' | 'hook'>): string {
  return `${h.node}/${h.pod ? `${h.device}@${h.pod}` : h.device}/${h.hook}`;
}

/** The interface block and the packet block of one hop of a path. */
export function hopBlocks(p: PacketPath, h: HopView, pkt: HopPacket, snaplen: number): {
  iface: InterfaceSpec; packet: { timestampNs: bigint; data: Uint8Array; originalLength: number; comment: string };
} {
  const ethernet = pkt.bytes?.ethernet ?? true;
  const where = `${h.pod ? `${h.device} of pod ${h.pod}` : h.device} on ${h.node}, tc ${h.hook}`;
  return {
    iface: {
      name: interfaceName(h),
      description: ethernet ? where : `${where}; no MAC header: the bytes start at the IP header`,
      linkType: ethernet ? LINKTYPE.ETHERNET : LINKTYPE.RAW,
      snaplen,
    },
    packet: {
      timestampNs: pkt.wallNs,
      data: pkt.bytes?.data ?? new Uint8Array(0),
      originalLength: pkt.bytes?.originalLength ?? 0,
      comment: `step ${h.step} ${h.name} (${p.direction})${pkt.bytes ? '' : '; bytes not kept'}`,
    },
  };
}

export class PcapngFile {
  private readonly fd: number;
  private readonly section = new PcapngSection('nettrace');
  private closed = false;
  /** packet blocks written */
  packets = 0;

  /** Opens (truncates) the file and writes its section header; a path that cannot be written is E_USAGE. */
  constructor(readonly path: string, private readonly snaplen: number) {
    try {
      this.fd = openSync(path, 'w', 0o644);
    } catch (err) {
      throw writeError(path, err, 'give a file in a directory you can write');
    }
    this.append(this.section.start());
  }

  /** Appends a packet block per hop of p (and an interface block for each hook point seen first). */
  write(p: PacketPath, packets: HopPacket[]): void {
    const blocks: Buffer[] = [];
    p.steps.forEach((h, i) => {
      const { iface, packet } = hopBlocks(p, h, packets[i] ?? { bytes: undefined, wallNs: 0n }, this.snaplen);
      blocks.push(this.section.packet(iface, packet));
    });
    this.append(Buffer.concat(blocks));
    this.packets += blocks.length;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      fsyncSync(this.fd);
    } catch {
      // a pipe or a character device cannot be synced: what was written stands
    }
    closeSync(this.fd);
  }

  /** Closes and removes the file: the follow it was for never started. */
  discard(): void {
    this.close();
    rmSync(this.path, { force: true });
  }

  private append(b: Buffer): void {
    try {
      let off = 0;
      while (off < b.length) off += writeSync(this.fd, b, off, b.length - off);
    } catch (err) {
      throw writeError(this.path, err, 'free space there or give another -w file');
    }
  }
}

function writeError(path: string, err: unknown, next: string): NettraceError {
  const e = err as NodeJS.ErrnoException;
  return usageError(`-w ${path}: cannot write it (${e.code ?? e.message})`, next);
}
