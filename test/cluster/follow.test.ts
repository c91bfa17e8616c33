// nettrace follow on a real two-node Flannel VXLAN cluster: real BPF programs, real traffic.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test, type TestContext } from 'node:test';
import type { PacketPath } from '../../src/flow/path';
import type { TestbedState } from '../../src/testbed/testbed';
import { jsonLines, NETTRACE, nsExec, nsSpawn, sleep, startFollow, withTestbed } from '../helpers/cluster';
import { needsRoot } from '../helpers/privileged';

const A = '10.244.1.5';
const B = '10.244.2.8';
const REQUEST_PATH = [
  [1, 'node1', 'eth0', 'egress'], [2, 'node1', 'veth', 'ingress'], [3, 'node1', 'cni0', 'ingress'],
  [4, 'node1', 'flannel.1', 'egress'], [5, 'node1', 'eth0', 'egress'], [6, 'node2', 'eth0', 'ingress'],
  [7, 'node2', 'flannel.1', 'ingress'], [8, 'node2', 'cni0', 'egress'], [9, 'node2', 'veth', 'egress'],
  [9, 'node2', 'eth0', 'ingress'],
] as const;

function nodesArg(tb: TestbedState): string {
  return tb.nodes.map((n) => n.netns).join(',');
}

/** Every hop of the nine steps in order, on the right node and device, latencies adding up. */
function assertNineSteps(tb: TestbedState, p: PacketPath): void {
  assert.equal(p.complete, true, `path not complete: ${JSON.stringify(p)}`);
  assert.equal(p.drop, null);
  const [from, to] = p.direction === 'request' ? ['node1', 'node2'] : ['node2', 'node1'];
  const expected = REQUEST_PATH.map(([step, node, dev, hook]) => [step, node === 'node1' ? from : to, dev, hook] as const);
  assert.deepEqual(p.steps.map((h) => h.step), expected.map((e) => e[0]));
  p.steps.forEach((h, i) => {
    const [, node, dev, hook] = expected[i]!;
    assert.equal(h.node, tb.prefix + node, `hop ${i} node`);
    assert.ok(dev === 'veth' ? h.device.startsWith('veth') : h.device === dev, `hop ${i} device ${h.device}, wanted ${dev}`);
    assert.equal(h.hook, hook, `hop ${i} hook`);
    assert.ok(h.latency_ns >= 0, `hop ${i} latency ${h.latency_ns}`);
  });
  assert.equal(p.steps[0]!.latency_ns, 0);
  assert.equal(p.steps.reduce((s, h) => s + h.latency_ns, 0), p.total_ns);
  assert.equal(p.total_ns, p.steps[p.steps.length - 1]!.ts_ns - p.steps[0]!.ts_ns);
}

function byDirection(paths: PacketPath[]): Record<'request' | 'reply', PacketPath[]> {
  return { request: paths.filter((p) => p.direction === 'request'), reply: paths.filter((p) => p.direction === 'reply') };
}

async function collect(t: TestContext, tb: TestbedState, args: string[], traffic: () => void): Promise<PacketPath[]> {
  const f = await startFollow(t, ['--nodes', nodesArg(tb), '-o', 'json', ...args]);
  traffic();
  const code = await f.exited;
  assert.equal(code, 0, f.stderr());
  return jsonLines<PacketPath>(f.stdout());
}

function podNs(tb: TestbedState, name: string): string {
  return tb.pods.find((p) => p.name === name)!.netns;
}

test('ICMP: a ping shows all nine steps both ways', async (t) => {
  if (!needsRoot(t)) return;
  const tb = withTestbed(t);
  const paths = await collect(t, tb, ['--flow', `${A} -> ${B}`, '--count', '4', '--timeout', '20'], () => {
    assert.equal(nsExec(podNs(tb, 'pod-a'), ['ping', '-c', '2', '-i', '0.2', B]).status, 0);
  });
  const { request, reply } = byDirection(paths);
  assert.equal(request.length, 2);
  assert.equal(reply.length, 2);
  for (const p of paths) assertNineSteps(tb, p);
  assert.equal(request[0]!.packet.icmp_type, 8);
  assert.equal(reply[0]!.packet.icmp_type, 0);
  assert.deepEqual([request[0]!.packet.src, request[0]!.packet.dst], [A, B]);
});

test('TCP: an HTTP request and its reply, each packet on all nine steps', async (t) => {
  if (!needsRoot(t)) return;
  const tb = withTestbed(t);
  nsSpawn(t, podNs(tb, 'pod-b'), ['python3', '-m', 'http.server', '80', '--bind', B]);
  await sleep(800);
  const paths = await collect(t, tb, ['--flow', `${A} -> ${B}:80`, '--proto', 'tcp', '--timeout', '6'], () => {
    const r = nsExec(podNs(tb, 'pod-a'), ['curl', '-sS', '-m', '5', '-o', '/dev/null', '-w', '%{http_code}', `http://${B}/`]);
    assert.equal(r.stdout, '200', r.stderr);
  });
  const { request, reply } = byDirection(paths);
  // SYN, ACK, GET, ..., FIN: at least the handshake both ways
  assert.ok(request.length >= 3, `requests: ${request.length}`);
  assert.ok(reply.length >= 2, `replies: ${reply.length}`);
  for (const p of paths) assertNineSteps(tb, p);
  assert.equal(request[0]!.packet.tcp_flags, 'S');
  assert.equal(reply[0]!.packet.tcp_flags, 'SA');
  assert.ok(request.every((p) => p.packet.dport === 80) && reply.every((p) => p.packet.sport === 80));
});

test('UDP: datagrams and their echoes on all nine steps', async (t) => {
  if (!needsRoot(t)) return;
  const tb = withTestbed(t);
  const echo = "const d=require('dgram').createSocket('udp4');d.on('message',(m,r)=>d.send(m,r.port,r.address));d.bind(5353)";
  nsSpawn(t, podNs(tb, 'pod-b'), [process.execPath, '-e', echo]);
  await sleep(800);
  const send = `const d=require('dgram').createSocket('udp4');let n=0;d.on('message',()=>{if(++n===3)process.exit(0)});` +
    `for(let i=0;i<3;i++)d.send(Buffer.from('ping'+i),5353,'${B}');setTimeout(()=>process.exit(1),3000)`;
  const paths = await collect(t, tb, ['--flow', `${A} -> ${B}:5353`, '--proto', 'udp', '--count', '6', '--timeout', '20'], () => {
    assert.equal(nsExec(podNs(tb, 'pod-a'), [process.execPath, '-e', send]).status, 0);
  });
  const { request, reply } = byDirection(paths);
  assert.equal(request.length, 3);
  assert.equal(reply.length, 3);
  for (const p of paths) assertNineSteps(tb, p);
  assert.ok(request.every((p) => p.packet.payload_len === 5));
});

test('--every 16: a bulk transfer as one complete path per MiB of its stream, and its handshake', async (t) => {
  if (!needsRoot(t)) return;
  const tb = withTestbed(t);
  nsSpawn(t, podNs(tb, 'pod-b'), ['iperf3', '-s']);
  await sleep(800);
  let received = 0;
  const paths = await collect(t, tb, ['--flow', `${A} -> ${B}:5201`, '--every', '16', '--timeout', '5'], () => {
    const r = nsExec(podNs(tb, 'pod-a'), ['iperf3', '-c', B, '-t', '2', '-J'], 30000);
    assert.equal(r.status, 0, r.stderr);
    received = (JSON.parse(r.stdout) as { end: { sum_received: { bytes: number } } }).end.sum_received.bytes;
  });
  for (const p of paths) assertNineSteps(tb, p);
  const { request } = byDirection(paths);
  // tcp_flags as letters: F S R P A ...
  const flags = (p: PacketPath) => p.packet.tcp_flags ?? '';
  // iperf3's control connection and its test connection: each SYN is kept
  assert.ok(request.filter((p) => flags(p).includes('S')).length >= 2, 'the SYNs');
  const data = request.filter((p) => p.packet.payload_len > 0 && !/[SFR]/.test(flags(p))).length;
  const mib = received / 2 ** 20;
  t.diagnostic(`${data} data paths for ${mib.toFixed(0)} MiB received; ${paths.length} paths in all`);
  assert.ok(mib > 100, `iperf3 moved only ${mib.toFixed(0)} MiB`);
  // one data skb per MiB of each connection's stream (a retransmission of it is a second path)
  assert.ok(data >= 0.9 * mib - 2 && data <= 1.2 * mib + 4, `${data} data paths for ${mib.toFixed(0)} MiB`);
});

test('only the followed flow is printed, and traffic flows unchanged while attached', async (t) => {
  if (!needsRoot(t)) return;
  const tb = withTestbed(t);
  const f = await startFollow(t, ['--nodes', nodesArg(tb), '-o', 'json', '--flow', `${A} -> ${B}:9`, '--proto', 'udp', '--timeout', '4']);
  // other flows between the same pods: ICMP, and UDP to another port
  const ping = nsExec(podNs(tb, 'pod-a'), ['ping', '-c', '3', '-i', '0.2', B]);
  assert.equal(ping.status, 0, 'ping must still work with the programs attached');
  assert.match(ping.stdout, / 0% packet loss/);
  const other = "const d=require('dgram').createSocket('udp4');d.send(Buffer.from('x'),10,'" + B + "',()=>d.close())";
  assert.equal(nsExec(podNs(tb, 'pod-a'), [process.execPath, '-e', other]).status, 0);
  assert.equal(await f.exited, 0);
  assert.equal(f.stdout(), '', 'nothing of other flows may be printed');
});

test('MTU: a 1472-byte DF ping from a 1500-MTU pod stops before flannel.1 (the seed case 3)', async (t) => {
  if (!needsRoot(t)) return;
  const tb = withTestbed(t, { podMtu: 1500 });
  const paths = await collect(t, tb, ['--flow', `${A} -> ${B}`, '--count', '1', '--timeout', '20', '--grace', '500'], () => {
    const r = nsExec(podNs(tb, 'pod-a'), ['ping', '-c', '1', '-W', '1', '-M', 'do', '-s', '1472', B]);
    assert.notEqual(r.status, 0, 'the big ping must fail');
  });
  assert.equal(paths.length, 1);
  const p = paths[0]!;
  assert.equal(p.complete, false);
  assert.equal(p.packet.len, 1500);
  assert.deepEqual(p.steps.map((h) => h.step), [1, 2, 3]);
  // the step that failed (the MTU check is routing), and where it was last seen
  assert.deepEqual(p.drop && [p.drop.step, p.drop.step_name, p.drop.device, p.drop.node], [4, 'routing', 'cni0', `${tb.prefix}node1`]);
  assert.deepEqual(p.drop?.last_seen, { step: 3, name: 'bridge', node: `${tb.prefix}node1`, device: 'cni0', hook: 'ingress' });
  // a small ping still crosses
  assert.equal(nsExec(podNs(tb, 'pod-a'), ['ping', '-c', '1', '-W', '1', '-s', '1000', B]).status, 0);
});

test('table output: one block a packet with the nine steps and the total', async (t) => {
  if (!needsRoot(t)) return;
  const tb = withTestbed(t);
  const f = await startFollow(t, ['--nodes', nodesArg(tb), '--flow', `${A} -> ${B}`, '--count', '2', '--timeout', '20']);
  nsExec(podNs(tb, 'pod-a'), ['ping', '-c', '1', B]);
  assert.equal(await f.exited, 0);
  const out = f.stdout();
  assert.match(out, /^\d{4}-\d\d-\d\dT[\d:.]+Z request +10\.244\.1\.5 -> 10\.244\.2\.8 icmp/m);
  assert.match(out, /^\d{4}-\d\d-\d\dT[\d:.]+Z reply +10\.244\.2\.8 -> 10\.244\.1\.5 icmp/m);
  for (const name of ['container sends', 'veth pair', 'bridge', 'routing', 'encapsulation', 'physical network', 'receive, decapsulate', 'route to bridge', 'veth to pod']) {
    assert.ok(out.includes(name), `missing step "${name}"`);
  }
  assert.equal((out.match(/total [\d.]+ (ns|µs|ms) +complete, 10 hops/g) ?? []).length, 2);
});

test('nothing stays attached after follow ends, is killed with -9, or after cleanup', async (t) => {
  if (!needsRoot(t)) return;
  const tb = withTestbed(t);
  const ours = () => spawnSync('bpftool', ['prog', 'show'], { encoding: 'utf8' }).stdout.match(/name nt_(ingress|egress)/g)?.length ?? 0;
  const before = ours();
  const tcFilters = () => tb.nodes.flatMap((n) => ['eth0', 'cni0', 'flannel.1'].flatMap((dev) => ['ingress', 'egress']
    .map((dir) => spawnSync('tc', ['-n', n.netns, 'filter', 'show', 'dev', dev, dir], { encoding: 'utf8' }).stdout.trim()))).join('');

  // tcx: SIGKILL closes the link fds, the kernel detaches
  const f = await startFollow(t, ['--nodes', nodesArg(tb), '--flow', `${A} -> ${B}`]);
  assert.ok(ours() > before);
  f.child.kill('SIGKILL');
  await f.exited;
  await sleep(300);
  assert.equal(ours(), before, 'programs left loaded after kill -9 (tcx)');
  assert.equal(nsExec(podNs(tb, 'pod-a'), ['ping', '-c', '1', '-W', '1', B]).status, 0);

  // classic tc: filters outlive a killed process, cleanup removes them
  const g = await startFollow(t, ['--nodes', nodesArg(tb), '--flow', `${A} -> ${B}`, '--attach', 'tc']);
  assert.notEqual(tcFilters(), '');
  g.child.kill('SIGKILL');
  await g.exited;
  assert.notEqual(tcFilters(), '', 'tc filters are expected to survive kill -9');
  assert.equal(nsExec(podNs(tb, 'pod-a'), ['ping', '-c', '1', '-W', '1', B]).status, 0, 'traffic flows with leftover filters');
  const c = spawnSync(NETTRACE, ['cleanup'], { encoding: 'utf8' });
  assert.equal(c.status, 0, c.stderr);
  assert.match(c.stdout, /removed ingress filter on cni0/);
  assert.equal(tcFilters(), '', 'cleanup left filters');
  await sleep(300);
  assert.equal(ours(), before);

  // SIGTERM: clean exit, everything detached
  const h = await startFollow(t, ['--nodes', nodesArg(tb), '--flow', `${A} -> ${B}`, '--attach', 'tc']);
  h.child.kill('SIGTERM');
  assert.equal(await h.exited, 143);
  assert.equal(tcFilters(), '');
  const qdiscs = tb.nodes.map((n) => spawnSync('tc', ['-n', n.netns, 'qdisc', 'show'], { encoding: 'utf8' }).stdout).join('');
  assert.doesNotMatch(qdiscs, /clsact/, 'the clsact qdiscs nettrace created must go on exit');
  await sleep(300);
  assert.equal(ours(), before);
});
