// `--flow 'SRC[:PORT] -> DST[:PORT]'` parsed and checked.
import { isIPv4, isIPv6 } from 'node:net';
import { usageError } from '../errors';

export type Proto = 'tcp' | 'udp' | 'icmp';
export const PROTO_NUMBERS: Record<Proto, number> = { tcp: 6, udp: 17, icmp: 1 };

export interface FlowSpec {
  src: string;
  dst: string;
  /** 0: any */
  sport: number;
  dport: number;
  proto: Proto;
  family: 4 | 6;
}

const EXAMPLE = "e.g. --flow '10.244.1.5 -> 10.244.2.8:80'";

/**
 * An IPv4-mapped IPv6 address (`::ffff:10.244.1.5`, as dual-stack sockets and logs print IPv4
 * peers) as the IPv4 address it names: the packets on the wire are IPv4, and an IPv6 match
 * would never see them. Any other address is returned as given.
 */
export function unmapIPv4(addr: string): string {
  if (!isIPv6(addr)) return addr;
  let host: string;
  try {
    // the URL parser writes every spelling (::ffff:a.b.c.d, 0:0:0:0:0:ffff:..., upper case) one way
    host = new URL(`http://[${addr}]/`).hostname;
  } catch {
    return addr; // e.g. a zone index (fe80::1%eth0): not a mapped address
  }
  const m = /^\[::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})\]$/.exec(host);
  if (!m) return addr;
  const hi = parseInt(m[1]!, 16);
  const lo = parseInt(m[2]!, 16);
  return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
}

function endpoint(text: string, side: string): { addr: string; port: number } {
  const t = text.trim();
  let addr = t;
  let port: string | undefined;
  const v6 = /^\[([^\]]+)\](?::(.*))?$/.exec(t);
  if (v6) {
    addr = v6[1]!;
    port = v6[2];
  } else if ((t.match(/:/g) ?? []).length === 1) {
    [addr, port] = t.split(':') as [string, string];
  }
  if (!isIPv4(addr) && !isIPv6(addr)) throw usageError(`--flow: ${side} "${t}" is not an IP address`, `write SRC[:PORT] -> DST[:PORT], ${EXAMPLE}`);
  addr = unmapIPv4(addr);
  if (port === undefined) return { addr, port: 0 };
  if (!/^\d+$/.test(port) || Number(port) < 1 || Number(port) > 65535) {
    throw usageError(`--flow: ${side} port "${port}" is not a port (1-65535)`, `give a port number or leave it out, ${EXAMPLE}`);
  }
  return { addr, port: Number(port) };
}

export function parseProto(text: string): Proto {
  const p = text.toLowerCase();
  if (p === 'tcp' || p === 'udp' || p === 'icmp') return p;
  throw usageError(`--proto: "${text}" is not tcp, udp or icmp`, 'pick one of tcp, udp, icmp');
}

export function parseFlowSpec(text: string, proto?: Proto): FlowSpec {
  const parts = text.split('->');
  if (parts.length !== 2) throw usageError(`--flow: "${text}" has no single "->"`, `write SRC[:PORT] -> DST[:PORT], ${EXAMPLE}`);
  const src = endpoint(parts[0]!, 'source');
  const dst = endpoint(parts[1]!, 'destination');
  const family = isIPv4(src.addr) ? 4 : 6;
  if ((isIPv4(dst.addr) ? 4 : 6) !== family) throw usageError('--flow: source and destination are of different IP families', `use two IPv4 or two IPv6 addresses, ${EXAMPLE}`);
  const p = proto ?? (src.port || dst.port ? 'tcp' : 'icmp');
  if (p === 'icmp' && (src.port || dst.port)) throw usageError('--flow: ICMP has no ports', 'drop the ports or pass --proto tcp|udp');
  return { src: src.addr, dst: dst.addr, sport: src.port, dport: dst.port, proto: p, family };
}

export function formatFlow(f: FlowSpec): string {
  const ep = (a: string, p: number) => (p ? (f.family === 6 ? `[${a}]:${p}` : `${a}:${p}`) : a);
  return `${ep(f.src, f.sport)} -> ${ep(f.dst, f.dport)} ${f.proto}`;
}
