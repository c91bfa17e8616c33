// `nettrace testbed policy apply|delete|list`: NetworkPolicies on the test cluster's Calico modes,
// written into each node's filter table as Felix would (src/testbed/netpol.ts), all nodes checked
// before any changes, and a node that fails puts back the nodes already changed.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { NettraceError, usageError } from '../errors';
import { EXEC_TIMEOUT_MS, ipJson, run } from '../exec';
import { NAMESPACE, parsePolicy, renderNode, restoreInput, type NetPolicy, type Workload } from './netpol';
import type { TestbedState } from './state';
import { testbedStatus, writeState } from './testbed';

function upState(prefix: string): TestbedState {
  const s = testbedStatus(prefix);
  if (!s) throw new NettraceError('TESTBED', `no test cluster is up${prefix ? ` with prefix "${prefix}"` : ''}`, 'start one in a Calico mode: nettrace testbed up --cni calico-bgp');
  if (!s.cni.startsWith('calico-')) {
    throw usageError(`the test cluster is ${s.cni}, which enforces no NetworkPolicies: flannel has no policy engine (clusters pair it with Calico's Felix, "canal"), and the testbed writes Felix's chains in Calico modes only`,
      'take it down and bring up a Calico mode: nettrace testbed down; nettrace testbed up --cni calico-bgp');
  }
  return s;
}

/** Every pod as policies see it; its host-side veth read from its /32 route on its node. */
function workloads(s: TestbedState): Workload[] {
  return s.pods.map((p) => {
    const r = ipJson<{ dev?: string }[]>(p.node, ['route', 'show', `${p.ip}/32`])[0];
    if (!r?.dev) throw new NettraceError('TESTBED', `${p.node} has no route to pod ${p.name} (${p.ip})`, 'the test cluster is broken: nettrace testbed down, then up again');
    return { name: p.name, namespace: NAMESPACE, labels: p.labels ?? { app: p.name }, ip: p.ip, iface: r.dev };
  });
}

function restore(netns: string, input: string, test: boolean): void {
  const r = spawnSync('ip', ['netns', 'exec', netns, 'iptables-restore', '--noflush', ...(test ? ['--test'] : [])], { input, encoding: 'utf8', timeout: EXEC_TIMEOUT_MS });
  if (r.status !== 0) {
    // iptables-restore puts the line it failed on after its own name: keep all of it, on one line
    const why = `${r.error?.message ?? ''} ${r.stderr ?? ''}`.replace(/\s+/g, ' ').trim().slice(0, 300) || `exit ${r.status}`;
    throw new NettraceError('TESTBED', `iptables-restore on ${netns} refused the policy chains: ${why}`,
      `no node was left changed; look for a rule outside Calico's chains that uses a cali- chain: ip netns exec ${netns} iptables-save -t filter | grep cali-`);
  }
}

/** Makes every node's cali- chains what these policies say, or changes nothing. */
function sync(s: TestbedState, policies: NetPolicy[]): void {
  const all = workloads(s);
  const plans = s.nodes.map((n) => {
    const saved = run('ip', ['netns', 'exec', n.netns, 'iptables-save', '-t', 'filter']);
    const local = all.filter((w) => s.pods.find((p) => p.name === w.name)!.node === n.netns);
    return { netns: n.netns, saved, to: restoreInput(saved, renderNode(policies, local, all)), back: (after: string) => restoreInput(after, renderNode(s.policies ?? [], local, all)) };
  });
  for (const p of plans) restore(p.netns, p.to, true);
  const done: typeof plans = [];
  try {
    for (const p of plans) {
      restore(p.netns, p.to, false);
      done.push(p);
    }
  } catch (err) {
    // each node's restore is one transaction: only the nodes already changed need putting back
    for (const p of done) restore(p.netns, p.back(run('ip', ['netns', 'exec', p.netns, 'iptables-save', '-t', 'filter'])), false);
    throw err;
  }
  writeState({ ...s, policies });
}

export function policyApply(prefix: string, file: string): { policy: NetPolicy; selected: string[] } {
  const s = upState(prefix);
  if (!existsSync(file) || !statSync(file).isFile()) throw new NettraceError('NOT_FOUND', `no file ${file}`, 'give the path of a NetworkPolicy YAML file');
  const policy = parsePolicy(readFileSync(file, 'utf8'), file);
  const rest = (s.policies ?? []).filter((p) => p.namespace !== policy.namespace || p.name !== policy.name);
  sync(s, [...rest, policy]);
  const selected = s.pods.filter((p) => policy.namespace === NAMESPACE && Object.entries(policy.podSelector).every(([k, v]) => (p.labels ?? { app: p.name })[k] === v)).map((p) => p.name);
  return { policy, selected };
}

export function policyDelete(prefix: string, name: string, namespace = NAMESPACE): NetPolicy {
  const s = upState(prefix);
  const hit = (s.policies ?? []).find((p) => p.namespace === namespace && p.name === name);
  if (!hit) throw new NettraceError('NOT_FOUND', `no NetworkPolicy ${namespace}/${name} on the test cluster`, 'list them: nettrace testbed policy list');
  sync(s, (s.policies ?? []).filter((p) => p !== hit));
  return hit;
}

export function policyList(prefix: string): NetPolicy[] {
  return upState(prefix).policies ?? [];
}
