// nettrace agent on the two-node test cluster: real programs, real traffic, scraped by a real
// Prometheus, spans received over real OTLP/HTTP.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import type { TestbedState } from '../../src/testbed/testbed';
import { discoverCluster } from '../../src/topology/discover';
import { namedNetns } from '../../src/topology/netns';
import { attr, freePort, sample, scrape, startAgent, startOtlpReceiver, startPrometheus, waitFor, type AgentRun } from '../helpers/agent';
import { NETTRACE, nsExec, nsSpawn, ROOT, sleep, withTestbed } from '../helpers/cluster';
import { needsRoot } from '../helpers/privileged';
import { metricNames, shippedExpressions } from '../helpers/promql';

const A = '10.244.1.5';
const B = '10.244.2.8';

const podNs = (tb: TestbedState, pod: string) => tb.pods.find((p) => p.name === pod)!.netns;

/** One agent per node namespace, each told where the other is (for the wire step). */
async function twoAgents(t: TestContext, tb: TestbedState, extra: string[] = []): Promise<{ agents: AgentRun[]; ports: number[] }> {
  const ports = [await freePort(), await freePort()];
  const agents = await Promise.all(tb.nodes.map((n, i) =>
    startAgent(t, ports[i]!, ['--nodes', n.netns, '--peers', `http://127.0.0.1:${ports[1 - i]}`, ...extra])));
  // an agent keeps departures only once a peer reads them (peers poll every 500 ms): let both read once
  await sleep(1200);
  return { agents, ports };
}

/** Until pod B's iperf3 server answers (a few KB, not a duration: iperf3 hangs on -t below 1 s). */
function waitIperf(tb: TestbedState): void {
  for (let i = 0; i < 50 && nsExec(podNs(tb, 'pod-a'), ['iperf3', '-c', B, '-n', '1K'], 5000).status !== 0; i++) spawnSync('sleep', ['0.1']);
}

/** TCP both ways (each pod's stack sends data: step 1 on both nodes) and ICMP. */
function traffic(tb: TestbedState, t: TestContext, seconds = 1): void {
  nsSpawn(t, podNs(tb, 'pod-b'), ['iperf3', '-s']);
  waitIperf(tb);
  for (const dir of [[], ['-R']]) {
    const r = nsExec(podNs(tb, 'pod-a'), ['iperf3', '-c', B, '-t', String(seconds), ...dir], 30000);
    assert.equal(r.status, 0, r.stdout + r.stderr);
  }
  assert.equal(nsExec(podNs(tb, 'pod-a'), ['ping', '-c', '3', '-i', '0.2', B]).status, 0);
  // a lookup through the cluster's DNS (the DNS panels and alerts read its series); the answer does not matter
  if (tb.dns) nsExec(podNs(tb, 'pod-a'), ['getent', 'ahostsv4', `${B.replace(/\./g, '-')}.default.pod.cluster.local`]);
}

/** Our BPF links by program name (bpftool 7.1 lists tcx links as "type 11" without a device). */
function linksByProg(): Map<string, number> {
  const progs = JSON.parse(spawnSync('bpftool', ['-j', 'prog', 'show'], { encoding: 'utf8' }).stdout || '[]') as { id: number; name?: string }[];
  const names = new Map(progs.map((p) => [p.id, p.name ?? '']));
  const links = JSON.parse(spawnSync('bpftool', ['-j', 'link', 'show'], { encoding: 'utf8' }).stdout || '[]') as { prog_id: number }[];
  const out = new Map<string, number>();
  for (const l of links) {
    const n = names.get(l.prog_id) ?? '';
    if (n.startsWith('nt_')) out.set(n, (out.get(n) ?? 0) + 1);
  }
  return out;
}

/** Programs are freed a moment after their last link and fd close: wait for the count to settle. */
async function progsBackTo(n: number, why: string): Promise<void> {
  await waitFor(`${why}: ${ourProgs()} of our programs loaded, ${n} before`, async () => ourProgs() === n, 5000);
}

const ourProgs = () => spawnSync('bpftool', ['prog', 'show'], { encoding: 'utf8' }).stdout.match(/name nt_(agent_\d|kfree_skb|tcp_retransmit)/g)?.length ?? 0;

test('Prometheus scrapes both agents: latency of every step on both nodes; every metric the dashboards and rules use exists', async (t) => {
  if (!needsRoot(t)) return;
  const tb = withTestbed(t);
  const { ports } = await twoAgents(t, tb, ['--sample', '4']);
  const prom = await startPrometheus(t, ports.map((p) => `127.0.0.1:${p}`));
  traffic(tb, t);

  const steps = await waitFor('latency series of steps 1-9 on both nodes', async () => {
    const r = await prom.query('sum by (node, step) (nettrace_hop_latency_seconds_count) > 0');
    const seen = new Set(r.map((s) => `${s.metric.node}/${s.metric.step}`));
    const all = tb.nodes.flatMap((n) => [1, 2, 3, 4, 5, 6, 7, 8, 9].map((s) => `${n.netns}/${s}`));
    return all.every((k) => seen.has(k)) ? r : null;
  }, 30000);
  assert.equal(steps.length, 18);
  // quantiles are finite and the slowest step stays well under a second on veths
  const p99 = await prom.query('histogram_quantile(0.99, sum by (le, node, step) (rate(nettrace_hop_latency_seconds_bucket[1m])))');
  assert.equal(p99.length, 18, 'a P99 for each step of each node');
  for (const s of p99) assert.ok(Number(s.value[1]) < 1, `P99 of step ${s.metric.step} on ${s.metric.node}: ${s.value[1]}`);

  // what Prometheus stored, and what the agents declare: a counter of events (drops, DNS answers) has
  // no series before its first event, which this traffic may or may not cause
  const names = new Set(((await (await fetch(`${prom.url}/api/v1/label/__name__/values`)).json()) as { data: string[] }).data);
  for (const text of await Promise.all(ports.map((p) => scrape(`http://127.0.0.1:${p}`)))) {
    for (const [, name, type] of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
      names.add(name!);
      if (type === 'histogram') for (const suffix of ['_bucket', '_sum', '_count']) names.add(name + suffix);
    }
  }
  for (const { where, expr } of shippedExpressions()) {
    for (const name of metricNames(expr)) assert.ok(names.has(name), `${where}: ${name} is not exported by the agents (${expr})`);
    await prom.query(expr); // Prometheus parses and evaluates it
  }
  const rules = (await (await fetch(`${prom.url}/api/v1/rules`)).json()) as { data: { groups: { rules: { name: string; health: string }[] }[] } };
  const loaded = rules.data.groups.flatMap((g) => g.rules);
  assert.equal(loaded.length, readFileSync(path.join(ROOT, 'grafana/alerts.yaml'), 'utf8').match(/- alert: /g)!.length);
  for (const r of loaded) assert.equal(r.health, 'ok', r.name);
});

test('every packet is counted per step: bytes of an iperf3 transfer at steps 1-9 of both nodes; netfilter rules show kube-proxy\'s', async (t) => {
  if (!needsRoot(t)) return;
  const tb = withTestbed(t);
  const [node1, node2] = tb.nodes.map((n) => n.netns) as [string, string];
  // no sampling, 1 in 8 timed: the counters must not depend on either
  const { agents } = await twoAgents(t, tb, ['--sample', '0']);
  nsSpawn(t, podNs(tb, 'pod-b'), ['iperf3', '-s']);
  waitIperf(tb);
  const MB = 1 << 20;
  const r = nsExec(podNs(tb, 'pod-a'), ['iperf3', '-c', B, '-n', '8M', '-J'], 30000);
  assert.equal(r.status, 0, r.stdout + r.stderr);
  // iperf3 -n ends once the sender wrote 8 MiB and drops what its socket still holds: what the
  // receiver got (measured here: 5.6 to 8 MiB) is what crossed every step
  const received = (JSON.parse(r.stdout) as { end: { sum_received: { bytes: number } } }).end.sum_received.bytes;
  assert.ok(received >= MB, `pod B received ${received} bytes`);
  const step = (text: string, name: string, s: number) => {
    let sum = 0;
    for (const line of text.split('\n')) if (line.startsWith(`${name}{`) && line.includes(`step="${s}"`)) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
    return sum;
  };
  const [text1, text2] = await Promise.all(agents.map((a) => scrape(a.url)));
  // what a failure needs to be understood: every step's count on both nodes, and what the agents said
  const all = () => [text1!, text2!].map((x, i) => `${tb.nodes[i]!.netns}: ${x.split('\n').filter((l) => l.startsWith('nettrace_step_bytes_total{')).join('; ')}`).join('\n')
    + `\n${agents.map((a) => a.stderr()).join('\n')}\npod B received ${received} bytes`;
  // pod A's bytes leave through steps 1-5 of node1 and arrive through 6-9 of node2 (pod-side hooks of step 9 both count)
  for (const [text, node, steps] of [[text1!, node1, [1, 2, 3, 4, 5]], [text2!, node2, [6, 7, 8, 9]]] as const) {
    for (const s of steps) {
      const bytes = step(text, 'nettrace_step_bytes_total', s);
      const packets = step(text, 'nettrace_step_packets_total', s);
      assert.ok(bytes >= received, `${node} step ${s}: ${bytes} bytes, pod B received ${received}\n${all()}`);
      // wire packets: at least one per MSS-sized segment (1398 bytes of payload inside VXLAN's 1450 MTU)
      assert.ok(packets >= received / 1450, `${node} step ${s}: ${packets} packets\n${all()}`);
    }
  }
  // the underlay carries what flannel.1 sends, plus the VXLAN headers
  assert.ok(step(text1!, 'nettrace_step_bytes_total', 5) > step(text1!, 'nettrace_step_bytes_total', 4), all());
  const packets = (s: number) => step(text1!, 'nettrace_step_packets_total', s);
  // what flannel.1 sent reaches eth0, unless the kernel dropped it between them (counted at the step that failed)
  const drops = text1!.split('\n').filter((l) => l.startsWith('nettrace_drops_total{'));
  const dropped = (s: number) => drops.filter((l) => l.includes(`step="${s}"`)).reduce((n, l) => n + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
  assert.ok(packets(5) + dropped(5) >= packets(4), `packets at step 5 ${packets(5)}, at step 4 ${packets(4)} (steps 1-3: ${packets(1)} ${packets(2)} ${packets(3)}); drops ${drops.join('; ')}\n${all()}`);
  assert.match(text1!, /^nettrace_step_packets_total\{node="[^"]+",step="5",step_name="encapsulation",device="eth0",hook="egress"\} \d+$/m);

  // the rule count of node1's nat table is kube-proxy's (the testbed's ClusterIP), as iptables-save counts it
  const rules = (ns: string, tool: string) => nsExec(ns, [tool, '-t', 'nat']).stdout.split('\n').filter((l) => l.startsWith('-A ')).length;
  const want = rules(node1, 'iptables-save') + rules(node1, 'ip6tables-save');
  assert.ok(rules(node1, 'iptables-save') >= 3, 'KUBE-SERVICES -> KUBE-SVC -> KUBE-SEP');
  assert.equal(sample(text1!, 'nettrace_netfilter_rules', { backend: 'iptables', table: 'nat' }), want);
  // iptables-nft's tables are not counted again under nftables
  assert.equal(sample(text1!, 'nettrace_netfilter_rules', { backend: 'nftables', table: 'ip nat' }), null);
  assert.equal(sample(text1!, 'nettrace_netfilter_read_failures_total', { backend: 'iptables' }), 0);
  assert.equal(sample(text1!, 'nettrace_netfilter_read_failures_total', { backend: 'nftables' }), 0);
});

test('faults seen through Prometheus: loss on the underlay raises retransmits, a FORWARD DROP raises NETFILTER_DROP at step 4', async (t) => {
  if (!needsRoot(t)) return;
  const tb = withTestbed(t);
  const [node1] = tb.nodes.map((n) => n.netns) as [string];
  const { ports } = await twoAgents(t, tb, ['--sample', '0']);
  const prom = await startPrometheus(t, ports.map((p) => `127.0.0.1:${p}`));

  // 5 % loss of node1's VXLAN packets on their way out of eth0 (this kernel has no netem: iptables statistic)
  const loss = ['OUTPUT', '-o', 'eth0', '-p', 'udp', '--dport', '8472', '-m', 'statistic', '--mode', 'random', '--probability', '0.05', '-j', 'DROP'];
  nsExec(node1, ['iptables', '-A', ...loss]);
  t.after(() => nsExec(node1, ['iptables', '-D', ...loss]));
  nsSpawn(t, podNs(tb, 'pod-b'), ['iperf3', '-s']);
  waitIperf(tb);
  nsExec(podNs(tb, 'pod-a'), ['iperf3', '-c', B, '-t', '2'], 30000);
  nsExec(node1, ['iptables', '-D', ...loss]);
  const re = await waitFor('retransmits of pod-a on node1', async () => {
    // no source of names: pod A by its network namespace; B, on node2, is in the pod network but unnamed
    const r = await prom.query(`sum(nettrace_tcp_retransmit_segments_total{node="${node1}", source_workload="${podNs(tb, 'pod-a')}", source_pod="${podNs(tb, 'pod-a')}", destination_workload="unknown", destination_port="5201"}) > 0`);
    return r[0];
  });
  const calls = await prom.query(`sum(nettrace_tcp_retransmits_total{node="${node1}", source_pod="${podNs(tb, 'pod-a')}"})`);
  assert.ok(Number(calls[0]!.value[1]) > 0 && Number(re.value[1]) >= Number(calls[0]!.value[1]), 'segments >= retransmit calls > 0');
  // the lost packets were counted as drops too: netfilter, in step 5 (after flannel.1, before eth0)
  await waitFor('NETFILTER_DROP at step 5', async () => (await prom.query(`nettrace_drops_total{node="${node1}", reason="NETFILTER_DROP", step="5"} > 0`))[0]);

  // a NetworkPolicy-like DROP in node1's FORWARD chain: pings die between cni0 and flannel.1, step 4
  const drop = ['FORWARD', '-s', A, '-d', B, '-p', 'icmp', '-j', 'DROP'];
  nsExec(node1, ['iptables', '-I', ...drop]);
  t.after(() => nsExec(node1, ['iptables', '-D', ...drop]));
  assert.notEqual(nsExec(podNs(tb, 'pod-a'), ['ping', '-c', '3', '-i', '0.2', '-W', '1', B]).status, 0);
  const d = await waitFor('NETFILTER_DROP at step 4', async () =>
    (await prom.query(`nettrace_drops_total{node="${node1}", reason="NETFILTER_DROP", step="4"} >= 3`))[0]);
  assert.equal(d.metric.step_name, 'routing');
  assert.equal(d.metric.device, 'cni0');
});

test('OTLP: a sampled packet is one trace with the nine steps from both nodes; retransmits are spans with segments', async (t) => {
  if (!needsRoot(t)) return;
  const tb = withTestbed(t);
  const recv = await startOtlpReceiver(t);
  await twoAgents(t, tb, ['--sample', '1', '--otlp-endpoint', recv.url]);
  assert.equal(nsExec(podNs(tb, 'pod-a'), ['ping', '-c', '3', '-i', '0.2', B]).status, 0);

  const trace = await waitFor('a trace with steps 1-9', async () => {
    const byTrace = new Map<string, typeof recv.spans>();
    for (const s of recv.spans) byTrace.set(s.traceId, [...(byTrace.get(s.traceId) ?? []), s]);
    for (const spans of byTrace.values()) {
      const steps = new Set(spans.map((s) => attr(s, 'nettrace.step')));
      if ([1, 2, 3, 4, 5, 6, 7, 8, 9].every((n) => steps.has(n)) && attr(spans[0]!, 'source.address') === A) return spans;
    }
    return null;
  });
  const root = trace.find((s) => !s.parentSpanId);
  assert.ok(root, 'the sending node opens the trace with a root span');
  // a low-cardinality name; the addresses are attributes
  assert.equal(root.name, 'packet icmp');
  assert.deepEqual([attr(root, 'source.address'), attr(root, 'destination.address')], [A, B]);
  const steps = trace.filter((s) => s !== root);
  for (const s of steps) assert.equal(s.parentSpanId, root.spanId, `${s.name} hangs off the root`);
  const nodeOf = (step: number) => new Set(steps.filter((s) => attr(s, 'nettrace.step') === step).map((s) => attr(s, 'nettrace.node')));
  for (const step of [1, 2, 3, 4, 5]) assert.deepEqual([...nodeOf(step)], [tb.nodes[0]!.netns], `step ${step}`);
  for (const step of [6, 7, 8, 9]) assert.deepEqual([...nodeOf(step)], [tb.nodes[1]!.netns], `step ${step}`);
  const wire = steps.find((s) => attr(s, 'nettrace.step') === 6)!;
  assert.equal(attr(wire, 'nettrace.from_node'), tb.nodes[0]!.netns);
  // the wire's latency is the span's duration, never negative
  assert.ok(BigInt(wire.endTimeUnixNano) >= BigInt(wire.startTimeUnixNano));
  assert.equal(attr(wire, 'nettrace.latency_ns'), undefined);
  assert.equal(attr(steps.find((s) => attr(s, 'nettrace.step') === 4)!, 'network.interface.name'), 'flannel.1');
  for (const s of steps) assert.ok(BigInt(s.endTimeUnixNano) >= BigInt(s.startTimeUnixNano), s.name);

  // retransmits: loss on node1's underlay while pod A sends
  const loss = ['OUTPUT', '-o', 'eth0', '-p', 'udp', '--dport', '8472', '-m', 'statistic', '--mode', 'random', '--probability', '0.05', '-j', 'DROP'];
  nsExec(tb.nodes[0]!.netns, ['iptables', '-A', ...loss]);
  t.after(() => nsExec(tb.nodes[0]!.netns, ['iptables', '-D', ...loss]));
  nsSpawn(t, podNs(tb, 'pod-b'), ['iperf3', '-s']);
  waitIperf(tb);
  nsExec(podNs(tb, 'pod-a'), ['iperf3', '-c', B, '-t', '1'], 30000);
  const rt = await waitFor('a retransmit span of pod A', async () => recv.spans.find((s) => s.name === 'tcp retransmit' && attr(s, 'source.address') === A));
  // pod B's iperf3 listens on :: (a dual-stack socket): its retransmits are IPv4 too, never ::ffff:a.b.c.d
  for (const s of recv.spans.filter((x) => x.name === 'tcp retransmit')) assert.doesNotMatch(String(attr(s, 'source.address')), /^::ffff:/i);
  assert.equal(attr(rt, 'destination.port'), 5201);
  assert.ok(Number(attr(rt, 'nettrace.tcp.segments')) >= 1);
});

test('agent lifecycle: a pod veth created and deleted while running is attached and released; SIGTERM and SIGKILL leave no hook', async (t) => {
  if (!needsRoot(t)) return;
  const tb = withTestbed(t);
  const node1 = tb.nodes[0]!.netns;
  const before = ourProgs();
  const port = await freePort();
  // tcx everywhere: links are counted per program, and go with the process
  const agent = await startAgent(t, port, ['--nodes', node1, '--attach', 'tcx', '--rescan', '600000']); // link events only
  const hooks = async () => ((await (await fetch(`${agent.url}/healthz`)).json()) as { attached_hooks: number }).attached_hooks;
  assert.equal(await hooks(), 10, 'eth0, flannel.1, cni0, pod A host veth and eth0: both hooks each');
  assert.equal(sample(await scrape(agent.url), 'nettrace_agent_attached_hooks', {}), 10);

  // a new pod on node1
  const podC = `${tb.prefix}pod-c`;
  spawnSync('ip', ['netns', 'add', podC]);
  t.after(() => spawnSync('ip', ['netns', 'del', podC]));
  const sh = (ns: string, args: string[]) => assert.equal(spawnSync('ip', ['-n', ns, ...args]).status, 0, args.join(' '));
  sh(node1, ['link', 'add', 'vethpodc', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', podC]);
  sh(node1, ['link', 'set', 'vethpodc', 'master', 'cni0', 'up']);
  sh(podC, ['addr', 'add', '10.244.1.9/24', 'dev', 'eth0']);
  sh(podC, ['link', 'set', 'eth0', 'up']);
  sh(podC, ['route', 'add', 'default', 'via', '10.244.1.1']);
  const linksBefore = linksByProg();
  await waitFor('the new pod attached', async () => (await hooks()) === 14, 5000);
  const linksAfter = linksByProg();
  // host veth: veth pair (1) in, to pod (8) out; pod eth0: sends (0), receives (9)
  for (const order of [0, 1, 8, 9]) assert.equal(linksAfter.get(`nt_agent_${order}`), (linksBefore.get(`nt_agent_${order}`) ?? 0) + 1, `nt_agent_${order}`);
  assert.equal(nsExec(podC, ['ping', '-c', '1', '-W', '1', B]).status, 0, 'the new pod reaches pod B');

  spawnSync('ip', ['netns', 'del', podC]);
  await waitFor('the deleted pod released', async () => (await hooks()) === 10, 5000);
  assert.deepEqual(linksByProg(), linksBefore, 'link fds of the gone veth are closed');

  agent.child.kill('SIGTERM');
  assert.equal(await agent.exited, 0);
  await progsBackTo(before, 'programs left after SIGTERM');

  const again = await startAgent(t, port, ['--nodes', node1, '--attach', 'tcx']);
  again.child.kill('SIGKILL');
  await again.exited;
  await progsBackTo(before, 'programs left after SIGKILL (tcx links go with the process)');
  assert.equal(nsExec(podNs(tb, 'pod-a'), ['ping', '-c', '1', '-W', '1', B]).status, 0);

  // classic tc: filters outlive SIGKILL; the next start removes them
  const tc = await startAgent(t, port, ['--nodes', node1, '--attach', 'tc']);
  tc.child.kill('SIGKILL');
  await tc.exited;
  assert.match(spawnSync('tc', ['-n', node1, 'filter', 'show', 'dev', 'cni0', 'ingress'], { encoding: 'utf8' }).stdout, /nt_agent_2/);
  const next = await startAgent(t, port, ['--nodes', node1, '--attach', 'tc']);
  assert.match(next.stderr(), /removed \d+ tc filters a previous nettrace left behind/);
  next.child.kill('SIGTERM');
  assert.equal(await next.exited, 0);
  assert.equal(spawnSync('tc', ['-n', node1, 'filter', 'show', 'dev', 'cni0', 'ingress'], { encoding: 'utf8' }).stdout.trim(), '');
});

test('agent --attach mixed: tcx links on the node\'s devices, tc filters on pods\'; every step counted; SIGTERM leaves nothing, SIGKILL\'s filters go at the next start', async (t) => {
  if (!needsRoot(t)) return;
  const tb = withTestbed(t);
  const node1 = tb.nodes[0]!.netns;
  const podA = podNs(tb, 'pod-a');
  const before = ourProgs();
  const port = await freePort();
  const filters = (ns: string, dev: string, hook: string) => spawnSync('tc', ['-n', ns, 'filter', 'show', 'dev', dev, hook], { encoding: 'utf8' }).stdout;
  const hostVeth = discoverCluster([namedNetns(node1)]).nodes[0]!.pods.find((p) => p.ips.includes(A))!.hostVeth.name;
  const linksBefore = linksByProg();
  const agent = await startAgent(t, port, ['--nodes', node1, '--attach', 'mixed', '--sample', '0']);
  assert.equal(((await (await fetch(`${agent.url}/healthz`)).json()) as { attached_hooks: number }).attached_hooks, 10);
  // tcx links: eth0 (4 out, 5 in), flannel.1 (3 out, 6 in), cni0 (2 in, 7 out); pod A's devices are not links
  const links = linksByProg();
  const gained = (order: number) => (links.get(`nt_agent_${order}`) ?? 0) - (linksBefore.get(`nt_agent_${order}`) ?? 0);
  assert.deepEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9].map(gained), [0, 0, 1, 1, 1, 1, 1, 1, 0, 0]);
  // classic tc filters on pod A's host veth (1 in, 8 out) and its eth0 (0 out, 9 in)
  assert.match(filters(node1, hostVeth, 'ingress'), /nt_agent_1/);
  assert.match(filters(node1, hostVeth, 'egress'), /nt_agent_8/);
  assert.match(filters(podA, 'eth0', 'egress'), /nt_agent_0/);
  assert.match(filters(podA, 'eth0', 'ingress'), /nt_agent_9/);
  assert.equal(filters(node1, 'cni0', 'ingress').trim(), '', 'the node\'s devices have links, no filters');
  // iperf3's handshake and data: node1's steps of the request (1-5) and of the reply (6-9), from both kinds of hook
  nsSpawn(t, podNs(tb, 'pod-b'), ['iperf3', '-s']);
  waitIperf(tb);
  const text = await waitFor('node1 counts every step', async () => {
    const m = await scrape(agent.url);
    return [1, 2, 3, 4, 5, 6, 7, 8, 9].every((s) => new RegExp(`^nettrace_step_packets_total\\{[^}]*step="${s}"[^}]*\\} [1-9]`, 'm').test(m)) ? m : null;
  }, 10000);
  assert.ok(text);
  agent.child.kill('SIGTERM');
  assert.equal(await agent.exited, 0);
  await progsBackTo(before, 'programs left after SIGTERM');
  assert.equal(filters(podA, 'eth0', 'ingress').trim() + filters(node1, hostVeth, 'ingress').trim(), '');

  const killed = await startAgent(t, port, ['--nodes', node1, '--attach', 'mixed']);
  killed.child.kill('SIGKILL');
  await killed.exited;
  assert.match(filters(podA, 'eth0', 'ingress'), /nt_agent_9/, 'tc filters outlive SIGKILL');
  const next = await startAgent(t, port, ['--nodes', node1, '--attach', 'mixed']);
  // the node's at start; pods' in the background once ready (a namespace a turn)
  assert.match(next.stderr(), /removed \d+ tc filters a previous nettrace left behind$/m);
  await waitFor('the pods\' filters removed', async () => /removed \d+ tc filters a previous nettrace left behind in pods' namespaces/.test(next.stderr()), 10000);
  next.child.kill('SIGTERM');
  assert.equal(await next.exited, 0);
  await progsBackTo(before, 'programs left after the next start\'s SIGTERM');
  assert.equal(filters(podA, 'eth0', 'ingress').trim() + filters(node1, hostVeth, 'egress').trim(), '');
});

test('agent bad input: one line and exit 2, nothing attached; an unreachable collector is counted, never fatal', async (t) => {
  if (!needsRoot(t)) return;
  const tb = withTestbed(t);
  const node1 = tb.nodes[0]!.netns;
  const before = ourProgs();
  const run = (args: string[]) => spawnSync(NETTRACE, ['agent', ...args], { encoding: 'utf8', timeout: 20000 });
  const cases: [string[], RegExp][] = [
    [['--metrics-addr', 'nonsense'], /E_USAGE: --metrics-addr "nonsense" is not HOST:PORT/],
    [['--metrics-addr', '127.0.0.1:70000'], /port 70000 is above 65535/],
    [['--otlp-endpoint', 'ftp://collector'], /only http:\/\/ and https:\/\//],
    [['--nodes', `${node1},${tb.nodes[1]!.netns}`], /an agent watches one node/],
    [['--nodes', 'no-such-node'], /E_NOT_FOUND: no network namespace named no-such-node/],
    [['--peers', 'collector:9101'], /--peers collector:9101 is not http:\/\/HOST:PORT/],
  ];
  // a port someone else holds
  const busy = await freePort();
  const server = (await import('node:net')).createServer().listen(busy, '127.0.0.1');
  t.after(() => server.close());
  await new Promise((r) => server.once('listening', r));
  cases.push([['--nodes', node1, '--metrics-addr', `127.0.0.1:${busy}`], new RegExp(`127.0.0.1:${busy}: the port is in use`)]);
  for (const [args, want] of cases) {
    const r = run(args);
    assert.equal(r.status, args.includes('no-such-node') ? 5 : 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, want);
    assert.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
    await progsBackTo(before, `${args.join(' ')} left programs loaded`);
  }

  // a collector that is down: the agent runs on, counts the failures, and says so once
  const dead = await freePort();
  const port = await freePort();
  const agent = await startAgent(t, port, ['--nodes', node1, '--sample', '1', '--otlp-endpoint', `http://127.0.0.1:${dead}`]);
  assert.equal(nsExec(podNs(tb, 'pod-a'), ['ping', '-c', '3', '-i', '0.2', B]).status, 0);
  await waitFor('export failures counted', async () => (sample(await scrape(agent.url), 'nettrace_agent_export_failures_total', { exporter: 'otlp' }) ?? 0) > 0);
  assert.equal((await fetch(`${agent.url}/healthz`)).status, 200);
  assert.match(agent.stderr(), /warning: OTLP export of \d+ spans to http:\/\/127\.0\.0\.1:\d+ failed/);
  agent.child.kill('SIGTERM');
  assert.equal(await agent.exited, 0);
});
