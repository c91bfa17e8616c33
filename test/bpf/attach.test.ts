// Detaching classic tc filters once a pod's namespace is gone: the pod's ifindex means nothing
// outside it, so nothing in the agent's own namespace (where another device may carry that
// ifindex) may be touched.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { BpfObject, inNetns } from '../../src/libbpf';
import { attachAll } from '../../src/probe/attach';
import { bpfObjectPath } from '../../src/probe/paths';
import type { Device } from '../../src/topology/model';
import { namedNetns } from '../../src/topology/netns';
import { bpfSkipReason } from '../helpers/privileged';

const ip = (args: string[]) => assert.equal(spawnSync('ip', args, { encoding: 'utf8' }).status, 0, args.join(' '));
const ntFilters = (ns: string, dev: string) => ['ingress', 'egress'].flatMap((d) =>
  JSON.parse(spawnSync('tc', ['-n', ns, '-j', 'filter', 'show', 'dev', dev, d], { encoding: 'utf8' }).stdout || '[]') as { options?: { prog?: { name?: string } } }[])
  .filter((f) => f.options?.prog?.name === 'nt_empty').length;

test('tc: a pod whose namespace is gone releases only its own filters, never a device of ours with the same ifindex', { skip: bpfSkipReason() }, (t) => {
  const node = `ntatt${process.pid}-node`;
  const pod = `ntatt${process.pid}-pod`;
  t.after(() => {
    spawnSync('ip', ['netns', 'del', pod]);
    spawnSync('ip', ['netns', 'del', node]);
  });
  ip(['netns', 'add', node]);
  ip(['netns', 'add', pod]);
  // the same ifindex in both namespaces: the agent's own device and the pod's
  ip(['-n', node, 'link', 'add', 'name', 'ne', 'index', '4242', 'type', 'veth', 'peer', 'name', 'ne2']);
  ip(['-n', pod, 'link', 'add', 'name', 'pe', 'index', '4242', 'type', 'veth', 'peer', 'name', 'pe2']);
  const dev = (ns: string, name: string): Device => ({ node: node, netns: namedNetns(ns), ifindex: 4242, name, role: 'pod', mtu: 1500 });

  const obj = BpfObject.open(bpfObjectPath('empty'));
  obj.load();
  t.after(() => obj.close());
  const prog = obj.program('nt_empty');
  const ours = attachAll([dev(node, 'ne')], { ingress: prog, egress: prog }, 'tc');
  const podHooks = attachAll([dev(pod, 'pe')], { ingress: prog, egress: prog }, 'tc');
  assert.equal(ntFilters(node, 'ne'), 2);
  assert.equal(ntFilters(pod, 'pe'), 2);

  ip(['netns', 'del', pod]);
  // released from inside the node's namespace, as an agent running there would
  inNetns(`/run/netns/${node}`, () => podHooks.detach());
  assert.equal(ntFilters(node, 'ne'), 2, 'the node device with the same ifindex keeps its filters');

  ours.detach();
  assert.equal(ntFilters(node, 'ne'), 0);
  assert.doesNotMatch(spawnSync('tc', ['-n', node, 'qdisc', 'show', 'dev', 'ne'], { encoding: 'utf8' }).stdout, /clsact/, 'the clsact we created goes');
});
