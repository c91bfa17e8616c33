// diagnose stopped by a signal (the CLI aborts its AbortSignal on SIGINT, SIGTERM, SIGHUP): the
// follow under it is stopped and waited for, so every program is detached, and no verdict is made.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseFlowSpec } from '../../../src/flow/spec';
import { runDiagnose, type DiagnoseTarget } from '../../../src/session/diagnose';
import type { NodeTopology, Pod } from '../../../src/topology/model';

const A = '10.244.1.5';
const B = '10.244.2.8';
const flow = parseFlowSpec(`${A} -> ${B}`, 'icmp');

const node = (name: string, pods: Pod[] = []): NodeTopology => ({
  name, netns: { name, path: `/run/netns/${name}`, ino: 1 }, ip: null, underlay: null, bridge: null, tunnel: null, pods, cni: 'flannel-vxlan',
});

interface Script {
  events: string[];
  target: DiagnoseTarget;
}

/** A target whose follow is ready at once and ends only when stopped; sendProbes as given. */
function scripted(sendProbes: () => Promise<void> = async () => {}): Script {
  const events: string[] = [];
  const pod = { name: 'pod-a', ips: [A], node: 'n1', netns: { name: 'pod-a', path: '/run/netns/pod-a', ino: 2 }, eth: { mtu: 1450 } } as unknown as Pod;
  const target: DiagnoseTarget = {
    where: 'the test nodes', topology: { nodes: [node('n1', [pod]), node('n2')] }, services: [],
    follow: (h) => {
      events.push('attach');
      let end: (n: number) => void = () => {};
      const done = new Promise<number>((r) => (end = r));
      setImmediate(() => h.onReady({ devices: 10, namespaces: 2, attach: 'tcx', modes: ['flannel-vxlan'], atNs: 0 }));
      return {
        done,
        stop: () => {
          events.push('stop');
          // detaching takes a moment: the diagnosis must wait for it
          setTimeout(() => {
            events.push('detached');
            end(0);
          }, 20);
        },
      };
    },
    sendProbes: () => {
      events.push('probes');
      return sendProbes();
    },
    inspect: async () => {
      events.push('inspect');
      return { reach: { route: null }, dropRules: [], mtus: {} };
    },
  };
  return { events, target };
}

async function abortedAfter(ms: number, run: (signal: AbortSignal) => Promise<unknown>): Promise<{ err: unknown; elapsed: number }> {
  const ac = new AbortController();
  const t0 = Date.now();
  setTimeout(() => ac.abort(), ms);
  try {
    await run(ac.signal);
  } catch (err) {
    return { err, elapsed: Date.now() - t0 };
  }
  assert.fail('runDiagnose returned a verdict after the abort');
}

test('a signal during --passive: detached at once (not after --seconds), no verdict', async () => {
  const s = scripted();
  const { err, elapsed } = await abortedAfter(100, (signal) => runDiagnose({ flow, target: s.target, passive: true, seconds: 3600, signal }));
  assert.equal((err as Error).name, 'AbortError');
  assert.ok(elapsed < 1500, `took ${elapsed} ms`);
  assert.deepEqual(s.events, ['attach', 'stop', 'detached']);
});

test('a signal while the probes are out: does not wait for them or the grace time', async () => {
  const s = scripted(() => new Promise(() => {})); // probes that never finish
  const { err, elapsed } = await abortedAfter(300, (signal) => runDiagnose({ flow, target: s.target, passive: false, seconds: 5, signal }));
  assert.equal((err as Error).name, 'AbortError');
  assert.ok(elapsed < 1500, `took ${elapsed} ms`);
  assert.deepEqual(s.events, ['attach', 'probes', 'stop', 'detached']);
});

test('a signal before diagnose starts: nothing is attached', async () => {
  const s = scripted();
  const ac = new AbortController();
  ac.abort();
  await assert.rejects(runDiagnose({ flow, target: s.target, passive: true, seconds: 1, signal: ac.signal }), { name: 'AbortError' });
  assert.deepEqual(s.events, []);
});
