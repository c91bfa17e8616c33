// Tracing across machines: an agent per node (in the node's namespace only), and follow /
// diagnose run from a client that reaches the agents only over the network.
import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import type { Diagnosis } from '../../src/flow/verdict';
import type { PacketPath } from '../../src/flow/path';
import type { TestbedState } from '../../src/testbed/testbed';
import type { CniMode } from '../../src/topology/cni';
import { jsonLines, nsExec, nsSpawn, sleep, withTestbed } from '../helpers/cluster';
import { needsRoot } from '../helpers/privileged';
import { agentMetrics, clientNs, clientRun, hopPrograms, remoteFollow, startNodeAgents, tokenFile, type ClientNs, type NodeAgent } from '../helpers/remote';

const A = '10.244.1.5';
const B = '10.244.2.8';

function podNs(tb: TestbedState, name: string): string {
  return tb.pods.find((p) => p.name === name)!.netns;
}

interface Cluster {
  tb: TestbedState;
  token: string;
  agents: NodeAgent[];
  client: ClientNs;
  agentsArg: string;
}

async function cluster(t: TestContext, cni: CniMode = 'flannel-vxlan', extra?: (node: string) => string[]): Promise<Cluster> {
  const tb = withTestbed(t, { cni });
  const token = tokenFile(t);
  const agents = await startNodeAgents(t, tb, token, extra);
  const client = await clientNs(t, tb);
  return { tb, token, agents, client, agentsArg: agents.map((a) => a.url).join(',') };
}

async function follow(t: TestContext, c: Cluster, args: string[], traffic: () => void | Promise<void>): Promise<{ paths: PacketPath[]; stderr: string }> {
  const f = await remoteFollow(t, c.client, ['--agents', c.agentsArg, '--token-file', c.token, '-o', 'json', ...args]);
  await traffic();
  const code = await f.exited;
  assert.equal(code, 0, f.stderr());
  return { paths: jsonLines<PacketPath>(f.stdout()), stderr: f.stderr() };
}

/** Complete, on both nodes, first step 1 and last step 9, every hop placed by its node's clock. */
function assertCrossNode(c: Cluster, p: PacketPath): void {
  assert.equal(p.complete, true, `not complete: ${JSON.stringify(p)}`);
  const [from, to] = p.direction === 'request' ? ['node1', 'node2'] : ['node2', 'node1'];
  assert.equal(p.steps[0]!.step, 1);
  assert.equal(p.steps[0]!.node, c.tb.prefix + from);
  assert.equal(p.steps[p.steps.length - 1]!.step, 9);
  assert.equal(p.steps[p.steps.length - 1]!.node, c.tb.prefix + to);
  assert.ok(p.steps.some((h) => h.step === 6 && h.node === c.tb.prefix + to), 'step 6 on the receiving node');
  for (const h of p.steps) {
    assert.ok(h.latency_ns >= 0);
    assert.equal(h.clock?.node, h.node, `hop ${h.step} names its clock`);
    assert.ok(typeof h.clock?.uncertainty_ns === 'number');
  }
}

const byDir = (paths: PacketPath[], d: 'request' | 'reply') => paths.filter((p) => p.direction === d);

for (const cni of ['flannel-vxlan', 'calico-bgp'] as const) {
  test(`${cni}: follow --agents from outside the cluster: ICMP, TCP and UDP, both ways`, async (t) => {
    if (!needsRoot(t)) return;
    const c = await cluster(t, cni);
    // the client is not on the nodes: it reaches their agents over the underlay only
    assert.notEqual(c.client.exec(['ip', '-br', 'addr']).stdout.indexOf('192.168.100.2'), -1);

    const icmp = await follow(t, c, ['--flow', `${A} -> ${B}`, '--count', '4', '--timeout', '20'], () => {
      assert.equal(nsExec(podNs(c.tb, 'pod-a'), ['ping', '-c', '2', '-i', '0.2', B]).status, 0);
    });
    assert.equal(byDir(icmp.paths, 'request').length, 2);
    assert.equal(byDir(icmp.paths, 'reply').length, 2);
    for (const p of icmp.paths) assertCrossNode(c, p);

    nsSpawn(t, podNs(c.tb, 'pod-b'), ['python3', '-m', 'http.server', '80', '--bind', B]);
    await sleep(800);
    const tcp = await follow(t, c, ['--flow', `${A} -> ${B}:80`, '--proto', 'tcp', '--timeout', '6'], () => {
      const r = nsExec(podNs(c.tb, 'pod-a'), ['curl', '-sS', '-m', '5', '-o', '/dev/null', '-w', '%{http_code}', `http://${B}/`]);
      assert.equal(r.stdout, '200', r.stderr);
    });
    assert.ok(byDir(tcp.paths, 'request').some((p) => p.packet.tcp_flags === 'S'), 'the SYN');
    assert.ok(byDir(tcp.paths, 'reply').some((p) => p.packet.tcp_flags === 'SA'), 'the SYN-ACK');
    for (const p of tcp.paths) assertCrossNode(c, p);

    const echo = "const d=require('dgram').createSocket('udp4');d.on('message',(m,r)=>d.send(m,r.port,r.address));d.bind(5353)";
    nsSpawn(t, podNs(c.tb, 'pod-b'), [process.execPath, '-e', echo]);
    await sleep(800);
    const send = `const d=require('dgram').createSocket('udp4');let n=0;d.on('message',()=>{if(++n===3)process.exit(0)});` +
      `for(let i=0;i<3;i++)d.send(Buffer.from('ping'+i),5353,'${B}');setTimeout(()=>process.exit(1),3000)`;
    const udp = await follow(t, c, ['--flow', `${A} -> ${B}:5353`, '--proto', 'udp', '--count', '6', '--timeout', '20'], () => {
      assert.equal(nsExec(podNs(c.tb, 'pod-a'), [process.execPath, '-e', send]).status, 0);
    });
    assert.equal(byDir(udp.paths, 'request').length, 3);
    assert.equal(byDir(udp.paths, 'reply').length, 3);
    for (const p of udp.paths) assertCrossNode(c, p);
    // every session detached when its client ended
    await sleep(500);
    assert.equal(hopPrograms(), 0);
  });
}

test('a node clock 25 ms off: corrected, step 6 never negative and never holding more than the uncertainty', async (t) => {
  if (!needsRoot(t)) return;
  const c = await cluster(t, 'flannel-vxlan', (node) => (node === 'node2' ? ['--clock-skew-ms', '25'] : []));
  const { paths } = await follow(t, c, ['--flow', `${A} -> ${B}`, '--count', '16', '--timeout', '20'], () => {
    assert.equal(nsExec(podNs(c.tb, 'pod-a'), ['ping', '-c', '8', '-i', '0.2', B]).status, 0);
  });
  assert.equal(paths.length, 16);
  for (const p of paths) {
    assertCrossNode(c, p);
    const n2 = p.steps.find((h) => h.node === `${c.tb.prefix}node2`)!.clock!;
    // node2's clock reads 25 ms ahead: its hops are moved back by that, within the uncertainty shown
    assert.ok(Math.abs(n2.correction_ns - 25e6) <= n2.uncertainty_ns + 1e6, `correction ${n2.correction_ns} ± ${n2.uncertainty_ns}`);
    const wire = p.steps.find((h) => h.step === 6)!;
    const bound = p.steps.filter((h) => h.clock).reduce((m, h) => Math.max(m, h.clock!.uncertainty_ns), 0) * 2;
    assert.ok(wire.latency_ns >= 0 && wire.latency_ns <= bound + 200_000, `step 6 ${wire.latency_ns} ns, clock bound ${bound} ns`);
  }
});

test('TSO/GSO off on node1, GRO on (then off) at node2: a bulk transfer matched by byte range, every byte reaches step 9', async (t) => {
  if (!needsRoot(t)) return;
  const c = await cluster(t);
  const [n1, n2] = c.tb.nodes as [TestbedState['nodes'][0], TestbedState['nodes'][0]];
  assert.equal(nsExec(n1.netns, ['ethtool', '-K', 'eth0', 'tso', 'off', 'gso', 'off']).status, 0);
  const sink = "require('net').createServer((s)=>s.resume()).listen(5001,'" + B + "')";
  nsSpawn(t, podNs(c.tb, 'pod-b'), [process.execPath, '-e', sink]);
  await sleep(800);
  const BYTES = 1 << 20;
  const send = `const s=require('net').connect(5001,'${B}',()=>s.end(Buffer.alloc(${BYTES},7)));s.on('close',()=>process.exit(0))`;
  const transfer = async () => {
    const { paths } = await follow(t, c, ['--flow', `${A} -> ${B}:5001`, '--proto', 'tcp', '--timeout', '8'], () => {
      assert.equal(nsExec(podNs(c.tb, 'pod-a'), [process.execPath, '-e', send]).status, 0);
    });
    const data = byDir(paths, 'request').filter((p) => p.packet.payload_len > 0);
    assert.ok(data.length > 0);
    const isn = Math.min(...data.map((p) => p.packet.seq!));
    // the bytes that reached the pod's eth0 (step 9), from the printed paths
    const covered = data.filter((p) => p.complete).map((p) => [p.packet.seq! - isn, p.packet.seq! - isn + p.packet.payload_len] as const).sort((x, y) => x[0] - y[0]);
    let upTo = 0;
    for (const [from, to] of covered) {
      assert.ok(from <= upTo, `bytes ${upTo}..${from} of the request never reached step 9`);
      upTo = Math.max(upTo, to);
    }
    assert.ok(upTo >= BYTES, `only ${upTo} of ${BYTES} bytes reached step 9`);
    // what the sender's kernel cut into segments on the wire is never reported as lost
    assert.deepEqual(data.filter((p) => !p.complete).map((p) => p.drop?.reason), []);
    return data;
  };
  // GRO on at node2: the wire's segments are merged again before the hook, usually on the sender's boundaries
  assert.equal(nsExec(n2.netns, ['ethtool', '-K', 'eth0', 'gro', 'on']).status, 0);
  await transfer();
  // GRO off: node2's eth0 sees each segment; the VXLAN device merges them again after decapsulation
  assert.equal(nsExec(n2.netns, ['ethtool', '-K', 'eth0', 'gro', 'off']).status, 0);
  const split = await transfer();
  const multi = split.filter((p) => p.packet.gso_segs > 1);
  assert.ok(multi.length > 0, 'the sender sent multi-segment skbs');
  for (const p of multi) {
    assert.ok(p.steps.some((h) => h.step === 6), `step 6 is on the path of seq ${p.packet.seq}`);
    assert.deepEqual([p.packet.segments?.sent, p.packet.segments?.received_as], [p.packet.gso_segs, p.packet.gso_segs], `seq ${p.packet.seq}: ${JSON.stringify(p.packet)}`);
  }
});

test('--every 2 through the agents, TSO/GSO off on node1 and GRO on at node2: one complete path per 128 KiB mark', async (t) => {
  if (!needsRoot(t)) return;
  const c = await cluster(t);
  const [n1, n2] = c.tb.nodes as [TestbedState['nodes'][0], TestbedState['nodes'][0]];
  // node1 sends MSS-sized skbs, node2 merges them again: the two nodes cut the stream differently
  assert.equal(nsExec(n1.netns, ['ethtool', '-K', 'eth0', 'tso', 'off', 'gso', 'off']).status, 0);
  assert.equal(nsExec(n2.netns, ['ethtool', '-K', 'eth0', 'gro', 'on']).status, 0);
  const sink = "require('net').createServer((s)=>s.resume()).listen(5001,'" + B + "')";
  nsSpawn(t, podNs(c.tb, 'pod-b'), [process.execPath, '-e', sink]);
  await sleep(800);
  const BYTES = 4 << 20;
  const MARK = 2 * 65536;
  const send = `const s=require('net').connect(5001,'${B}',()=>s.end(Buffer.alloc(${BYTES},7)));s.on('close',()=>process.exit(0))`;
  const { paths } = await follow(t, c, ['--flow', `${A} -> ${B}:5001`, '--proto', 'tcp', '--every', '2', '--timeout', '8'], () => {
    assert.equal(nsExec(podNs(c.tb, 'pod-a'), [process.execPath, '-e', send]).status, 0);
  });
  for (const p of paths) assertCrossNode(c, p);
  const flags = (p: PacketPath) => p.packet.tcp_flags ?? '';
  assert.ok(byDir(paths, 'request').some((p) => flags(p).includes('S')), 'the SYN');
  const data = byDir(paths, 'request').filter((p) => p.packet.payload_len > 0 && !/[SFR]/.test(flags(p)));
  // each holds a mark: [seq, seq + len) crosses a multiple of 128 KiB
  for (const p of data) {
    const seq = p.packet.seq!;
    assert.ok(Math.floor((seq + p.packet.payload_len - 1) / MARK) !== Math.floor((seq - 1) / MARK) || seq % MARK === 0, `seq ${seq} holds no mark`);
  }
  const marks = new Set(data.map((p) => Math.floor((p.packet.seq! + p.packet.payload_len - 1) / MARK)));
  t.diagnostic(`${data.length} data paths, ${marks.size} marks, ${paths.length} paths in all`);
  // 4 MiB from a random initial sequence number crosses 32 marks
  assert.ok(marks.size >= 31 && marks.size <= 33, `${marks.size} marks of the 4 MiB stream`);
});

test('bad input and faults: wrong token, malformed requests, an unreachable agent, a client killed, an agent killed', async (t) => {
  if (!needsRoot(t)) return;
  const c = await cluster(t);
  const [a1, a2] = c.agents as [NodeAgent, NodeAgent];

  // a wrong token: refused, one line, nothing attached
  const wrong = tokenFile(t);
  const r = clientRun(c.client, ['follow', '--agents', c.agentsArg, '--token-file', wrong, '--flow', `${A} -> ${B}`, '--timeout', '2']);
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /refused the token \(HTTP 401\)/);
  assert.equal(hopPrograms(), 0);

  // malformed requests: 4xx, and the agent goes on serving
  const raw = (req: string) => c.client.exec(['bash', '-c', `exec 3<>/dev/tcp/${a1.ip}/9966; printf '${req}' >&3; timeout 2 head -c 200 <&3`]).stdout;
  assert.match(raw('GET http://[/x HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n'), /^HTTP\/1.1 40[01]/);
  const token = (await import('node:fs')).readFileSync(c.token, 'utf8').trim();
  const auth = `Authorization: Bearer ${token}\\r\\n`;
  assert.match(raw(`POST /v1/follow HTTP/1.1\\r\\nHost: x\\r\\n${auth}Content-Type: application/json\\r\\nContent-Length: 9\\r\\n\\r\\n{"flow":1`), /^HTTP\/1.1 400/);
  assert.match(raw(`POST /v1/follow HTTP/1.1\\r\\nHost: x\\r\\n${auth}Content-Type: application/json\\r\\nContent-Length: 60\\r\\n\\r\\n{"flow":{"src":"x","dst":"y","proto":"tcp"},"timeout_s":1}    `), /^HTTP\/1.1 400/);
  assert.match(raw(`GET /v1/nothing HTTP/1.1\\r\\nHost: x\\r\\n${auth}\\r\\n`), /^HTTP\/1.1 404/);
  assert.match(raw(`POST /v1/follow HTTP/1.1\\r\\nHost: x\\r\\n${auth}Content-Type: application/json\\r\\nContent-Length: 100000\\r\\n\\r\\n${'x'.repeat(20000)}`), /^HTTP\/1.1 413/);
  assert.equal(hopPrograms(), 0);

  // node2's agent unreachable (wrong port): node2's steps are named as not watched, not as lost
  const unreachable = `${a1.url},http://${a2.ip}:9967`;
  const f = await remoteFollow(t, c.client, ['--agents', unreachable, '--token-file', c.token, '--flow', `${A} -> ${B}`, '--timeout', '4']);
  nsExec(podNs(c.tb, 'pod-a'), ['ping', '-c', '2', '-i', '0.2', B]);
  assert.equal(await f.exited, 0, f.stderr());
  assert.match(f.stdout(), new RegExp(`not watched: ${a2.ip.replace(/\./g, '\\.')} \\(no agent at http://${a2.ip.replace(/\./g, '\\.')}:9967`));
  assert.doesNotMatch(f.stdout(), /INCOMPLETE/);

  // a slow agent (accepts, never answers) among the real ones: named after its time-out, the rest goes on
  const silent = c.client.exec(['bash', '-c', `nohup ${process.execPath} -e "require('net').createServer(()=>{}).listen(9999,'192.168.100.2')" >/dev/null 2>&1 & echo $!`]).stdout.trim();
  t.after(() => {
    try {
      process.kill(Number(silent), 'SIGKILL');
    } catch {
      // gone already
    }
  });
  await sleep(300);
  const slow = await remoteFollow(t, c.client, ['--agents', `${c.agentsArg},http://192.168.100.2:9999`, '--token-file', c.token, '-o', 'json', '--flow', `${A} -> ${B}`, '--count', '2', '--timeout', '20']);
  assert.equal(nsExec(podNs(c.tb, 'pod-a'), ['ping', '-c', '1', B]).status, 0);
  assert.equal(await slow.exited, 0, slow.stderr());
  for (const p of jsonLines<PacketPath>(slow.stdout())) assertCrossNode(c, p);
  assert.match(slow.stderr(), /no answer from the agent at http:\/\/192\.168\.100\.2:9999: no answer in \d+ ms/);

  // two clients on the same flow at once, each gets every packet
  const [f1, f2] = await Promise.all([1, 2].map(() => remoteFollow(t, c.client, ['--agents', c.agentsArg, '--token-file', c.token, '-o', 'json', '--flow', `${A} -> ${B}`, '--count', '4', '--timeout', '15'])));
  assert.equal(nsExec(podNs(c.tb, 'pod-a'), ['ping', '-c', '2', '-i', '0.2', B]).status, 0);
  for (const x of [f1!, f2!]) {
    assert.equal(await x.exited, 0, x.stderr());
    const paths = jsonLines<PacketPath>(x.stdout());
    assert.equal(paths.length, 4);
    for (const p of paths) assertCrossNode(c, p);
  }

  // a client killed with -9: both agents detach within a few seconds
  const killed = await remoteFollow(t, c.client, ['--agents', c.agentsArg, '--token-file', c.token, '--flow', `${A} -> ${B}`]);
  assert.ok(hopPrograms() > 0);
  killed.child.kill('SIGKILL');
  const end = Date.now() + 5000;
  while (hopPrograms() > 0 && Date.now() < end) await sleep(100);
  assert.equal(hopPrograms(), 0, 'the agents detached after the client died');
  assert.match(agentMetrics(a1), /^nettrace_agent_trace_sessions 0$/m);

  // node2's agent dies mid-trace: the client says so and ends normally; nothing stays attached
  const mid = await remoteFollow(t, c.client, ['--agents', c.agentsArg, '--token-file', c.token, '--flow', `${A} -> ${B}`, '--timeout', '3']);
  a2.run.child.kill('SIGKILL');
  assert.equal(await mid.exited, 0, mid.stderr());
  assert.match(mid.stderr(), /went away mid-trace/);
  await sleep(500);
  assert.equal(hopPrograms(), 0);
});

test('follow on one node alone (no --agents): its half of the path, and where the rest is', async (t) => {
  if (!needsRoot(t)) return;
  const tb = withTestbed(t);
  const { startFollow } = await import('../helpers/cluster');
  const f = await startFollow(t, ['--nodes', `${tb.prefix}node1`, '--flow', `${A} -> ${B}`, '--timeout', '4']);
  nsExec(podNs(tb, 'pod-a'), ['ping', '-c', '2', '-i', '0.2', B]);
  assert.equal(await f.exited, 0, f.stderr());
  assert.match(f.stdout(), /not watched: 192\.168\.1\.102 .*steps 6-9/);
  assert.doesNotMatch(f.stdout(), /INCOMPLETE/);
});

test('diagnose --agents: healthy, then a FORWARD DROP on node2 found from outside the cluster', async (t) => {
  if (!needsRoot(t)) return;
  const c = await cluster(t);
  const run = () => {
    const r = clientRun(c.client, ['diagnose', '--agents', c.agentsArg, '--token-file', c.token, '-o', 'json', '--flow', `${A} -> ${B}`]);
    const d = JSON.parse(r.stdout) as Diagnosis;
    assert.equal(r.status, d.healthy ? 0 : 10, r.stderr);
    return d;
  };
  const healthy = run();
  assert.equal(healthy.cause, 'none', JSON.stringify(healthy));
  const n2 = c.tb.nodes[1]!.netns;
  assert.equal(nsExec(n2, ['iptables', '-I', 'FORWARD', '-d', B, '-j', 'DROP']).status, 0);
  const broken = run();
  assert.equal(broken.cause, 'netfilter-drop', JSON.stringify(broken));
  // seen at node2's tunnel ingress, dropped in its FORWARD chain: routing to the bridge failed
  assert.deepEqual([broken.step, broken.last_seen?.step], [8, 7]);
  assert.equal(broken.node, n2);
  assert.match(broken.detail, /-A FORWARD -d 10\.244\.2\.8\/32 -j DROP/);

  // node2's agent gone: its steps cannot be judged, and that is what diagnose says (not loss)
  c.agents[1]!.run.child.kill('SIGKILL');
  await sleep(300);
  const r = clientRun(c.client, ['diagnose', '--agents', c.agentsArg, '--token-file', c.token, '--flow', `${A} -> ${B}`]);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /HEALTHY where watched; steps 6,7,8,9 not watched/);
  assert.match(r.stdout, /not watched: 192\.168\.1\.102/);
  assert.doesNotMatch(r.stdout, /cause: loss/);
});

test('TLS: agents serve https; the client trusts them with --ca, and says why without it', async (t) => {
  if (!needsRoot(t)) return;
  const { certificates, tempDir } = await import('../helpers/remote');
  const dir = tempDir(t);
  const { ca, certs } = certificates(dir, ['192.168.1.101', '192.168.1.102']);
  const ipOf = (node: string) => (node === 'node1' ? '192.168.1.101' : '192.168.1.102');
  const c = await cluster(t, 'flannel-vxlan', (node) => ['--tls-cert', certs.get(ipOf(node))!.cert, '--tls-key', certs.get(ipOf(node))!.key]);
  assert.match(c.agentsArg, /^https:\/\//);
  const { paths } = await follow(t, c, ['--ca', ca, '--flow', `${A} -> ${B}`, '--count', '2', '--timeout', '20'], () => {
    assert.equal(nsExec(podNs(c.tb, 'pod-a'), ['ping', '-c', '1', B]).status, 0);
  });
  assert.equal(paths.length, 2);
  for (const p of paths) assertCrossNode(c, p);
  const untrusted = clientRun(c.client, ['follow', '--agents', c.agentsArg, '--token-file', c.token, '--flow', `${A} -> ${B}`, '--timeout', '2']);
  assert.notEqual(untrusted.status, 0);
  assert.match(untrusted.stderr, /no agent answered: .*(self-signed|certificate)/i);
});

test('dns://NAME:PORT: every address of the name is an agent', async (t) => {
  if (!needsRoot(t)) return;
  const c = await cluster(t);
  const { tempDir } = await import('../helpers/remote');
  const { startNettrace } = await import('../helpers/cluster');
  // a headless Service's name as the client's resolver answers it: both nodes' addresses
  const hosts = `${tempDir(t)}/hosts`;
  (await import('node:fs')).writeFileSync(hosts, '192.168.1.101 nettrace-agents.test\n192.168.1.102 nettrace-agents.test\n');
  const withHosts = [...c.client.prefix, 'unshare', '--mount', '--', 'bash', '-c', `mount --bind ${hosts} /etc/hosts && exec "$0" "$@"`];
  const f = await startNettrace(t, ['follow', '--agents', 'dns://nettrace-agents.test:9966', '--token-file', c.token, '-o', 'json',
    '--flow', `${A} -> ${B}`, '--count', '2', '--timeout', '15'], withHosts);
  assert.equal(nsExec(podNs(c.tb, 'pod-a'), ['ping', '-c', '1', B]).status, 0);
  assert.equal(await f.exited, 0, f.stderr());
  const paths = jsonLines<PacketPath>(f.stdout());
  assert.equal(paths.length, 2);
  for (const p of paths) assertCrossNode(c, p);
});
