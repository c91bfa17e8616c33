// follow in every CNI mode of the test cluster: each mode's own devices, and the steps it does
// not have reported as such, on real namespaces with real traffic.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import type { PacketPath } from '../../src/flow/path';
import { kernelHasIpip } from '../../src/testbed/modes';
import type { CniMode } from '../../src/topology/cni';
import { jsonLines, NETTRACE, nsExec, startFollow, withTestbed } from '../helpers/cluster';
import { needsRoot } from '../helpers/privileged';

const A = '10.244.1.5';
const B = '10.244.2.8';

/** The request's hops: [step, node (1 sends, 2 receives), device (a prefix for veths), hook]. */
const EXPECT: Record<Exclude<CniMode, 'flannel-vxlan' | 'calico-ipip'>, { hops: [number, 1 | 2, string, string][]; skipped: [number, 1 | 2, string][] }> = {
  'flannel-host-gw': {
    hops: [[1, 1, 'eth0', 'egress'], [2, 1, 'veth', 'ingress'], [3, 1, 'cni0', 'ingress'], [4, 1, 'eth0', 'egress'],
      [6, 2, 'eth0', 'ingress'], [8, 2, 'cni0', 'egress'], [9, 2, 'veth', 'egress'], [9, 2, 'eth0', 'ingress']],
    skipped: [[5, 1, 'no encapsulation'], [7, 2, 'no encapsulation']],
  },
  'calico-bgp': {
    hops: [[1, 1, 'eth0', 'egress'], [2, 1, 'cali', 'ingress'], [4, 1, 'eth0', 'egress'], [6, 2, 'eth0', 'ingress'],
      [8, 2, 'cali', 'egress'], [9, 2, 'eth0', 'ingress']],
    skipped: [[3, 1, 'no bridge'], [5, 1, 'no encapsulation'], [7, 2, 'no encapsulation']],
  },
  'calico-vxlan': {
    hops: [[1, 1, 'eth0', 'egress'], [2, 1, 'cali', 'ingress'], [4, 1, 'vxlan.calico', 'egress'], [5, 1, 'eth0', 'egress'],
      [6, 2, 'eth0', 'ingress'], [7, 2, 'vxlan.calico', 'ingress'], [8, 2, 'cali', 'egress'], [9, 2, 'eth0', 'ingress']],
    skipped: [[3, 1, 'no bridge']],
  },
  weave: {
    hops: [[1, 1, 'eth0', 'egress'], [2, 1, 'veth', 'ingress'], [3, 1, 'weave', 'ingress'], [4, 1, 'vxlan-6784', 'egress'],
      [5, 1, 'eth0', 'egress'], [6, 2, 'eth0', 'ingress'], [7, 2, 'vxlan-6784', 'ingress'], [8, 2, 'weave', 'egress'],
      [9, 2, 'veth', 'egress'], [9, 2, 'eth0', 'ingress']],
    skipped: [],
  },
};

for (const [mode, want] of Object.entries(EXPECT) as [keyof typeof EXPECT, (typeof EXPECT)[keyof typeof EXPECT]][]) {
  test(`${mode}: a ping and its reply on the mode's own devices, missing steps named`, async (t) => {
    if (!needsRoot(t)) return;
    const tb = withTestbed(t, { cni: mode });
    const nodes = tb.nodes.map((n) => n.netns);
    if (mode === 'calico-bgp') {
      // the routes between the nodes came from BGP sessions, not from us
      assert.match(spawnSync('ip', ['-n', nodes[0]!, 'route', 'show', '10.244.2.0/24'], { encoding: 'utf8' }).stdout, /via 192\.168\.1\.102 dev eth0 proto bird/);
    }
    const f = await startFollow(t, ['--nodes', nodes.join(','), '--flow', `${A} -> ${B}`, '-o', 'json', '--count', '2', '--timeout', '10']);
    assert.match(f.stderr(), new RegExp(`; ${mode}\\)`), 'the mode is detected from the nodes');
    if (mode === 'weave') {
      const o = spawnSync(NETTRACE, ['follow', '--nodes', nodes.join(','), '--flow', `${A} -> ${B}`, '--cni', 'flannel-vxlan', '--timeout', '0.5'], { encoding: 'utf8' });
      assert.match(o.stderr, /; flannel-vxlan\)/, '--cni overrides what was detected');
    }
    const podA = tb.pods.find((p) => p.name === 'pod-a')!.netns;
    assert.equal(nsExec(podA, ['ping', '-c', '1', '-W', '2', B]).status, 0);
    await f.exited;
    const paths = jsonLines<PacketPath>(f.stdout());
    assert.equal(paths.length, 2, f.stderr());
    for (const p of paths) {
      const [from, to] = p.direction === 'request' ? [nodes[0], nodes[1]] : [nodes[1], nodes[0]];
      const nodeOf = (n: 1 | 2) => (n === 1 ? from : to);
      assert.equal(p.complete, true, JSON.stringify(p));
      assert.deepEqual(p.steps.map((h) => h.step), want.hops.map((h) => h[0]), `${p.direction} steps`);
      p.steps.forEach((h, i) => {
        const [, n, dev, hook] = want.hops[i]!;
        assert.equal(h.node, nodeOf(n), `${p.direction} hop ${i} node`);
        assert.ok(h.device.startsWith(dev), `${p.direction} hop ${i}: ${h.device}, wanted ${dev}`);
        assert.equal(h.hook, hook);
      });
      assert.deepEqual((p.skipped ?? []).map((s) => [s.step, s.node, s.reason]), want.skipped.map(([s, n, r]) => [s, nodeOf(n), r]));
    }
  });
}

test('calico-ipip: with IPIP in the kernel, the path through tunl0; without, one clear line and nothing left', async (t) => {
  if (!needsRoot(t)) return;
  if (kernelHasIpip()) {
    const tb = withTestbed(t, { cni: 'calico-ipip' });
    const f = await startFollow(t, ['--nodes', tb.nodes.map((n) => n.netns).join(','), '--flow', `${A} -> ${B}`, '-o', 'json', '--count', '1', '--timeout', '10']);
    assert.equal(nsExec(tb.pods[0]!.netns, ['ping', '-c', '1', '-W', '2', B]).status, 0);
    await f.exited;
    const [p] = jsonLines<PacketPath>(f.stdout());
    assert.equal(p?.complete, true);
    assert.ok(p!.steps.some((h) => h.device === 'tunl0' && h.step === 4));
    return;
  }
  t.diagnostic('this kernel has no IPIP: the cluster cannot be built; parsing is tested with crafted packets (test/bpf)');
  const prefix = `ntipip${process.pid % 10000}-`;
  const r = spawnSync(NETTRACE, ['testbed', 'up', '--cni', 'calico-ipip', '--prefix', prefix], { encoding: 'utf8' });
  assert.equal(r.status, 7, r.stderr);
  assert.match(r.stderr, /^nettrace: E_TESTBED: calico-ipip needs IPIP tunnels, and this kernel has none \(CONFIG_NET_IPIP\); use a kernel with the ipip module/);
  assert.equal(r.stderr.trim().split('\n').length, 1);
  assert.doesNotMatch(spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout, new RegExp(prefix));
});

test('calico-bgp without bird2: one clear line, exit 7, nothing left', (t) => {
  if (!needsRoot(t)) return;
  const prefix = `ntnobird${process.pid % 10000}-`;
  const r = spawnSync(NETTRACE, ['testbed', 'up', '--cni', 'calico-bgp', '--prefix', prefix], { encoding: 'utf8', env: { ...process.env, NETTRACE_BIRD: '/nonexistent/bird' } });
  assert.equal(r.status, 7, r.stderr);
  assert.match(r.stderr, /^nettrace: E_TESTBED: calico-bgp needs bird2 \(BGP between the nodes\), and `bird` is not installed; install it: apt-get install bird2/);
  assert.equal(r.stderr.trim().split('\n').length, 1);
  assert.doesNotMatch(spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout, new RegExp(prefix));
});
