// diagnose --dns's causes from what the pod's queries came to and where their packets went.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { QueryOutcome } from '../../../src/flow/dns';
import { diagnoseDns, type DnsInput } from '../../../src/flow/dnsVerdict';
import type { Diagnosis } from '../../../src/flow/verdict';

const healthyPath: Diagnosis = {
  healthy: true, step: null, step_name: null, node: null, device: null, last_seen: null, reason: null, cause: 'none',
  detail: 'all 6 probe packets crossed every step; median path 110.5 µs', next: 'nothing to fix on the path', steps: [], caveats: [],
};
const droppedAt8: Diagnosis = {
  ...healthyPath, healthy: false, step: 8, step_name: 'route to bridge', node: 'node2', device: 'flannel.1', cause: 'netfilter-drop',
  reason: 'NETFILTER_DROP', detail: 'netfilter dropped the packet after flannel.1 ingress on node2', next: 'check the node\'s FORWARD rules',
  last_seen: { step: 7, name: 'receive, decapsulate', node: 'node2', device: 'flannel.1', hook: 'ingress' },
};
const answer = (rcode: number, latency_ns = 500_000, answers = rcode === 0 ? 1 : 0): QueryOutcome => ({ outcome: 'answer', rcode, answers, truncated: false, latency_ns, sport: 40000 });
const timeout: QueryOutcome = { outcome: 'timeout', sport: 40001 };

function input(over: Partial<DnsInput>): DnsInput {
  return {
    name: 'iperf.default.svc.cluster.local', server: '10.96.0.10', queries: [answer(0), answer(0), answer(0)], path: healthyPath,
    stopped: null, queriesDelivered: 3, answersDelivered: 3, serviceEndpoints: 1, ...over,
  };
}

test('every query answered NOERROR: healthy, with the median latency the pod saw', () => {
  const d = diagnoseDns(input({ queries: [answer(0, 300_000), answer(0, 900_000), answer(0, 500_000)] }));
  assert.equal(d.healthy, true);
  assert.equal(d.cause, 'none');
  assert.equal(d.rcode, 'NOERROR');
  assert.equal(d.latency_ns, 500_000);
  assert.deepEqual(d.queries, { sent: 3, answered: 3, timeouts: 0, refused: 0 });
  assert.match(d.detail, /3 of 3 queries .* answered NOERROR \(1 record\) in 500\.0 µs/);
});

test('NXDOMAIN and SERVFAIL: the network delivered the queries, the server said no', () => {
  const nx = diagnoseDns(input({ queries: [answer(3), answer(3), answer(3)] }));
  assert.equal(nx.healthy, false);
  assert.equal(nx.cause, 'dns-nxdomain');
  assert.equal(nx.rcode, 'NXDOMAIN');
  assert.equal(nx.step, null, 'no step failed');
  const sf = diagnoseDns(input({ queries: [answer(2), answer(2), answer(2)] }));
  assert.equal(sf.cause, 'dns-servfail');
  assert.equal(sf.rcode, 'SERVFAIL');
  assert.equal(diagnoseDns(input({ queries: [answer(5)] })).cause, 'dns-error', 'REFUSED: another rcode');
});

test('dns-timeout names the step where the query died, from the path', () => {
  const d = diagnoseDns(input({ queries: [timeout, timeout, timeout], path: droppedAt8, stopped: 'query', queriesDelivered: 0, answersDelivered: 0 }));
  assert.equal(d.cause, 'dns-timeout');
  assert.equal(d.died, 'query');
  assert.equal(d.step, 8);
  assert.equal(d.node, 'node2');
  assert.match(d.detail, /3 of 3 queries .* got no answer: the query died at step 8 \(route to bridge\) on node2/);
  assert.equal(d.next, droppedAt8.next);
});

test('dns-timeout: an answer that died on its way back is the answer, not the query', () => {
  const d = diagnoseDns(input({ queries: [timeout], path: { ...droppedAt8, step: 4, step_name: 'routing', node: 'node2' }, stopped: 'answer', queriesDelivered: 1, answersDelivered: 0 }));
  assert.equal(d.died, 'answer');
  assert.match(d.detail, /the answer died at step 4 \(routing\) on node2/);
});

test('dns-timeout: the queries reached the DNS pod and nothing came back: the server did not answer', () => {
  const d = diagnoseDns(input({ queries: [timeout, timeout], queriesDelivered: 2, answersDelivered: 0 }));
  assert.equal(d.cause, 'dns-timeout');
  assert.equal(d.died, null);
  assert.equal(d.step, null);
  assert.match(d.detail, /2 queries reached the DNS pod and 0 answers came back: the server did not answer/);
});

test('dns-no-endpoints: the Service has none, whatever the queries met; or the path met kube-proxy\'s REJECT', () => {
  const refused: QueryOutcome = { outcome: 'refused', latency_ns: 100_000, sport: 1 };
  const none = diagnoseDns(input({ queries: [refused, refused, refused], serviceEndpoints: 0, queriesDelivered: 0, answersDelivered: 0 }));
  assert.equal(none.cause, 'dns-no-endpoints');
  assert.equal(none.healthy, false);
  assert.match(none.detail, /the DNS Service 10\.96\.0\.10:53 has no endpoints/);
  assert.match(none.next, /endpointslices/);
  const rejected = diagnoseDns(input({ queries: [refused], serviceEndpoints: null, path: { ...droppedAt8, cause: 'no-endpoints', step: 4, step_name: 'routing', node: 'node1', detail: 'Service kube-system/kube-dns:dns has no endpoints' } }));
  assert.equal(rejected.cause, 'dns-no-endpoints');
  assert.equal(rejected.step, 4);
});

test('a port unreachable from the server\'s pod: dns-refused; some queries lost among answers: still a timeout', () => {
  const refused: QueryOutcome = { outcome: 'refused', latency_ns: 100_000, sport: 1 };
  assert.equal(diagnoseDns(input({ queries: [refused, refused] })).cause, 'dns-refused');
  const partial = diagnoseDns(input({ queries: [answer(0), timeout, answer(0)], queriesDelivered: 3, answersDelivered: 2 }));
  assert.equal(partial.healthy, false);
  assert.equal(partial.cause, 'dns-timeout');
  assert.equal(partial.latency_ns, 500_000, 'the answered ones are still timed');
});
