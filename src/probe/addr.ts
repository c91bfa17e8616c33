// IP addresses between the text users write and the bytes the BPF maps and records hold.
import { isIPv4 } from 'node:net';
import { SocketAddress } from 'node:net';

export function ipBytesOf(addr: string): Uint8Array {
  if (isIPv4(addr)) return Uint8Array.from(addr.split('.').map(Number));
  return ipv6Bytes(addr);
}

function ipv6Bytes(addr: string): Uint8Array {
  // normalise through Node's parser, then expand "::"
  const text = new SocketAddress({ address: addr, family: 'ipv6' }).address;
  const [head = '', tail] = text.split('::');
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  const out = new Uint8Array(16);
  groups.forEach((g, i) => {
    const v = parseInt(g, 16);
    out[i * 2] = v >> 8;
    out[i * 2 + 1] = v & 0xff;
  });
  return out;
}

/** Bytes of a record back to text (IPv6 per RFC 5952). */
export function addrString(bytes: Uint8Array, family: number): string {
  if (family === 4) return `${bytes[0]}.${bytes[1]}.${bytes[2]}.${bytes[3]}`;
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((bytes[i]! << 8) | bytes[i + 1]!);
  // RFC 5952: the longest run of two or more zero groups becomes "::"
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) [best, bestLen] = [i, j - i];
    i = j === i ? i + 1 : j;
  }
  const hex = (g: number[]) => g.map((x) => x.toString(16)).join(':');
  return best < 0 ? hex(groups) : `${hex(groups.slice(0, best))}::${hex(groups.slice(best + bestLen))}`;
}
