// NetworkPolicies on the test cluster's Calico modes (`nettrace testbed policy`), enforced in
// Felix's iptables layout, and what diagnose says about them; and an nftables drop rule, which
// diagnose names by its nft table and chain. Real namespaces, real traffic, real netfilter.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import type { Diagnosis } from '../../src/flow/verdict';
import type { TestbedState } from '../../src/testbed/testbed';
import type { CniMode } from '../../src/topology/cni';
import { NETTRACE, nsExec, nsSpawn, withTestbed } from '../helpers/cluster';
import { needsRoot } from '../helpers/privileged';
import { clientNs, clientRun, startNodeAgents, tokenFile } from '../helpers/remote';

const A = '10.244.1.5';
const B = '10.244.2.8';

function policyFile(t: TestContext, name: string, text: string): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'nt-policy-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, name);
  writeFileSync(file, text);
  return file;
}

const DENY_B = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: deny-pod-b
  namespace: default
spec:
  podSelector:
    matchLabels:
      app: pod-b
  policyTypes:
  - Ingress
`;

// the same policy, now admitting pod-a on the iperf port
const ALLOW_A = `${DENY_B}  ingress:
  - from:
    - podSelector:
        matchLabels:
          app: pod-a
    ports:
    - protocol: TCP
      port: 5201
`;

function nettrace(tb: TestbedState, args: string[]) {
  return spawnSync(NETTRACE, [...args, '--prefix', tb.prefix], { encoding: 'utf8', timeout: 30_000 });
}

function diagnose(tb: TestbedState): Diagnosis {
  const nodes = tb.nodes.map((n) => n.netns).join(',');
  const r = spawnSync(NETTRACE, ['diagnose', '--netns', nodes, '--flow', `${A} -> ${B}:5201`, '--proto', 'tcp', '-o', 'json'], { encoding: 'utf8', timeout: 60_000 });
  assert.match(r.stderr, /^ready: diagnosing/m);
  const d = JSON.parse(r.stdout) as Diagnosis;
  assert.equal(r.status, d.healthy ? 0 : 10, r.stderr);
  return d;
}

function filterTable(netns: string): string {
  return nsExec(netns, ['iptables-save', '-t', 'filter']).stdout;
}

/** iperf3 listening in pod-b: a healthy TCP flow has someone to answer it. */
function serveB(t: TestContext, tb: TestbedState): void {
  const pod = tb.pods.find((p) => p.name === 'pod-b')!.netns;
  nsSpawn(t, pod, ['iperf3', '-s', '-p', '5201']);
  for (let i = 0; i < 50 && !nsExec(pod, ['ss', '-ltn']).stdout.includes(':5201'); i++) spawnSync('sleep', ['0.1']);
}

for (const mode of ['calico-bgp', 'calico-vxlan'] as CniMode[]) {
  test(`policy ${mode}: a deny-ingress policy on pod-b is network-policy naming it; allowing the port makes the flow healthy; delete removes the chains`, (t) => {
    if (!needsRoot(t)) return;
    const tb = withTestbed(t, { cni: mode });
    const node2 = tb.nodes[1]!.netns;
    serveB(t, tb);

    const applied = nettrace(tb, ['testbed', 'policy', 'apply', policyFile(t, 'deny.yaml', DENY_B)]);
    assert.equal(applied.status, 0, applied.stderr);
    assert.equal(applied.stdout, 'policy default/deny-pod-b applied; selects default/pod-b\n');
    // Felix's layout on pod-b's node only
    const rules = filterTable(node2);
    assert.match(rules, /^-A FORWARD -m comment --comment "cali:wUHhoiAYhphO9Mso" -j cali-FORWARD$/m);
    assert.match(rules, /^-A cali-tw-cali[0-9a-f]{11} .*"Policy default\/knp\.default\.deny-pod-b ingress" -m mark --mark 0x0\/0x20000 -j cali-pi-_\S{19}$/m);
    assert.doesNotMatch(filterTable(tb.nodes[0]!.netns), /cali-/, 'node1 hosts no selected pod');

    const d = diagnose(tb);
    assert.equal(d.cause, 'network-policy');
    assert.equal(d.reason, 'NETFILTER_DROP');
    assert.equal(d.node, node2);
    assert.ok(d.detail.startsWith(`default/deny-pod-b: ingress to pod ${tb.prefix}pod-b, no rule allows tcp/5201 from ${A}; dropped on ${node2} by iptables filter table, chain cali-tw-cali`), d.detail);
    assert.match(d.detail, /"End of tier default\. Drop if no policies passed packet" -m mark --mark 0x0\/0x20000 -j DROP \(\d+ packets? during the probes\)/);
    assert.match(d.next, /^kubectl describe networkpolicy deny-pod-b -n default: add an ingress rule that allows tcp\/5201 from 10\.244\.1\.5/);

    const allowed = nettrace(tb, ['testbed', 'policy', 'apply', policyFile(t, 'allow.yaml', ALLOW_A)]);
    assert.equal(allowed.status, 0, allowed.stderr);
    assert.equal(nettrace(tb, ['testbed', 'policy', 'list']).stdout, 'default/deny-pod-b Ingress podSelector app=pod-b\n', 'replaced, not added');
    const ok = diagnose(tb);
    assert.equal(ok.cause, 'none', ok.detail);

    const deleted = nettrace(tb, ['testbed', 'policy', 'delete', 'deny-pod-b']);
    assert.equal(deleted.status, 0, deleted.stderr);
    assert.doesNotMatch(filterTable(node2), /cali-/, 'every chain and the FORWARD hook gone');
  });
}

test('policy: a file that is not a supported NetworkPolicy changes nothing; flannel refuses policies with the reason', (t) => {
  if (!needsRoot(t)) return;
  const tb = withTestbed(t, { cni: 'calico-bgp' });
  const before = filterTable(tb.nodes[1]!.netns).replace(/^#.*\n/gm, '');
  const bad = nettrace(tb, ['testbed', 'policy', 'apply', policyFile(t, 'bad.yaml', DENY_B.replace('  policyTypes:', '  ingress:\n  - from:\n    - ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}\n  policyTypes:'))]);
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /^nettrace: E_USAGE: \S+bad\.yaml: spec\.ingress\[0\]\.from\[0\]\.ipBlock\.except is not supported; [^\n]+\n$/);
  assert.equal(filterTable(tb.nodes[1]!.netns).replace(/^#.*\n/gm, ''), before);
  assert.equal(nettrace(tb, ['testbed', 'policy', 'list']).stdout, '');

  // node2 refuses at commit (a rule of someone else's uses a cali- chain it would delete): node1, changed first, is put back
  const [n1, n2] = [tb.nodes[0]!.netns, tb.nodes[1]!.netns];
  for (const cmd of [['-N', 'cali-pi-_stale'], ['-A', 'INPUT', '-j', 'cali-pi-_stale']]) assert.equal(nsExec(n2, ['iptables', ...cmd]).status, 0);
  const n1Before = filterTable(n1).replace(/^#.*\n/gm, '');
  const all = nettrace(tb, ['testbed', 'policy', 'apply', policyFile(t, 'all.yaml', 'apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: all}\nspec: {podSelector: {}}\n')]);
  assert.equal(all.status, 7, all.stderr);
  assert.match(all.stderr, /^nettrace: E_TESTBED: iptables-restore on \S+node2 refused the policy chains: .*; no node was left changed; [^\n]*\n$/);
  assert.equal(filterTable(n1).replace(/^#.*\n/gm, ''), n1Before, 'node1 as it was');
  assert.equal(nettrace(tb, ['testbed', 'policy', 'list']).stdout, '', 'the state file unchanged');

  const fl = withTestbed(t, { cni: 'flannel-vxlan' });
  const refused = nettrace(fl, ['testbed', 'policy', 'apply', policyFile(t, 'deny.yaml', DENY_B)]);
  assert.equal(refused.status, 2);
  assert.match(refused.stderr, /^nettrace: E_USAGE: the test cluster is flannel-vxlan, which enforces no NetworkPolicies: flannel has no policy engine .*; take it down and bring up a Calico mode: .*--cni calico-bgp\n$/);
  assert.doesNotMatch(filterTable(fl.nodes[1]!.netns), /cali-/);
});

test('diagnose: a drop rule in an nftables table of its own is netfilter-drop naming the nft table, chain and rule', (t) => {
  if (!needsRoot(t)) return;
  const tb = withTestbed(t, { cni: 'calico-bgp' });
  serveB(t, tb);
  const node1 = tb.nodes[0]!.netns;
  for (const cmd of [['add', 'table', 'inet', 'lab'], ['add', 'chain', 'inet', 'lab', 'guard', '{ type filter hook forward priority 0; }'], ['add', 'rule', 'inet', 'lab', 'guard', 'ip', 'daddr', B, 'tcp', 'dport', '5201', 'counter', 'drop']]) {
    const r = nsExec(node1, ['nft', ...cmd]);
    assert.equal(r.status, 0, r.stderr);
  }
  const d = diagnose(tb);
  assert.equal(d.cause, 'netfilter-drop');
  assert.equal(d.reason, 'NETFILTER_DROP');
  assert.equal(d.node, node1);
  assert.match(d.detail, /: nft table inet lab, chain guard: ip daddr 10\.244\.2\.8 tcp dport 5201 counter drop # handle \d+ \(\d+ packets? during the probes\)$/);
  assert.match(d.next, /nft -a list chain inet lab guard/);
});

test('diagnose --agents on calico-bgp: the policy is named from the node the agent reads (its rule comments)', async (t) => {
  if (!needsRoot(t)) return;
  const tb = withTestbed(t, { cni: 'calico-bgp' });
  serveB(t, tb);
  const token = tokenFile(t);
  const agents = await startNodeAgents(t, tb, token);
  const client = await clientNs(t, tb);
  const applied = nettrace(tb, ['testbed', 'policy', 'apply', policyFile(t, 'deny.yaml', DENY_B)]);
  assert.equal(applied.status, 0, applied.stderr);
  const r = clientRun(client, ['diagnose', '--agents', agents.map((a) => a.url).join(','), '--token-file', token, '-o', 'json', '--flow', `${A} -> ${B}:5201`, '--proto', 'tcp']);
  const d = JSON.parse(r.stdout) as Diagnosis;
  assert.equal(r.status, 10, r.stderr);
  assert.equal(d.cause, 'network-policy', JSON.stringify(d));
  assert.match(d.detail, /^default\/deny-pod-b: ingress to pod \S+pod-b, no rule allows tcp\/5201 from 10\.244\.1\.5; dropped on \S+ by iptables filter table, chain cali-tw-cali[0-9a-f]{11}: /);
});

test('policy calico-bgp: an egress policy on pod-a that admits only another port is network-policy on node1, egress from pod-a', (t) => {
  if (!needsRoot(t)) return;
  const tb = withTestbed(t, { cni: 'calico-bgp' });
  serveB(t, tb);
  const egress = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-out}
spec:
  podSelector: {matchLabels: {app: pod-a}}
  policyTypes: [Egress]
  egress:
  - to:
    - podSelector: {matchLabels: {app: pod-b}}
    ports:
    - {protocol: TCP, port: 80}
`;
  const applied = nettrace(tb, ['testbed', 'policy', 'apply', policyFile(t, 'egress.yaml', egress)]);
  assert.equal(applied.status, 0, applied.stderr);
  const d = diagnose(tb);
  assert.equal(d.cause, 'network-policy');
  assert.equal(d.node, tb.nodes[0]!.netns);
  assert.ok(d.detail.startsWith(`default/a-out: egress from pod ${tb.prefix}pod-a, no rule allows tcp/5201 to ${B}; dropped on ${tb.nodes[0]!.netns} by iptables filter table, chain cali-fw-cali`), d.detail);
});
