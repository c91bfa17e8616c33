// Cross-node tracing as on real machines: one `nettrace agent` per node, started inside that
// node's namespace (it touches nothing else), and a client in a namespace of its own that
// reaches the nodes only over the network (routed through node1's underlay).
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { TestContext } from 'node:test';
import { API_PORT } from '../../src/session/protocol';
import type { TestbedState } from '../../src/testbed/testbed';
import { NETTRACE, sleep, startNettrace, type FollowRun } from './cluster';


export function tempDir(t: TestContext): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'nettrace-remote-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A token file as a Kubernetes Secret would mount it. */
export function tokenFile(t: TestContext, dir = tempDir(t)): string {
  const file = path.join(dir, `token-${randomBytes(3).toString('hex')}`);
  writeFileSync(file, randomBytes(24).toString('base64') + '\n', { mode: 0o600 });
  return file;
}

export interface NodeAgent {
  node: string;
  netns: string;
  ip: string;
  url: string;
  run: FollowRun;
}

/** `nettrace agent --token-file F` inside each node's namespace, listening on the node's underlay address. */
export async function startNodeAgents(t: TestContext, tb: TestbedState, token: string, extra: (node: string) => string[] = () => []): Promise<NodeAgent[]> {
  return Promise.all(tb.nodes.map(async (n) => {
    const args = extra(n.name);
    const run = await startNettrace(t, ['agent', '--token-file', token, '--metrics-addr', '127.0.0.1:9101', ...args], ['ip', 'netns', 'exec', n.netns]);
    const scheme = args.includes('--tls-cert') ? 'https' : 'http';
    return { node: n.name, netns: n.netns, ip: n.ip, url: `${scheme}://${n.ip}:${API_PORT}`, run };
  }));
}

/** A CA and, per address, a certificate it signed for that IP (what cert-manager would issue). */
export function certificates(dir: string, ips: string[]): { ca: string; certs: Map<string, { cert: string; key: string }> } {
  const ssl = (args: string[]) => {
    const r = spawnSync('openssl', args, { encoding: 'utf8', cwd: dir });
    if (r.status !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr}`);
  };
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  ssl(['req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '1', '-subj', '/CN=nettrace test CA']);
  const certs = new Map<string, { cert: string; key: string }>();
  for (const ip of ips) {
    writeFileSync(path.join(dir, `${ip}.ext`), `subjectAltName=IP:${ip}\n`);
    ssl(['req', ...ec, '-keyout', `${ip}.key`, '-out', `${ip}.csr`, '-subj', `/CN=${ip}`]);
    ssl(['x509', '-req', '-in', `${ip}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${ip}.pem`, '-days', '1', '-extfile', `${ip}.ext`]);
    certs.set(ip, { cert: path.join(dir, `${ip}.pem`), key: path.join(dir, `${ip}.key`) });
  }
  return { ca: path.join(dir, 'ca.pem'), certs };
}

export interface ClientNs {
  pid: number;
  ip: string;
  /** argv prefix that runs a command in the client's namespace */
  prefix: string[];
  exec(cmd: string[], timeoutMs?: number): { status: number | null; stdout: string; stderr: string };
}

/**
 * A machine outside the cluster: a network namespace with no name (so no node takes it for a
 * pod), held by a sleeping process, linked to node1 by a veth; node2 routes back through node1.
 */
export async function clientNs(t: TestContext, tb: TestbedState): Promise<ClientNs> {
  const holder = spawn('unshare', ['--net', '--', 'sleep', 'infinity'], { stdio: 'ignore' });
  const pid = holder.pid!;
  t.after(() => {
    holder.kill('SIGKILL');
  });
  await sleep(100);
  const [n1, n2] = tb.nodes as [TestbedState['nodes'][0], TestbedState['nodes'][0]];
  const ip = (ns: string | number, args: string[]) => {
    const full = typeof ns === 'number' ? ['nsenter', '-t', String(ns), '-n', 'ip', ...args] : ['ip', '-n', ns, ...args];
    const r = spawnSync(full[0]!, full.slice(1), { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`${full.join(' ')}: ${r.stderr}`);
  };
  ip(n1.netns, ['link', 'add', 'client0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', String(pid)]);
  ip(n1.netns, ['addr', 'add', '192.168.100.1/30', 'dev', 'client0']);
  ip(n1.netns, ['link', 'set', 'client0', 'up']);
  ip(pid, ['link', 'set', 'lo', 'up']);
  ip(pid, ['addr', 'add', '192.168.100.2/30', 'dev', 'eth0']);
  ip(pid, ['link', 'set', 'eth0', 'up']);
  ip(pid, ['route', 'add', 'default', 'via', '192.168.100.1']);
  ip(n2.netns, ['route', 'add', '192.168.100.0/30', 'via', n1.ip]);
  const prefix = ['nsenter', '-t', String(pid), '-n'];
  return {
    pid, ip: '192.168.100.2', prefix,
    exec: (cmd, timeoutMs = 20_000) => {
      const r = spawnSync(prefix[0]!, [...prefix.slice(1), ...cmd], { encoding: 'utf8', timeout: timeoutMs });
      return { status: r.status, stdout: r.stdout, stderr: r.stderr };
    },
  };
}

/** `nettrace follow --agents ...` in the client's namespace, resolved at its `ready:` line. */
export function remoteFollow(t: TestContext, client: ClientNs, args: string[]): Promise<FollowRun> {
  return startNettrace(t, ['follow', ...args], client.prefix);
}

/** Runs nettrace in the client's namespace to the end. */
export function clientRun(client: ClientNs, args: string[], timeoutMs = 60_000): { status: number | null; stdout: string; stderr: string } {
  return client.exec([NETTRACE, ...args], timeoutMs);
}

/** Hop programs loaded on the machine now (follow sessions' nt_ingress/nt_egress). */
export function hopPrograms(): number {
  const r = spawnSync('bpftool', ['prog', 'show', '-j'], { encoding: 'utf8' });
  const progs = JSON.parse(r.stdout || '[]') as { name?: string }[];
  return progs.filter((p) => p.name === 'nt_ingress' || p.name === 'nt_egress').length;
}

/** The agent's own metrics, read inside its node. */
export function agentMetrics(a: NodeAgent): string {
  return spawnSync('ip', ['netns', 'exec', a.netns, 'curl', '-s', '-m', '3', 'http://127.0.0.1:9101/metrics'], { encoding: 'utf8' }).stdout;
}
