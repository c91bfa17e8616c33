// diagnose --dns: real DNS queries from a pod (the client runs in the pod's namespace), their
// packets followed to the DNS server and back like any diagnose probe (through the kube-dns
// ClusterIP's DNAT), and the verdict of both together.
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { isIPv4 } from 'node:net';
import path from 'node:path';
import { NettraceError, usageError } from '../errors';
import { nameLabels, parseQueryOutcome, type QueryOutcome } from '../flow/dns';
import { diagnoseDns, type DnsDiagnosis } from '../flow/dnsVerdict';
import type { PacketPath } from '../flow/path';
import type { FlowSpec } from '../flow/spec';
import type { AttachMechanism } from '../probe/attach';
import { findPodByIp } from '../topology/model';
import type { ClusterView } from './cluster';
import { localTarget, runDiagnose } from './diagnose';
import type { ReadyEvent } from './follow';

export const DNS_QUERIES = 3;
const QUERY_TIMEOUT_MS = 2000;

export interface DnsDiagnoseOptions {
  name: string;
  from: string;
  /** the DNS server to ask; default: the pod's resolv.conf */
  server?: string;
  cluster: ClusterView;
  attach: AttachMechanism;
  signal?: AbortSignal;
  onReady?(r: ReadyEvent): void;
  onWarning?(m: string): void;
}

/** The first IPv4 nameserver of a pod's resolv.conf as `ip netns exec` gives it (/etc/netns/NAME/resolv.conf). */
export function podNameserver(netns: string, read: (f: string) => string | null = readIfThere): string | null {
  const text = read(`/etc/netns/${netns}/resolv.conf`);
  if (text === null) return null;
  for (const line of text.split('\n')) {
    const m = /^\s*nameserver\s+(\S+)/.exec(line);
    if (m && isIPv4(m[1]!)) return m[1]!;
  }
  return null;
}

function readIfThere(f: string): string | null {
  return existsSync(f) ? readFileSync(f, 'utf8').slice(0, 64 * 1024) : null;
}

/** Runs the client in the pod: its queries' outcomes, one per line (a line that is not one is skipped). */
function queryFromPod(netns: string, name: string, server: string): Promise<QueryOutcome[]> {
  const script = path.join(__dirname, 'dnsQuery.js');
  const args = ['netns', 'exec', netns, process.execPath, script, name, server, '53', String(DNS_QUERIES), String(QUERY_TIMEOUT_MS)];
  return new Promise((resolve) => {
    execFile('ip', args, { timeout: DNS_QUERIES * QUERY_TIMEOUT_MS + 10_000, maxBuffer: 64 * 1024 }, (_err, stdout) => {
      resolve(String(stdout).split('\n').map(parseQueryOutcome).filter((o): o is QueryOutcome => o !== null));
    });
  });
}

export async function runDnsDiagnose(opts: DnsDiagnoseOptions): Promise<DnsDiagnosis> {
  if (!nameLabels(opts.name)) throw usageError(`--dns ${JSON.stringify(opts.name)} is not a DNS name`, 'give a name such as iperf.default.svc.cluster.local');
  if (!isIPv4(opts.from)) throw usageError(`--from ${opts.from} is not an IPv4 address`, 'give the pod\'s address, e.g. --from 10.244.1.5');
  const pod = findPodByIp(opts.cluster.topology, opts.from);
  if (!pod) throw new NettraceError('NOT_FOUND', `${opts.from} is not a pod on ${opts.cluster.nodes.map((n) => n.name).join(', ')}: no pod to ask from`, 'give a pod address with --from (nettrace testbed status lists them)');
  const server = opts.server ?? podNameserver(pod.netns.name);
  if (!server || !isIPv4(server)) {
    throw new NettraceError('NOT_FOUND', `pod ${pod.name} has no IPv4 nameserver in /etc/netns/${pod.netns.name}/resolv.conf`, 'name the DNS server with --server IP (the kube-dns ClusterIP, e.g. 10.96.0.10)');
  }
  const flow: FlowSpec = { src: opts.from, dst: server, sport: 0, dport: 53, proto: 'udp', family: 4 };
  const base = localTarget(flow, opts.cluster, opts.attach);
  const seen: PacketPath[] = [];
  let queries: QueryOutcome[] = [];
  const target = {
    ...base,
    follow: (h: Parameters<typeof base.follow>[0]) => base.follow({ ...h, onPath: (p: PacketPath) => { seen.push(p); h.onPath(p); } }),
    sendProbes: async () => {
      queries = await queryFromPod(pod.netns.name, opts.name, server);
    },
  };
  const d = await runDiagnose({ flow, target, passive: false, seconds: 0, signal: opts.signal, onReady: opts.onReady, onWarning: opts.onWarning });
  // only this run's queries: their source ports, which the client printed
  const ours = new Set(queries.map((x) => x.sport));
  const mine = seen.filter((p) => ours.has(p.direction === 'request' ? p.packet.sport : p.packet.dport));
  const firstStopped = mine.find((p) => !p.complete && p.drop);
  const svc = opts.cluster.services.find((s) => s.clusterIp === server && s.port === 53 && s.proto === 'udp');
  return diagnoseDns({
    name: opts.name, server, queries, path: d,
    stopped: firstStopped ? (firstStopped.direction === 'request' ? 'query' : 'answer') : null,
    queriesDelivered: mine.filter((p) => p.direction === 'request' && p.complete).length,
    answersDelivered: mine.filter((p) => p.direction === 'reply' && p.complete).length,
    serviceEndpoints: svc ? svc.endpoints.length : null,
  });
}
