// diagnose's exit code says the verdict: 0 healthy, 10 broken, 11 slow, as --help and the README list.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { diagnosisExitCode, formatDiagnosis, verdictOf, VERDICT_EXIT } from '../../../src/export/diagnosis';
import { ErrorCodes } from '../../../src/errors';
import { parseFlowSpec } from '../../../src/flow/spec';
import type { HopView } from '../../../src/flow/path';
import type { Cause, Diagnosis } from '../../../src/flow/verdict';
import { STEP_NAMES } from '../../../src/topology/steps';

function verdict(healthy: boolean, cause: Cause, extra: Partial<Diagnosis> = {}): Diagnosis {
  return {
    healthy, step: healthy ? null : 4, step_name: healthy ? null : 'routing', node: healthy ? null : 'node1', device: healthy ? null : 'flannel.1', last_seen: null,
    reason: null, cause, detail: 'd', next: 'n', steps: [], ...extra,
  };
}

test('diagnose exit codes: 0 healthy, 10 broken, 11 slow', () => {
  assert.equal(diagnosisExitCode(verdict(true, 'none')), 0);
  // healthy where watched, some steps on a node nothing watches: still healthy
  assert.equal(diagnosisExitCode(verdict(true, 'none', { not_watched: { node: 'node2', reason: 'no agent', steps: [6, 7, 8, 9] } })), 0);
  for (const cause of ['mtu', 'netfilter-drop', 'no-route', 'no-neighbour', 'no-fdb', 'no-endpoints', 'connection-refused', 'loss'] as const) {
    assert.equal(diagnosisExitCode(verdict(false, cause)), 10, cause);
  }
  assert.equal(diagnosisExitCode(verdict(false, 'delay')), 11);
  // no probe seen at all is broken, not healthy
  assert.equal(diagnosisExitCode(verdict(false, 'loss', { step: null, step_name: null })), 10);
});

test('the verdict codes are not error codes, and match the word the table shows', () => {
  const errors = new Set<number>(Object.values(ErrorCodes).map((c) => c.exit));
  assert.ok(!errors.has(VERDICT_EXIT.BROKEN) && !errors.has(VERDICT_EXIT.SLOW));
  assert.notEqual(VERDICT_EXIT.BROKEN, VERDICT_EXIT.SLOW);
  const flow = parseFlowSpec('10.244.1.5 -> 10.244.2.8');
  for (const d of [verdict(true, 'none'), verdict(false, 'mtu'), verdict(false, 'delay')]) {
    assert.match(formatDiagnosis(flow, d).split('\n')[0]!, new RegExp(`: ${verdictOf(d)}`));
  }
});

const hop = (step: number, node: string, device: string, hook: 'ingress' | 'egress'): HopView =>
  ({ step, name: STEP_NAMES[step]!, node, device, hook, ts_ns: step * 1000, latency_ns: step === 1 ? 0 : 1000 });

test('the table marks the step that failed, not the last one that saw the packet', () => {
  const flow = parseFlowSpec('10.244.1.5 -> 10.244.2.8');
  const steps = [hop(1, 'node1', 'eth0', 'egress'), hop(2, 'node1', 'veth1a', 'ingress'), hop(3, 'node1', 'cni0', 'ingress')];
  const d = verdict(false, 'netfilter-drop', { device: 'cni0', steps, last_seen: { step: 3, name: 'bridge', node: 'node1', device: 'cni0', hook: 'ingress' } });
  const lines = formatDiagnosis(flow, d).split('\n');
  assert.equal(lines[0], 'diagnose 10.244.1.5 -> 10.244.2.8 icmp: BROKEN at step 4 (routing)');
  assert.equal(lines[3], '  ok 3 bridge                node1 cni0 ingress +1.0 µs');
  assert.equal(lines[4], '  !! 4 routing                <== packets stop here');
  assert.equal(lines[5], '  -- 5 encapsulation');
  // last seen at the host veth, not in the pod: step 9 has a hop and still failed
  const late = [...steps, hop(6, 'node2', 'eth0', 'ingress'), hop(9, 'node2', 'veth2b', 'egress')];
  const at9 = formatDiagnosis(flow, verdict(false, 'loss', { step: 9, step_name: 'veth to pod', steps: late }));
  assert.match(at9, /^ {2}!! 9 veth to pod +node2 veth2b egress \+1\.0 µs <== packets stop here$/m);
  // slow: the step that took long is the one marked, and it was completed
  const slow = formatDiagnosis(flow, verdict(false, 'delay', { step: 3, step_name: 'bridge', steps }));
  assert.match(slow, /^ {2}ok 3 bridge .* <== slow$/m);
  assert.doesNotMatch(slow, /!!|--/);
});
