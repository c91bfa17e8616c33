// nettrace agent on a node with 250 pods: ready once the node's own devices are attached, pods'
// following in the background (counted in /healthz and nettrace_agent_attached_hooks); every pod
// found (more than `ip netns list-id` lists) and attached; nothing of ours left after SIGTERM.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { freePort, sample, scrape, startAgent, waitFor } from '../helpers/agent';
import { withTestbed } from '../helpers/cluster';
import { needsRoot } from '../helpers/privileged';

const PODS = 250;

function ipBatch(args: string[], lines: string[]): void {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'nt-pods-'));
  try {
    writeFileSync(path.join(dir, 'batch'), lines.join('\n') + '\n');
    const r = spawnSync('ip', [...args, '-b', path.join(dir, 'batch')], { encoding: 'utf8', timeout: 120_000 });
    assert.equal(r.status, 0, r.stderr);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** PODS namespaces, each with a veth on node's cni0; deleted when the test ends. */
function manyPods(t: TestContext, node: string, prefix: string): string[] {
  const names = Array.from({ length: PODS }, (_, i) => `${prefix}mp${i}`);
  t.after(() => {
    ipBatch(['-force'], names.map((n) => `netns del ${n}`));
  });
  ipBatch([], names.map((n) => `netns add ${n}`));
  ipBatch(['-n', node], names.flatMap((n, i) => [`link add mp${i} type veth peer name eth0 netns ${n}`, `link set mp${i} master cni0 up`]));
  return names;
}

interface Health {
  attached_hooks: number;
  attaching_devices: number;
}

const health = async (url: string) => (await (await fetch(`${url}/healthz`)).json()) as Health;
const ourProgs = () => spawnSync('bpftool', ['prog', 'show'], { encoding: 'utf8' }).stdout.match(/name nt_(agent_\d|kfree_skb|tcp_retransmit)/g)?.length ?? 0;

/** Our classic-tc filters (priority 0x4e54, program nt_*) on every device of these namespaces. */
function ourTcFilters(namespaces: string[]): number {
  let n = 0;
  for (const ns of namespaces) {
    const links = JSON.parse(spawnSync('ip', ['-n', ns, '-j', 'link', 'show'], { encoding: 'utf8' }).stdout || '[]') as { ifname: string }[];
    const input = links.flatMap((l) => [`filter show dev ${l.ifname} ingress\n`, `filter show dev ${l.ifname} egress\n`]).join('');
    const out = spawnSync('tc', ['-n', ns, '-j', '-b', '-'], { input, encoding: 'utf8' }).stdout;
    for (const line of out.split('\n').filter((l) => l.startsWith('['))) {
      const rows = JSON.parse(line) as { pref?: number; options?: { prog?: { name?: string } } }[];
      n += rows.filter((r) => r.pref === 0x4e54 && r.options?.prog?.name?.startsWith('nt_')).length;
    }
  }
  return n;
}

// eth0, flannel.1, cni0 and the testbed's pod A (host veth, eth0), then 2 devices a pod: both hooks each
const ALL_HOOKS = 2 * (3 + 2 + 2 * PODS);

for (const mechanism of ['tcx', 'tc', 'mixed'] as const) {
  test(`agent on a node with ${PODS} pods (--attach ${mechanism}): ready with the node's devices, every pod attached after, nothing left after SIGTERM`, async (t) => {
    if (!needsRoot(t)) return;
    const tb = withTestbed(t);
    const node1 = tb.nodes[0]!.netns;
    const pods = manyPods(t, node1, tb.prefix);
    const before = ourProgs();
    const agent = await startAgent(t, await freePort(), ['--nodes', node1, '--attach', mechanism, '--rescan', '600000']);

    const atReady = await health(agent.url);
    assert.ok(atReady.attached_hooks >= 6, `node devices attached at ready: ${JSON.stringify(atReady)}`);
    if (mechanism === 'tcx') {
      // each tcx link waits for an RCU grace period: 1,000 links cannot all be there at ready
      assert.ok(atReady.attaching_devices > 0 && atReady.attached_hooks < ALL_HOOKS, `pods still attaching at ready: ${JSON.stringify(atReady)}`);
      assert.match(agent.stderr(), /^ready: .* \d+ pod devices attaching in the background/m);
    }
    const done = await waitFor('every pod attached', async () => {
      const h = await health(agent.url);
      return h.attaching_devices === 0 && h.attached_hooks === ALL_HOOKS && h;
    }, 120_000);
    assert.equal(done.attached_hooks, ALL_HOOKS);
    assert.equal(sample(await scrape(agent.url), 'nettrace_agent_attached_hooks', {}), ALL_HOOKS);
    if (atReady.attaching_devices > 0) assert.match(agent.stderr(), new RegExp(`^attached: ${ALL_HOOKS} hooks on ${ALL_HOOKS / 2} devices, every pod's`, 'm'));
    if (mechanism !== 'tcx') assert.ok(ourTcFilters([node1]) > 0, 'tc filters of ours while running');

    agent.child.kill('SIGTERM');
    assert.equal(await agent.exited, 0);
    await waitFor('our programs unloaded', async () => ourProgs() === before, 10_000);
    assert.equal(ourTcFilters([node1, ...pods.slice(0, 20), ...pods.slice(-20)]), 0, 'no tc filter of ours left');
    // clsact qdiscs we made are gone with our filters
    for (const ns of [node1, ...pods.slice(0, 10), ...pods.slice(-10)]) {
      assert.doesNotMatch(spawnSync('tc', ['-n', ns, 'qdisc', 'show'], { encoding: 'utf8' }).stdout, /clsact/, `a clsact qdisc left in ${ns}`);
    }
  });
}
