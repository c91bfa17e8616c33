// Run by bench/remote.ts inside a node's namespace: follow a flow through the agents for a few
// seconds, count the hop records one agent streams, then replay what came to time the merge.
//   node dist/bench/streamClient.js AGENT_URL,... TOKEN_FILE 'SRC -> DST:PORT' SECONDS
import { PathAssembler } from '../src/flow/assemble';
import { parseFlowSpec } from '../src/flow/spec';
import { median } from '../src/flow/stats';
import { resolveAgents } from '../src/session/agentClient';
import { connectAgents, closeCluster } from '../src/session/remote';
import { decodeHops, followRequest } from '../src/session/protocol';
import { readTokenFile } from '../src/session/token';

async function main(): Promise<void> {
  const [agents, tokenFile, flowText, seconds] = process.argv.slice(2) as [string, string, string, string];
  const auth = { token: readTokenFile(tokenFile) };
  const rc = await connectAgents(await resolveAgents(agents, auth), auth);
  const flow = parseFlowSpec(flowText, 'tcp');
  const batches: { node: string; m: { n: number; b64: string } }[] = [];
  const per = new Map<string, number>();
  const streams = await Promise.all([...rc.nodes].map(async ([node, n]) => n.client.follow(followRequest(flow, 120), (m) => {
    if (m.type === 'ready') process.stdout.write(JSON.stringify({ ready: node }) + '\n');
    if (m.type !== 'hops') return;
    batches.push({ node, m });
    per.set(node, (per.get(node) ?? 0) + m.n);
  })));
  const t0 = process.hrtime.bigint();
  await new Promise((r) => setTimeout(r, Number(seconds) * 1000));
  const dt = Number(process.hrtime.bigint() - t0) / 1e9;
  for (const s of streams) s.close();
  closeCluster(rc);

  // the merge, replayed: decode only (baseline) against decode + place + assemble
  const hops = batches.reduce((s, b) => s + b.m.n, 0);
  const cpuMs = (fn: () => void) => {
    const runs: number[] = [];
    for (let r = 0; r < 3; r++) {
      const c0 = process.cpuUsage();
      fn();
      const c = process.cpuUsage(c0);
      runs.push((c.user + c.system) / 1000);
    }
    return median(runs);
  };
  const decodeOnly = cpuMs(() => {
    for (const b of batches) decodeHops(b.m);
  });
  const merged = cpuMs(() => {
    const a = new PathAssembler(flow, rc.topology, { graceMs: 1000 });
    for (const b of batches) for (const r of decodeHops(b.m)) a.addRecord(r, b.node);
    a.expire(true);
  });
  const per100k = (ms: number) => (hops ? (ms * 100_000) / hops : 0);
  process.stdout.write(JSON.stringify({
    seconds: dt, records: Object.fromEntries(per), hops,
    decode_ms_per_100k: per100k(decodeOnly), merge_ms_per_100k: per100k(merged),
  }) + '\n');
}

main().catch((err: Error) => {
  process.stderr.write(`streamClient: ${err.message}\n`);
  process.exit(1);
});
