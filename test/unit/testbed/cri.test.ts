// `testbed down` kills processes and deletes directories, namespaces and cgroups that the state
// file's cri entry names: each name is checked against what up would have made before anything
// happens. No root needed. The real containerd runs in test/cluster/cri.test.ts.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { NettraceError } from '../../../src/errors';
import { checkCriMode, criCgroupParent, criNodeDir, CRI_MODES } from '../../../src/testbed/cri';
import type { TestbedCri, TestbedState } from '../../../src/testbed/state';
import { parseState, testbedUpCri } from '../../../src/testbed/testbed';

const FILE = '/run/nettrace/testbed/t1-.json';
const broken = (re: RegExp) => (e: unknown) => e instanceof NettraceError && e.code === 'E_TESTBED' && re.test(e.message);

function node(netns: string): TestbedCri['nodes'][number] {
  const dir = criNodeDir(netns);
  return { netns, dir, socket: `${dir}/containerd.sock`, pid: 4242, network: `nettrace-${netns}` };
}

function state(cri: unknown): TestbedState {
  return {
    cni: 'flannel-vxlan', prefix: 't1-',
    nodes: [{ name: 'node1', netns: 't1-node1', ip: '192.168.1.101', podCidr: '10.244.1.0/24' }, { name: 'node2', netns: 't1-node2', ip: '192.168.1.102', podCidr: '10.244.2.0/24' }],
    pods: [], services: [], cri: cri as TestbedCri,
  };
}

const sandbox = { id: 'a'.repeat(64), node: 't1-node1', namespace: 'default', name: 'frontend', uid: 'u', ip: '10.244.1.100', netns: 'cni-5017f1d2-7c47-1547-7561-7aae37b44dce' };

test('what up records for the runtime passes, also half made (a sandbox without its netns yet, a containerd without a pid)', () => {
  const ok = { runtime: 'containerd 1.6.20', nodes: [node('t1-node1'), { ...node('t1-node2'), pid: null }], sandboxes: [sandbox, { ...sandbox, id: 'b'.repeat(64), netns: '', ip: '' }] };
  assert.deepEqual(parseState(JSON.stringify(state(ok)), 't1-', FILE).cri, ok);
  assert.equal(criNodeDir('t1-node1'), '/run/nettrace/testbed/t1-node1.cri');
  assert.equal(criCgroupParent('t1-node1'), '/nettrace-testbed-t1-node1');
});

test('a cri entry naming anything else is refused before down touches it', () => {
  const bad: [string, unknown][] = [
    ['not an object', 'x'],
    ['no sandboxes', { nodes: [] }],
    ['another directory', { nodes: [{ ...node('t1-node1'), dir: '/' }], sandboxes: [] }],
    ['a directory of another cluster', { nodes: [{ ...node('t2-node1') }], sandboxes: [] }],
    ['another socket', { nodes: [{ ...node('t1-node1'), socket: '/run/containerd/containerd.sock' }], sandboxes: [] }],
    ['another network (libcni cache names)', { nodes: [{ ...node('t1-node1'), network: 'cbr0' }], sandboxes: [] }],
    ['a pid that is not a number', { nodes: [{ ...node('t1-node1'), pid: '1; rm -rf /' }], sandboxes: [] }],
    ['a netns that is not cni-<uuid>', { nodes: [], sandboxes: [{ ...sandbox, netns: 't1-node1' }] }],
    ['a netns with a path', { nodes: [], sandboxes: [{ ...sandbox, netns: '../../etc' }] }],
    ['an id that is not containerd\'s', { nodes: [], sandboxes: [{ ...sandbox, id: '../x' }] }],
  ];
  for (const [why, cri] of bad) assert.throws(() => parseState(JSON.stringify(state(cri)), 't1-', FILE), broken(/cri entry|containerd|sandbox/), why);
});

test('--cri only with the flannel modes: the others are refused in one line, before anything is made', async () => {
  assert.deepEqual(CRI_MODES, ['flannel-vxlan', 'flannel-host-gw']);
  for (const m of CRI_MODES) checkCriMode(m);
  for (const m of ['calico-bgp', 'calico-vxlan', 'calico-ipip', 'weave'] as const) {
    assert.throws(() => checkCriMode(m), (e: unknown) => e instanceof NettraceError &&
      e.line() === `nettrace: E_TESTBED: testbed up --cri makes pods with the CNI bridge plugin on cni0, which ${m} has not; use --cri with --cni flannel-vxlan or --cni flannel-host-gw`);
  }
  // refused before the prefix's state file or any namespace is looked at
  await assert.rejects(testbedUpCri({ cri: true, cni: 'weave', prefix: 'never-made-' }), /which weave has not/);
});
