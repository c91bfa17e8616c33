// The test cluster's DNS, as a cluster's CoreDNS would serve it: a real DNS server (unbound) in a
// pod of its own, authoritative for cluster.local, behind the kube-dns ClusterIP; the other pods'
// resolv.conf (what `ip netns exec` bind-mounts over /etc/resolv.conf) points at that ClusterIP.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { NettraceError } from '../errors';
import { run } from '../exec';
import type { TestbedState } from './state';

export const DNS_CLUSTER_IP = '10.96.0.10';
export const CLUSTER_DOMAIN = 'cluster.local';
/** Any name under this zone answers SERVFAIL: a stub zone whose only server refuses (for diagnose's tests). */
export const SERVFAIL_ZONE = `broken.${CLUSTER_DOMAIN}`;
const RUN_DIR = '/run/nettrace/testbed';

/** unbound's daemon; NETTRACE_UNBOUND names another binary */
function unboundBinary(): string {
  return process.env.NETTRACE_UNBOUND ?? 'unbound';
}

export function requireUnbound(): void {
  if (spawnSync(unboundBinary(), ['-V'], { timeout: 10_000 }).error) {
    throw new NettraceError('TESTBED', 'the test cluster\'s DNS needs unbound, and it is not installed', 'install it: apt-get install unbound (make deps does)');
  }
}

/** What up writes for the DNS, named in the state before it is written so that down removes it after any failure. */
export function dnsLayout(prefix: string, dnsPod: string, clients: string[]): NonNullable<TestbedState['dns']> {
  return {
    pod: dnsPod,
    conf: path.join(RUN_DIR, `${prefix || 'default'}.unbound.conf`),
    pidFile: path.join(RUN_DIR, `${prefix || 'default'}.unbound.pid`),
    resolvConfs: clients.map((ns) => `/etc/netns/${ns}/resolv.conf`),
  };
}

/** The A records: each pod as Kubernetes names it (10-244-1-5.default.pod.cluster.local) and the Services. */
export function dnsRecords(state: TestbedState): [name: string, ip: string][] {
  const recs: [string, string][] = state.pods.map((p) => [`${p.ip.replace(/\./g, '-')}.default.pod.${CLUSTER_DOMAIN}`, p.ip]);
  for (const s of state.services) {
    const name = s.name.replace(/-tcp$/, '');
    const ns = s.namespace ?? 'default';
    const rec = `${name}.${ns}.svc.${CLUSTER_DOMAIN}`;
    if (!recs.some(([n]) => n === rec)) recs.push([rec, s.clusterIp]);
  }
  return recs;
}

export function unboundConf(state: TestbedState, podIp: string, pidFile: string): string {
  return [
    'server:',
    `  interface: ${podIp}`,
    // the SERVFAIL zone's server: unbound itself on loopback, refusing what comes from loopback
    '  interface: 127.0.0.1',
    '  port: 53',
    '  do-ip6: no',
    '  chroot: ""',
    '  username: ""',
    `  directory: "${RUN_DIR}"`,
    `  pidfile: "${pidFile}"`,
    '  use-syslog: no',
    '  logfile: ""',
    '  verbosity: 0',
    '  access-control: 0.0.0.0/0 allow',
    '  access-control: 127.0.0.0/8 refuse',
    '  do-not-query-localhost: no',
    '  module-config: "iterator"',
    // authoritative for the cluster domain: an unknown name is NXDOMAIN, nothing is forwarded
    `  local-zone: "${CLUSTER_DOMAIN}." static`,
    ...dnsRecords(state).map(([n, ip]) => `  local-data: "${n}. 5 IN A ${ip}"`),
    `  local-zone: "${SERVFAIL_ZONE}." transparent`,
    'stub-zone:',
    `  name: "${SERVFAIL_ZONE}."`,
    '  stub-addr: 127.0.0.1@53',
    'remote-control:',
    '  control-enable: no',
    '',
  ].join('\n');
}

export function resolvConf(): string {
  return [`nameserver ${DNS_CLUSTER_IP}`, `search default.svc.${CLUSTER_DOMAIN} svc.${CLUSTER_DOMAIN} ${CLUSTER_DOMAIN}`, 'options ndots:5', ''].join('\n');
}

/** Starts unbound in the DNS pod, writes the clients' resolv.conf; records unbound's pid in state.dns. */
export function startDns(state: TestbedState, save: (s: TestbedState) => void): void {
  const dns = state.dns!;
  const pod = state.pods.find((p) => p.netns === dns.pod)!;
  mkdirSync(RUN_DIR, { recursive: true });
  writeFileSync(dns.conf, unboundConf(state, pod.ip, dns.pidFile));
  for (const f of dns.resolvConfs) {
    mkdirSync(path.dirname(f), { recursive: true });
    writeFileSync(f, resolvConf());
  }
  rmSync(dns.pidFile, { force: true }); // only the pid this start writes
  // unbound binds its sockets, then forks into the background; the child writes the pid file
  run('ip', ['netns', 'exec', dns.pod, unboundBinary(), '-c', dns.conf]);
  const deadline = Date.now() + 10_000;
  let pid = NaN;
  while (!(Number.isInteger(pid) && pid > 1)) {
    if (Date.now() > deadline) throw new Error(`unbound started in ${dns.pod} but wrote no pid to ${dns.pidFile} in 10 s`);
    if (existsSync(dns.pidFile)) pid = Number(readFileSync(dns.pidFile, 'utf8').trim());
    else spawnSync('sleep', ['0.05'], { timeout: 5_000 });
  }
  dns.pid = pid;
  save(state);
}

/** Kills the recorded unbound (only if that pid still is unbound) and removes the files state.dns names. */
export function stopDns(dns: TestbedState['dns']): void {
  if (!dns) return;
  if (dns.pid && isUnbound(dns.pid)) {
    try {
      process.kill(dns.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  for (const f of [dns.conf, dns.pidFile, ...dns.resolvConfs]) rmSync(f, { force: true });
  for (const f of dns.resolvConfs) {
    // /etc/netns/NAME: ours to remove only once empty (someone may keep other files there)
    const dir = path.dirname(f);
    if (existsSync(dir) && readdirSync(dir).length === 0) rmdirSync(dir);
  }
}

function isUnbound(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === path.basename(unboundBinary()).slice(0, 15);
  } catch {
    return false;
  }
}

/** The paths a state file's dns may name: down deletes them, so nothing else is accepted. */
export function dnsPathsOk(state: TestbedState): boolean {
  const dns = state.dns;
  if (dns === undefined) return true;
  if (!dns || typeof dns !== 'object' || !Array.isArray(dns.resolvConfs)) return false;
  const base = path.join(RUN_DIR, state.prefix || 'default');
  if (dns.conf !== `${base}.unbound.conf` || dns.pidFile !== `${base}.unbound.pid`) return false;
  if (dns.pid !== undefined && !Number.isInteger(dns.pid)) return false;
  const pods = new Set(state.pods.map((p) => p.netns));
  return dns.resolvConfs.every((f) => typeof f === 'string' && /^\/etc\/netns\/[^/]+\/resolv\.conf$/.test(f) && pods.has(f.split('/')[3]!));
}
