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

/** One end of --flow as written: an address, or a name for a source of names to resolve (src/k8s/resolve.ts). */
export type FlowEndpoint =
  | { kind: 'ip'; addr: string; port: number; text: string }
  /** NAMESPACE/POD[:PORT], or POD[:PORT] (namespace absent: -n's, else default) */
  | { kind: 'pod'; namespace?: string; name: string; port: number; text: string }
  /** svc/NAMESPACE/NAME:PORT; port: a number or the Service's port name */
  | { kind: 'svc'; namespace: string; name: string; port: string; text: string };

/** A DNS-1123 label (a namespace, a Service) and subdomain (a pod), as the API server checks them. */
export const LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
export const SUBDOMAIN = /^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

function portNumber(port: string, side: string): number {
  if (!/^\d+$/.test(port) || Number(port) < 1 || Number(port) > 65535) {
    throw usageError(`--flow: ${side} port "${port}" is not a port (1-65535)`, `give a port number or leave it out, ${EXAMPLE}`);
  }
  return Number(port);
}

function nameEndpoint(t: string, side: string): FlowEndpoint {
  const notName = () => usageError(`--flow: ${side} "${t}" is not an IP address, NAMESPACE/POD or svc/NAMESPACE/NAME:PORT`,
    `write SRC[:PORT] -> DST[:PORT] with addresses or names, e.g. --flow 'default/frontend -> default/backend:80'`);
  const [ref, port, extra] = t.split(':');
  if (extra !== undefined || ref === undefined || ref === '') throw notName();
  const parts = ref.split('/');
  if (parts[0] === 'svc' && parts.length === 3) {
    const [, namespace, name] = parts as [string, string, string];
    if (!LABEL.test(namespace) || !LABEL.test(name)) throw notName();
    if (port === undefined || port === '') {
      throw usageError(`--flow: ${side} "${t}" names a Service without a port`, `give its port number or name, e.g. svc/${namespace}/${name}:80`);
    }
    if (!/^\d+$/.test(port) && !LABEL.test(port)) throw notName();
    return { kind: 'svc', namespace, name, port, text: t };
  }
  if (parts.length > 2) throw notName();
  const [namespace, name] = parts.length === 2 ? parts as [string, string] : [undefined, parts[0]!];
  // digits and dots only is a mistyped address, not a pod
  if ((namespace !== undefined && !LABEL.test(namespace)) || !SUBDOMAIN.test(name) || /^[\d.]+$/.test(name)) {
    if (namespace === undefined) throw usageError(`--flow: ${side} "${t}" is not an IP address`, `write SRC[:PORT] -> DST[:PORT], ${EXAMPLE}, or name a pod (NAMESPACE/POD)`);
    throw notName();
  }
  return { kind: 'pod', ...(namespace !== undefined ? { namespace } : {}), name, port: port === undefined ? 0 : portNumber(port, side), text: t };
}

/** One end of --flow: an address (as it always was), or a pod or Service name. */
export function parseEndpoint(text: string, side: string): FlowEndpoint {
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
  if (!isIPv4(addr) && !isIPv6(addr)) {
    if (v6 || (t.match(/:/g) ?? []).length > 1) throw usageError(`--flow: ${side} "${t}" is not an IP address`, `write SRC[:PORT] -> DST[:PORT], ${EXAMPLE}`);
    return nameEndpoint(t, side);
  }
  addr = unmapIPv4(addr);
  return { kind: 'ip', addr, port: port === undefined ? 0 : portNumber(port, side), text: t };
}

/** Both ends of --flow as written, names not yet resolved. */
export function parseFlowEndpoints(text: string): { src: FlowEndpoint; dst: FlowEndpoint } {
  const parts = text.split('->');
  if (parts.length !== 2) throw usageError(`--flow: "${text}" has no single "->"`, `write SRC[:PORT] -> DST[:PORT], ${EXAMPLE}`);
  return { src: parseEndpoint(parts[0]!, 'source'), dst: parseEndpoint(parts[1]!, 'destination') };
}

/** The flow between two addresses: same family, and the protocol the ports imply unless given. */
export function flowBetween(src: { addr: string; port: number }, dst: { addr: string; port: number }, proto?: Proto): FlowSpec {
  const family = isIPv4(src.addr) ? 4 : 6;
  if ((isIPv4(dst.addr) ? 4 : 6) !== family) throw usageError('--flow: source and destination are of different IP families', `use two IPv4 or two IPv6 addresses, ${EXAMPLE}`);
  const p = proto ?? (src.port || dst.port ? 'tcp' : 'icmp');
  if (p === 'icmp' && (src.port || dst.port)) throw usageError('--flow: ICMP has no ports', 'drop the ports or pass --proto tcp|udp');
  return { src: src.addr, dst: dst.addr, sport: src.port, dport: dst.port, proto: p, family };
}

export function parseProto(text: string): Proto {
  const p = text.toLowerCase();
  if (p === 'tcp' || p === 'udp' || p === 'icmp') return p;
  throw usageError(`--proto: "${text}" is not tcp, udp or icmp`, 'pick one of tcp, udp, icmp');
}

/** --flow of addresses only; a name needs a source of names (resolveFlow in src/k8s/resolve.ts). */
export function parseFlowSpec(text: string, proto?: Proto): FlowSpec {
  const { src, dst } = parseFlowEndpoints(text);
  for (const [e, side] of [[src, 'source'], [dst, 'destination']] as const) {
    if (e.kind !== 'ip') throw usageError(`--flow: ${side} "${e.text}" is not an IP address`, `write SRC[:PORT] -> DST[:PORT], ${EXAMPLE}; names need a source of names (--kubeconfig or --cri-socket)`);
  }
  return flowBetween(src as { addr: string; port: number }, dst as { addr: string; port: number }, proto);
}

/** `SRC[:PORT] -> DST[:PORT] PROTO`; with names (pods: src, dst), each end is followed by ` (NAMESPACE/POD)`. */
export function formatFlow(f: FlowSpec, pods?: { src: { namespace: string; name: string } | null; dst: { namespace: string; name: string } | null } | null): string {
  const ep = (a: string, p: number, r?: { namespace: string; name: string } | null) =>
    `${p ? (f.family === 6 ? `[${a}]:${p}` : `${a}:${p}`) : a}${r ? ` (${r.namespace}/${r.name})` : ''}`;
  return `${ep(f.src, f.sport, pods?.src)} -> ${ep(f.dst, f.dport, pods?.dst)} ${f.proto}`;
}
