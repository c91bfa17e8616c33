// nettrace agent with a source of pod names: a list/watch API server serving the recorded cluster's
// objects for the test cluster's pods. The agent names them in /v1/node, in retransmit metric labels
// and in spans, after a real retransmit on the test cluster.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { spawn, spawnSync } from 'node:child_process';
import { test } from 'node:test';
import type { PodRef } from '../../src/topology/model';
import { attr, freePort, sample, scrape, startOtlpReceiver, waitFor } from '../helpers/agent';
import { NETTRACE, nsExec, nsSpawn, sleep, startNettrace, withTestbed } from '../helpers/cluster';
import { recorded, startFakeApiServer } from '../helpers/kubeApiServer';
import { needsRoot } from '../helpers/privileged';
import { tokenFile } from '../helpers/remote';

const A = '10.244.1.5';
const B = '10.244.2.8';

test('pods by their Kubernetes names: a pod listed after its veth is named in /v1/node, retransmit labels and spans; no address in the labels', async (t) => {
  if (!needsRoot(t)) return;
  const tb = withTestbed(t);
  const node1 = tb.nodes[0]!.netns;
  const podNs = (pod: string) => tb.pods.find((p) => p.name === pod)!.netns;

  // the recorded cluster: frontend (10.244.1.5) on node1; backend (10.244.2.8) on node2, behind the
  // Service backend. Here frontend is a Deployment's pod, listed only once the agent runs.
  const objects = recorded();
  const recordedFrontend = objects.pods.find((p) => p.metadata.name === 'frontend')!;
  objects.pods = objects.pods.filter((p) => p !== recordedFrontend);
  const frontend = structuredClone(recordedFrontend) as typeof recordedFrontend & { metadata: Record<string, unknown> };
  Object.assign(frontend.metadata, {
    name: 'frontend-5d8f7c6b4-x2x7q', labels: { app: 'frontend', 'pod-template-hash': '5d8f7c6b4' },
    ownerReferences: [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: 'frontend-5d8f7c6b4', uid: '0b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e', controller: true }],
  });
  const api = await startFakeApiServer(t, objects);
  const recv = await startOtlpReceiver(t);
  const token = tokenFile(t);
  const [port, apiPort] = [await freePort(), await freePort()];
  // the DaemonSet's NODE_NAME (downward API): the agent lists that node's pods
  const agent = await startNettrace(t, ['agent', '--netns', node1, '--metrics-addr', `127.0.0.1:${port}`, '--api-addr', `127.0.0.1:${apiPort}`,
    '--token-file', token, '--kubeconfig', api.kubeconfig, '--sample', '0', '--otlp-endpoint', recv.url], ['env', 'NODE_NAME=node1']);
  assert.match(agent.stderr(), /^pods are named from the Kubernetes API server \(\d+ pods of node1\)$/m);
  assert.equal(api.requests.get('list pods'), 1);

  const bearer = { authorization: `Bearer ${readFileSync(token, 'utf8').trim()}` };
  const podA = async () => {
    const info = (await (await fetch(`http://127.0.0.1:${apiPort}/v1/node`, { headers: bearer })).json()) as { pods: { name: string; ips: string[]; k8s?: PodRef }[] };
    return info.pods.find((p) => p.ips.includes(A));
  };
  const before = await podA();
  assert.equal(before?.name, podNs('pod-a'), 'discovered by its network namespace');
  assert.equal(before?.k8s, undefined, 'not listed yet: no Kubernetes identity');

  // the pod's identity arrives after its veth
  api.add('pods', frontend);
  const named = await waitFor('pod A named in /v1/node', async () => (await podA())?.k8s);
  assert.deepEqual(named, { namespace: 'default', name: 'frontend-5d8f7c6b4-x2x7q', uid: recordedFrontend.metadata.uid, workload: 'frontend' });
  // /v1/node joins at each request; metrics and spans take the names the agent joins every 2 s
  await sleep(2500);

  // 5 % loss of node1's VXLAN packets on their way out of eth0: pod A's TCP resends
  const loss = ['OUTPUT', '-o', 'eth0', '-p', 'udp', '--dport', '8472', '-m', 'statistic', '--mode', 'random', '--probability', '0.05', '-j', 'DROP'];
  nsExec(node1, ['iptables', '-A', ...loss]);
  t.after(() => nsExec(node1, ['iptables', '-D', ...loss]));
  nsSpawn(t, podNs('pod-b'), ['iperf3', '-s']);
  for (let i = 0; i < 50 && nsExec(podNs('pod-a'), ['iperf3', '-c', B, '-n', '1K'], 5000).status !== 0; i++) spawnSync('sleep', ['0.1']);
  nsExec(podNs('pod-a'), ['iperf3', '-c', B, '-t', '2'], 30000);
  nsExec(node1, ['iptables', '-D', ...loss]);

  // node1's agent lists node1's pods; backend, on node2, is known as the endpoint of its Service
  const labels = {
    node: node1, source_namespace: 'default', source_workload: 'frontend', source_pod: 'frontend-5d8f7c6b4-x2x7q',
    destination_namespace: 'default', destination_workload: 'backend', destination_port: '5201',
  };
  const text = await waitFor('retransmits of frontend to backend', async () => {
    const x = await scrape(`http://127.0.0.1:${port}`);
    return (sample(x, 'nettrace_tcp_retransmit_segments_total', labels) ?? 0) > 0 ? x : null;
  });
  assert.ok((sample(text, 'nettrace_tcp_retransmits_total', labels) ?? 0) > 0);
  const series = text.split('\n').filter((l) => /^nettrace_tcp_retransmit(s|_segments)_total\{/.test(l));
  for (const l of series) assert.doesNotMatch(l, /\d+\.\d+\.\d+\.\d+|_ip=/, l);

  await waitFor('a retransmit span of pod A', async () => recv.spans.find((s) => s.name === 'tcp retransmit' && attr(s, 'source.address') === A));
  const spans = recv.spans.filter((s) => s.name === 'tcp retransmit' && attr(s, 'source.address') === A);
  for (const span of spans) {
    assert.deepEqual(['k8s.namespace.name', 'k8s.pod.name', 'nettrace.peer.namespace', 'nettrace.peer.pod'].map((k) => attr(span, k)),
      ['default', 'frontend-5d8f7c6b4-x2x7q', 'default', 'backend']);
  }
  assert.ok(recv.resources.every((r) => r.find((a) => a.key === 'k8s.node.name')?.value.stringValue === 'node1'));
});

test('a source of names found by looking around that fails at start (RBAC not applied yet) is tried again: the pods get their names without a restart', async (t) => {
  if (!needsRoot(t)) return;
  const tb = withTestbed(t);
  const node1 = tb.nodes[0]!.netns;
  const api = await startFakeApiServer(t);
  api.deny.add('list pods');
  const token = tokenFile(t);
  const [port, apiPort] = [await freePort(), await freePort()];
  // $KUBECONFIG, not --kubeconfig: found by looking around, so its failure is a warning, not the agent's end
  const agent = await startNettrace(t, ['agent', '--netns', node1, '--metrics-addr', `127.0.0.1:${port}`, '--api-addr', `127.0.0.1:${apiPort}`,
    '--token-file', token, '--names-retry', '300ms'], ['env', '-u', 'KUBERNETES_SERVICE_HOST', 'NODE_NAME=node1', `KUBECONFIG=${api.kubeconfig}`]);
  assert.match(agent.stderr(), /^warning: no pod names from the kubeconfig .* denies list on pods/m);
  assert.match(agent.stderr(), /^pods are named by their network namespace: .*; tried again every minute$/m);
  const bearer = { authorization: `Bearer ${readFileSync(token, 'utf8').trim()}` };
  const podA = async () => ((await (await fetch(`http://127.0.0.1:${apiPort}/v1/node`, { headers: bearer })).json()) as { pods: { ips: string[]; k8s?: PodRef }[] }).pods.find((p) => p.ips.includes(A));
  assert.equal((await podA())?.k8s, undefined);
  await sleep(1000);
  // still refused: retried, quietly
  assert.ok((api.requests.get('list pods') ?? 0) >= 3, `list pods asked ${api.requests.get('list pods')} times`);
  assert.equal(agent.stderr().match(/warning: no pod names/g)?.length, 1);
  api.deny.clear();
  const named = await waitFor('pod A named in /v1/node', async () => (await podA())?.k8s, 10_000);
  assert.equal(named.name, 'frontend');
  assert.match(agent.stderr(), /^pods are named from the Kubernetes API server \(\d+ pods of node1\)$/m);
});

const ourProgs = () => spawnSync('bpftool', ['prog', 'show'], { encoding: 'utf8' }).stdout.match(/name nt_(agent_\d|kfree_skb|tcp_retransmit)/g)?.length ?? 0;

test('a source of names the user gave that does not work: one line, its exit code, nothing left loaded', async (t) => {
  if (!needsRoot(t)) return;
  const tb = withTestbed(t);
  const node1 = tb.nodes[0]!.netns;
  const api = await startFakeApiServer(t);
  api.deny.add('list pods');
  const before = ourProgs();
  const cases: [string[], number, RegExp][] = [
    [['--kubeconfig', '/nonexistent/kubeconfig'], 2, /^nettrace: E_USAGE: --kubeconfig \/nonexistent\/kubeconfig: .*; give a kubeconfig file kubectl can use/],
    [['--kubeconfig', api.kubeconfig], 3, /^nettrace: E_PERMISSION: .* denies list on pods \(403 Forbidden.*; grant get, list and watch on pods/],
  ];
  for (const [args, code, want] of cases) {
    // not spawnSync: the API server answers from this process
    const child = spawn('env', ['NODE_NAME=node1', NETTRACE, 'agent', '--netns', node1, '--metrics-addr', `127.0.0.1:${await freePort()}`, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    t.after(() => child.kill('SIGKILL'));
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const status = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
    const r = { status, stderr };
    assert.equal(r.status, code, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, want);
    assert.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
    await waitFor(`${args.join(' ')}: programs unloaded`, async () => ourProgs() === before, 5000);
  }
});
