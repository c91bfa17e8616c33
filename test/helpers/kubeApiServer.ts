// A local HTTP server that serves recorded Kubernetes API objects over the API server's own list
// and watch protocol, since no API server can run on these machines: LIST pages (limit, continue)
// with the collection's resourceVersion, WATCH (?watch=true) as chunked JSON lines of ADDED,
// MODIFIED and DELETED events after a resourceVersion, fieldSelector spec.nodeName on pods, and
// 403 Status answers for what a test denies. Plus a kubeconfig file pointing at it.
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { TestContext } from 'node:test';
import { ROOT } from './cluster';

export type Resource = 'pods' | 'services' | 'endpointslices';
type Obj = { kind?: string; apiVersion?: string; metadata: { name: string; namespace: string; uid: string; resourceVersion: string }; spec?: { nodeName?: string } };

const PATHS: Record<string, Resource> = {
  '/api/v1/pods': 'pods', '/api/v1/services': 'services', '/apis/discovery.k8s.io/v1/endpointslices': 'endpointslices',
};
const LIST_KIND: Record<Resource, [string, string]> = { pods: ['PodList', 'v1'], services: ['ServiceList', 'v1'], endpointslices: ['EndpointSliceList', 'discovery.k8s.io/v1'] };

export function recorded(): Record<Resource, Obj[]> {
  const r = JSON.parse(readFileSync(path.join(ROOT, 'test/fixtures/k8s/recorded.json'), 'utf8')) as Record<Resource, Obj[]>;
  return { pods: r.pods, services: r.services, endpointslices: r.endpointslices };
}

export interface FakeApiServer {
  url: string;
  kubeconfig: string;
  /** "list pods", "watch endpointslices": answered 403 Forbidden */
  deny: Set<string>;
  /** how many requests each "verb resource" got */
  requests: Map<string, number>;
  add(r: Resource, o: Obj): void;
  modify(r: Resource, o: Obj): void;
  remove(r: Resource, namespace: string, name: string): void;
  /** the watches open now, per resource */
  watching(r: Resource): number;
  close(): Promise<void>;
}

function status(code: number, reason: string, message: string): string {
  return JSON.stringify({ kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code });
}

export async function startFakeApiServer(t: TestContext, objects: Record<Resource, Obj[]> = recorded(), host = '127.0.0.1'): Promise<FakeApiServer> {
  let rv = 2000;
  const store: Record<Resource, Map<string, Obj>> = { pods: new Map(), services: new Map(), endpointslices: new Map() };
  for (const r of Object.keys(store) as Resource[]) for (const o of objects[r]) store[r].set(`${o.metadata.namespace}/${o.metadata.name}`, o);
  const history: { rv: number; r: Resource; type: string; obj: Obj }[] = [];
  const watchers = new Set<{ r: Resource; node?: string; res: http.ServerResponse }>();
  const deny = new Set<string>();
  const requests = new Map<string, number>();

  const matches = (o: Obj, node?: string) => node === undefined || o.spec?.nodeName === node;
  const send = (w: { node?: string; res: http.ServerResponse }, type: string, obj: Obj) => {
    if (matches(obj, w.node)) w.res.write(JSON.stringify({ type, object: obj }) + '\n');
  };
  const emit = (r: Resource, type: string, o: Obj) => {
    const obj = { ...o, metadata: { ...o.metadata, resourceVersion: String(++rv) } };
    if (type === 'DELETED') store[r].delete(`${o.metadata.namespace}/${o.metadata.name}`);
    else store[r].set(`${o.metadata.namespace}/${o.metadata.name}`, obj);
    history.push({ rv, r, type, obj });
    for (const w of watchers) if (w.r === r) send(w, type, obj);
  };

  const server = http.createServer((req, res) => {
    const u = new URL(req.url ?? '/', 'http://x');
    const r = PATHS[u.pathname];
    if (!r || req.method !== 'GET') {
      res.writeHead(404, { 'content-type': 'application/json' }).end(status(404, 'NotFound', 'the server could not find the requested resource'));
      return;
    }
    const watch = u.searchParams.get('watch') === 'true';
    const verb = watch ? 'watch' : 'list';
    requests.set(`${verb} ${r}`, (requests.get(`${verb} ${r}`) ?? 0) + 1);
    if (deny.has(`${verb} ${r}`)) {
      const group = r === 'endpointslices' ? 'discovery.k8s.io' : '';
      res.writeHead(403, { 'content-type': 'application/json' })
        .end(status(403, 'Forbidden', `${r}${group ? `.${group}` : ''} is forbidden: User "system:serviceaccount:kube-system:nettrace-agent" cannot ${verb} resource "${r}" in API group "${group}" at the cluster scope`));
      return;
    }
    const fs = u.searchParams.get('fieldSelector');
    const node = fs?.startsWith('spec.nodeName=') ? fs.slice('spec.nodeName='.length) : undefined;
    if (watch) {
      const from = Number(u.searchParams.get('resourceVersion') || '0');
      res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
      res.flushHeaders();
      const w = { r, node, res };
      for (const h of history) if (h.r === r && h.rv > from) send(w, h.type, h.obj);
      watchers.add(w);
      req.on('close', () => watchers.delete(w));
      return;
    }
    // a list: items without kind and apiVersion, as the API server writes them; pages by limit and continue
    const all = [...store[r].values()].filter((o) => matches(o, node)).map(({ kind: _k, apiVersion: _a, ...rest }) => rest);
    const limit = Number(u.searchParams.get('limit') || '0') || all.length;
    const start = Number(Buffer.from(u.searchParams.get('continue') || '', 'base64').toString() || '0');
    const items = all.slice(start, start + limit);
    const more = start + limit < all.length;
    const [kind, apiVersion] = LIST_KIND[r];
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({
      kind, apiVersion,
      metadata: { resourceVersion: String(rv), ...(more ? { continue: Buffer.from(String(start + limit)).toString('base64'), remainingItemCount: all.length - start - limit } : {}) },
      items,
    }));
  });
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  const url = `http://${host}:${(server.address() as AddressInfo).port}`;
  const kubeconfig = path.join(os.tmpdir(), `nt-kubeconfig-${process.pid}-${(server.address() as AddressInfo).port}.yaml`);
  writeFileSync(kubeconfig, [
    'apiVersion: v1', 'kind: Config', 'current-context: recorded',
    'clusters:', '- name: recorded', '  cluster:', `    server: ${url}`,
    // plain HTTP on loopback: client-node takes http:// only with TLS verification off
    '    insecure-skip-tls-verify: true',
    'users:', '- name: viewer', '  user:', '    token: recorded-token',
    'contexts:', '- name: recorded', '  context:', '    cluster: recorded', '    user: viewer',
    '',
  ].join('\n'));
  const close = async () => {
    rmSync(kubeconfig, { force: true });
    for (const w of watchers) w.res.destroy();
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  t.after(close);
  return {
    url, kubeconfig, deny, requests,
    add: (r, o) => emit(r, 'ADDED', o),
    modify: (r, o) => emit(r, 'MODIFIED', o),
    remove: (r, namespace, name) => {
      const o = store[r].get(`${namespace}/${name}`);
      if (o) emit(r, 'DELETED', o);
    },
    watching: (r) => [...watchers].filter((w) => w.r === r).length,
    close,
  };
}
