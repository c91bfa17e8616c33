// make bench, cross-node tracing through the agents: time to ready with two agents against a
// local follow, records per second one agent streams against what its kernel wrote, and the
// client's CPU per 100 k hops merged against decoding alone, all measured in this run.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { median } from '../src/flow/stats';
import type { TestbedState } from '../src/testbed/testbed';

const ROOT = path.resolve(__dirname, '../..');
const NETTRACE = path.join(ROOT, 'bin/nettrace');
const A = '10.244.1.5';
const B = '10.244.2.8';

/** Spawn and resolve once stdout/stderr matched: the ms it took, and the process. */
function until(cmd: string[], pattern: RegExp): Promise<{ ms: number; child: ChildProcess; out: () => string }> {
  const t0 = performance.now();
  const child = spawn(cmd[0]!, cmd.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  return new Promise((resolve, reject) => {
    const on = (d: Buffer) => {
      out += d.toString();
      if (pattern.test(out)) resolve({ ms: performance.now() - t0, child, out: () => out });
    };
    child.stdout!.on('data', on);
    child.stderr!.on('data', on);
    child.on('exit', (code) => reject(new Error(`${cmd.slice(0, 6).join(' ')} exited ${code}: ${out.slice(0, 400)}`)));
    setTimeout(() => reject(new Error(`${cmd.slice(0, 6).join(' ')}: no ${pattern} in 30 s`)), 30_000);
  });
}

function stop(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null) return resolve();
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
  });
}

export async function remoteBench(tb: TestbedState, iperf: (args: string[]) => Promise<number>, rounds: number): Promise<void> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'nettrace-bench-'));
  const token = path.join(dir, 'token');
  writeFileSync(token, 'bench-token-0123456789abcdef\n');
  const agents: ChildProcess[] = [];
  try {
    for (const n of tb.nodes) {
      agents.push((await until(['ip', 'netns', 'exec', n.netns, NETTRACE, 'agent', '--token-file', token, '--metrics-addr', '127.0.0.1:9101'], /^ready:/m)).child);
    }
    const urls = tb.nodes.map((n) => `http://${n.ip}:9966`).join(',');
    const n1 = tb.nodes[0]!.netns;
    const flow = `${A} -> ${B}:5201`;
    const remote: number[] = [];
    const local: number[] = [];
    for (let r = 0; r < rounds; r++) {
      const f = await until(['ip', 'netns', 'exec', n1, NETTRACE, 'follow', '--agents', urls, '--token-file', token, '--flow', flow, '--timeout', '30'], /^ready:/m);
      remote.push(f.ms);
      await stop(f.child);
      const l = await until([NETTRACE, 'follow', '--nodes', tb.nodes.map((n) => n.netns).join(','), '--flow', flow, '--timeout', '30'], /^ready:/m);
      local.push(l.ms);
      await stop(l.child);
    }
    const rm = median(remote);
    const lm = median(local);
    console.log(`follow --agents to ready (2 agents, from node1): ${rm.toFixed(0)} ms; local follow of both nodes ${lm.toFixed(0)} ms; ratio ${(rm / lm).toFixed(2)}`);

    // one agent's stream under iperf3 load, and what the client does with it
    const client = await until(['ip', 'netns', 'exec', n1, process.execPath, path.join(ROOT, 'dist/bench/streamClient.js'), urls, token, flow, '3'], /"ready":".*node2/);
    await iperf([]);
    const result = await new Promise<string>((resolve, reject) => {
      client.child.on('exit', (code) => (code === 0 ? resolve(client.out()) : reject(new Error(client.out()))));
    });
    const s = JSON.parse(result.trim().split('\n').pop()!) as { seconds: number; records: Record<string, number>; hops: number; decode_ms_per_100k: number; merge_ms_per_100k: number };
    for (const [node, n] of Object.entries(s.records)) console.log(`agent on ${node} streamed ${(n / s.seconds / 1e3).toFixed(1)} k records/s (${n} in ${s.seconds.toFixed(1)} s of iperf3 TCP)`);
    console.log(`client merge: ${s.merge_ms_per_100k.toFixed(1)} ms CPU per 100 k hops (decode alone ${s.decode_ms_per_100k.toFixed(1)} ms; ratio ${(s.merge_ms_per_100k / Math.max(0.001, s.decode_ms_per_100k)).toFixed(2)}); ${s.hops} hops`);
  } finally {
    await Promise.all(agents.map(stop));
    rmSync(dir, { recursive: true, force: true });
  }
}
