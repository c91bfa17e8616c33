// The watch of the Kubernetes API against a hostile local server: a line without end, and a watch
// the server never answers, end the request (and release its socket) instead of holding it.
import assert from 'node:assert/strict';
import { rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { createKubeSource } from '../../../src/k8s/kubeApi';

const LISTS: Record<string, string> = { '/api/v1/pods': 'PodList', '/api/v1/services': 'ServiceList', '/apis/discovery.k8s.io/v1/endpointslices': 'EndpointSliceList' };

const POD = { metadata: { name: 'early', namespace: 'default', uid: 'uid-early', resourceVersion: '2' }, spec: { nodeName: 'node1' }, status: { phase: 'Running', podIP: '10.244.1.9', podIPs: [{ ip: '10.244.1.9' }] } };

/** Empty lists; the pods watch is answered by `podsWatch`, the others stay open and quiet. */
async function hostileServer(t: TestContext, podsWatch: (res: http.ServerResponse, req: http.IncomingMessage) => void) {
  const requests: string[] = [];
  const closedWatches: number[] = [];
  const server = http.createServer((req, res) => {
    const u = new URL(req.url ?? '/', 'http://x');
    const watch = u.searchParams.get('watch') === 'true';
    requests.push(`${watch ? 'watch' : 'list'} ${u.pathname}`);
    if (!watch) {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ kind: LISTS[u.pathname], apiVersion: 'v1', metadata: { resourceVersion: '1' }, items: [] }));
      return;
    }
    if (u.pathname === '/api/v1/pods') {
      req.on('close', () => closedWatches.push(Date.now()));
      podsWatch(res, req);
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.flushHeaders();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const kubeconfig = path.join(os.tmpdir(), `nt-hostile-${process.pid}-${(server.address() as AddressInfo).port}.yaml`);
  writeFileSync(kubeconfig, `apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters:\n- name: c\n  cluster:\n    server: ${url}\n    insecure-skip-tls-verify: true\nusers:\n- name: u\n  user: {token: t}\ncontexts:\n- name: c\n  context: {cluster: c, user: u}\n`);
  t.after(async () => {
    rmSync(kubeconfig, { force: true });
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  });
  return { kubeconfig, requests, closedWatches };
}

async function until(what: string, cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('a watch line longer than the bound ends that watch (its socket closed), says so, and the source lists again; events before it count', async (t) => {
  let sent = 0;
  const srv = await hostileServer(t, (res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.write(JSON.stringify({ type: 'ADDED', object: POD }) + '\n');
    // then a line that never ends: 64 KiB at a time, up to 64 MiB
    const junk = '{"type":"ADDED","object":{"metadata":{"name":"' + 'x'.repeat(64 << 10);
    const more = () => {
      if (res.destroyed || sent >= 64 << 20) return;
      sent += junk.length;
      if (res.write(junk)) setImmediate(more);
      else res.once('drain', more);
    };
    more();
  });
  const lines: string[] = [];
  const s = createKubeSource({ kubeconfig: srv.kubeconfig, log: (l) => lines.push(l), maxWatchLine: 1 << 20 });
  t.after(() => s.close());
  await s.ready();
  await until('the pods watch closed by the client', () => srv.closedWatches.length > 0);
  assert.ok(sent < 8 << 20, `the client read ${sent} bytes of one line before it gave up`);
  assert.deepEqual(s.pods().map((p) => p.name), ['early']);
  await until('the line about it', () => lines.length > 0);
  assert.match(lines[0]!, /^kubernetes: the watch of pods at http:\/\/127\.0\.0\.1:\d+ failed \(.*a watch event longer than 1 MiB\)+; retrying$/);
  // a failed watch may have missed events: after the backoff (1 s), a fresh list
  await until('a second list of pods', () => srv.requests.filter((r) => r === 'list /api/v1/pods').length >= 2, 4000);
});

test('close() after ready() timed out ends a watch the server never answered: no socket is left', async (t) => {
  const srv = await hostileServer(t, () => {
    // holds the request: no status line, no headers
  });
  const s = createKubeSource({ kubeconfig: srv.kubeconfig, log: () => {}, readyTimeoutMs: 500 });
  const err = await s.ready().then(() => null, (e: unknown) => e);
  assert.match(String((err as Error)?.message), /did not answer in 0\.5 s/);
  await until('the unanswered watch closed', () => srv.closedWatches.length === 1, 3000);
});
