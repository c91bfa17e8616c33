// IP address text to the bytes the BPF maps hold.
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
