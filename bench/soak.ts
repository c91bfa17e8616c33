// Soak: both agents for SOAK_MINUTES (10) under iperf3 load while pods come and go every few
// seconds. Prints each agent's RSS at its start (ready), after warm-up and at the end, with the
// growth from both and where the memory is (per kind of mapping), RSS every tenth of the run, CPU,
// hooks attached against the pods present, and every loss counter the agents export. Goals: RSS
// growth under 10 %, no hook leaked (attached = what the pods present need, and no program left
// after exit).
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import type { TestbedState } from '../src/testbed/testbed';
import { startAgentProcess } from './agent';

const B = '10.244.2.8';
const PORTS = [19311, 19312];
/** the counters where a loss shows: every one must be printed, none may be missing */
const LOSS_COUNTERS = [
  'nettrace_lost_events_total', 'nettrace_wire_departures_total{outcome="dropped"}', 'nettrace_wire_peer_refused_total',
  'nettrace_wire_arrivals_total{outcome="no_departure"}', 'nettrace_wire_skew_clamped_total', 'nettrace_map_update_failures_total',
  'nettrace_agent_spans_dropped_total', 'nettrace_agent_attach_errors_total',
];

/**
 * Where a process' resident memory is, by kind of mapping (MB): glibc's main heap ([heap]),
 * other anonymous memory (V8's heap pages, thread arenas, big malloc'd blocks), mapped files
 * (the node binary and libraries) and BPF maps mmap'd by the agent (the ring).
 */
function rssByKind(pid: number): { brk: number; anon: number; files: number; bpf: number } {
  const kb = { brk: 0, anon: 0, files: 0, bpf: 0 };
  let kind: keyof typeof kb = 'anon';
  for (const line of readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    const head = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (head) {
      const name = head[1]!;
      kind = name === '[heap]' ? 'brk' : name.startsWith('anon_inode:') ? 'bpf' : name.startsWith('/') ? 'files' : 'anon';
    } else if (line.startsWith('Rss:')) {
      kb[kind] += Number(line.split(/\s+/)[1]);
    }
  }
  return { brk: kb.brk / 1024, anon: kb.anon / 1024, files: kb.files / 1024, bpf: kb.bpf / 1024 };
}

function procStat(pid: number): { rssMb: number; cpuS: number } {
  const rss = Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;
  // fields after the command's closing parenthesis: utime and stime are the 12th and 13th
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return { rssMb: rss, cpuS: (Number(f[11]) + Number(f[12])) / 100 };
}

/** The sum of a counter's samples whose line matches the selector (name, optionally with one label). */
function counter(exposition: string, selector: string): number | null {
  const [name, label] = selector.split('{') as [string, string | undefined];
  const want = label?.slice(0, -1);
  let found = false;
  let sum = 0;
  for (const line of exposition.split('\n')) {
    if (!line.startsWith(name + '{') && !line.startsWith(name + ' ')) continue;
    if (want && !line.includes(want)) continue;
    found = true;
    sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return found ? sum : null;
}

const ourProgs = () => (spawnSync('bpftool', ['prog', 'show'], { encoding: 'utf8', timeout: 30_000 }).stdout.match(/name nt_agent_\d/g) ?? []).length;

export async function soak(tb: TestbedState, minutes: number): Promise<void> {
  const node1 = tb.nodes[0]!.netns;
  const before = ourProgs();
  const agents = await Promise.all(tb.nodes.map((n, i) => startAgentProcess(n.netns, PORTS[i]!, ['--peers', `http://127.0.0.1:${PORTS[1 - i]}`])));
  const scrape = async (port: number) => (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const hooks = async (port: number) => ((await (await fetch(`http://127.0.0.1:${port}/healthz`)).json()) as { attached_hooks: number }).attached_hooks;
  const baseHooks = await hooks(PORTS[0]!);
  const seconds = Math.round(minutes * 60);
  // SOAK_LOAD=0 or SOAK_CHURN=0 leave out the traffic or the pod churn, to tell which one memory follows
  const withLoad = process.env.SOAK_LOAD !== '0';
  const withChurn = process.env.SOAK_CHURN !== '0';
  const load = spawn('ip', ['netns', 'exec', tb.pods[0]!.netns, 'iperf3', '-c', B, '-t', String(withLoad ? seconds + 30 : 1), '-P', '2'], { stdio: 'ignore' });
  const pods: string[] = [];
  let made = 0;
  const sh = (args: string[]) => spawnSync('ip', args, { timeout: 10_000 });
  const addPod = () => {
    const i = made++;
    const name = `${tb.prefix}soak${i}`;
    sh(['netns', 'add', name]);
    sh(['-n', node1, 'link', 'add', `vs${i}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', name]);
    sh(['-n', node1, 'link', 'set', `vs${i}`, 'master', 'cni0', 'up']);
    sh(['-n', name, 'addr', 'add', `10.244.1.${100 + (i % 100)}/24`, 'dev', 'eth0']);
    sh(['-n', name, 'link', 'set', 'eth0', 'up']);
    pods.push(name);
  };
  const delPod = () => {
    const name = pods.shift();
    if (name) sh(['netns', 'del', name]);
  };
  // warm-up: the JIT's first compilations, V8 sizing its heap, the first scrapes and peer polls;
  // a fifth of the run, at least a minute (what the agents measured here took to level off)
  const warmS = Math.min(seconds / 2, Math.max(60, seconds / 5));
  // what one agent's memory is at one moment: RSS, its kinds, and the JS heap from its own metrics
  // (a leak in JS grows "used"; V8 and malloc keeping freed pages do not)
  const snapshot = async (i: number) => {
    const pid = agents[i]!.child.pid!;
    const text = await scrape(PORTS[i]!);
    const mb = (name: string) => (counter(text, name) ?? NaN) / 2 ** 20;
    return {
      ...procStat(pid), kinds: rssByKind(pid), at: Date.now(),
      heapUsed: mb('nodejs_heap_size_used_bytes'), heapTotal: mb('nodejs_heap_size_total_bytes'), external: mb('nodejs_external_memory_bytes'),
    };
  };
  type Snapshot = Awaited<ReturnType<typeof snapshot>>;
  const snapshots = () => Promise.all(agents.map((_a, i) => snapshot(i)));
  try {
    // the start is the agents' ready line: growth is measured from there, warm-up included
    const start = await snapshots();
    let warm: Snapshot[] | null = null;
    const samples: string[][] = PORTS.map(() => []);
    let lastSample = 0;
    const t0 = Date.now();
    while (Date.now() - t0 < seconds * 1000) {
      if (withChurn) {
        addPod();
        if (pods.length > 5) delPod();
      }
      await Promise.all(PORTS.map(scrape)); // Prometheus' part: scrapes as it would
      if (!warm && Date.now() - t0 >= warmS * 1000) warm = await snapshots();
      if (Date.now() - lastSample > seconds * 100) {
        lastSample = Date.now();
        agents.forEach((a, i) => samples[i]!.push(procStat(a.child.pid!).rssMb.toFixed(0)));
      }
      await new Promise((r) => setTimeout(r, 3000));
    }
    const end = await snapshots();
    warm ??= end;
    await new Promise((r) => setTimeout(r, 2000)); // the last pod change rescanned
    const attached = await hooks(PORTS[0]!);
    const expected = baseHooks + 4 * pods.length;
    console.log(`soak: ${minutes} min, ${withLoad ? 'iperf3 TCP x2 pod A -> pod B' : 'no traffic'}, ${made} pods created and ${made - pods.length} deleted on node1${withChurn ? ' (one every 3 s, 5 kept)' : ''}`);
    const pct = (from: number, to: number) => { const g = (to / from - 1) * 100; return `${g >= 0 ? '+' : ''}${g.toFixed(1)} %`; };
    const kinds = (x: Snapshot) => `[heap] ${x.kinds.brk.toFixed(1)}, other anonymous ${x.kinds.anon.toFixed(1)}, files ${x.kinds.files.toFixed(1)}, BPF maps ${x.kinds.bpf.toFixed(1)}; ` +
      `JS heap used ${x.heapUsed.toFixed(1)} of ${x.heapTotal.toFixed(1)}, external ${x.external.toFixed(1)}`;
    agents.forEach((_a, i) => {
      const [s, w, e] = [start[i]!, warm![i]!, end[i]!];
      const warmAt = ((w.at - t0) / 1000).toFixed(0);
      console.log(`  agent ${tb.nodes[i]!.name}: RSS ${s.rssMb.toFixed(1)} MB at ready, ${w.rssMb.toFixed(1)} after warm-up (${warmAt} s), ${e.rssMb.toFixed(1)} at the end: ` +
        `${pct(s.rssMb, e.rssMb)} from ready, ${pct(w.rssMb, e.rssMb)} after warm-up (goal < 10 %); CPU after warm-up ${((e.cpuS - w.cpuS) / ((e.at - w.at) / 1000) * 100).toFixed(1)} % of a core`);
      console.log(`    RSS every tenth of the run: ${samples[i]!.join(' ')} MB`);
      for (const [what, x] of [['ready', s], ['warm ', w], ['end  ', e]] as const) console.log(`    ${what} (MB) ${kinds(x)}`);
    });
    console.log(`  node1 hooks attached ${attached}, needed for the ${pods.length} pods present ${expected} (${attached === expected ? 'none leaked' : 'MISMATCH'})`);
    for (const [i, port] of PORTS.entries()) {
      const text = await scrape(port);
      console.log(`  loss counters on ${tb.nodes[i]!.name}: ${LOSS_COUNTERS.map((c) => `${c} ${counter(text, c) ?? 'MISSING'}`).join(', ')}`);
    }
  } finally {
    load.kill('SIGKILL');
    while (pods.length) delPod();
    await Promise.all(agents.map((a) => a.stop()));
  }
  await new Promise((r) => setTimeout(r, 500));
  const after = ourProgs();
  console.log(`  agent programs loaded after both exited: ${after - before} (goal 0)`);
}
