// diagnose --dns's client: real DNS queries sent from inside the source pod (run there with
// `ip netns exec POD node dnsQuery.js ...`, so the pod's address, routes and resolv.conf apply),
// one JSON line per query on stdout: what came back and how long it took. Nothing of the
// answer's payload is printed: its rcode and record count only.
import { randomInt } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { isIPv4 } from 'node:net';
import { decodeAnswer, encodeQuery, nameLabels, type QueryOutcome } from '../flow/dns';

/** One query on a connected socket: the kernel then hands us ICMP errors and only the server's datagrams. */
export function queryOnce(name: string, server: string, port: number, timeoutMs: number): Promise<QueryOutcome> {
  const query = encodeQuery(randomInt(0, 0x10000), name);
  return new Promise((resolve) => {
    const sock = createSocket('udp4');
    let sport = 0;
    let sentAt = 0n;
    let done = false;
    const finish = (r: QueryOutcome) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.close();
      resolve(r);
    };
    const timer = setTimeout(() => finish({ outcome: 'timeout', sport }), timeoutMs);
    sock.on('message', (msg) => {
      const at = process.hrtime.bigint();
      const a = decodeAnswer(msg, query);
      if (a) finish({ outcome: 'answer', rcode: a.rcode, answers: a.answers, truncated: a.truncated, latency_ns: Number(at - sentAt), sport });
    });
    sock.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ECONNREFUSED') finish({ outcome: 'refused', latency_ns: Number(process.hrtime.bigint() - sentAt), sport });
      else finish({ outcome: 'timeout', sport });
    });
    sock.connect(port, server, () => {
      sport = sock.address().port;
      sentAt = process.hrtime.bigint();
      sock.send(query);
    });
  });
}

async function main(argv: string[]): Promise<number> {
  const [name, server, port, count, timeoutMs] = argv;
  if (!name || !nameLabels(name) || !server || !isIPv4(server) || !/^\d+$/.test(port ?? '') || !/^\d+$/.test(count ?? '') || !/^\d+$/.test(timeoutMs ?? '')) {
    process.stderr.write('usage: dnsQuery NAME SERVER_IPV4 PORT COUNT TIMEOUT_MS\n');
    return 2;
  }
  for (let i = 0; i < Math.min(Number(count), 10); i++) {
    process.stdout.write(JSON.stringify(await queryOnce(name, server, Number(port), Math.min(Number(timeoutMs), 10_000))) + '\n');
  }
  return 0;
}

if (require.main === module) {
  void main(process.argv.slice(2)).then((code) => (process.exitCode = code));
}
