// NetworkPolicy YAML -> the chains Felix would write: what is read, what is refused (one line
// naming the field), the chains and rules, and that diagnose's reader names the policy back.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { NettraceError } from '../../../src/errors';
import { parsePolicy, policyChain, renderNode, restoreInput, type Workload } from '../../../src/testbed/netpol';
import { iptablesDropRules, parseIptablesSave } from '../../../src/topology/netfilter';

const A: Workload = { name: 'pod-a', namespace: 'default', labels: { app: 'pod-a' }, ip: '10.244.1.5', iface: 'cali0000000000a' };
const B: Workload = { name: 'pod-b', namespace: 'default', labels: { app: 'pod-b' }, ip: '10.244.2.8', iface: 'cali0000000000b' };

const yaml = (spec: string, meta = 'name: deny-pod-b') => `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  ${meta}
spec:
${spec}`;

const DENY = yaml(`  podSelector:
    matchLabels: {app: pod-b}
  policyTypes: [Ingress]`);

const ALLOW = yaml(`  podSelector:
    matchLabels: {app: pod-b}
  ingress:
  - from:
    - podSelector: {matchLabels: {app: pod-a}}
    - ipBlock: {cidr: 192.168.0.0/16}
    ports:
    - {protocol: TCP, port: 5201}
    - {protocol: UDP, port: 8000, endPort: 8010}`, 'name: allow-a\n  namespace: default');

test('a deny-all ingress policy: governs ingress, allows nothing; egress untouched', () => {
  assert.deepEqual(parsePolicy(DENY, 'deny.yaml'), { namespace: 'default', name: 'deny-pod-b', podSelector: { app: 'pod-b' }, ingress: [], egress: null });
  // policyTypes left out: Ingress, and Egress only with egress rules
  const p = parsePolicy(yaml('  podSelector: {}\n  egress:\n  - to:\n    - namespaceSelector: {}'), 'f');
  assert.deepEqual([p.ingress, p.egress], [[], [{ peers: [{ pods: {}, namespaces: {} }], ports: null }]]);
});

test('allow rules: pod and CIDR peers, TCP and UDP ports and ranges', () => {
  const p = parsePolicy(ALLOW, 'allow.yaml');
  assert.deepEqual(p.ingress, [{
    peers: [{ pods: { app: 'pod-a' }, namespaces: null }, { cidr: '192.168.0.0/16' }],
    ports: [{ protocol: 'tcp', port: 5201 }, { protocol: 'udp', port: 8000, endPort: 8010 }],
  }]);
});

test('what is not a supported NetworkPolicy is one E_USAGE line naming the field', () => {
  const refused: [string, RegExp][] = [
    [DENY.replace('networking.k8s.io/v1', 'v1'), /f: apiVersion is "v1", not networking\.k8s\.io\/v1/],
    [DENY.replace('kind: NetworkPolicy', 'kind: Pod'), /f: kind is "Pod", not NetworkPolicy/],
    [yaml('  podSelector:\n    matchExpressions: [{key: app, operator: In, values: [x]}]'), /f: spec\.podSelector\.matchExpressions is not supported; use matchLabels/],
    [yaml('  podSelector: {}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}'), /f: spec\.ingress\[0\]\.from\[0\]\.ipBlock\.except is not supported/],
    [yaml('  podSelector: {}\n  ingress:\n  - ports:\n    - port: http'), /f: spec\.ingress\[0\]\.ports\[0\]\.port is the named port "http": named ports are not supported/],
    [yaml('  podSelector: {}\n  ingress:\n  - ports:\n    - {protocol: SCTP, port: 9}'), /spec\.ingress\[0\]\.ports\[0\]\.protocol "SCTP" is not supported; use TCP or UDP/],
    [yaml('  podSelector: {}\n  foo: 1'), /f: spec\.foo is not supported/],
    [yaml('  podSelector: {}\n  policyTypes: [Egress]\n  ingress: []'), /spec\.ingress is given but spec\.policyTypes leaves out Ingress/],
    [yaml('  podSelector: {}', 'name: Bad_Name'), /metadata\.name "Bad_Name" is not a DNS-1123 label/],
    [yaml('  ingress: []'), /spec\.podSelector is missing/],
    [yaml('  podSelector: {}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 10.0.0.0/33}'), /ipBlock\.cidr "10\.0\.0\.0\/33" is not an IPv4 CIDR/],
    [`${DENY}\n---\n${DENY}`, /f: {2}holds 2 YAML documents; give one NetworkPolicy per file/],
    ['a: [1, 2', /f: {2}is not YAML/],
  ];
  for (const [text, re] of refused) {
    assert.throws(() => parsePolicy(text, 'f'), (e: unknown) => {
      assert.ok(e instanceof NettraceError && e.code === 'E_USAGE', String(e));
      const line = `${e.message}; ${e.next}`;
      assert.match(line, re);
      assert.doesNotMatch(line, /\n/, 'one line');
      return true;
    });
  }
});

test('the chains of a deny-all policy on pod-b\'s node: Felix\'s layout, ending in the end-of-tier drop', () => {
  const p = parsePolicy(DENY, 'f');
  const { chains, rules } = renderNode([p], [B], [A, B]);
  const pc = policyChain(p, 'ingress');
  assert.match(pc, /^cali-pi-_[A-Za-z0-9_-]{19}$/, 'a hash of the policy name, 28 characters like Felix\'s');
  assert.deepEqual(chains, ['cali-FORWARD', 'cali-from-wl-dispatch', 'cali-to-wl-dispatch', `cali-tw-${B.iface}`, pc]);
  assert.ok(rules.every((r) => /^-A \S+ -m comment --comment "cali:[A-Za-z0-9_-]{16}"/.test(r)), 'every rule carries a cali: tag');
  assert.ok(rules.some((r) => r.includes(`-o ${B.iface} -g cali-tw-${B.iface}`)));
  assert.match(rules[rules.length - 1]!, /^-A cali-tw-cali0000000000b .*"End of tier default\. Drop if no policies passed packet" -m mark --mark 0x0\/0x20000 -j DROP$/);
  assert.equal(rules.filter((r) => r.startsWith(`-A ${pc} `)).length, 0, 'allows nothing: an empty policy chain');
  // pod-a's node has nothing selected: no chains at all
  assert.deepEqual(renderNode([p], [A], [A, B]), { chains: [], rules: [] });
});

test('an allow rule: one MARK rule per source and port, the policy named in its comment', () => {
  const p = parsePolicy(ALLOW, 'f');
  const pc = policyChain(p, 'ingress');
  const own = renderNode([p], [B], [A, B]).rules.filter((r) => r.startsWith(`-A ${pc} `));
  const comment = '-m comment --comment "Policy default/knp.default.allow-a ingress"';
  assert.equal(own.length, 5, '2 sources x 2 ports, then the return');
  assert.ok(own[0]!.endsWith(`${comment} -s 10.244.1.5/32 -p tcp -m multiport --dports 5201 -j MARK --set-xmark 0x10000/0x10000`), own[0]);
  assert.ok(own[3]!.endsWith(`${comment} -s 192.168.0.0/16 -p udp -m multiport --dports 8000:8010 -j MARK --set-xmark 0x10000/0x10000`), own[3]);
  assert.match(own[4]!, /-m mark --mark 0x10000\/0x10000 -j RETURN$/);
});

test('restore input: cali- chains declared (emptied) and refilled, the FORWARD hook once, the rest deleted', () => {
  const p = parsePolicy(DENY, 'f');
  const want = renderNode([p], [B], [A, B]);
  const fresh = restoreInput('*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n', want);
  assert.match(fresh, /^\*filter\n:cali-FORWARD - \[0:0\]\n/);
  assert.match(fresh, /\n-I FORWARD 1 -m comment --comment "cali:wUHhoiAYhphO9Mso" -j cali-FORWARD\n/);
  assert.match(fresh, /\nCOMMIT\n$/);
  // applied once: the hook is there and an old policy's chain goes
  const applied = `*filter\n:cali-FORWARD - [0:0]\n:cali-pi-_old - [0:0]\n-A FORWARD -m comment --comment "cali:wUHhoiAYhphO9Mso" -j cali-FORWARD\nCOMMIT\n`;
  const again = restoreInput(applied, want);
  assert.doesNotMatch(again, /-I FORWARD/);
  assert.match(again, /\n:cali-pi-_old - \[0:0\]\n[^]*\n-X cali-pi-_old\n/);
  // no policy left: everything of ours goes, FORWARD's other rules stay
  const none = restoreInput(applied, { chains: [], rules: [] });
  assert.deepEqual(none.split('\n'), ['*filter', ':cali-FORWARD - [0:0]', ':cali-pi-_old - [0:0]', '-D FORWARD -m comment --comment "cali:wUHhoiAYhphO9Mso" -j cali-FORWARD', '-X cali-FORWARD', '-X cali-pi-_old', 'COMMIT', '']);
});

test('what the testbed writes, diagnose reads back: the drop names the workload and the policy', () => {
  const deny = parsePolicy(DENY, 'f');
  const allow = parsePolicy(ALLOW, 'f');
  const text = restoreInput('', renderNode([deny, allow], [B], [A, B]));
  assert.equal(parseIptablesSave(text).length, renderNode([deny, allow], [B], [A, B]).rules.length, 'every rule (the hook is an insert)');
  const all = iptablesDropRules(text);
  assert.equal(all.length, 2, 'conntrack\'s INVALID drop and the end of the tier');
  assert.equal(all.find((r) => r.rule.includes('--ctstate INVALID'))!.calico, undefined, 'a broken packet is no policy\'s doing');
  const drops = all.filter((r) => r.calico);
  assert.equal(drops.length, 1);
  assert.deepEqual(drops[0]!.calico, {
    direction: 'ingress', iface: B.iface, explicit: false,
    policies: [
      { namespace: 'default', name: 'deny-pod-b', chain: policyChain(deny, 'ingress') },
      { namespace: 'default', name: 'allow-a', chain: policyChain(allow, 'ingress') },
    ],
  });
});
