// Benchmarks of `nettrace agent`: its cost on pod-to-pod traffic against empty programs (the
// limit), per-run cost of the aggregate program, memory, and time to attach to many pods.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { median } from '../src/flow/stats';
import { BpfObject, testRun } from '../src/libbpf';
import { attachAll } from '../src/probe/attach';
import { AgentProbe } from '../src/probe/agentProbe';
import { RETRANS_KEY_FIELDS, RETRANS_KEY_SIZE, RETRANS_VALUE_FIELDS, RETRANS_VALUE_SIZE } from '../src/probe/layout.generated';
import { bpfObjectPath } from '../src/probe/paths';
import { discoverCluster } from '../src/topology/discover';
import { allDevices } from '../src/topology/model';
import { namedNetns } from '../src/topology/netns';
import { ether, ipv4 } from '../test/helpers/packets';
import { cpuSeconds, withProgramStats } from './bpfStats';

const NETTRACE = path.resolve(__dirname, '../../bin/nettrace');
const A = '10.244.1.5';
const B = '10.244.2.8';

interface Agent {
  child: ChildProcess;
  ready: string;
  /** its stderr so far */
  log(): string;
  stop(): Promise<void>;
}

/** A real agent process on one node namespace; resolves at its ready: line. */
export function startAgentProcess(node: string, port: number, extra: string[] = []): Promise<Agent> {
  const child = spawn(NETTRACE, ['agent', '--nodes', node, '--metrics-addr', `127.0.0.1:${port}`, ...extra], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`agent not ready in 60 s: ${err}`)), 60000);
    child.stderr!.on('data', (d: Buffer) => {
      err += d.toString();
      const m = /^ready:.*$/m.exec(err);
      if (m) {
        clearTimeout(timer);
        resolve({ child, ready: m[0], log: () => err, stop: async () => { child.kill('SIGTERM'); await exited; } });
      }
    });
    child.once('exit', (code) => reject(new Error(`agent exited ${code}: ${err}`)));
  });
}

function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

type Mode = 'none' | 'empty' | 'agent';

async function withMode<T>(mode: Mode, nodes: string[], fn: () => Promise<T>): Promise<T> {
  if (mode === 'none') return fn();
  if (mode === 'empty') {
    const obj = BpfObject.open(bpfObjectPath('empty'));
    obj.load();
    const prog = obj.program('nt_empty');
    const hooks = attachAll(allDevices(discoverCluster(nodes.map(namedNetns))), { ingress: prog, egress: prog });
    try {
      return await fn();
    } finally {
      hooks.detach();
      obj.close();
    }
  }
  return withAgents(nodes, () => fn());
}

/** Both nodes' agents, with their defaults, each told of the other (the wire step). */
async function withAgents<T>(nodes: string[], fn: (agents: Agent[]) => Promise<T>): Promise<T> {
  const ports = [19301, 19302];
  const agents = await Promise.all(nodes.map((n, i) => startAgentProcess(n, ports[i]!, ['--peers', `http://127.0.0.1:${ports[1 - i]}`])));
  try {
    return await fn(agents);
  } finally {
    await Promise.all(agents.map((a) => a.stop()));
  }
}

export async function agentThroughput(nodes: string[], iperf: (args: string[]) => Promise<number>, rounds: number): Promise<void> {
  const modes: Mode[] = ['none', 'empty', 'agent'];
  for (const [what, args, unit, scale, goal] of [
    ['TCP', [], 'Gbit/s', 1e9, 0.97],
    ['UDP 64-byte packets', ['-u', '-l', '64', '-b', '0'], 'kpps', 1e3, 0.95],
  ] as const) {
    const runs: Record<Mode, number[]> = { none: [], empty: [], agent: [] };
    for (let r = 0; r < rounds; r++) for (const m of modes) runs[m].push(await withMode(m, nodes, () => iperf([...args])));
    const med = Object.fromEntries(modes.map((m) => [m, median(runs[m])])) as Record<Mode, number>;
    console.log(`iperf3 ${what} pod A -> pod B with both agents (defaults: 1 in 8 packets timed, 1 in 1000 traced), ${rounds} interleaved rounds, medians:`);
    for (const m of modes) console.log(`  ${m.padEnd(6)} ${(med[m] / scale).toFixed(2)} ${unit}  (rounds: ${runs[m].map((x) => (x / scale).toFixed(2)).join(' ')})`);
    console.log(`  agent / empty programs (goal >= ${goal}): ${(med.agent / med.empty).toFixed(3)};  agent / no programs: ${(med.agent / med.none).toFixed(3)}`);
    // where the time goes: each program under this load, and both agents' own CPU
    await withAgents(nodes, async (agents) => {
      const cpu0 = agents.map((a) => cpuSeconds(a.child.pid!));
      const run = await withProgramStats('    ', () => iperf([...args]));
      const cpu = agents.map((a, i) => ((cpuSeconds(a.child.pid!) - cpu0[i]!) / run.seconds) * 100);
      console.log(`  where the time goes: ${(run.result / scale).toFixed(2)} ${unit}; agents' CPU ${cpu.map((c) => c.toFixed(1)).join(' and ')} % of a core`);
      run.print();
    });
  }
}

export function agentPerRun(rounds: number): void {
  const empty = BpfObject.open(bpfObjectPath('empty'));
  empty.load();
  const pkt = ether(ipv4(A, B, { proto: 'tcp', dport: 80 }));
  const e: number[] = [];
  const cost: Record<string, number[]> = { timed: [], untimed: [] };
  // every packet timed (--latency-every 1), or practically none: the two paths a hop takes
  for (const [what, every] of [['timed', 1], ['untimed', 65536]] as const) {
    const probe = AgentProbe.load({ vxlanPorts: [8472], sampleEvery: 0, latencyEvery: every, tracepoints: false });
    for (let r = 0; r < rounds; r++) {
      e.push(testRun(empty.program('nt_empty').fd, pkt, 1_000_000).durationNs);
      // bridge ingress after veth ingress: the table holds the packet, the hop is matched
      testRun(probe.program(1).fd, pkt, 1);
      cost[what]!.push(testRun(probe.program(2).fd, pkt, 1_000_000).durationNs);
    }
    probe.close();
  }
  const base = median(e);
  const t = median(cost.timed!);
  const u = median(cost.untimed!);
  console.log('ns per aggregate program run (BPF_PROG_TEST_RUN, includes the harness):');
  console.log(`  empty ${base} ns; a timed hop (clock read, match, histogram) ${t} ns (+${t - base}); an untimed hop (parse, hash, table) ${u} ns (+${u - base});`);
  console.log(`  at the default --latency-every 8: +${((t - base) / 8 + (u - base) * 7 / 8).toFixed(1)} ns a hop on average`);
  empty.close();
}

/**
 * Calls fn with a file holding these lines, for `ip -b` or `bpftool batch`, in a directory of its
 * own (mkdtemp): a fixed /tmp name could be another run's file, or a link someone else planted
 * that root would then write through.
 */
function withBatchFile<T>(lines: string[], fn: (file: string) => T): T {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'nettrace-bench-'));
  try {
    const file = path.join(dir, 'commands.batch');
    writeFileSync(file, lines.join('\n') + '\n', { mode: 0o600 });
    return fn(file);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Puts n synthetic TCP flows into a running agent's retransmit map, so a scrape has n series to build. */
function fillRetransmits(n: number): void {
  const maps = JSON.parse(spawnSync('bpftool', ['-j', 'map', 'show'], { encoding: 'utf8', timeout: 30_000 }).stdout) as { id: number; name: string }[];
  const id = maps.filter((m) => m.name === 'nt_retrans').map((m) => m.id).pop();
  if (id === undefined) throw new Error('no nt_retrans map');
  const lines: string[] = [];
  const hex = (b: Buffer) => [...b].map((x) => x.toString(16).padStart(2, '0')).join(' ');
  const K = RETRANS_KEY_FIELDS;
  const value = Buffer.alloc(RETRANS_VALUE_SIZE);
  value.writeBigUInt64LE(1n, RETRANS_VALUE_FIELDS.retransmits.offset);
  value.writeBigUInt64LE(3n, RETRANS_VALUE_FIELDS.segments.offset);
  for (let i = 0; i < n; i++) {
    // n distinct endpoint pairs (the kernel keys them without the source port): the worst case for series
    const key = Buffer.alloc(RETRANS_KEY_SIZE);
    Buffer.from([10, 244, 1, 5]).copy(key, K.saddr.offset);
    Buffer.from([10, 245 + (i >> 16), (i >> 8) & 0xff, i & 0xff]).copy(key, K.daddr.offset);
    key.writeUInt16LE(1000 + (i % 50000), K.dport.offset);
    key.writeUInt8(4, K.family.offset);
    lines.push(`map update id ${id} key hex ${hex(key)} value hex ${hex(value)}`);
  }
  // 100k updates take bpftool some seconds; minutes means it hangs
  const r = withBatchFile(lines, (file) => spawnSync('bpftool', ['batch', 'file', file], { encoding: 'utf8', maxBuffer: 64 << 20, timeout: 300_000 }));
  if (r.status !== 0) throw new Error(`bpftool batch: ${r.error?.message ?? r.stderr.slice(0, 300)}`);
}

export async function agentMemory(node: string): Promise<void> {
  const port = 19303;
  const agent = await startAgentProcess(node, port);
  try {
    await new Promise((r) => setTimeout(r, 2000));
    await fetch(`http://127.0.0.1:${port}/metrics`).then((r) => r.text());
    const idle = rssMb(agent.child.pid!);
    const t0 = performance.now();
    fillRetransmits(100_000);
    const fillMs = performance.now() - t0;
    let series = 0;
    const scrapeMs: number[] = [];
    for (let i = 0; i < 3; i++) {
      const s0 = performance.now();
      const text = await fetch(`http://127.0.0.1:${port}/metrics`).then((r) => r.text());
      scrapeMs.push(performance.now() - s0);
      series = text.split('\n').filter((l) => l.startsWith('nettrace_tcp_retransmits_total{')).length;
    }
    const full = rssMb(agent.child.pid!);
    console.log(`agent RSS: idle ${idle.toFixed(1)} MB (goal <= 80); with 100k flows in the retransmit map, after 3 scrapes ${full.toFixed(1)} MB (goal <= 150)`);
    console.log(`  ${series} retransmit series per scrape, scrape ${median(scrapeMs).toFixed(0)} ms (filled in ${(fillMs / 1000).toFixed(1)} s by bpftool)`);
  } finally {
    await agent.stop();
  }
}

/** n pods with their veths on node's bridge, made in two `ip -batch` runs. */
function makePods(node: string, prefix: string, n: number): string[] {
  const names = Array.from({ length: n }, (_, i) => `${prefix}bp${i}`);
  const batches: [string[], (file: string) => string[], string][] = [
    [names.map((p) => `netns add ${p}`), (file) => ['-b', file], 'netns'],
    [names.flatMap((p, i) => [`link add vb${i} type veth peer name eth0 netns ${p}`, `link set vb${i} master cni0 up`]), (file) => ['-n', node, '-b', file], 'veths'],
  ];
  for (const [lines, args, what] of batches) {
    const r = withBatchFile(lines, (file) => spawnSync('ip', args(file), { encoding: 'utf8', timeout: 120_000 }));
    if (r.status !== 0) throw new Error(`creating ${n} pods (${what}): ${r.error?.message ?? r.stderr.slice(0, 300)}`);
  }
  return names;
}

export function deletePods(prefix: string): void {
  const names = (spawnSync('ip', ['netns', 'list'], { encoding: 'utf8', timeout: 30_000 }).stdout.match(new RegExp(`^${prefix}bp\\d+`, 'gm')) ?? []);
  if (!names.length) return;
  withBatchFile(names.map((p) => `netns del ${p}`), (file) => spawnSync('ip', ['-b', file], { timeout: 120_000 }));
}

/** Resolves with the line matching re once the agent printed it (null after timeoutMs). */
async function logLine(agent: Agent, re: RegExp, timeoutMs: number): Promise<RegExpExecArray | null> {
  const end = performance.now() + timeoutMs;
  for (;;) {
    const m = re.exec(agent.log());
    if (m || performance.now() > end) return m;
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * Issue 10's agent on a node with 250 pods: ready (node devices attached, metrics served) <= 1 s,
 * every pod attached <= 2 s, SIGTERM to exit <= 1 s. Times are the agent's own from its start of
 * attaching (its ready: and attached: lines), and the bench's from SIGTERM to the process's exit.
 */
export async function attachTime(node: string, prefix: string, pods: number, rounds: number): Promise<void> {
  makePods(node, prefix, pods);
  try {
    for (const mechanism of ['tcx', 'tc', 'mixed']) {
      const readyMs: number[] = [];
      const allMs: number[] = [];
      const stopMs: number[] = [];
      const spawnMs: number[] = [];
      let hooks = '';
      for (let r = 0; r < rounds; r++) {
        const s0 = performance.now();
        const agent = await startAgentProcess(node, 19304, ['--attach', mechanism]);
        spawnMs.push(performance.now() - s0);
        const m = /(\d+) hooks on (\d+) devices in (\d+) ms(, (\d+) pod devices attaching)?/.exec(agent.ready);
        if (!m) throw new Error(`no attach time in: ${agent.ready}`);
        readyMs.push(Number(m[3]));
        // no attached: line when every pod was attached by ready
        const all = m[4] ? await logLine(agent, /^attached: (\d+) hooks on (\d+) devices, every pod's, in (\d+) ms/m, 120_000) : m;
        if (!all) throw new Error(`pods not attached in 120 s: ${agent.log()}`);
        allMs.push(Number(all[3]));
        hooks = `${all[1]} hooks on ${all[2]} devices`;
        const t0 = performance.now();
        await agent.stop();
        stopMs.push(performance.now() - t0);
      }
      const f = (xs: number[]) => xs.map((x) => x.toFixed(0)).join(' ');
      console.log(`agent on a node with ${pods} pods, --attach ${mechanism} (${hooks}), ${rounds} rounds, medians:`);
      console.log(`  ready (node devices attached, /metrics served) ${median(readyMs).toFixed(0)} ms (goal <= 1000; rounds: ${f(readyMs)}; from the process's start ${f(spawnMs)})`);
      console.log(`  every pod attached                             ${median(allMs).toFixed(0)} ms (goal <= 2000; rounds: ${f(allMs)})`);
      console.log(`  SIGTERM to exit                                ${median(stopMs).toFixed(0)} ms (goal <= 1000; rounds: ${f(stopMs)})`);
    }
  } finally {
    deletePods(prefix);
  }
}
