// The read-only config both objects share (struct nt_config in .rodata), written before load.
import { CONFIG_FIELDS } from './layout.generated';

const MAX_VXLAN_PORTS = CONFIG_FIELDS.vxlan_ports.length / 2;

/** UDP ports whose payload is VXLAN (8472 flannel, 4789 IANA); the rest of the slots 0. */
export function writeVxlanPorts(rodata: Buffer, ports: number[]): void {
  const unique = [...new Set(ports)].slice(0, MAX_VXLAN_PORTS);
  for (let i = 0; i < MAX_VXLAN_PORTS; i++) rodata.writeUInt16LE(unique[i] ?? 0, CONFIG_FIELDS.vxlan_ports.offset + 2 * i);
}
