// follow/diagnose's names: through the agents (their nodes' pods carry names), or locally from a
// source only when one is asked for or the flow needs it.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { checkFlowText, resolveFlowNames } from '../../../src/cli/names';
import { NettraceError } from '../../../src/errors';
import type { RemoteCluster } from '../../../src/session/remote';
import { startFakeApiServer } from '../../helpers/kubeApiServer';
import { twoNodeTopology } from '../../helpers/records';

function agents(named: boolean): RemoteCluster {
  const topology = twoNodeTopology();
  if (named) {
    topology.nodes[0]!.pods[0]!.k8s = { namespace: 'default', name: 'frontend', uid: 'u-f' };
    topology.nodes[1]!.pods[0]!.k8s = { namespace: 'default', name: 'backend-7d9f8b6c5-abcde', uid: 'u-b', workload: 'backend' };
  }
  return { nodes: new Map(topology.nodes.map((n) => [n.name, { client: null as never, topology: n }])), topology, services: [], failures: [], auth: { token: 't' } };
}

const usage = (re: RegExp) => (e: unknown) => e instanceof NettraceError && e.code === 'E_USAGE' && re.test(e.line()) && !e.line().includes('\n');

test('through the agents: pod names from their nodes\' pods (a workload of one pod too); Services need --kubeconfig', async () => {
  const r = await resolveFlowNames('default/frontend -> backend:80', undefined, {}, agents(true));
  assert.deepEqual(r.flow, { src: '10.244.1.5', dst: '10.244.2.8', sport: 0, dport: 80, proto: 'tcp', family: 4 });
  assert.equal(r.pods.dst!.name, 'backend-7d9f8b6c5-abcde');
  assert.equal(r.source, null);
  await assert.rejects(resolveFlowNames('frontend -> svc/default/backend:80', undefined, {}, agents(true)), usage(/knows no Services; give --kubeconfig FILE/));
  await assert.rejects(resolveFlowNames('frontend -> backend:80', undefined, {}, agents(false)), usage(/no agent \(node1, node2\) knows pods' names/));
  // addresses only: nothing asked of anyone
  assert.equal((await resolveFlowNames('10.244.1.5 -> 10.244.2.8', undefined, {}, agents(false))).flow.proto, 'icmp');
  assert.throws(() => checkFlowText('a -> b', { criSocket: '/run/containerd/containerd.sock' }, true), usage(/--cri-socket and --agents do not go together/));
  assert.throws(() => checkFlowText('a -> b', { namespace: 'Bad_NS' }, false), usage(/--namespace "Bad_NS" is not a namespace name/));
});

test('through the agents with --kubeconfig: recorded API objects served over list/watch by a local HTTP server name the agents\' pods and Services', async (t) => {
  const api = await startFakeApiServer(t);
  const rc = agents(false);
  const r = await resolveFlowNames('default/frontend -> svc/default/backend:iperf', undefined, { kubeconfig: api.kubeconfig }, rc);
  t.after(() => r.source?.close());
  assert.deepEqual([r.flow.src, r.flow.dst, r.flow.dport], ['10.244.1.5', '10.96.0.10', 5201]);
  // joined onto the agents' pods by IP, for the output
  assert.equal(rc.topology.nodes[0]!.pods[0]!.k8s!.name, 'frontend');
  assert.equal(rc.topology.nodes[1]!.pods[0]!.k8s!.name, 'backend');
});

test('locally: a flow of addresses opens no source unless one is asked for; an asked-for one that fails is its one-line error', async (t) => {
  const saved = { k: process.env.KUBECONFIG, h: process.env.KUBERNETES_SERVICE_HOST, home: process.env.HOME };
  t.after(() => {
    for (const [k, v] of [['KUBECONFIG', saved.k], ['KUBERNETES_SERVICE_HOST', saved.h], ['HOME', saved.home]] as const) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  });
  delete process.env.KUBERNETES_SERVICE_HOST;
  process.env.KUBECONFIG = '/nonexistent/kubeconfig';
  const r = await resolveFlowNames('10.244.1.5 -> 10.244.2.8:80', undefined, {}, null);
  assert.equal(r.source, null);
  assert.equal(r.flow.dst, '10.244.2.8');
  const api = await startFakeApiServer(t);
  api.deny.add('list pods');
  await assert.rejects(resolveFlowNames('10.244.1.5 -> 10.244.2.8:80', undefined, { kubeconfig: api.kubeconfig }, null),
    (e: unknown) => e instanceof NettraceError && e.code === 'E_PERMISSION' && /denies list on pods/.test(e.message) && /deploy\/rbac\.yaml/.test(e.next));
});
