// Soak: both agents for SOAK_MINUTES (10) under iperf3 load while pods come and go every few
// seconds. Prints each agent's RSS and CPU at the start and the end, hooks attached against the
// pods present, and every loss counter the agents export. Goals: RSS growth under 10 %, no hook
// leaked (attached = what the pods present need, and no program left after exit).
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
  try {
    await new Promise((r) => setTimeout(r, 20_000)); // warm up: the JIT, the first scrapes, the peers' first polls
    const start = agents.map((a) => procStat(a.child.pid!));
    // the JS heap in use, apart from RSS: a leak grows it, V8 and malloc keeping freed pages do not
    const heapMb = async (port: number) => {
      const text = await scrape(port);
      const mb = (name: string) => ((counter(text, name) ?? NaN) / 2 ** 20).toFixed(1);
      return `used ${mb('nodejs_heap_size_used_bytes')}, total ${mb('nodejs_heap_size_total_bytes')}, external ${mb('nodejs_external_memory_bytes')}`;
    };
    const heapStart = await Promise.all(PORTS.map(heapMb));
    const samples: string[][] = PORTS.map(() => []);
    let lastSample = 0;
    const t0 = Date.now();
    while (Date.now() - t0 < seconds * 1000) {
      if (withChurn) {
        addPod();
        if (pods.length > 5) delPod();
      }
      await Promise.all(PORTS.map(scrape)); // Prometheus' part: scrapes as it would
      if (Date.now() - lastSample > seconds * 100) {
        lastSample = Date.now();
        agents.forEach((a, i) => samples[i]!.push(procStat(a.child.pid!).rssMb.toFixed(0)));
      }
      await new Promise((r) => setTimeout(r, 3000));
    }
    const end = agents.map((a) => procStat(a.child.pid!));
    const heapEnd = await Promise.all(PORTS.map(heapMb));
    await new Promise((r) => setTimeout(r, 2000)); // the last pod change rescanned
    const attached = await hooks(PORTS[0]!);
    const expected = baseHooks + 4 * pods.length;
    console.log(`soak: ${minutes} min, ${withLoad ? 'iperf3 TCP x2 pod A -> pod B' : 'no traffic'}, ${made} pods created and ${made - pods.length} deleted on node1${withChurn ? ' (one every 3 s, 5 kept)' : ''}`);
    agents.forEach((_a, i) => {
      const s = start[i]!;
      const e = end[i]!;
      const growth = (e.rssMb / s.rssMb - 1) * 100;
      console.log(`  agent ${tb.nodes[i]!.name}: RSS ${s.rssMb.toFixed(1)} -> ${e.rssMb.toFixed(1)} MB (${growth >= 0 ? '+' : ''}${growth.toFixed(1)} %; goal < 10 %), CPU ${((e.cpuS - s.cpuS) / seconds * 100).toFixed(1)} % of a core`);
      console.log(`    JS heap (MB) ${heapStart[i]} -> ${heapEnd[i]}; RSS every tenth of the run: ${samples[i]!.join(' ')} MB`);
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
