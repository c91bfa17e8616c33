// Test-cluster pods made by a real containerd (Debian's) through its CRI: names found through the
// CRI sockets, joined onto the pods discovery finds by their devices, real pings between the two
// sandboxes followed across the nine steps, and a down that leaves nothing behind.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { createCriSource } from '../../src/k8s/cri';
import { joinIdentities } from '../../src/k8s/join';
import { CNI_RESULTS_DIR, criCgroupParent, criNodeDir } from '../../src/testbed/cri';
import type { TestbedState } from '../../src/testbed/state';
import { testbedDown } from '../../src/testbed/testbed';
import { discoverCluster } from '../../src/topology/discover';
import type { CniMode } from '../../src/topology/cni';
import { namedNetns } from '../../src/topology/netns';
import { NETTRACE, nsSpawn, startFollow } from '../helpers/cluster';
import { needsRoot } from '../helpers/privileged';

let counter = 0;

function nettrace(args: string[], timeoutMs = 120_000): { status: number | null; stdout: string; stderr: string; ms: number } {
  const t0 = Date.now();
  const r = spawnSync(NETTRACE, args, { encoding: 'utf8', timeout: timeoutMs });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, ms: Date.now() - t0 };
}

function stateOf(prefix: string): TestbedState {
  return JSON.parse(readFileSync(`/run/nettrace/testbed/${prefix}.json`, 'utf8')) as TestbedState;
}

/** `testbed up --cri` with a prefix of our own, taken down (through the CLI, then again directly) when the test ends. */
function upCri(t: TestContext, cni: CniMode = 'flannel-vxlan'): { prefix: string; state: TestbedState; upMs: number } {
  const prefix = `ntc${process.pid % 10000}x${counter++}-`;
  t.after(() => {
    nettrace(['testbed', 'down', '--prefix', prefix]);
    testbedDown(prefix);
  });
  const up = nettrace(['testbed', 'up', '--cri', '--cni', cni, '--prefix', prefix]);
  assert.equal(up.status, 0, up.stderr);
  const state = stateOf(prefix);
  assert.ok(state.cri, 'the state file records the runtime');
  assert.match(up.stdout, /containerd 1\.\d+\.\d+\S* \(CRI v1\): default\/frontend 10\.244\.1\.1\d\d, default\/backend 10\.244\.2\.1\d\d; CRI sockets \S+\.sock,\S+\.sock\n/);
  return { prefix, state, upMs: up.ms };
}

/** Whatever of this cluster's runtime is still on the machine: namespaces, processes, cache entries, cgroups, directories. */
function leftovers(state: TestbedState): string[] {
  const cri = state.cri!;
  const left: string[] = [];
  const netns = existsSync('/run/netns') ? readdirSync('/run/netns') : [];
  for (const ns of [...cri.sandboxes.map((s) => s.netns), ...state.nodes.map((n) => n.netns), ...state.pods.map((p) => p.netns)]) {
    if (netns.includes(ns)) left.push(`netns ${ns}`);
  }
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    let cmd = '';
    try {
      cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
    } catch {
      continue;
    }
    if (cri.nodes.some((n) => cmd.includes(`${n.dir}/`)) || cri.sandboxes.some((s) => cmd.includes(s.id))) left.push(`process ${pid} ${cmd}`);
  }
  const results = existsSync(CNI_RESULTS_DIR) ? readdirSync(CNI_RESULTS_DIR) : [];
  for (const f of results) {
    if (cri.sandboxes.some((s) => f.includes(s.id)) || cri.nodes.some((n) => f.startsWith(`${n.network}-`))) left.push(`${CNI_RESULTS_DIR}/${f}`);
  }
  for (const n of cri.nodes) {
    if (existsSync(n.dir)) left.push(n.dir);
    for (const root of readdirSync('/sys/fs/cgroup').map((c) => `/sys/fs/cgroup/${c}`)) {
      if (existsSync(path.join(root, criCgroupParent(n.netns)))) left.push(path.join(root, criCgroupParent(n.netns)));
    }
    if (existsSync(path.join('/sys/fs/cgroup', criCgroupParent(n.netns)))) left.push(path.join('/sys/fs/cgroup', criCgroupParent(n.netns)));
  }
  return [...new Set(left)];
}

for (const cni of ['flannel-vxlan', 'flannel-host-gw'] as const) test(`testbed up --cri --cni ${cni}: containerd pod sandboxes found through the CRI, joined by IP, followed across nine steps; down leaves nothing`, { timeout: 240_000 }, async (t) => {
  if (!needsRoot(t)) return;
  const { prefix, state, upMs } = upCri(t, cni);
  const vxlan = cni === 'flannel-vxlan';
  const cri = state.cri!;
  const [n1, n2] = state.nodes.map((n) => n.netns) as [string, string];
  assert.deepEqual(cri.nodes.map((n) => n.netns), [n1, n2]);
  assert.deepEqual(cri.sandboxes.map((s) => [s.node, `${s.namespace}/${s.name}`]), [[n1, 'default/frontend'], [n2, 'default/backend']]);
  for (const n of cri.nodes) assert.ok(n.pid !== null && existsSync(`/proc/${n.pid}`), `containerd of ${n.netns} runs`);
  // containerd runs inside the node's network namespace
  for (const n of cri.nodes) {
    assert.equal(readFileSync(`/proc/${n.pid}/cmdline`, 'utf8').split('\0')[0], 'containerd');
    assert.equal(statSync(`/proc/${n.pid}/ns/net`).ino, statSync(`/run/netns/${n.netns}`).ino, `containerd of ${n.netns} is in its network namespace`);
  }
  const [front, back] = cri.sandboxes as [typeof cri.sandboxes[0], typeof cri.sandboxes[0]];

  // the CRI source on both nodes' sockets
  const source = createCriSource(cri.nodes.map((n) => n.socket), { pollMs: 500 });
  t.after(() => source.close());
  await source.ready();
  const pods = source.pods().sort((a, b) => a.name.localeCompare(b.name));
  assert.deepEqual(pods, [
    { namespace: 'default', name: 'backend', uid: back.uid, ips: [back.ip], netnsPath: `/var/run/netns/${back.netns}` },
    { namespace: 'default', name: 'frontend', uid: front.uid, ips: [front.ip], netnsPath: `/var/run/netns/${front.netns}` },
  ]);
  assert.match(front.uid, /^[0-9a-f-]{36}$/);
  assert.notEqual(front.uid, back.uid);

  // discovery finds the sandboxes' veths as pods (netns cni-<uuid>); the join names them, and only them
  const cluster = discoverCluster([namedNetns(n1), namedNetns(n2)]);
  const unmatched = joinIdentities(cluster, source);
  const all = cluster.nodes.flatMap((n) => n.pods);
  const frontPod = all.find((p) => p.name === front.netns);
  const backPod = all.find((p) => p.name === back.netns);
  assert.ok(frontPod && backPod, `discovered pods: ${all.map((p) => p.name).join(', ')}`);
  assert.equal(frontPod.node, n1);
  assert.equal(backPod.node, n2);
  assert.deepEqual(frontPod.ips, [front.ip]);
  assert.ok(frontPod.hostVeth.name.startsWith('veth') && frontPod.hostVeth.name !== 'eth0');
  assert.deepEqual(frontPod.k8s, { namespace: 'default', name: 'frontend', uid: front.uid });
  assert.deepEqual(backPod.k8s, { namespace: 'default', name: 'backend', uid: back.uid });
  assert.equal(unmatched, state.pods.length, 'the testbed\'s own pods have no CRI identity');
  for (const p of all) if (!p.name.startsWith('cni-')) assert.equal(p.k8s, undefined, `${p.name} is not the runtime's`);

  // a real ping from inside frontend's sandbox, followed by addresses: all nine steps
  const f = await startFollow(t, ['--netns', `${n1},${n2}`, '--flow', `${front.ip} -> ${back.ip}`, '--count', '1', '--timeout', '30s']);
  const ping = nsSpawn(t, front.netns, ['ping', '-c', '5', '-i', '0.3', back.ip]);
  assert.equal(await f.exited, 0, f.stderr());
  // its last replies must not be the next follow's first packet
  if (ping.exitCode === null) await new Promise((r) => ping.on('exit', r));
  const table = f.stdout();
  assert.match(table, new RegExp(`request ${front.ip.replace(/\./g, '\\.')} -> ${back.ip.replace(/\./g, '\\.')} icmp`));
  assert.match(table, new RegExp(`total [\\d.]+ µs +complete, ${vxlan ? 10 : 8} hops`));
  const steps = vxlan
    ? [[1, n1, `eth0@${front.netns}`], [3, n1, 'cni0'], [4, n1, 'flannel.1'], [5, n1, 'eth0'], [6, n2, 'eth0'], [7, n2, 'flannel.1'], [8, n2, 'cni0'], [9, n2, `eth0@${back.netns}`]]
    : [[1, n1, `eth0@${front.netns}`], [3, n1, 'cni0'], [4, n1, 'eth0'], [5, n1, '(no encapsulation)'], [6, n2, 'eth0'], [7, n2, '(no encapsulation)'], [8, n2, 'cni0'], [9, n2, `eth0@${back.netns}`]];
  for (const [step, node, dev] of steps as [number, string, string][]) {
    assert.match(table, new RegExp(`^  ${step} .* ${node} +${dev.replace(/[.()]/g, '\\$&')}( |$)`, 'm'), `step ${step} on ${node} ${dev}:\n${table}`);
  }

  // the same flow named by the pods' Kubernetes names, the names coming from the CRI sockets
  const byName = await startFollow(t, ['--netns', `${n1},${n2}`, '--cri-socket', cri.nodes.map((n) => n.socket).join(','),
    '--flow', 'default/frontend -> default/backend', '--count', '1', '--timeout', '30s']);
  nsSpawn(t, front.netns, ['ping', '-c', '5', '-i', '0.3', back.ip]);
  assert.equal(await byName.exited, 0, byName.stderr());
  assert.match(byName.stdout(), /eth0@default\/frontend/);
  assert.match(byName.stdout(), /eth0@default\/backend/);
  assert.match(byName.stdout(), new RegExp(`complete, ${vxlan ? 10 : 8} hops`));

  source.close();
  const before = leftovers(state);
  for (const what of [`netns ${front.netns}`, `netns ${back.netns}`, cri.nodes[0]!.dir]) assert.ok(before.includes(what), `the check sees ${what} while up: ${before.join(', ')}`);
  assert.ok(before.some((l) => l.startsWith(CNI_RESULTS_DIR)) && before.some((l) => l.startsWith('process ')));
  const down = nettrace(['testbed', 'down', '--prefix', prefix]);
  assert.equal(down.status, 0, down.stderr);
  assert.deepEqual(leftovers(state), []);
  t.diagnostic(`${cri.runtime}, ${cni}; up ${upMs} ms, down ${down.ms} ms`);
});

test('testbed down after containerd was killed and the sandboxes were never recorded: still nothing left', { timeout: 120_000 }, (t) => {
  if (!needsRoot(t)) return;
  const { prefix, state } = upCri(t);
  // what a `testbed up` killed between RunPodSandbox and writing its state would leave
  for (const n of state.cri!.nodes) process.kill(n.pid!, 'SIGKILL');
  const forgotten = { ...state, cri: { ...state.cri!, sandboxes: [] } };
  writeFileSync(`/run/nettrace/testbed/${prefix}.json`, JSON.stringify(forgotten));
  const down = nettrace(['testbed', 'down', '--prefix', prefix]);
  assert.equal(down.status, 0, down.stderr);
  for (const s of state.cri!.sandboxes) assert.match(down.stdout, new RegExp(s.netns), 'the sandboxes\' namespaces, found through their cgroups');
  assert.deepEqual(leftovers(state), []);
});

test('testbed up --cri refuses the modes without cni0 in one line, and makes nothing', (t) => {
  if (!needsRoot(t)) return;
  const prefix = `ntc${process.pid % 10000}x${counter++}-`;
  t.after(() => testbedDown(prefix));
  const r = nettrace(['testbed', 'up', '--cri', '--cni', 'calico-bgp', '--prefix', prefix]);
  assert.equal(r.status, 7);
  assert.equal(r.stderr, 'nettrace: E_TESTBED: testbed up --cri makes pods with the CNI bridge plugin on cni0, which calico-bgp has not; use --cri with --cni flannel-vxlan or --cni flannel-host-gw\n');
  assert.equal(existsSync(`/run/nettrace/testbed/${prefix}.json`), false);
  assert.equal(existsSync(`/run/netns/${prefix}node1`), false);
});

test('follow --cri-socket with a missing socket: one line, exit 5, nothing attached', (t) => {
  if (!needsRoot(t)) return;
  const sock = `/run/nettrace/no-such-cri-${process.pid}.sock`;
  const r = nettrace(['follow', '--cri-socket', sock, '--flow', 'default/frontend -> default/backend', '--count', '1'], 30_000);
  assert.equal(r.status, 5);
  assert.equal(r.stderr, `nettrace: E_NOT_FOUND: no CRI socket at ${sock}; give --cri-socket PATH of containerd/CRI-O, or --kubeconfig\n`);
  assert.equal(r.stdout, '');
});

test('a containerd that does not start: up fails in one line naming why, and leaves nothing', { timeout: 60_000 }, (t) => {
  if (!needsRoot(t)) return;
  const prefix = `ntc${process.pid % 10000}x${counter++}-`;
  t.after(() => testbedDown(prefix));
  const bin = mkdtempSync(path.join(os.tmpdir(), 'nt-fake-containerd-'));
  t.after(() => rmSync(bin, { recursive: true, force: true }));
  writeFileSync(path.join(bin, 'containerd'), '#!/bin/sh\necho "containerd: failed to load TOML: bad config" >&2\nexit 1\n', { mode: 0o755 });
  const r = spawnSync(NETTRACE, ['testbed', 'up', '--cri', '--prefix', prefix], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, PATH: `${bin}:${process.env.PATH}` } });
  assert.equal(r.status, 7, r.stderr);
  assert.equal(r.stderr, `nettrace: E_TESTBED: testbed up --cri failed: containerd in ${prefix}node1 did not come up (containerd: failed to load TOML: bad config); nothing was left behind; check containerd runs here (containerd --version) and see the cause above\n`);
  assert.equal(existsSync(`/run/nettrace/testbed/${prefix}.json`), false, 'no state file');
  for (const ns of ['node1', 'node2', 'pod-a', 'pod-b']) assert.equal(existsSync(`/run/netns/${prefix}${ns}`), false, `${prefix}${ns} removed`);
  assert.equal(existsSync(criNodeDir(`${prefix}node1`)), false);
});
