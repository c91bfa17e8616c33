// follow by pod names on the test cluster, the names from recorded Kubernetes API objects served
// over the real list/watch protocol by a local HTTP server (no API server can run here): real BPF
// programs, real TCP traffic between the testbed's pods, which the recorded pods' IPs are.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { test } from 'node:test';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import type { TestContext } from 'node:test';
import type { TestbedState } from '../../src/testbed/testbed';
import { NETTRACE, nsExec, nsSpawn, sleep, startFollow, startNettrace, withTestbed } from '../helpers/cluster';
import { API_PORT } from '../../src/session/protocol';
import { clientNs, clientRun, remoteFollow, tempDir, tokenFile } from '../helpers/remote';
import { recorded, startFakeApiServer } from '../helpers/kubeApiServer';
import { needsRoot } from '../helpers/privileged';

const B = '10.244.2.8';

/** The recorded objects, the Service "backend" made the testbed's ClusterIP service to pod B:5201. */
function recordedFor(tb: TestbedState): { objects: ReturnType<typeof recorded>; clusterIp: string } {
  const clusterSvc = tb.services.find((x) => x.port === 5201 && x.endpoints.includes(`${B}:5201`));
  assert.ok(clusterSvc, JSON.stringify(tb.services));
  const objects = recorded();
  const backendSvc = objects.services.find((x) => x.metadata.name === 'backend')! as unknown as { spec: { clusterIP: string; clusterIPs: string[] } };
  backendSvc.spec.clusterIP = clusterSvc.clusterIp;
  backendSvc.spec.clusterIPs = [clusterSvc.clusterIp];
  return { objects, clusterIp: clusterSvc.clusterIp };
}

/** nettrace run to its end without blocking this process: the API server it asks lives here. */
function run(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(NETTRACE, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 20000);
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}

test('follow by name, names from recorded API objects served over list/watch by a local HTTP server: nine steps with eth0@default/frontend; an unknown pod is one line, exit 2, nothing attached', async (t) => {
  if (!needsRoot(t)) return;
  const tb = withTestbed(t);
  const { objects, clusterIp } = recordedFor(tb);
  const clusterSvc = { clusterIp };
  const api = await startFakeApiServer(t, objects);
  const netns = tb.nodes.map((n) => n.netns).join(',');
  const podNs = (name: string) => tb.pods.find((p) => p.name === name)!.netns;

  // an unknown pod: before anything is attached, one line naming the fix
  const bad = await run(['follow', '--kubeconfig', api.kubeconfig, '--netns', netns, '--flow', 'default/nope -> default/backend:5201', '--proto', 'tcp', '--timeout', '5']);
  assert.equal(bad.status, 2, bad.stderr);
  assert.equal(bad.stdout, '');
  assert.match(bad.stderr, /^nettrace: E_USAGE: no pod "nope" in namespace "default" \(the Kubernetes API\); check the name \(kubectl get pods -n default\)\n$/);

  // an API server that denies access: one line naming the verb, the resource and the RBAC file
  api.deny.add('list pods');
  const denied = await run(['follow', '--kubeconfig', api.kubeconfig, '--netns', netns, '--flow', 'default/frontend -> default/backend:5201', '--timeout', '5']);
  api.deny.clear();
  assert.equal(denied.status, 3, denied.stderr);
  assert.match(denied.stderr, /^nettrace: E_PERMISSION: the Kubernetes API server at http:\/\/127\.0\.0\.1:\d+ denies list on pods \(403 Forbidden: [^\n]*\); [^\n]*deploy\/rbac\.yaml[^\n]*\n$/);

  nsSpawn(t, podNs('pod-b'), ['python3', '-m', 'http.server', '5201', '--bind', B]);
  await sleep(800);
  const f = await startFollow(t, ['--kubeconfig', api.kubeconfig, '--netns', netns, '--flow', 'default/frontend -> default/backend:5201', '--proto', 'tcp', '--timeout', '6']);
  assert.match(f.stderr(), /^ready: following 10\.244\.1\.5 -> 10\.244\.2\.8:5201 tcp/m);
  const r = nsExec(podNs('pod-a'), ['curl', '-sS', '-m', '5', '-o', '/dev/null', '-w', '%{http_code}', `http://${B}:5201/`]);
  assert.equal(r.stdout, '200', r.stderr);
  assert.equal(await f.exited, 0, f.stderr());
  const blocks = f.stdout().split('\n\n').filter((b) => b.trim());
  const syn = blocks.find((b) => /request 10\.244\.1\.5:\d+ \(default\/frontend\) -> 10\.244\.2\.8:5201 \(default\/backend\) tcp .*\[S\]/.test(b));
  assert.ok(syn, f.stdout());
  const rows = syn.split('\n').slice(2, -1).map((l) => l.trim().split(/\s{2,}/));
  assert.deepEqual(rows.map((c) => c[0]), ['1', '2', '3', '4', '5', '6', '7', '8', '9', '9'], syn);
  assert.ok(rows[0]!.includes('eth0@default/frontend'), syn);
  assert.ok(rows[9]!.includes('eth0@default/backend'), syn);
  assert.match(syn, /complete, 10 hops/);
  // the reply names them the other way round
  assert.ok(blocks.some((b) => /reply\s+10\.244\.2\.8:5201 \(default\/backend\) -> 10\.244\.1\.5:\d+ \(default\/frontend\)/.test(b)), f.stdout());
  assert.ok((api.requests.get('list pods') ?? 0) >= 2);

  // a Service by its port's name: its ClusterIP, the DNAT a row, on to pod B by name
  const s = await startFollow(t, ['--kubeconfig', api.kubeconfig, '--netns', netns, '--flow', 'default/frontend -> svc/default/backend:iperf', '--proto', 'tcp', '--timeout', '6']);
  assert.match(s.stderr(), new RegExp(`^ready: following 10\\.244\\.1\\.5 -> ${clusterSvc.clusterIp.replace(/\./g, '\\.')}:5201 tcp`, 'm'));
  const viaSvc = nsExec(podNs('pod-a'), ['curl', '-sS', '-m', '5', '-o', '/dev/null', '-w', '%{http_code}', `http://${clusterSvc.clusterIp}:5201/`]);
  assert.equal(viaSvc.stdout, '200', viaSvc.stderr);
  assert.equal(await s.exited, 0, s.stderr());
  const svcSyn = s.stdout().split('\n\n').find((b) => /request 10\.244\.1\.5:\d+ \(default\/frontend\) -> [\d.]+:5201 \(default\/backend\) tcp .*\[S\]/.test(b));
  assert.ok(svcSyn, s.stdout());
  assert.match(svcSyn, /service NAT/);
  assert.match(svcSyn, /eth0@default\/backend +ingress/);
  assert.match(svcSyn, /complete, 10 hops/);
});

/** The list/watch server as a process in node1's namespace, at node1's address: the agents and the client reach it there. */
async function apiInNode(t: TestContext, tb: TestbedState, objects: ReturnType<typeof recorded>): Promise<string> {
  const dir = tempDir(t);
  const objectsFile = path.join(dir, 'objects.json');
  const kubeconfig = path.join(dir, 'kubeconfig');
  writeFileSync(objectsFile, JSON.stringify(objects));
  const main = path.join(__dirname, '../helpers/kubeApiServerMain.js');
  const child = spawn('ip', ['netns', 'exec', tb.nodes[0]!.netns, process.execPath, main, tb.nodes[0]!.ip, kubeconfig, objectsFile], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.after(() => {
    child.kill('SIGKILL');
  });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the API server process did not start')), 10000);
    child.stdout!.on('data', (d: Buffer) => {
      if (/^listening /m.test(d.toString())) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  return kubeconfig;
}

test('follow --agents by name: the agents name their pods from recorded API objects served over list/watch by a local HTTP server; svc/ names need --kubeconfig', async (t) => {
  if (!needsRoot(t)) return;
  const tb = withTestbed(t);
  const { objects, clusterIp } = recordedFor(tb);
  const kubeconfig = await apiInNode(t, tb, objects);
  const token = tokenFile(t);
  // each agent in its node, named as the recorded pods' spec.nodeName (the DaemonSet sets NODE_NAME)
  const agents = await Promise.all(tb.nodes.map(async (n, i) => {
    await startNettrace(t, ['agent', '--token-file', token, '--metrics-addr', '127.0.0.1:9101', '--kubeconfig', kubeconfig],
      ['ip', 'netns', 'exec', n.netns, 'env', `NODE_NAME=node${i + 1}`]);
    return `http://${n.ip}:${API_PORT}`;
  }));
  const client = await clientNs(t, tb);
  const podNs = (name: string) => tb.pods.find((p) => p.name === name)!.netns;
  nsSpawn(t, podNs('pod-b'), ['python3', '-m', 'http.server', '5201', '--bind', B]);
  await sleep(2500); // the agents join names every 2 s

  const f = await remoteFollow(t, client, ['--agents', agents.join(','), '--token-file', token, '--flow', 'default/frontend -> default/backend:5201', '--proto', 'tcp', '--timeout', '8']);
  assert.match(f.stderr(), /^ready: following 10\.244\.1\.5 -> 10\.244\.2\.8:5201 tcp/m);
  await sleep(500);
  const r = nsExec(podNs('pod-a'), ['curl', '-sS', '-m', '5', '-o', '/dev/null', '-w', '%{http_code}', `http://${B}:5201/`]);
  assert.equal(r.stdout, '200', r.stderr);
  assert.equal(await f.exited, 0, f.stderr());
  const syn = f.stdout().split('\n\n').find((b) => /request 10\.244\.1\.5:\d+ \(default\/frontend\) -> 10\.244\.2\.8:5201 \(default\/backend\) tcp .*\[S\]/.test(b));
  assert.ok(syn, f.stdout() + f.stderr());
  assert.match(syn, /eth0@default\/frontend +egress/);
  assert.match(syn, /eth0@default\/backend +ingress/);
  assert.match(syn, /complete, 10 hops/);

  // the agents know pods, not Services
  const noSvc = clientRun(client, ['follow', '--agents', agents.join(','), '--token-file', token, '--flow', 'default/frontend -> svc/default/backend:iperf', '--timeout', '2']);
  assert.equal(noSvc.status, 2, noSvc.stderr);
  assert.match(noSvc.stderr, /^nettrace: E_USAGE: --flow: svc\/default\/backend:iperf names a Service, and the agents' nodes \([^)]*\) knows no Services; give --kubeconfig FILE: Services come from the API server\n$/);
  // with --kubeconfig the client asks the API server: the ClusterIP
  const withSvc = await remoteFollow(t, client, ['--agents', agents.join(','), '--token-file', token, '--kubeconfig', kubeconfig, '--flow', 'default/frontend -> svc/default/backend:iperf', '--timeout', '2']);
  assert.match(withSvc.stderr(), new RegExp(`^ready: following 10\\.244\\.1\\.5 -> ${clusterIp.replace(/\./g, '\\.')}:5201 tcp`, 'm'));
  assert.equal(await withSvc.exited, 0, withSvc.stderr());
});
