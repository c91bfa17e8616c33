// A ClusterIP as kube-proxy implements it (iptables DNAT in the node): follow and diagnose show
// the translation on the way and continue the path on the pod's address.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import type { Diagnosis } from '../../src/flow/verdict';
import type { PacketPath } from '../../src/flow/path';
import { jsonLines, NETTRACE, nsExec, nsSpawn, startFollow, withTestbed } from '../helpers/cluster';
import { needsRoot } from '../helpers/privileged';

const A = '10.244.1.5';
const B = '10.244.2.8';
const VIP = '10.96.0.20';

test('follow to a ClusterIP: the DNAT on node1 is a hop of its own, the path goes on to pod B; the reply is translated back', async (t) => {
  if (!needsRoot(t)) return;
  const tb = withTestbed(t);
  const [podA, podB] = [tb.pods[0]!.netns, tb.pods[1]!.netns];
  nsSpawn(t, podB, ['iperf3', '-s']);
  for (let i = 0; i < 50 && nsExec(podA, ['iperf3', '-c', B, '-n', '1K'], 5000).status !== 0; i++) spawnSync('sleep', ['0.1']);
  const f = await startFollow(t, ['--nodes', tb.nodes.map((n) => n.netns).join(','), '--flow', `${A} -> ${VIP}:5201`, '-o', 'json', '--count', '2', '--timeout', '10']);
  assert.equal(nsExec(podA, ['iperf3', '-c', VIP, '-n', '1K']).status, 0, 'the ClusterIP answers');
  await f.exited;
  const [request, reply] = jsonLines<PacketPath>(f.stdout());
  assert.ok(request && reply, f.stdout());
  assert.equal(request.direction, 'request');
  assert.equal(request.complete, true);
  assert.equal(request.steps.at(-1)!.node, tb.nodes[1]!.netns, 'the path continues to pod B on node2');
  assert.equal(request.steps.at(-1)!.pod, podB);
  const [dnat] = request.translations ?? [];
  assert.equal(dnat?.node, tb.nodes[0]!.netns);
  assert.match(dnat!.from, new RegExp(`^${A}:\\d+ -> ${VIP}:5201$`));
  assert.match(dnat!.to, new RegExp(`^${A}:\\d+ -> ${B}:5201$`));
  assert.equal(reply.complete, true);
  const [unnat] = reply.translations ?? [];
  assert.match(unnat!.from, new RegExp(`^${B}:5201 -> ${A}:\\d+$`));
  assert.match(unnat!.to, new RegExp(`^${VIP}:5201 -> ${A}:\\d+$`));
});

test('diagnose to a ClusterIP: healthy through the DNAT; a FORWARD DROP of the pod address is found behind it', (t) => {
  if (!needsRoot(t)) return;
  const tb = withTestbed(t);
  nsSpawn(t, tb.pods[1]!.netns, ['iperf3', '-s']);
  for (let i = 0; i < 50 && nsExec(tb.pods[0]!.netns, ['iperf3', '-c', B, '-n', '1K'], 5000).status !== 0; i++) spawnSync('sleep', ['0.1']);
  const nodes = tb.nodes.map((n) => n.netns).join(',');
  const run = () => {
    const r = spawnSync(NETTRACE, ['diagnose', '--nodes', nodes, '--flow', `${A} -> ${VIP}:5201`, '-o', 'json'], { encoding: 'utf8', timeout: 60_000 });
    const d = JSON.parse(r.stdout) as Diagnosis;
    assert.equal(r.status, d.healthy ? 0 : 10, r.stderr);
    return d;
  };
  const ok = run();
  assert.equal(ok.cause, 'none', ok.detail);
  assert.equal(ok.healthy, true);
  spawnSync('ip', ['netns', 'exec', tb.nodes[0]!.netns, 'iptables', '-I', 'FORWARD', '-d', B, '-p', 'tcp', '--dport', '5201', '-j', 'DROP']);
  const bad = run();
  assert.equal(bad.cause, 'netfilter-drop');
  assert.deepEqual([bad.step, bad.last_seen?.step], [4, 3], 'FORWARD, after the DNAT, is routing');
  assert.equal(bad.node, tb.nodes[0]!.netns);
  assert.match(bad.detail, /-A FORWARD -d 10\.244\.2\.8\/32 -p tcp -m tcp --dport 5201 -j DROP/);
});
