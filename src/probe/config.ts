// The read-only config both objects share (struct nt_config in .rodata), written before load.
import { everyShift } from '../flow/every';
import { CONFIG_FIELDS, HOP_CAPTURE_FIELDS } from './layout.generated';

const MAX_VXLAN_PORTS = CONFIG_FIELDS.vxlan_ports.length / 2;

/** UDP ports whose payload is VXLAN (8472 flannel, 4789 IANA); the rest of the slots 0. */
export function writeVxlanPorts(rodata: Buffer, ports: number[]): void {
  const unique = [...new Set(ports)].slice(0, MAX_VXLAN_PORTS);
  for (let i = 0; i < MAX_VXLAN_PORTS; i++) rodata.writeUInt16LE(unique[i] ?? 0, CONFIG_FIELDS.vxlan_ports.offset + 2 * i);
}

/** The most of a packet's first bytes the hop program copies (struct nt_hop_capture's data). */
export const SNAPLEN_MAX = HOP_CAPTURE_FIELDS.data.length;

/** How many of each followed packet's first bytes the hop program copies; 0: none (no copy is even loaded). */
export function writeSnaplen(rodata: Buffer, snaplen: number): void {
  if (!Number.isInteger(snaplen) || snaplen < 0 || snaplen > SNAPLEN_MAX) throw new RangeError(`snaplen ${snaplen} is not 0..${SNAPLEN_MAX}`);
  rodata.writeUInt32LE(snaplen, CONFIG_FIELDS.snaplen.offset);
}

/** follow --every n (a power of two; 1 keeps every packet): which TCP packets the hop program keeps (see flow/every). */
export function writeEvery(rodata: Buffer, n: number): void {
  rodata.writeUInt32LE(everyShift(n), CONFIG_FIELDS.every_shift.offset);
  rodata.writeUInt32LE(n - 1, CONFIG_FIELDS.every_ack_mask.offset);
}
