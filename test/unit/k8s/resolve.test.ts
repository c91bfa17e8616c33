// --flow ends by name: the syntax, and each name made an address from a source's pods and Services.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { NettraceError } from '../../../src/errors';
import { parseEndpoint, parseFlowSpec } from '../../../src/flow/spec';
import type { PodIdentity, ServiceIdentity } from '../../../src/k8s/identity';
import { flowHasNames, resolveFlow, type NameSource } from '../../../src/k8s/resolve';

const pod = (namespace: string, name: string, ips: string[], workload?: string): PodIdentity => ({ namespace, name, uid: `uid-${name}`, ips, ...(workload ? { workload } : {}) });
const PODS = [
  pod('default', 'frontend', ['10.244.1.5']),
  pod('default', 'backend', ['10.244.2.8', 'fd00:2::8']),
  pod('default', 'web-7d9f8b6c5-abcde', ['10.244.1.10'], 'web'),
  pod('default', 'web-7d9f8b6c5-fghij', ['10.244.2.11'], 'web'),
  pod('shop', 'cart-5f6d7c8b9-q2w3e', ['10.244.2.20'], 'cart'),
  pod('shop', 'v6only', ['fd00:2::30']),
];
const SERVICES: ServiceIdentity[] = [{ namespace: 'default', name: 'backend', clusterIps: ['10.96.0.10'], ports: [{ name: 'http', port: 80, protocol: 'TCP' }], endpoints: [] }];
const source: NameSource = { what: 'the test pods', pods: () => PODS, services: () => SERVICES };
const noServices: NameSource = { ...source, what: 'the container runtime (CRI)', services: () => null };

test('endpoint syntax: addresses as before; NAMESPACE/POD[:PORT], POD[:PORT], svc/NAMESPACE/NAME:PORT recognised as names', () => {
  assert.deepEqual(parseEndpoint('10.244.1.5:80', 'source'), { kind: 'ip', addr: '10.244.1.5', port: 80, text: '10.244.1.5:80' });
  assert.deepEqual(parseEndpoint(' default/frontend ', 'source'), { kind: 'pod', namespace: 'default', name: 'frontend', port: 0, text: 'default/frontend' });
  assert.deepEqual(parseEndpoint('backend:5201', 'destination'), { kind: 'pod', name: 'backend', port: 5201, text: 'backend:5201' });
  assert.deepEqual(parseEndpoint('svc/default/backend:http', 'destination'), { kind: 'svc', namespace: 'default', name: 'backend', port: 'http', text: 'svc/default/backend:http' });
  assert.equal(flowHasNames('10.244.1.5 -> 10.244.2.8:80'), false);
  assert.equal(flowHasNames('default/frontend -> 10.244.2.8:80'), true);
  const usage = (text: string, re: RegExp) => assert.throws(() => parseEndpoint(text, 'source'), (e: unknown) => e instanceof NettraceError && e.code === 'E_USAGE' && re.test(e.message), text);
  usage('Default/Frontend', /"Default\/Frontend" is not an IP address, NAMESPACE\/POD or svc\/NAMESPACE\/NAME:PORT/);
  usage('a/b/c', /is not an IP address, NAMESPACE\/POD/);
  usage('svc/default/backend', /names a Service without a port/);
  usage('default/frontend:http', /port "http" is not a port/);
  usage('10.244.1', /"10\.244\.1" is not an IP address/);
  usage('10.244.1.5:0', /port "0"/);
  // addresses only: the parser of addresses still says a name is none
  assert.throws(() => parseFlowSpec('default/frontend -> 10.244.2.8'), /source "default\/frontend" is not an IP address.*/);
});

test('a flow of addresses needs no source at all', () => {
  assert.deepEqual(resolveFlow('10.244.1.5 -> 10.244.2.8:80', { source: null }).flow, { src: '10.244.1.5', dst: '10.244.2.8', sport: 0, dport: 80, proto: 'tcp', family: 4 });
  assert.throws(() => resolveFlow('default/frontend -> 10.244.2.8:80', { source: null }),
    (e: unknown) => e instanceof NettraceError && e.code === 'E_USAGE' && /default\/frontend is a name, and there is no source of names/.test(e.message) && /--kubeconfig/.test(e.next));
});

test('pods, -n, the one pod of a workload, Services by port name, the family both ends have', () => {
  const r = resolveFlow('default/frontend -> default/backend:80', { source });
  assert.deepEqual(r.flow, { src: '10.244.1.5', dst: '10.244.2.8', sport: 0, dport: 80, proto: 'tcp', family: 4 });
  assert.deepEqual([r.pods.src!.name, r.pods.dst!.name], ['frontend', 'backend']);
  assert.equal(resolveFlow('cart -> default/backend', { source, namespace: 'shop' }).flow.src, '10.244.2.20');
  assert.equal(resolveFlow('shop/cart-5f6d7c8b9-q2w3e -> frontend', { source }).flow.dst, '10.244.1.5');
  assert.deepEqual(resolveFlow('frontend -> svc/default/backend:http', { source }).flow, { src: '10.244.1.5', dst: '10.96.0.10', sport: 0, dport: 80, proto: 'tcp', family: 4 });
  assert.equal(resolveFlow('shop/v6only -> default/backend', { source }).flow.dst, 'fd00:2::8');
  // a name and an address of different families
  assert.throws(() => resolveFlow('shop/v6only -> 10.244.1.5', { source }), /no IP family in common/);
});

test('ambiguous, unknown pod, unknown namespace, Services without a source of them: one line each with the fix', () => {
  const fails = (text: string, s: NameSource, re: RegExp, next: RegExp, namespace?: string) => assert.throws(() => resolveFlow(text, { source: s, ...(namespace ? { namespace } : {}) }),
    (e: unknown) => e instanceof NettraceError && e.code === 'E_USAGE' && e.exitCode === 2 && re.test(e.message) && next.test(e.next) && !e.line().includes('\n'), text);
  fails('default/web -> backend', source, /^ambiguous: default\/web is the workload of 2 pods \(web-7d9f8b6c5-abcde, web-7d9f8b6c5-fghij\)$/, /^name one$/);
  fails('default/nope -> backend', source, /^no pod "nope" in namespace "default" \(the test pods\)$/, /kubectl get pods -n default/);
  fails('web-7d9f8b6c5 -> backend', source, /no pod "web-7d9f8b6c5" in namespace "default".*; there: web-7d9f8b6c5-abcde, web-7d9f8b6c5-fghij/, /kubectl get pods/);
  fails('frontend -> backend', source, /^no namespace "prod" among the pods the test pods knows \(namespaces: default, shop\)$/, /-n NAMESPACE/, 'prod');
  fails('frontend -> svc/default/backend:80', noServices, /names a Service, and the container runtime \(CRI\) knows no Services/, /--kubeconfig/);
  fails('frontend -> svc/other/backend:80', source, /no namespace "other" among the Services/, /kubectl get namespaces/);
});
