// The CRI source without root: what a user sees for a socket that is missing, not a socket, not
// gRPC or not a CRI runtime; how sandboxes become identities (IPs, netns, workload), checked on a
// gRPC server that answers with the CRI v1 messages of our descriptor. The real containerd is in
// test/cluster/cri.test.ts.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { NettraceError } from '../../../src/errors';
import { createCriSource, identityOf, netnsFromInfo, workloadFromLabels } from '../../../src/k8s/cri';
import { CRI_V1 } from '../../../src/k8s/criApi';
import type { CriSandbox } from '../../../src/k8s/criClient';

function tmpdir(t: { after: (fn: () => void) => void }): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'nt-cri-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function lineOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof NettraceError, `a NettraceError, not ${String(err)}`);
    return err.line();
  }
  assert.fail('ready() resolved');
}

test('a missing CRI socket: one line naming the path and what to give instead', async (t) => {
  const sock = path.join(tmpdir(t), 'containerd.sock');
  const src = createCriSource([sock]);
  const line = await lineOf(src.ready());
  src.close();
  assert.equal(line, `nettrace: E_NOT_FOUND: no CRI socket at ${sock}; give --cri-socket PATH of containerd/CRI-O, or --kubeconfig`);
  assert.deepEqual(src.pods(), []);
});

test('one missing socket among several fails ready() and names that one', async (t) => {
  const dir = tmpdir(t);
  const server = net.createServer();
  const ok = path.join(dir, 'ok.sock');
  await new Promise<void>((r) => server.listen(ok, r));
  t.after(() => server.close());
  const src = createCriSource([ok, path.join(dir, 'node2.sock')]);
  assert.match(await lineOf(src.ready()), /^nettrace: E_NOT_FOUND: no CRI socket at .*node2\.sock; /);
  src.close();
});

test('a file that is not a socket, and a socket that does not speak gRPC: one line each', async (t) => {
  const dir = tmpdir(t);
  const file = path.join(dir, 'not-a-socket');
  writeFileSync(file, 'x');
  const a = createCriSource([file]);
  assert.equal(await lineOf(a.ready()), `nettrace: E_NOT_FOUND: ${file} is not a socket, so no CRI runtime listens there; give --cri-socket PATH of containerd/CRI-O, or --kubeconfig`);
  a.close();

  // answers every connection with bytes that are no HTTP/2, then hangs up
  const sock = path.join(dir, 'garbage.sock');
  const server = net.createServer((c) => c.end('HTTP/1.1 400 Bad Request\r\n\r\n'));
  await new Promise<void>((r) => server.listen(sock, r));
  t.after(() => server.close());
  const b = createCriSource([sock]);
  const started = Date.now();
  const line = await lineOf(b.ready());
  b.close();
  assert.match(line, new RegExp(`^nettrace: E_NOT_FOUND: (${sock} does not answer as a CRI runtime|the CRI socket ${sock} did not answer within 5 s)`));
  assert.equal(line.split('\n').length, 1);
  assert.ok(Date.now() - started < 8_000, 'bounded by the call deadline');
});

/** A gRPC server on a unix socket with the given RuntimeService handlers (none: not a CRI runtime). */
async function grpcServer(t: { after: (fn: () => void) => void }, sock: string, impl: grpc.UntypedServiceImplementation | null): Promise<void> {
  const server = new grpc.Server();
  if (impl) {
    const def = protoLoader.fromJSON(CRI_V1, { keepCase: true, enums: String, longs: Number, defaults: true, arrays: true });
    const pkg = grpc.loadPackageDefinition(def) as unknown as { runtime: { v1: { RuntimeService: grpc.ServiceClientConstructor } } };
    server.addService(pkg.runtime.v1.RuntimeService.service, impl);
  }
  await new Promise<void>((resolve, reject) => server.bindAsync(`unix:${sock}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())));
  t.after(() => server.forceShutdown());
}

test('a gRPC server that is not a CRI runtime: unimplemented, one line', async (t) => {
  const sock = path.join(tmpdir(t), 'other.sock');
  await grpcServer(t, sock, null);
  const src = createCriSource([sock]);
  assert.match(await lineOf(src.ready()), new RegExp(`^nettrace: E_NOT_FOUND: ${sock} is not a CRI v1 runtime \\(runtime\\.v1\\.RuntimeService: .*\\); give the socket of containerd 1\\.6\\+ or CRI-O`));
  src.close();
});

const info = (netns: string | null) => ({
  info: JSON.stringify({ pid: 42, runtimeSpec: { linux: { namespaces: [{ type: 'pid' }, ...(netns ? [{ type: 'network', path: netns }] : [])] } } }),
});

test('sandboxes become identities: IPs (with additional_ips), uid, netns path; host-network and address-less ones are left out', async (t) => {
  const sock = path.join(tmpdir(t), 'cri.sock');
  type Sb = { id: string; name: string; ns: string; uid: string; ip: string; extra: string[]; netns: string | null; labels: Record<string, string> };
  let sandboxes: Sb[] = [
    { id: 'a'.repeat(64), name: 'frontend-7d9f8b6c5d-x2x9k', ns: 'shop', uid: 'u-1', ip: '10.244.1.100', extra: ['fd00::5'], netns: '/var/run/netns/cni-1', labels: { 'pod-template-hash': '7d9f8b6c5d' } },
    { id: 'b'.repeat(64), name: 'kube-proxy-abcde', ns: 'kube-system', uid: 'u-2', ip: '192.168.1.101', extra: [], netns: null, labels: {} },
    { id: 'c'.repeat(64), name: 'pending', ns: 'default', uid: 'u-3', ip: '', extra: [], netns: '/var/run/netns/cni-3', labels: {} },
  ];
  let statusCalls = 0;
  await grpcServer(t, sock, {
    Version: (_call: unknown, cb: grpc.sendUnaryData<object>) => cb(null, { version: '0.1.0', runtime_name: 'fake', runtime_version: '1', runtime_api_version: 'v1' }),
    ListPodSandbox: (call: grpc.ServerUnaryCall<{ filter?: { state?: { state?: string } } }, object>, cb: grpc.sendUnaryData<object>) => {
      assert.equal(call.request.filter?.state?.state, 'SANDBOX_READY', 'asks for ready sandboxes only');
      cb(null, { items: sandboxes.map((s) => ({ id: s.id, metadata: { name: s.name, namespace: s.ns, uid: s.uid }, state: 'SANDBOX_READY', labels: s.labels })) });
    },
    PodSandboxStatus: (call: grpc.ServerUnaryCall<{ pod_sandbox_id: string; verbose: boolean }, object>, cb: grpc.sendUnaryData<object>) => {
      statusCalls++;
      assert.equal(call.request.verbose, true);
      const s = sandboxes.find((x) => x.id === call.request.pod_sandbox_id);
      if (!s) return cb({ code: grpc.status.NOT_FOUND, details: 'no such sandbox' });
      return cb(null, {
        status: { id: s.id, metadata: { name: s.name, namespace: s.ns, uid: s.uid }, state: 'SANDBOX_READY', network: { ip: s.ip, additional_ips: s.extra.map((ip) => ({ ip })) } },
        info: info(s.netns),
      });
    },
  });
  const src = createCriSource([sock], { pollMs: 100 });
  t.after(() => src.close());
  await src.ready();
  assert.equal(src.kind, 'cri');
  assert.deepEqual(src.services(), []);
  assert.deepEqual(src.pods(), [{ namespace: 'shop', name: 'frontend-7d9f8b6c5d-x2x9k', uid: 'u-1', ips: ['10.244.1.100', 'fd00::5'], workload: 'frontend', netnsPath: '/var/run/netns/cni-1' }]);
  assert.equal(statusCalls, 3);

  // a new sandbox appears, the first goes: the next polls say so, and known sandboxes are not asked again
  sandboxes = [sandboxes[1]!, sandboxes[2]!, { id: 'd'.repeat(64), name: 'backend', ns: 'default', uid: 'u-4', ip: '10.244.2.100', extra: [], netns: '/var/run/netns/cni-4', labels: {} }];
  const until = Date.now() + 5_000;
  while (src.pods()[0]?.name !== 'backend' && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(src.pods().map((p) => `${p.namespace}/${p.name} ${p.ips.join(',')}`), ['default/backend 10.244.2.100']);
  assert.equal(statusCalls, 4);
});

test('hostile status answers: bad addresses, overlong names and huge info are dropped, not trusted', () => {
  const sb = (name: string): CriSandbox => ({ id: 'e'.repeat(64), metadata: { name, namespace: 'default', uid: 'u', attempt: 0 }, state: 'SANDBOX_READY', labels: {}, annotations: {} });
  const status = (ip: string, extra: string[], infoMap: Record<string, string> = {}) => ({
    status: { ...sb('x'), network: { ip, additional_ips: extra.map((i) => ({ ip: i })) } }, info: infoMap,
  });
  assert.equal(identityOf(sb('x'), status('not-an-ip', ['10.0.0.300'])), null);
  assert.deepEqual(identityOf(sb('x'), status('10.0.0.1', ['10.0.0.1', 'junk', ...Array.from({ length: 20 }, (_, i) => `10.1.0.${i}`)]))?.ips.length, 8);
  // with an address, so that only the name can leave them out: too long, or not a Kubernetes name
  // (a sandbox made straight through the socket may carry anything, e.g. a terminal escape)
  const named = (name: string, namespace = 'default') => identityOf({ ...sb(name), metadata: { name, namespace, uid: 'u', attempt: 0 } },
    { status: { ...sb(name), metadata: { name, namespace, uid: 'u', attempt: 0 }, network: { ip: '10.0.0.1', additional_ips: [] } }, info: {} });
  assert.equal(named('web-1.a')?.name, 'web-1.a');
  for (const bad of ['y'.repeat(300), 'x\u001b[2Jy', 'a/b', 'a b', 'A', '-a', 'a\nb']) assert.equal(named(bad), null, JSON.stringify(bad));
  for (const bad of ['Default', 'kube.system', 'a/b', 'n'.repeat(64)]) assert.equal(named('web', bad), null, JSON.stringify(bad));
  assert.equal(netnsFromInfo({ info: `{"runtimeSpec":${' '.repeat(2 << 20)}}` }), undefined);
  assert.equal(netnsFromInfo({ info: 'runtimeSpec{not json' }), undefined);
  assert.equal(netnsFromInfo({ info: JSON.stringify({ runtimeSpec: { linux: { namespaces: [{ type: 'network', path: 'relative/path' }] } } }) }), undefined);
  assert.equal(netnsFromInfo(info(null)), null, 'no network namespace: the node\'s network');
  assert.equal(netnsFromInfo(info('/var/run/netns/cni-9')), '/var/run/netns/cni-9');
});

test('workload from the labels controllers set', () => {
  assert.equal(workloadFromLabels('web-7d9f8b6c5d-x2x9k', { 'pod-template-hash': '7d9f8b6c5d' }), 'web');
  assert.equal(workloadFromLabels('web-7d9f8b6c5d-x2x9k', { 'pod-template-hash': 'other' }), undefined);
  assert.equal(workloadFromLabels('db-0', { 'statefulset.kubernetes.io/pod-name': 'db-0', 'controller-revision-hash': 'db-5c4' }), 'db');
  assert.equal(workloadFromLabels('migrate-x7k2p', { 'batch.kubernetes.io/job-name': 'migrate' }), 'migrate');
  assert.equal(workloadFromLabels('node-exporter-abcde', { 'controller-revision-hash': '6f7d' }), 'node-exporter');
  assert.equal(workloadFromLabels('frontend', { app: 'frontend' }), undefined, 'a bare pod has none');
});
