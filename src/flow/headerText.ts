// Header fields of a hop record as a path shows them.
import type { HopRecord } from '../probe/layout.generated';
import { addrString } from '../probe/addr';

const TCP_FLAGS = 'FSRPAUEC';

export function tcpFlags(bits: number): string {
  let s = '';
  for (let i = 0; i < 8; i++) if (bits & (1 << i)) s += TCP_FLAGS[i];
  return s;
}

function endpoint(addr: string, port: number, proto: number): string {
  return proto === 6 || proto === 17 ? `${addr}:${port}` : addr;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** "SRC -> DST" as a packet carried it; the last one is kept, as a flow's records repeat it. */
export class AddrText {
  private last: { saddr: Uint8Array; daddr: Uint8Array; sport: number; dport: number; proto: number; family: number; text: string } | null = null;

  of(r: HopRecord): string {
    const c = this.last;
    if (c && c.sport === r.sport && c.dport === r.dport && c.proto === r.proto && c.family === r.family && sameBytes(c.saddr, r.saddr) && sameBytes(c.daddr, r.daddr)) return c.text;
    const text = `${endpoint(addrString(r.saddr, r.family), r.sport, r.proto)} -> ${endpoint(addrString(r.daddr, r.family), r.dport, r.proto)}`;
    this.last = { saddr: r.saddr, daddr: r.daddr, sport: r.sport, dport: r.dport, proto: r.proto, family: r.family, text };
    return text;
  }
}
