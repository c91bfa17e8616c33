// DNS on the wire, as much as diagnose --dns and the agent's metrics need: a query for one name
// (RFC 1035 4.1), and the header and question of an answer, read from hostile bytes.

/** Response codes by number (RFC 1035 4.1.1, RFC 6895 2.3): the label values of nettrace_dns_responses_total. */
const RCODES: Record<number, string> = {
  0: 'NOERROR', 1: 'FORMERR', 2: 'SERVFAIL', 3: 'NXDOMAIN', 4: 'NOTIMP', 5: 'REFUSED',
  6: 'YXDOMAIN', 7: 'YXRRSET', 8: 'NXRRSET', 9: 'NOTAUTH', 10: 'NOTZONE',
};

/** An rcode's name, else its number: a 4-bit field, so at most 16 values reach a label. */
export function rcodeName(rcode: number): string {
  return RCODES[rcode] ?? String(rcode);
}

export const QTYPE_A = 1;
const QCLASS_IN = 1;
const HEADER = 12;

/**
 * A name a query may carry: labels of 1-63 letters, digits, `-` or `_`, 253 characters at most,
 * an optional final dot. Returns the labels, or null.
 */
export function nameLabels(name: string): string[] | null {
  const n = name.endsWith('.') ? name.slice(0, -1) : name;
  if (n.length === 0 || n.length > 253) return null;
  const labels = n.split('.');
  return labels.every((l) => /^[A-Za-z0-9_-]{1,63}$/.test(l)) ? labels : null;
}

/** A standard query (RD set) for name's A records. */
export function encodeQuery(id: number, name: string, qtype = QTYPE_A): Buffer {
  const labels = nameLabels(name);
  if (!labels) throw new RangeError(`not a DNS name: ${JSON.stringify(name)}`);
  const h = Buffer.alloc(HEADER);
  h.writeUInt16BE(id & 0xffff, 0);
  h.writeUInt16BE(0x0100, 2); // QR 0, opcode 0, RD 1
  h.writeUInt16BE(1, 4); // QDCOUNT
  const q = Buffer.concat([...labels.map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l, 'ascii')])), Buffer.from([0])]);
  const tail = Buffer.alloc(4);
  tail.writeUInt16BE(qtype, 0);
  tail.writeUInt16BE(QCLASS_IN, 2);
  return Buffer.concat([h, q, tail]);
}

export interface DnsAnswer {
  id: number;
  /** the header's RCODE */
  rcode: number;
  /** TC: the answer did not fit UDP */
  truncated: boolean;
  answers: number;
}

/**
 * The header of a response to `query`, or null when these bytes are not one: too short, not a
 * response, another id, or another question (a spoofed or stray datagram is ignored, as a resolver does).
 */
export function decodeAnswer(msg: Buffer, query: Buffer): DnsAnswer | null {
  if (msg.length < HEADER || query.length < HEADER) return null;
  const flags = msg.readUInt16BE(2);
  if (!(flags & 0x8000) || msg.readUInt16BE(0) !== query.readUInt16BE(0)) return null;
  // the question section is echoed: compare it byte for byte (names are case-insensitive)
  const qlen = query.length - HEADER;
  if (msg.readUInt16BE(4) === 1) {
    if (msg.length < HEADER + qlen) return null;
    if (msg.subarray(HEADER, HEADER + qlen).toString('latin1').toLowerCase() !== query.subarray(HEADER).toString('latin1').toLowerCase()) return null;
  } else if (msg.readUInt16BE(4) !== 0) {
    return null;
  }
  return { id: msg.readUInt16BE(0), rcode: flags & 0xf, truncated: !!(flags & 0x0200), answers: msg.readUInt16BE(6) };
}

/** What one query from the pod came to, as the pod saw it (one JSON line of src/session/dnsQuery.ts). */
export type QueryOutcome =
  | { outcome: 'answer'; rcode: number; answers: number; truncated: boolean; latency_ns: number; sport: number }
  /** no answer within the timeout */
  | { outcome: 'timeout'; sport: number }
  /** an ICMP port unreachable came back (kube-proxy's REJECT of a Service without endpoints, or no server listening) */
  | { outcome: 'refused'; latency_ns: number; sport: number };

/** One line of the client's output, checked: it crossed a process boundary. */
export function parseQueryOutcome(line: string): QueryOutcome | null {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    return null;
  }
  if (!v || typeof v !== 'object') return null;
  const o = v as Record<string, unknown>;
  const int = (x: unknown, max: number) => typeof x === 'number' && Number.isInteger(x) && x >= 0 && x <= max;
  if (!int(o.sport, 65535)) return null;
  if (o.outcome === 'answer' && int(o.rcode, 15) && int(o.answers, 65535) && typeof o.truncated === 'boolean' && int(o.latency_ns, 60e9)) {
    return { outcome: 'answer', rcode: o.rcode as number, answers: o.answers as number, truncated: o.truncated, latency_ns: o.latency_ns as number, sport: o.sport as number };
  }
  if (o.outcome === 'timeout') return { outcome: 'timeout', sport: o.sport as number };
  if (o.outcome === 'refused' && int(o.latency_ns, 60e9)) return { outcome: 'refused', latency_ns: o.latency_ns as number, sport: o.sport as number };
  return null;
}
