// nettrace next to other tools on the same hooks (Cilium, Calico eBPF, a u32 filter): it sees the
// packets a program ahead of it would end the chain for, and it never removes what is not its own.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import type { PacketPath } from '../../src/flow/path';
import { attachTcx, BpfObject, inNetns } from '../../src/libbpf';
import type { TestbedState } from '../../src/testbed/testbed';
import { freePort, startAgent } from '../helpers/agent';
import { jsonLines, NETTRACE, nsExec, ROOT, startFollow, withTestbed } from '../helpers/cluster';
import { needsRoot } from '../helpers/privileged';

const A = '10.244.1.5';
const B = '10.244.2.8';
const FOREIGN = path.join(ROOT, 'build/fixtures/foreign.bpf.o');

function podNs(tb: TestbedState, name: string): string {
  return tb.pods.find((p) => p.name === name)!.netns;
}

function ifindex(ns: string, dev: string): number {
  const r = spawnSync('ip', ['-n', ns, '-j', 'link', 'show', 'dev', dev], { encoding: 'utf8' });
  return (JSON.parse(r.stdout) as { ifindex: number }[])[0]!.ifindex;
}

/** Another tool's tcx program on a hook, attached the usual way (appended), removed when the test ends. */
function otherTcx(t: TestContext, ns: string, dev: string, prog: 'other_pass' | 'other_drop'): () => void {
  const obj = BpfObject.open(FOREIGN);
  obj.load();
  const link = inNetns(`/run/netns/${ns}`, () => attachTcx(obj.program(prog).fd, ifindex(ns, dev), 'ingress'));
  const release = () => {
    link.detach();
    obj.close();
  };
  t.after(release);
  return release;
}

async function followPing(t: TestContext, tb: TestbedState, pingOk: boolean): Promise<PacketPath[]> {
  const f = await startFollow(t, ['--nodes', tb.nodes.map((n) => n.netns).join(','), '-o', 'json', '--flow', `${A} -> ${B}`, '--count', '1', '--timeout', '8']);
  assert.equal(nsExec(podNs(tb, 'pod-a'), ['ping', '-c', '1', '-W', '2', B]).status === 0, pingOk);
  f.child.kill('SIGINT');
  await f.exited;
  return jsonLines<PacketPath>(f.stdout());
}

test('a program ahead of ours that ends the tcx chain (OK, or a drop) does not hide the packet from follow', async (t) => {
  if (!needsRoot(t)) return;
  const tb = withTestbed(t);
  const [n1, n2] = [tb.nodes[0]!.netns, tb.nodes[1]!.netns];
  // Cilium-like: OK on node1's bridge ingress (step 3) ends the chain; the packet goes on
  otherTcx(t, n1, 'cni0', 'other_pass');
  const passed = (await followPing(t, tb, true)).find((p) => p.direction === 'request');
  assert.ok(passed, 'the request was followed');
  assert.ok(passed.steps.some((h) => h.step === 3 && h.device === 'cni0' && h.hook === 'ingress'), `step 3 seen: ${JSON.stringify(passed.steps)}`);
  assert.equal(passed.complete, true, JSON.stringify(passed));

  // a policy drop on node2's tunnel ingress (step 7): the hop is seen, then the packet dies there
  otherTcx(t, n2, 'flannel.1', 'other_drop');
  const dropped = (await followPing(t, tb, false)).find((p) => p.direction === 'request');
  assert.ok(dropped, 'the request was followed');
  assert.equal(dropped.complete, false);
  const last = dropped.steps[dropped.steps.length - 1]!;
  assert.deepEqual([last.step, last.node, last.device, last.hook], [7, n2, 'flannel.1', 'ingress'], JSON.stringify(dropped));
});

interface TcRow { kind: string; pref: number; options?: { handle?: string; prog?: { name?: string } } }

function filters(ns: string, dev: string, dir: 'ingress' | 'egress'): TcRow[] {
  const r = spawnSync('tc', ['-n', ns, '-j', 'filter', 'show', 'dev', dev, dir], { encoding: 'utf8' });
  return (JSON.parse(r.stdout || '[]') as TcRow[]).filter((f) => f.options);
}

const isNt = (f: TcRow) => !!f.options?.prog?.name?.startsWith('nt_');
const hasClsact = (ns: string, dev: string) => /clsact/.test(spawnSync('tc', ['-n', ns, 'qdisc', 'show', 'dev', dev], { encoding: 'utf8' }).stdout);

function cleanup(): string {
  const c = spawnSync(NETTRACE, ['cleanup'], { encoding: 'utf8' });
  assert.equal(c.status, 0, c.stderr);
  return c.stdout;
}

test('classic tc: another tool\'s filters survive follow, the agent, kill -9 and cleanup; a live agent\'s survive cleanup and a second follow', async (t) => {
  if (!needsRoot(t)) return;
  const tb = withTestbed(t);
  const n1 = tb.nodes[0]!.netns;
  const tc = (args: string[]) => assert.equal(spawnSync('tc', ['-n', n1, ...args], { encoding: 'utf8' }).status, 0, args.join(' '));
  // the other tool made cni0's clsact and put a u32 and a BPF filter on its ingress
  tc(['qdisc', 'add', 'dev', 'cni0', 'clsact']);
  tc(['filter', 'add', 'dev', 'cni0', 'ingress', 'prio', '20', 'protocol', 'ip', 'u32', 'match', 'ip', 'dst', '10.99.0.1/32', 'flowid', '1:1']);
  tc(['filter', 'add', 'dev', 'cni0', 'ingress', 'prio', '10', 'handle', '7', 'bpf', 'da', 'obj', FOREIGN, 'sec', 'classifier']);
  const theirs = () => filters(n1, 'cni0', 'ingress').filter((f) => !isNt(f)).map((f) => `${f.kind}/${f.pref}/${f.options?.prog?.name ?? ''}`).sort();
  const before = theirs();
  assert.ok(before.includes('bpf/10/other_pass') && before.includes('u32/20/'), `set up: ${before.join(' ')}`);
  const ours = () => filters(n1, 'cni0', 'ingress').filter(isNt).length;

  // follow --attach tc, to its end
  const f = await startFollow(t, ['--nodes', tb.nodes.map((n) => n.netns).join(','), '--flow', `${A} -> ${B}`, '--attach', 'tc', '--count', '1', '--timeout', '8']);
  assert.ok(ours() > 0, 'follow attached next to them');
  assert.equal(nsExec(podNs(tb, 'pod-a'), ['ping', '-c', '1', '-W', '2', B]).status, 0);
  await f.exited;
  assert.equal(ours(), 0);
  assert.deepEqual(theirs(), before, 'follow left the other tool\'s filters');
  assert.ok(hasClsact(n1, 'cni0'), 'the clsact we did not create stays');
  assert.ok(!hasClsact(n1, 'flannel.1'), 'the clsact follow created goes');

  // a live agent: neither cleanup nor a second follow --attach tc takes its filters
  const port = await freePort();
  const agent = await startAgent(t, port, ['--nodes', n1, '--attach', 'tc']);
  const agentFilters = ours();
  assert.ok(agentFilters > 0);
  const g = await startFollow(t, ['--nodes', tb.nodes.map((n) => n.netns).join(','), '--flow', `${A} -> ${B}`, '--attach', 'tc', '--timeout', '1']);
  assert.equal(ours(), agentFilters + 1, 'follow attaches beside the agent');
  await g.exited;
  assert.match(cleanup(), /nothing left behind/);
  assert.equal(ours(), agentFilters, 'the live agent keeps its filters');

  // killed: its filters are left behind, and cleanup takes exactly those
  agent.child.kill('SIGKILL');
  await agent.exited;
  assert.equal(ours(), agentFilters, 'tc filters outlive kill -9');
  assert.match(cleanup(), /removed ingress filter on cni0/);
  assert.equal(ours(), 0);
  assert.deepEqual(theirs(), before, 'cleanup left the other tool\'s filters');
  assert.ok(hasClsact(n1, 'cni0'), 'cleanup left the clsact it did not create');
  assert.ok(!hasClsact(n1, 'flannel.1'), 'cleanup removed the clsact the killed agent created');
  assert.equal(nsExec(podNs(tb, 'pod-a'), ['ping', '-c', '1', '-W', '2', B]).status, 0);
});
