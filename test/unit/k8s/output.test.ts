// Pods' Kubernetes names in follow's output once a source's names are joined onto the topology:
// JSON adds fields (pods, a hop's k8s) and renames none; the table shows eth0@NAMESPACE/POD.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatDiagnosis } from '../../../src/export/diagnosis';
import { formatPathTable } from '../../../src/export/table';
import { PathAssembler } from '../../../src/flow/assemble';
import { parseFlowSpec } from '../../../src/flow/spec';
import type { Diagnosis } from '../../../src/flow/verdict';
import type { IdentitySource } from '../../../src/k8s/identity';
import { joinIdentities } from '../../../src/k8s/join';
import { tcpHopRecord as rec, twoNodeTopology } from '../../helpers/records';

// the request's ten hooks (as in the assembler's tests)
const REQUEST: [number, number, 0 | 1, number][] = [
  [1002, 3, 1, 800], [2001, 2, 1, 100], [1001, 5, 0, 150], [1001, 3, 0, 190], [1001, 4, 1, 260], [1001, 2, 1, 300],
  [1002, 2, 0, 500], [1002, 4, 0, 650], [1002, 5, 1, 900], [2002, 2, 0, 1000],
];

const source = (pods: IdentitySource['pods']): IdentitySource => ({ kind: 'kubernetes', ready: async () => {}, pods, services: () => [], close: () => {} });

function path(named: boolean) {
  const topo = twoNodeTopology();
  if (named) {
    joinIdentities(topo, source(() => [
      { namespace: 'default', name: 'frontend', uid: 'u-f', ips: ['10.244.1.5'], workload: 'frontend' },
      { namespace: 'default', name: 'backend', uid: 'u-b', ips: ['10.244.2.8'] },
    ]));
  }
  const a = new PathAssembler(parseFlowSpec('10.244.1.5 -> 10.244.2.8:80', 'tcp'), topo, { graceMs: 1000 });
  const out = REQUEST.map(([ino, ifx, hook, ts]) => a.add(rec(ino, ifx, hook, ts))).filter(Boolean);
  return out[0] ?? null;
}

test('names joined by IP: JSON gains pods and the eth0 hops\' k8s, keeps pod (the netns); the table shows eth0@default/frontend', () => {
  const p = path(true);
  assert.ok(p);
  assert.deepEqual(p.pods, { src: { namespace: 'default', name: 'frontend', uid: 'u-f', workload: 'frontend' }, dst: { namespace: 'default', name: 'backend', uid: 'u-b' } });
  assert.equal(p.steps[0]!.pod, 'pod-a');
  assert.deepEqual(p.steps[0]!.k8s, { namespace: 'default', name: 'frontend', uid: 'u-f', workload: 'frontend' });
  assert.equal(p.steps[1]!.k8s, undefined);
  const table = formatPathTable(p);
  assert.match(table.split('\n')[0]!, /^request 10\.244\.1\.5:40000 \(default\/frontend\) -> 10\.244\.2\.8:80 \(default\/backend\) tcp/);
  assert.match(table, /\n {2}1 +container sends +node1 +eth0@default\/frontend +egress/);
  assert.match(table, /eth0@default\/backend +ingress/);
  // without names: as before, no new fields
  const plain = path(false)!;
  assert.equal('pods' in plain, false);
  assert.equal('k8s' in plain.steps[0]!, false);
  assert.match(formatPathTable(plain), /eth0@pod-a/);
});

test('diagnose names the pods in its first line and its hops', () => {
  const p = path(true)!;
  const d: Diagnosis = { healthy: true, step: null, step_name: null, node: null, device: null, last_seen: null, reason: null, cause: 'none', detail: 'ok', next: 'nothing', steps: p.steps, caveats: [] };
  const text = formatDiagnosis(parseFlowSpec('10.244.1.5 -> 10.244.2.8:80', 'tcp'), d, p.pods);
  assert.match(text, /^diagnose 10\.244\.1\.5 \(default\/frontend\) -> 10\.244\.2\.8:80 \(default\/backend\) tcp: HEALTHY\n/);
  assert.match(text, /ok 1 container sends +node1 eth0@default\/frontend egress/);
});
