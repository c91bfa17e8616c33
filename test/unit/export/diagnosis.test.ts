// diagnose's exit code says the verdict: 0 healthy, 10 broken, 11 slow, as --help and the README list.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { diagnosisExitCode, formatDiagnosis, verdictOf, VERDICT_EXIT } from '../../../src/export/diagnosis';
import { ErrorCodes } from '../../../src/errors';
import { parseFlowSpec } from '../../../src/flow/spec';
import type { Cause, Diagnosis } from '../../../src/flow/verdict';

function verdict(healthy: boolean, cause: Cause, extra: Partial<Diagnosis> = {}): Diagnosis {
  return {
    healthy, step: healthy ? null : 4, step_name: healthy ? null : 'routing', node: healthy ? null : 'node1', device: healthy ? null : 'flannel.1',
    reason: null, cause, detail: 'd', next: 'n', steps: [], ...extra,
  };
}

test('diagnose exit codes: 0 healthy, 10 broken, 11 slow', () => {
  assert.equal(diagnosisExitCode(verdict(true, 'none')), 0);
  // healthy where watched, some steps on a node nothing watches: still healthy
  assert.equal(diagnosisExitCode(verdict(true, 'none', { not_watched: { node: 'node2', reason: 'no agent', steps: [6, 7, 8, 9] } })), 0);
  for (const cause of ['mtu', 'netfilter-drop', 'no-route', 'no-neighbour', 'no-fdb', 'loss'] as const) {
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
