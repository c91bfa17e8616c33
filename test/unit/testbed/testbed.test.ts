// The testbed deletes network namespaces as root: only names a state file of ours lists, and
// only names that cannot point anywhere else. No root needed: nothing here reaches `ip`.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { NettraceError } from '../../../src/errors';
import { checkPrefix, namespacesOf, parseState, testbedDown, testbedStatus, testbedUp, type TestbedState } from '../../../src/testbed/testbed';

const usage = (e: unknown) => e instanceof NettraceError && e.code === 'E_USAGE' && e.exitCode === 2;
const broken = (re: RegExp) => (e: unknown) => e instanceof NettraceError && e.code === 'E_TESTBED' && re.test(e.message);

function state(prefix: string, extra: Partial<TestbedState> = {}): TestbedState {
  return {
    cni: 'flannel-vxlan', prefix,
    nodes: [{ name: 'node1', netns: `${prefix}node1`, ip: '192.168.1.101', podCidr: '10.244.1.0/24' }, { name: 'node2', netns: `${prefix}node2`, ip: '192.168.1.102', podCidr: '10.244.2.0/24' }],
    pods: [{ name: 'pod-a', netns: `${prefix}pod-a`, ip: '10.244.1.5', node: `${prefix}node1` }],
    services: [], ...extra,
  };
}

test('--prefix: plain names only; path separators, dot-dot and the reserved "default" are usage errors', () => {
  for (const ok of ['', 't1-', 'nt1234x0-', 'ntbench-', 'a.b_c-9']) assert.equal(checkPrefix(ok), ok);
  for (const bad of ['../x', '..', '../../etc/', '/etc', 'a/b', './', '.hidden', '-n', 'a b', 'a\nb', 'x'.repeat(33), 'default']) {
    assert.throws(() => checkPrefix(bad), usage, JSON.stringify(bad));
  }
});

test('down, up and status refuse a bad prefix before reading or deleting anything', () => {
  assert.throws(() => testbedDown('../../etc/'), usage);
  assert.throws(() => testbedStatus('a/b'), usage);
  assert.throws(() => testbedUp({ prefix: '/tmp/x' }), usage);
});

test('down deletes exactly the namespaces the state file lists: what up made, not what matches the prefix', () => {
  // a state file from an up that was killed half way: one pod, and an extra name it recorded
  const s = state('t1-', { building: true, pods: [{ name: 'pod-a', netns: 't1-pod-a', ip: '10.244.1.5', node: 't1-node1' }] });
  s.nodes.push({ name: 'node3', netns: 't1-node3', ip: '192.168.1.103', podCidr: '10.244.3.0/24' });
  const parsed = parseState(JSON.stringify(s), 't1-', '/run/nettrace/testbed/t1-.json');
  assert.deepEqual(namespacesOf(parsed), ['t1-pod-a', 't1-node1', 't1-node2', 't1-node3']);
  // no t1-pod-b: not listed, so not deleted even though the layout has one
  assert.ok(!namespacesOf(parsed).includes('t1-pod-b'));
});

test('a state file is checked before its names go to `ip netns del`', () => {
  const file = '/run/nettrace/testbed/t1-.json';
  assert.throws(() => parseState('{not json', 't1-', file), broken(/is not JSON/));
  assert.throws(() => parseState('{}', 't1-', file), broken(/lists no nodes and pods/));
  // written for another prefix (e.g. "default.json" read for the unprefixed cluster)
  assert.throws(() => parseState(JSON.stringify(state('t2-')), 't1-', file), broken(/is for prefix "t2-", not "t1-"/));
  // names that are paths, or not of this cluster
  for (const netns of ['../../etc/t1-x', 't1-../../x', 't1-a/b', 'other-node1', '', 7]) {
    const s = state('t1-');
    (s.pods[0] as { netns: unknown }).netns = netns;
    assert.throws(() => parseState(JSON.stringify(s), 't1-', file), broken(/not a namespace of this cluster/), String(netns));
  }
  assert.deepEqual(namespacesOf(parseState(JSON.stringify(state('')), '', file)), ['pod-a', 'node1', 'node2']);
});
