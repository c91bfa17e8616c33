// make bench: overhead of nettrace on pod-to-pod traffic, per-run cost of the hop program, and
// decode speed, each against a baseline measured in the same run (these machines are noisy).
import { spawn } from 'node:child_process';
import { viewCluster } from '../src/session/cluster';
import { startFollow } from '../src/session/follow';
import { openLocalFeed } from '../src/session/localFeed';
import { POLL_MS } from '../src/session/pathLoop';
import { parseFlowSpec } from '../src/flow/spec';
import { median } from '../src/flow/stats';
import { BpfObject, testRun } from '../src/libbpf';
import { attachAll } from '../src/probe/attach';
import { HopProbe } from '../src/probe/hop';
import { decodeHopRecord, decodeHopRecordInto, HOP_RECORD_FIELDS, HOP_RECORD_SIZE, type HopRecord } from '../src/probe/layout.generated';
import { PathAssembler } from '../src/flow/assemble';
import { tcpHopRecord, twoNodeTopology } from '../test/helpers/records';
import { bpfObjectPath } from '../src/probe/paths';
import { testbedDown, testbedUp } from '../src/testbed/testbed';
import { discoverCluster } from '../src/topology/discover';
import { allDevices } from '../src/topology/model';
import { namedNetns } from '../src/topology/netns';
import { ipBytes, ether, ipv4 } from '../test/helpers/packets';
import { agentMemory, agentPerRun, agentThroughput, attachTime, deletePods } from './agent';
import { withProgramStats } from './bpfStats';
import { remoteBench } from './remote';
import { soak } from './soak';

// BENCH_PREFIX: a second bench beside a running one must not tear down its testbed
const PREFIX = process.env.BENCH_PREFIX ?? 'ntbench-';
const A = '10.244.1.5';
const B = '10.244.2.8';
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const SECONDS = 2;

function iperf(ns: string, args: string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const c = spawn('ip', ['netns', 'exec', ns, 'iperf3', '-c', B, '-t', String(SECONDS), '-J', ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    c.stdout.on('data', (d: Buffer) => (out += d.toString()));
    c.on('exit', (code) => {
      if (code !== 0) return reject(new Error(`iperf3 exited ${code}: ${out.slice(0, 300)}`));
      const j = JSON.parse(out) as { end: { sum_received?: { bits_per_second: number }; sum?: { packets: number; seconds: number; lost_packets: number } } };
      resolve(args.includes('-u') ? (j.end.sum!.packets - j.end.sum!.lost_packets) / j.end.sum!.seconds : j.end.sum_received!.bits_per_second);
    });
  });
}

type Mode = 'none' | 'empty' | 'miss' | 'ringOnly' | 'followed' | 'every16' | 'tcpdump';

/**
 * The seed's manual method: tcpdump on the six devices it captures on (pod A's veth, cni0 and eth0 of
 * node 1, then eth0, cni0 and pod B's veth of node 2), headers only, with its filters.
 */
async function withTcpdump<T>(nodes: string[], fn: () => Promise<T>): Promise<T> {
  const topo = discoverCluster(nodes.map(namedNetns));
  const [n1, n2] = topo.nodes;
  const veth = (ip: string) => topo.nodes.flatMap((n) => n.pods).find((p) => p.ips.includes(ip))?.hostVeth;
  const hostFilter = ['host', A, 'and', 'host', B];
  const vxlan = ['udp', 'port', '8472'];
  const at: [string, string | undefined, string[]][] = [
    [nodes[0]!, veth(A)?.name, hostFilter], [nodes[0]!, n1?.bridge?.name, hostFilter], [nodes[0]!, n1?.underlay?.name, vxlan],
    [nodes[1]!, n2?.underlay?.name, vxlan], [nodes[1]!, n2?.bridge?.name, hostFilter], [nodes[1]!, veth(B)?.name, hostFilter],
  ];
  const procs = at.map(([ns, dev, filter]) => {
    if (!dev) throw new Error(`tcpdump: no such device on ${ns}`);
    return spawn('ip', ['netns', 'exec', ns, 'tcpdump', '-i', dev, '-nn', '-s', '96', '-w', '/dev/null', ...filter], { stdio: ['ignore', 'ignore', 'pipe'] });
  });
  try {
    // tcpdump says "listening on" once its socket and filter are in place
    await Promise.all(procs.map((c) => new Promise<void>((resolve, reject) => {
      let err = '';
      c.stderr!.on('data', (d: Buffer) => {
        err += d.toString();
        if (err.includes('listening on')) resolve();
      });
      c.once('exit', (code) => reject(new Error(`tcpdump exited ${code}: ${err.trim()}`)));
    })));
    return await fn();
  } finally {
    await Promise.all(procs.map((c) => new Promise((r) => {
      if (c.exitCode !== null) return r(null);
      c.once('exit', r);
      c.kill('SIGINT');
    })));
  }
}

async function withMode<T>(mode: Mode, nodes: string[], fn: () => Promise<T>): Promise<T> {
  if (mode === 'none') return fn();
  if (mode === 'tcpdump') return withTcpdump(nodes, fn);
  const refs = nodes.map(namedNetns);
  if (mode === 'empty') {
    const obj = BpfObject.open(bpfObjectPath('empty'));
    obj.load();
    const prog = obj.program('nt_empty');
    const hooks = attachAll(allDevices(discoverCluster(refs)), { ingress: prog, egress: prog });
    try {
      return await fn();
    } finally {
      hooks.detach();
      obj.close();
    }
  }
  const flow = parseFlowSpec(mode === 'miss' ? `${A} -> ${B}:9` : `${A} -> ${B}:5201`, 'tcp');
  if (mode === 'ringOnly') {
    // the kernel's share of following every packet: the same programs and records, the ring drained
    // on follow's timer, no path rebuilt (what follow costs with a collector that cost nothing)
    const feed = openLocalFeed(flow, discoverCluster(refs), [], 'tcx');
    const timer = setInterval(() => feed.drain(() => {}), POLL_MS);
    try {
      return await fn();
    } finally {
      clearInterval(timer);
      feed.close();
    }
  }
  // every16: follow --every 16, one data skb per MiB of the stream (and SYN, RST, FIN without data, 1 in 16 pure ACKs)
  const session = startFollow({ flow, cluster: viewCluster(refs), graceMs: 1000, attach: 'tcx', every: mode === 'every16' ? 16 : 1, onPath: () => {} });
  try {
    return await fn();
  } finally {
    session.stop();
    await session.done;
  }
}

async function throughput(nodes: string[], podA: string): Promise<void> {
  const modes: Mode[] = ['none', 'empty', 'miss', 'ringOnly', 'followed', 'every16', 'tcpdump'];
  const tcp: Record<Mode, number[]> = { none: [], empty: [], miss: [], ringOnly: [], followed: [], every16: [], tcpdump: [] };
  for (let r = 0; r < ROUNDS; r++) {
    for (const m of modes) tcp[m].push(await withMode(m, nodes, () => iperf(podA, [])));
  }
  const med = Object.fromEntries(modes.map((m) => [m, median(tcp[m])])) as Record<Mode, number>;
  console.log(`iperf3 TCP pod A -> pod B, ${ROUNDS} interleaved rounds of ${SECONDS}s, medians:`);
  for (const m of modes) console.log(`  ${m.padEnd(9)} ${(med[m] / 1e9).toFixed(2)} Gbit/s  (rounds: ${tcp[m].map((x) => (x / 1e9).toFixed(2)).join(' ')})`);
  console.log(`  filter miss / empty programs (goal >= 0.98): ${(med.miss / med.empty).toFixed(3)}`);
  console.log(`  followed flow / no programs  (goal >= 0.95): ${(med.followed / med.none).toFixed(3)}`);
  console.log(`  records of every packet, no paths built / no programs (the kernel's share): ${(med.ringOnly / med.none).toFixed(3)}`);
  console.log(`  tcpdump on 6 devices / no programs:          ${(med.tcpdump / med.none).toFixed(3)}`);
  console.log(`  followed flow / tcpdump      (goal >= 1.00): ${(med.followed / med.tcpdump).toFixed(3)}`);
  console.log(`  follow --every 16 / no programs:             ${(med.every16 / med.none).toFixed(3)}; / tcpdump ${(med.every16 / med.tcpdump).toFixed(3)}`);
  console.log(`  empty programs / no programs:                ${(med.empty / med.none).toFixed(3)}`);
}

/**
 * Where the time goes while following: each program's runs per second and ns per run under the
 * same iperf3 load (one program serves every ingress hook, one every egress hook), and the
 * collector's CPU (this process: ring reads, decoding, assembly).
 */
async function profile(nodes: string[], podA: string): Promise<void> {
  console.log(`where the time goes (kernel.bpf_stats_enabled=1, iperf3 ${SECONDS}s):`);
  for (const mode of ['miss', 'ringOnly', 'followed', 'every16'] as const) {
    await withMode(mode, nodes, async () => {
      const cpu0 = process.cpuUsage();
      const run = await withProgramStats('    ', () => iperf(podA, []));
      const cpu = process.cpuUsage(cpu0);
      console.log(`  ${mode}: ${(run.result / 1e9).toFixed(2)} Gbit/s; collector ${((cpu.user + cpu.system) / 1e4 / run.seconds).toFixed(1)} % of a core`);
      run.print();
    });
  }
}

function perRun(): void {
  const probe = HopProbe.load({ vxlanPorts: [8472], drops: false });
  const empty = BpfObject.open(bpfObjectPath('empty'));
  empty.load();
  probe.follow({ family: 4, proto: 6, saddr: ipBytes(A), daddr: ipBytes(B), sport: 0, dport: 80, flowId: 1, direction: 'request' });
  const miss = ether(ipv4('10.0.0.1', B, { proto: 'tcp', dport: 80 }));
  const hit = ether(ipv4(A, B, { proto: 'tcp', dport: 80 }));
  const runs = { empty: [] as number[], miss: [] as number[], hit: [] as number[] };
  for (let r = 0; r < ROUNDS; r++) {
    runs.empty.push(testRun(empty.program('nt_empty').fd, miss, 1_000_000).durationNs);
    runs.miss.push(testRun(probe.ingress.fd, miss, 1_000_000).durationNs);
    runs.hit.push(testRun(probe.ingress.fd, hit, 20_000).durationNs);
    probe.drain(() => {});
  }
  const e = median(runs.empty);
  const m = median(runs.miss);
  const h = median(runs.hit);
  console.log('ns per program run (BPF_PROG_TEST_RUN, kernel-measured, includes the test harness):');
  console.log(`  empty program ${e} ns, miss ${m} ns (+${m - e} over empty; goal <= 25), hit ${h} ns (+${h - e}, writes a record)`);
  probe.close();
  empty.close();
}

function decodeRate(): void {
  const n = 1_000_000;
  const buf = Buffer.alloc(n * HOP_RECORD_SIZE);
  for (let i = 0; i < n; i++) buf.writeUInt32LE(i, i * HOP_RECORD_SIZE + 60);
  const view = new DataView(buf.buffer, buf.byteOffset, buf.length);
  const rate = (fn: (o: number) => number): number => {
    const rates: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      let sink = 0;
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < n; i++) sink += fn(i * HOP_RECORD_SIZE);
      const dt = Number(process.hrtime.bigint() - t0) / 1e9;
      if (sink === -1) console.log(''); // uses sink, so the loop cannot be optimised away
      rates.push(n / dt);
    }
    return median(rates);
  };
  const base = rate((o) => view.getUint32(o + 60, true));
  const full = rate((o) => decodeHopRecord(view, o).seq);
  console.log(`records decoded: ${(full / 1e6).toFixed(1)} M/s; baseline one field a record ${(base / 1e6).toFixed(1)} M/s; ratio ${(full / base).toFixed(3)}`);
  assemblyRate();
}

/** One record's bytes, laid out by the generated field table (the bench's own writer: the kernel writes them in use). */
function encode(r: HopRecord, view: DataView, o: number): void {
  for (const [name, f] of Object.entries(HOP_RECORD_FIELDS)) {
    const v = (r as unknown as Record<string, number | Uint8Array | undefined>)[name];
    if (v === undefined) continue;
    if (f.kind === 'bytes') new Uint8Array(view.buffer, view.byteOffset + o + f.offset, f.length).set(v as Uint8Array);
    else if (f.kind === 'u64') view.setBigUint64(o + f.offset, BigInt(v as number), true);
    else if (f.kind === 'u32') view.setUint32(o + f.offset, v as number, true);
    else if (f.kind === 'u16') view.setUint16(o + f.offset, v as number, true);
    else view.setUint8(o + f.offset, v as number);
  }
}

/**
 * Decode and assembly together, as follow does them: TCP data skbs of one flow crossing two nodes,
 * ten hooks each (node1's five, node2's five), fed to the path assembler in order.
 */
function assemblyRate(): void {
  const skbs = 100_000;
  const SRC: [number, number, 0 | 1][] = [[2001, 2, 1], [1001, 5, 0], [1001, 3, 0], [1001, 4, 1], [1001, 2, 1]];
  const DST: [number, number, 0 | 1][] = [[1002, 2, 0], [1002, 4, 0], [1002, 3, 1], [1002, 5, 1], [2002, 2, 0]];
  const hooks = [...SRC, ...DST];
  const n = skbs * hooks.length;
  const buf = Buffer.alloc(n * HOP_RECORD_SIZE);
  const view = new DataView(buf.buffer, buf.byteOffset, buf.length);
  for (let i = 0; i < skbs; i++) {
    hooks.forEach(([ino, ifx, hook], h) => encode(tcpHopRecord(ino, ifx, hook, 1000 + i * 1000 + h * 10, {
      seq: (1 + i * 1398) >>> 0, ack: 9000, ip_id: i & 0xffff, ip_len: 1450, payload_len: 1398, tcp_flags: 0x18, skb_len: 1464,
    }), view, (i * hooks.length + h) * HOP_RECORD_SIZE));
  }
  const flow = parseFlowSpec(`${A} -> ${B}:80`, 'tcp');
  const topo = twoNodeTopology();
  const rates: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const a = new PathAssembler(flow, topo, { graceMs: 1000, now: () => 0 });
    let paths = 0;
    const t0 = process.hrtime.bigint();
    // one reused record, as follow's ring reader decodes (the assembler copies what it keeps)
    const scratch = decodeHopRecord(view, 0);
    for (let i = 0; i < n; i++) paths += a.addRecord(decodeHopRecordInto(view, i * HOP_RECORD_SIZE, scratch)).length;
    const dt = Number(process.hrtime.bigint() - t0) / 1e9;
    if (paths !== skbs) throw new Error(`assembly bench: ${paths} paths of ${skbs} skbs`);
    rates.push(n / dt);
  }
  const hops = median(rates);
  console.log(`records decoded and assembled into paths (TCP data across two nodes, 10 hops a packet): ${(hops / 1e6).toFixed(2)} M hops/s on one core (goal >= 10)`);
}

/** `make bench` runs every section; `node dist/bench/run.js agent` (or follow, programs, attach, remote, soak) one of them. */
async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('make bench needs root');
  const only = process.argv[2];
  const want = (section: string) => !only || only === section;
  if (want('follow')) {
    perRun();
    decodeRate();
  }
  if (want('agent')) agentPerRun(ROUNDS);
  // `node dist/bench/run.js programs`: the parts that need no cluster (ns per program run, decoding, assembly)
  if (only === 'programs') {
    perRun();
    agentPerRun(ROUNDS);
    return decodeRate();
  }
  testbedDown(PREFIX);
  const tb = testbedUp({ prefix: PREFIX });
  const podA = tb.pods[0]!.netns;
  const nodes = tb.nodes.map((n) => n.netns);
  const server = spawn('ip', ['netns', 'exec', tb.pods[1]!.netns, 'iperf3', '-s'], { stdio: 'ignore' });
  try {
    await new Promise((r) => setTimeout(r, 500));
    if (want('follow')) {
      await throughput(nodes, podA);
      await profile(nodes, podA);
    }
    if (want('agent')) {
      await agentThroughput(nodes, (args) => iperf(podA, args), ROUNDS);
      await agentMemory(nodes[0]!);
    }
    // `node dist/bench/run.js attach`: only the agent on a node with 250 pods
    if (want('agent') || only === 'attach') await attachTime(nodes[0]!, PREFIX, 250, Number(process.env.BENCH_ROUNDS ?? 3));
    if (want('remote')) await remoteBench(tb, (args) => iperf(podA, args), ROUNDS);
    if (want('soak')) {
      server.kill('SIGKILL'); // the soak runs its own load against a fresh server
      const soakServer = spawn('ip', ['netns', 'exec', tb.pods[1]!.netns, 'iperf3', '-s'], { stdio: 'ignore' });
      try {
        await new Promise((r) => setTimeout(r, 500));
        await soak(tb, Number(process.env.SOAK_MINUTES ?? 10));
      } finally {
        soakServer.kill('SIGKILL');
      }
    }
  } finally {
    server.kill('SIGKILL');
    deletePods(PREFIX);
    testbedDown(PREFIX);
  }
}

main().catch((err: Error) => {
  deletePods(PREFIX);
  testbedDown(PREFIX);
  console.error(`bench failed: ${err.message}`);
  process.exit(1);
});
