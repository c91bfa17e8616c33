// A Service that fails the way Services fail on a real cluster, on the test cluster in flannel-vxlan
// and a Calico mode: one without endpoints (kube-proxy's REJECT in the filter table) and one whose
// endpoint pod has nothing listening on the port (a TCP reset from the pod).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import type { Diagnosis } from '../../src/flow/verdict';
import type { PacketPath } from '../../src/flow/path';
import type { TestbedState } from '../../src/testbed/testbed';
import type { CniMode } from '../../src/topology/cni';
import { jsonLines, NETTRACE, nsExec, nsSpawn, startFollow, withTestbed } from '../helpers/cluster';
import { needsRoot } from '../helpers/privileged';
import { clientNs, clientRun, startNodeAgents, tokenFile } from '../helpers/remote';

const A = '10.244.1.5';
const B = '10.244.2.8';
const MODES: CniMode[] = ['flannel-vxlan', 'calico-vxlan'];

function diagnoseJson(tb: TestbedState, dst: string, proto = 'tcp'): { d: Diagnosis; status: number | null; stderr: string } {
  const nodes = tb.nodes.map((n) => n.netns).join(',');
  const r = spawnSync(NETTRACE, ['diagnose', '--netns', nodes, '--flow', `${A} -> ${dst}`, '--proto', proto, '-o', 'json'], { encoding: 'utf8', timeout: 60_000 });
  assert.match(r.stderr, /^ready: diagnosing/m, r.stderr);
  return { d: JSON.parse(r.stdout) as Diagnosis, status: r.status, stderr: r.stderr };
}

for (const mode of MODES) {
  test(`${mode}: a Service without endpoints: the client is refused, follow shows the SYN stop at routing on node1, diagnose says no-endpoints with ClusterIP:port (exit 10)`, async (t) => {
    if (!needsRoot(t)) return;
    const tb = withTestbed(t, { cni: mode });
    const svc = tb.services.find((s) => s.endpoints.length === 0);
    assert.ok(svc, 'the testbed has a Service without endpoints');
    const vip = `${svc.clusterIp}:${svc.port}`;
    const podA = tb.pods[0]!.netns;
    // what the pod's client sees: kube-proxy's ICMP port unreachable is ECONNREFUSED
    const client = nsExec(podA, ['timeout', '5', 'bash', '-c', `exec 3<>/dev/tcp/${svc.clusterIp}/${svc.port}`]);
    assert.notEqual(client.status, 0);
    assert.match(client.stderr, /Connection refused/);

    const f = await startFollow(t, ['--netns', tb.nodes.map((n) => n.netns).join(','), '--flow', `${A} -> ${vip}`, '--proto', 'tcp', '-o', 'json', '--count', '2', '--timeout', '10']);
    nsExec(podA, ['timeout', '5', 'bash', '-c', `exec 3<>/dev/tcp/${svc.clusterIp}/${svc.port}`]);
    await f.exited;
    const paths = jsonLines<PacketPath>(f.stdout());
    const syn = paths.find((p) => p.direction === 'request');
    assert.ok(syn, f.stdout() + f.stderr());
    // and node1's ICMP port unreachable comes back to pod A
    const error = paths.find((p) => p.direction === 'reply');
    assert.deepEqual([error?.packet.icmp_type, error?.complete, error?.steps[0]?.node, error?.steps.at(-1)?.pod], [3, true, tb.nodes[0]!.netns, podA], f.stdout());
    assert.equal(syn.complete, false);
    assert.equal(syn.drop?.kernel_reason, 'NETFILTER_DROP');
    assert.equal(syn.drop?.step, 4, 'FORWARD is routing');
    assert.equal(syn.drop?.node, tb.nodes[0]!.netns);

    const { d, status, stderr } = diagnoseJson(tb, vip);
    assert.equal(d.cause, 'no-endpoints', d.detail);
    assert.equal(status, 10, stderr);
    assert.equal(d.healthy, false);
    assert.equal(d.reason, 'NETFILTER_DROP');
    assert.deepEqual([d.step, d.node], [4, tb.nodes[0]!.netns]);
    assert.ok(d.detail.includes(`(ClusterIP ${vip}) has no endpoints`), d.detail);
    assert.ok(d.detail.includes(`Service ${svc.namespace ?? 'default'}/${svc.name} `), d.detail);
    assert.match(d.detail, / on \S+ answered with an ICMP destination unreachable, seen reaching eth0 ingress /);
    assert.match(d.detail, /-A KUBE-SERVICES -d [\d.]+\/32 -p tcp -m comment --comment "[^"]+ has no endpoints" -m tcp --dport \d+ -j REJECT --reject-with icmp-port-unreachable/);
    assert.equal(d.next, `check the Service's selector matches ready pods and its EndpointSlices: kubectl get endpointslices -n ${svc.namespace ?? 'default'} -l kubernetes.io/service-name=${svc.name}`);
  });

  test(`${mode}: a Service whose endpoint pod does not listen: diagnose says connection-refused with the endpoint (exit 10); once it listens, healthy`, async (t) => {
    if (!needsRoot(t)) return;
    const tb = withTestbed(t, { cni: mode });
    const svc = tb.services.find((s) => s.endpoints.length === 1 && s.endpoints[0]!.startsWith(`${B}:`) && (s.proto ?? 'tcp') === 'tcp');
    assert.ok(svc, 'the testbed has a TCP Service to pod B');
    const vip = `${svc.clusterIp}:${svc.port}`;
    const { d, status, stderr } = diagnoseJson(tb, vip);
    assert.equal(d.cause, 'connection-refused', d.detail);
    assert.equal(status, 10, stderr);
    assert.deepEqual([d.step, d.node, d.device], [9, tb.nodes[1]!.netns, 'eth0']);
    assert.ok(d.detail.startsWith(`${svc.endpoints[0]} (pod ${tb.pods[1]!.netns} on ${tb.nodes[1]!.netns}) refused the connection`), d.detail);
    assert.match(d.detail, /answered \d+ of \d+ SYN probes with a TCP reset/);
    assert.ok(d.detail.endsWith(`reached through the Service ${vip}`), d.detail);

    // the same to the pod's own address, then with a listener: the verdict follows the pod
    assert.equal(diagnoseJson(tb, svc.endpoints[0]!).d.cause, 'connection-refused');
    const port = svc.endpoints[0]!.split(':')[1]!;
    nsSpawn(t, tb.pods[1]!.netns, ['iperf3', '-s', '-p', port]);
    for (let i = 0; i < 50 && nsExec(tb.pods[0]!.netns, ['timeout', '2', 'bash', '-c', `exec 3<>/dev/tcp/${B}/${port}`]).status !== 0; i++) spawnSync('sleep', ['0.1']);
    const ok = diagnoseJson(tb, vip);
    assert.equal(ok.d.cause, 'none', ok.d.detail);
    assert.equal(ok.status, 0);
  });

  test(`${mode}: UDP to a pod port nothing listens on: follow shows the ICMP error come back from pod B, diagnose says connection-refused (exit 10)`, async (t) => {
    if (!needsRoot(t)) return;
    const tb = withTestbed(t, { cni: mode });
    const f = await startFollow(t, ['--netns', tb.nodes.map((n) => n.netns).join(','), '--flow', `${A} -> ${B}:9999`, '--proto', 'udp', '-o', 'json', '--count', '2', '--timeout', '10']);
    nsExec(tb.pods[0]!.netns, ['bash', '-c', `echo probe > /dev/udp/${B}/9999`]);
    await f.exited;
    const [sent, error] = jsonLines<PacketPath>(f.stdout());
    assert.ok(sent && error, f.stdout() + f.stderr());
    assert.deepEqual([sent.direction, sent.complete, sent.packet.dport], ['request', true, 9999]);
    assert.deepEqual([error.direction, error.complete, error.packet.icmp_type, error.packet.src], ['reply', true, 3, B]);
    assert.equal(error.steps[0]!.pod, tb.pods[1]!.netns, 'sent by pod B itself');

    const { d, status, stderr } = diagnoseJson(tb, `${B}:9999`, 'udp');
    assert.equal(d.cause, 'connection-refused', d.detail);
    assert.equal(status, 10, stderr);
    assert.match(d.detail, /^10\.244\.2\.8 \(pod \S+ on \S+\) refused the connection: it answered \d+ of \d+ UDP probes with an ICMP destination unreachable/);
  });
}

test('diagnose --agents from outside the cluster: no-endpoints read from node1\'s agent, connection-refused from the probes', async (t) => {
  if (!needsRoot(t)) return;
  const tb = withTestbed(t);
  const token = tokenFile(t);
  const agents = await startNodeAgents(t, tb, token);
  const client = await clientNs(t, tb);
  const run = (dst: string) => {
    const r = clientRun(client, ['diagnose', '--agents', agents.map((a) => a.url).join(','), '--token-file', token, '-o', 'json', '--proto', 'tcp', '--flow', `${A} -> ${dst}`]);
    const d = JSON.parse(r.stdout) as Diagnosis;
    assert.equal(r.status, 10, r.stderr);
    return d;
  };
  const empty = tb.services.find((s) => s.endpoints.length === 0)!;
  const none = run(`${empty.clusterIp}:${empty.port}`);
  assert.equal(none.cause, 'no-endpoints', JSON.stringify(none));
  assert.ok(none.detail.includes(`(ClusterIP ${empty.clusterIp}:${empty.port}) has no endpoints`), none.detail);
  const refused = run(`${B}:5201`);
  assert.equal(refused.cause, 'connection-refused', JSON.stringify(refused));
  assert.ok(refused.detail.startsWith(`${B}:5201 (pod `), refused.detail);
});
