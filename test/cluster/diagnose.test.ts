// nettrace diagnose against faults injected on the test cluster, in every CNI mode where the
// fault applies: what it names (step, node, device, kernel reason, cause) and the JSON scripts read.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { spawn, spawnSync } from 'node:child_process';
import { test } from 'node:test';
import type { Diagnosis } from '../../src/flow/verdict';
import { birdFiles, MODES } from '../../src/testbed/modes';
import type { TestbedState } from '../../src/testbed/testbed';
import type { CniMode } from '../../src/topology/cni';
import { NETTRACE, withTestbed } from '../helpers/cluster';
import { needsRoot } from '../helpers/privileged';

const A = '10.244.1.5';
const B = '10.244.2.8';
const MODE_LIST: CniMode[] = ['flannel-vxlan', 'flannel-host-gw', 'calico-bgp', 'calico-vxlan', 'weave'];

function sh(args: string[]): void {
  const r = spawnSync(args[0]!, args.slice(1), { encoding: 'utf8' });
  assert.equal(r.status, 0, `${args.join(' ')}: ${r.stderr}`);
}

function runDiagnose(tb: TestbedState, extra: string[] = []): { d: Diagnosis; table: string } {
  const nodes = tb.nodes.map((n) => n.netns).join(',');
  const r = spawnSync(NETTRACE, ['diagnose', '--nodes', nodes, '--flow', `${A} -> ${B}`, '-o', 'json', ...extra], { encoding: 'utf8', timeout: 60_000 });
  assert.match(r.stderr, /^ready: diagnosing/m);
  const d = JSON.parse(r.stdout) as Diagnosis;
  // the verdict is the exit code too: 0 healthy, 10 broken, 11 slow
  assert.equal(r.status, d.healthy ? 0 : d.cause === 'delay' ? 11 : 10, r.stderr);
  return { d, table: '' };
}

interface Fault {
  name: string;
  applies: (mode: CniMode) => boolean;
  podMtu?: number;
  inject: (tb: TestbedState, mode: CniMode) => void;
  check: (d: Diagnosis, tb: TestbedState, mode: CniMode) => void;
}

const tunnel = (mode: CniMode) => MODES[mode].tunnel?.name;
const hasVxlan = (mode: CniMode) => MODES[mode].tunnel?.kind === 'vxlan';
const node1 = (tb: TestbedState) => tb.nodes[0]!.netns;

const FAULTS: Fault[] = [
  {
    name: 'healthy: says so, with the per-step latencies',
    applies: () => true,
    inject: () => {},
    check: (d) => {
      assert.equal(d.healthy, true);
      assert.equal(d.cause, 'none');
      assert.ok(d.steps.length >= 6 && d.steps.every((s) => s.latency_ns >= 0));
      assert.match(d.detail, /probe packets crossed every step/);
    },
  },
  {
    name: 'MTU: a full-size DF packet that does not fit the tunnel names the device and both MTUs (seed case 3)',
    applies: (m) => hasVxlan(m),
    podMtu: 1500,
    inject: () => {},
    check: (d, tb, mode) => {
      assert.equal(d.cause, 'mtu');
      assert.equal(d.reason, 'PKT_TOO_BIG');
      // the MTU check is routing: the step that failed, after the last hop that saw it
      assert.deepEqual([d.step, d.step_name], [4, 'routing']);
      assert.equal(d.last_seen?.node, node1(tb));
      assert.equal(d.node, node1(tb));
      assert.match(d.detail, new RegExp(`does not fit ${tunnel(mode)!.replace('.', '\\.')} on ${node1(tb)}, MTU 1450`));
      assert.match(d.detail, /the pod's MTU is 1500/);
      assert.match(d.next, /MTU to 1450/);
    },
  },
  {
    name: 'a DROP rule in FORWARD: the step, the netfilter reason and the rule',
    applies: () => true,
    inject: (tb) => sh(['ip', 'netns', 'exec', node1(tb), 'iptables', '-I', 'FORWARD', '-s', A, '-d', B, '-j', 'DROP']),
    check: (d, tb) => {
      assert.equal(d.cause, 'netfilter-drop');
      assert.equal(d.reason, 'NETFILTER_DROP');
      assert.deepEqual([d.step, d.step_name], [4, 'routing'], 'FORWARD is routing');
      assert.equal(d.node, node1(tb));
      assert.match(d.detail, /-A FORWARD -s 10\.244\.1\.5\/32 -d 10\.244\.2\.8\/32 -j DROP/);
    },
  },
  {
    name: 'a missing route on one node (broken CNI): names the node',
    applies: () => true,
    inject: (tb, mode) => {
      if (mode === 'calico-bgp') {
        // BGP stops on node1: bird withdraws what it had learned
        const pid = readFileSync(birdFiles(node1(tb)).pid, 'utf8').trim();
        sh(['kill', pid]);
        for (let i = 0; i < 50 && spawnSync('ip', ['-n', node1(tb), 'route', 'show', '10.244.2.0/24'], { encoding: 'utf8' }).stdout.trim(); i++) spawnSync('sleep', ['0.1']);
      } else {
        sh(['ip', '-n', node1(tb), 'route', 'del', '10.244.2.0/24']);
      }
    },
    check: (d, tb) => {
      assert.equal(d.cause, 'no-route');
      assert.deepEqual([d.step, d.step_name], [4, 'routing']);
      assert.equal(d.node, node1(tb));
      assert.match(d.detail, new RegExp(`${node1(tb)} has no route to 10\\.244\\.2\\.8`));
    },
  },
  {
    name: 'a missing neighbour entry for the remote tunnel address: names the node and the entry',
    applies: (m) => hasVxlan(m),
    inject: (tb, mode) => sh(['ip', '-n', node1(tb), 'neigh', 'del', '10.244.2.0', 'dev', tunnel(mode)!]),
    check: (d, tb, mode) => {
      assert.equal(d.cause, 'no-neighbour');
      // the packet waits in the neighbour queue and never reaches the tunnel's egress: routing did not complete
      assert.deepEqual([d.step, d.step_name], [4, 'routing']);
      assert.equal(d.node, node1(tb));
      assert.match(d.detail, new RegExp(`via 10\\.244\\.2\\.0 on ${tunnel(mode)!.replace('.', '\\.')}, and has no neighbour entry for 10\\.244\\.2\\.0`));
    },
  },
  {
    name: 'a missing FDB entry: names the node, the tunnel and the MAC',
    applies: (m) => hasVxlan(m),
    inject: (tb, mode) => sh(['bridge', '-n', node1(tb), 'fdb', 'del', '0e:6e:74:00:00:02', 'dev', tunnel(mode)!, 'dst', '192.168.1.102']),
    check: (d, tb, mode) => {
      assert.equal(d.cause, 'no-fdb');
      // seen leaving through the tunnel, which has no node to send it to: encapsulation failed
      assert.deepEqual([d.step, d.step_name], [5, 'encapsulation']);
      assert.equal(d.last_seen?.device, tunnel(mode));
      assert.equal(d.node, node1(tb));
      assert.equal(d.device, tunnel(mode));
      assert.match(d.detail, /FDB has no node to send 0e:6e:74:00:00:02 to/);
    },
  },
  {
    // no netem in this kernel: a slow token bucket on node1's eth0 holds the packets instead
    name: 'a delay on one device: names the step that holds it and how much; the other steps stay small',
    applies: () => true,
    inject: (tb) => sh(['ip', 'netns', 'exec', node1(tb), 'tc', 'qdisc', 'add', 'dev', 'eth0', 'root', 'tbf', 'rate', '4kbit', 'burst', '200', 'latency', '5s']),
    check: (d, tb) => {
      assert.equal(d.cause, 'delay');
      assert.equal(d.step, 6);
      assert.equal(d.device, 'eth0');
      assert.match(d.detail, new RegExp(`from eth0 egress on ${node1(tb)} to eth0 ingress on ${tb.nodes[1]!.netns}, holds [\\d.]+ ms`));
      assert.match(d.detail, /the other steps take [\d.]+ µs/);
    },
  },
  {
    name: 'loss on one device: names the step and the loss rate seen',
    applies: () => true,
    inject: (tb) => sh(['ip', 'netns', 'exec', node1(tb), 'tc', 'qdisc', 'add', 'dev', 'eth0', 'root', 'tbf', 'rate', '1kbit', 'burst', '200', 'limit', '200']),
    check: (d, tb, mode) => {
      assert.equal(d.cause, 'loss');
      assert.equal(d.reason, 'QDISC_DROP');
      assert.equal(d.node, node1(tb));
      assert.equal(d.device, 'eth0');
      // seen at eth0 egress, dropped by its qdisc before the wire: the wire (step 6) failed, as a delay there is step 6
      assert.equal(d.step, 6);
      assert.deepEqual(d.last_seen && [d.last_seen.step, d.last_seen.device, d.last_seen.hook], [MODES[mode].tunnel ? 5 : 4, 'eth0', 'egress'], 'the packet left through eth0');
      assert.match(d.detail, /\d+ of \d+ probe packets \(\d+ %\) stopped after eth0/);
    },
  },
];

for (const fault of FAULTS) {
  for (const mode of MODE_LIST.filter(fault.applies)) {
    test(`diagnose ${mode}: ${fault.name}`, (t) => {
      if (!needsRoot(t)) return;
      const tb = withTestbed(t, { cni: mode, ...(fault.podMtu ? { podMtu: fault.podMtu } : {}) });
      fault.inject(tb, mode);
      const { d } = runDiagnose(tb);
      for (const k of ['healthy', 'step', 'step_name', 'node', 'device', 'last_seen', 'reason', 'cause', 'detail', 'steps']) assert.ok(k in d, `JSON has ${k}`);
      fault.check(d, tb, mode);
    });
  }
}

test('diagnose: the table for a person marks the step that failed; bad input is one line', (t) => {
  if (!needsRoot(t)) return;
  const tb = withTestbed(t, { podMtu: 1500 });
  const nodes = tb.nodes.map((n) => n.netns).join(',');
  const r = spawnSync(NETTRACE, ['diagnose', '--nodes', nodes, '--flow', `${A} -> ${B}`], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 10, `BROKEN exits 10: ${r.stderr}`);
  assert.match(r.stdout, /^diagnose 10\.244\.1\.5 -> 10\.244\.2\.8 icmp: BROKEN at step 4 \(routing\)/);
  // the last hop seen stays an ok row; the mark is on the step that failed
  assert.match(r.stdout, /^ {2}ok 3 bridge .*cni0 ingress [^<]*$/m);
  assert.match(r.stdout, /^ {2}!! 4 routing +<== packets stop here$/m);
  assert.match(r.stdout, /-- 5 encapsulation/);
  assert.match(r.stdout, /^cause: mtu \(kernel: PKT_TOO_BIG\)$/m);
  const bad = spawnSync(NETTRACE, ['diagnose', '--nodes', nodes, '--flow', '10.9.9.9 -> 10.244.2.8'], { encoding: 'utf8' });
  assert.equal(bad.status, 5);
  assert.match(bad.stderr, /^nettrace: E_NOT_FOUND: 10\.9\.9\.9 is not a pod in .*; give a pod address as the source, or watch real traffic with --passive\n$/);
  const noPort = spawnSync(NETTRACE, ['diagnose', '--nodes', nodes, '--flow', `${A} -> ${B}`, '--proto', 'tcp'], { encoding: 'utf8' });
  assert.equal(noPort.status, 2);
  assert.match(noPort.stderr, /a tcp probe needs the destination port/);
});

test('diagnose --passive watches real traffic; a node without a known CNI is one line', (t) => {
  if (!needsRoot(t)) return;
  const tb = withTestbed(t);
  const nodes = tb.nodes.map((n) => n.netns).join(',');
  const traffic = spawn('ip', ['netns', 'exec', tb.pods[0]!.netns, 'ping', '-c', '20', '-i', '0.1', B], { stdio: 'ignore' });
  t.after(() => traffic.kill());
  const r = spawnSync(NETTRACE, ['diagnose', '--nodes', nodes, '--flow', `${A} -> ${B}`, '--passive', '--seconds', '1', '-o', 'json'], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.status, 0, r.stderr);
  const d = JSON.parse(r.stdout) as Diagnosis;
  assert.equal(d.cause, 'none');
  assert.ok(d.steps.length >= 8);

  const empty = `${tb.prefix}empty`;
  spawnSync('ip', ['netns', 'add', empty]);
  t.after(() => spawnSync('ip', ['netns', 'del', empty]));
  const bad = spawnSync(NETTRACE, ['diagnose', '--nodes', empty, '--flow', `${A} -> ${B}`], { encoding: 'utf8' });
  assert.equal(bad.status, 5);
  assert.match(bad.stderr, /^nettrace: E_NOT_FOUND: no device to hook in .*empty; name the namespaces that act as nodes with --netns\n$/);
});
