// createKubeSource against recorded API objects served over the real list/watch protocol by a
// local HTTP server (no Kubernetes API server can run here): @kubernetes/client-node lists and
// watches it exactly as it would a cluster.
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { test } from 'node:test';
import { NettraceError } from '../../../src/errors';
import type { IdentitySource } from '../../../src/k8s/identity';
import { createKubeSource, podOf, serviceOf } from '../../../src/k8s/kubeApi';
import { openIdentitySource } from '../../../src/k8s/open';
import { nameSourceOf, resolveFlow } from '../../../src/k8s/resolve';
import { recorded, startFakeApiServer } from '../../helpers/kubeApiServer';

async function until(what: string, cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function opened(t: { after(fn: () => void): void }, s: IdentitySource): IdentitySource {
  t.after(() => s.close());
  return s;
}

const resolve = (s: IdentitySource, text: string, namespace?: string) => resolveFlow(text, { source: nameSourceOf(s), ...(namespace ? { namespace } : {}) });

test('recorded API objects served over list/watch by a local HTTP server: pods, workloads, Services and EndpointSlices resolve', async (t) => {
  const api = await startFakeApiServer(t);
  const s = opened(t, createKubeSource({ kubeconfig: api.kubeconfig, log: () => {} }));
  await s.ready();
  assert.equal(s.kind, 'kubernetes');
  const byName = new Map(s.pods().map((p) => [`${p.namespace}/${p.name}`, p]));
  assert.deepEqual(byName.get('default/frontend'), { namespace: 'default', name: 'frontend', uid: '5f1c2a9e-0c1d-4b8e-9f3a-1d2e3f4a5b61', ips: ['10.244.1.5'], node: 'node1' });
  // a ReplicaSet's pod is its Deployment's: the pod-template-hash suffix comes off; a DaemonSet's keeps its name
  assert.equal(byName.get('default/web-6b7f8d9c4d-2xk9p')!.workload, 'web');
  assert.equal(byName.get('kube-system/kube-flannel-ds-7xq4z')!.workload, 'kube-flannel-ds');
  assert.equal(byName.get('default/migrate-28912345-abcde')!.workload, 'migrate-28912345');
  // a finished Job's pod holds no address any more
  assert.deepEqual(byName.get('default/migrate-28912345-abcde')!.ips, []);

  const r = resolve(s, 'default/frontend -> default/backend:5201');
  assert.deepEqual(r.flow, { src: '10.244.1.5', dst: '10.244.2.8', sport: 0, dport: 5201, proto: 'tcp', family: 4 });
  assert.equal(r.pods.src!.name, 'frontend');
  assert.equal(r.pods.dst!.uid, '7a2b3c4d-5e6f-4a1b-8c2d-3e4f5a6b7c82');
  // no slash: the -n namespace, default "default"; the one pod of a workload is that pod
  assert.equal(resolve(s, 'frontend -> api:8080').flow.dst, '10.244.2.20');
  assert.equal(resolve(s, 'coredns-76f75df574-9kqzt -> default/frontend', 'kube-system').flow.src, '10.244.2.2');
  // a Service by port number or port name: its ClusterIP; a UDP port makes the flow UDP
  assert.deepEqual(resolve(s, 'default/frontend -> svc/default/backend:iperf').flow, { src: '10.244.1.5', dst: '10.96.0.10', sport: 0, dport: 5201, proto: 'tcp', family: 4 });
  assert.equal(resolve(s, 'default/frontend -> svc/kube-system/kube-dns:dns').flow.proto, 'udp');
  const backend = s.services().find((x) => x.name === 'backend')!;
  assert.deepEqual(backend.endpoints, [{ ip: '10.244.2.8', port: 5201, protocol: 'TCP', ready: true, pod: { namespace: 'default', name: 'backend' } }]);
  assert.deepEqual(backend.ports, [{ name: 'iperf', port: 5201, protocol: 'TCP' }]);
  assert.equal(s.services().find((x) => x.name === 'web-headless')!.clusterIps.length, 0);
});

test('recorded API objects served over list/watch by a local HTTP server: a pod ADDED after start resolves, a DELETED one no longer does', async (t) => {
  const api = await startFakeApiServer(t);
  const s = opened(t, createKubeSource({ kubeconfig: api.kubeconfig, log: () => {} }));
  await s.ready();
  await until('the pods watch', () => api.watching('pods') === 1);
  const base = recorded().pods.find((p) => p.metadata.name === 'frontend')!;
  api.add('pods', { ...base, metadata: { ...base.metadata, name: 'late', uid: '9d9d9d9d-0000-4000-8000-000000000001' }, status: { phase: 'Running', podIP: '10.244.1.77', podIPs: [{ ip: '10.244.1.77' }] } } as never);
  await until('the ADDED pod', () => s.pods().some((p) => p.name === 'late'));
  assert.equal(resolve(s, 'default/late -> 10.244.2.8').flow.src, '10.244.1.77');
  api.remove('pods', 'default', 'backend');
  await until('the DELETED pod gone', () => !s.pods().some((p) => p.name === 'backend'));
  assert.throws(() => resolve(s, 'default/frontend -> default/backend:5201'), (e: unknown) => e instanceof NettraceError && e.code === 'E_USAGE' && /no pod "backend" in namespace "default"/.test(e.message));
  // a Service's endpoints follow its EndpointSlices
  const slice = recorded().endpointslices.find((x) => x.metadata.name === 'backend-x7f2q')!;
  api.remove('endpointslices', 'default', slice.metadata.name);
  await until('the slice gone', () => s.services().find((x) => x.name === 'backend')!.endpoints.length === 0);
});

test('recorded API objects served over list/watch by a local HTTP server: a node\'s pods only, by spec.nodeName', async (t) => {
  const api = await startFakeApiServer(t);
  const s = opened(t, createKubeSource({ kubeconfig: api.kubeconfig, node: 'node2', log: () => {} }));
  await s.ready();
  assert.deepEqual(s.pods().map((p) => p.name).sort(), ['api-5f6d7c8b9-q2w3e', 'backend', 'coredns-76f75df574-9kqzt', 'web-6b7f8d9c4d-8qzlm']);
  await until('the pods watch', () => api.watching('pods') === 1);
  const base = recorded().pods.find((p) => p.metadata.name === 'frontend')!;
  api.add('pods', { ...base, metadata: { ...base.metadata, name: 'elsewhere', uid: '9d9d9d9d-0000-4000-8000-000000000002' } } as never);
  api.add('pods', { ...base, metadata: { ...base.metadata, name: 'here', uid: '9d9d9d9d-0000-4000-8000-000000000003' }, spec: { nodeName: 'node2' } } as never);
  await until('node2\'s new pod', () => s.pods().some((p) => p.name === 'here'));
  assert.ok(!s.pods().some((p) => p.name === 'elsewhere'));
});

test('recorded API objects served over list/watch by a local HTTP server: ambiguous and unknown names, one line each naming the fix', async (t) => {
  const api = await startFakeApiServer(t);
  const s = opened(t, createKubeSource({ kubeconfig: api.kubeconfig, log: () => {} }));
  await s.ready();
  const fails = (text: string, re: RegExp, next: RegExp, code = 'E_USAGE', ns?: string) => assert.throws(() => resolve(s, text, ns),
    (e: unknown) => e instanceof NettraceError && e.code === code && re.test(e.message) && next.test(e.next) && !e.line().includes('\n'), text);
  fails('default/web -> default/backend', /^ambiguous: default\/web is the workload of 3 pods \(web-6b7f8d9c4d-2xk9p, web-6b7f8d9c4d-8qzlm, web-6b7f8d9c4d-tn5vw\)$/, /name one/);
  fails('default/nope -> default/backend', /no pod "nope" in namespace "default"/, /kubectl get pods -n default/);
  fails('prod/frontend -> default/backend', /no namespace "prod" among the pods the Kubernetes API knows \(namespaces: default, kube-system\)/, /-n NAMESPACE/);
  // a name without a namespace is in -n's
  fails('frontend -> backend', /no pod "frontend" in namespace "kube-system"/, /kubectl get pods -n kube-system/, 'E_USAGE', 'kube-system');
  fails('default/frontend -> svc/default/nope:80', /no Service "nope" in namespace "default"/, /kubectl get services -n default/);
  fails('default/frontend -> svc/default/backend:http', /Service default\/backend has no port "http" \(ports: iperf=5201\)/, /svc\/default\/backend:5201/);
  fails('default/frontend -> svc/default/web-headless:80', /headless/, /NAMESPACE\/POD/);
  fails('default/frontend -> default/migrate-28912345-abcde', /has no IP address/, /kubectl get pod/, 'E_NOT_FOUND');
});

test('recorded API objects served over list/watch by a local HTTP server: 403 on list or watch is the one-line PERMISSION error naming verb, resource and deploy/rbac.yaml', async (t) => {
  const api = await startFakeApiServer(t);
  api.deny.add('list endpointslices');
  const err = await createKubeSource({ kubeconfig: api.kubeconfig, log: () => {} }).ready().then(() => null, (e: unknown) => e);
  assert.ok(err instanceof NettraceError, String(err));
  assert.equal(err.code, 'E_PERMISSION');
  assert.equal(err.exitCode, 3);
  assert.match(err.message, new RegExp(`^the Kubernetes API server at ${api.url} denies list on endpointslices\\.discovery\\.k8s\\.io \\(403 Forbidden: endpointslices\\.discovery\\.k8s\\.io is forbidden: User "system:serviceaccount:kube-system:nettrace-agent" cannot list`));
  assert.match(err.next, /deploy\/rbac\.yaml/);
  assert.ok(!err.line().includes('\n'));

  api.deny.clear();
  api.deny.add('watch pods');
  const werr = await createKubeSource({ kubeconfig: api.kubeconfig, log: () => {} }).ready().then(() => null, (e: unknown) => e);
  assert.ok(werr instanceof NettraceError, String(werr));
  assert.equal(werr.code, 'E_PERMISSION');
  // the watch's refusal carries the server's reason too
  assert.match(werr.message, /denies watch on pods \(403 Forbidden: pods is forbidden: User "system:serviceaccount:kube-system:nettrace-agent" cannot watch resource "pods"/);
});

test('recorded API objects served over list/watch by a local HTTP server: an unreachable API server is one line naming its URL; a server that never answers times out', async (t) => {
  const api = await startFakeApiServer(t);
  const url = api.url;
  const { copyFileSync, writeFileSync } = await import('node:fs');
  const cfg = api.kubeconfig.replace(/\.yaml$/, '-gone.yaml');
  copyFileSync(api.kubeconfig, cfg);
  t.after(() => rmSync(cfg, { force: true }));
  await api.close();
  const err = await createKubeSource({ kubeconfig: cfg, log: () => {} }).ready().then(() => null, (e: unknown) => e);
  assert.ok(err instanceof NettraceError, String(err));
  assert.equal(err.code, 'E_NOT_FOUND');
  assert.match(err.line(), new RegExp(`^nettrace: E_NOT_FOUND: cannot reach the Kubernetes API server at ${url} \\(ECONNREFUSED\\); check the kubeconfig's server address`));

  // accepts connections, answers nothing
  const { createServer } = await import('node:net');
  const silent = createServer(() => {});
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
  t.after(() => silent.close());
  const port = (silent.address() as { port: number }).port;
  const silentCfg = api.kubeconfig.replace(/\.yaml$/, '-silent.yaml');
  t.after(() => rmSync(silentCfg, { force: true }));
  writeFileSync(silentCfg, `apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:${port}\n    insecure-skip-tls-verify: true\nusers:\n- name: u\n  user: {}\ncontexts:\n- name: c\n  context: {cluster: c, user: u}\n`);
  const began = Date.now();
  const terr = await createKubeSource({ kubeconfig: silentCfg, log: () => {}, readyTimeoutMs: 500 }).ready().then(() => null, (e: unknown) => e);
  assert.ok(terr instanceof NettraceError, String(terr));
  assert.match(terr.message, new RegExp(`at http://127\\.0\\.0\\.1:${port} did not answer in 0\\.5 s`));
  assert.ok(Date.now() - began < 3000);
});

test('recorded API objects served over list/watch by a local HTTP server: objects over the cap are counted and logged, not kept; lists are paged', async (t) => {
  const api = await startFakeApiServer(t);
  const lines: string[] = [];
  const s = opened(t, createKubeSource({ kubeconfig: api.kubeconfig, log: (l) => lines.push(l), caps: { pods: 3 }, pageSize: 2 }));
  await s.ready();
  assert.equal(s.pods().length, 3);
  // two pages of 2 filled the cap; the rest were not asked for, the server said how many remain
  assert.equal(api.requests.get('list pods'), 2);
  assert.ok(lines.some((l) => /^kubernetes: 6 pods over the cap of 3 are not kept/.test(l)), lines.join('\n'));
  // all four Services come, two a page
  assert.equal(s.services().length, 4);
  assert.equal(api.requests.get('list services'), 2);
});

test('a kubeconfig that cannot be read, or no way to an API server: one usage line', async (t) => {
  assert.throws(() => createKubeSource({ kubeconfig: '/nonexistent/kubeconfig' }), (e: unknown) => e instanceof NettraceError && e.code === 'E_USAGE' && /^--kubeconfig \/nonexistent\/kubeconfig: /.test(e.message));
  const saved = process.env.KUBERNETES_SERVICE_HOST;
  delete process.env.KUBERNETES_SERVICE_HOST;
  t.after(() => {
    if (saved !== undefined) process.env.KUBERNETES_SERVICE_HOST = saved;
  });
  assert.throws(() => createKubeSource({}), /no kubeconfig given and not in a pod/);
});

test('openIdentitySource: an explicit kubeconfig that fails is its error; an auto-detected one is a warning and null', async (t) => {
  const api = await startFakeApiServer(t);
  const s = await openIdentitySource({ kubeconfig: api.kubeconfig });
  assert.ok(s);
  t.after(() => s.close());
  assert.equal(s.kind, 'kubernetes');
  assert.ok(s.pods().length > 0);
  api.deny.add('list pods');
  await assert.rejects(openIdentitySource({ kubeconfig: api.kubeconfig }), (e: unknown) => e instanceof NettraceError && e.code === 'E_PERMISSION');
  const saved = { k: process.env.KUBECONFIG, h: process.env.KUBERNETES_SERVICE_HOST };
  t.after(() => {
    if (saved.k === undefined) delete process.env.KUBECONFIG;
    else process.env.KUBECONFIG = saved.k;
    if (saved.h !== undefined) process.env.KUBERNETES_SERVICE_HOST = saved.h;
  });
  delete process.env.KUBERNETES_SERVICE_HOST;
  process.env.KUBECONFIG = api.kubeconfig;
  const lines: string[] = [];
  assert.equal(await openIdentitySource({}, (l) => lines.push(l)), null);
  assert.equal(lines.length, 1);
  assert.match(lines[0]!, new RegExp(`^warning: no pod names from the kubeconfig ${api.kubeconfig.replace(/[.]/g, '\\.')}: the Kubernetes API server at .* denies list on pods`));
});

test('objects whose names are not Kubernetes names (a hostile or broken server) are not kept: names are printed and become labels', () => {
  const pod = (namespace: string, name: string) => podOf({ metadata: { namespace, name, uid: 'u1' }, status: { phase: 'Running', podIP: '10.244.1.5' } });
  const svc = (namespace: string, name: string) => serviceOf({ metadata: { namespace, name }, spec: { clusterIP: '10.96.0.1', ports: [{ port: 80 }] } });
  assert.equal(pod('default', 'web-1.a')?.name, 'web-1.a');
  assert.equal(svc('default', 'web')?.name, 'web');
  for (const [ns, name] of [['default', 'x\u001b[2Jy'], ['default', 'a b'], ['Default', 'web'], ['kube.system', 'web'], ['default', 'a\nb']]) {
    assert.equal(pod(ns!, name!), null, `pod ${JSON.stringify([ns, name])}`);
    assert.equal(svc(ns!, name!), null, `service ${JSON.stringify([ns, name])}`);
  }
});
