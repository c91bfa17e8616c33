// The test cluster's DNS (unbound in its own pod behind the kube-dns ClusterIP) asked from pod A
// by `nettrace diagnose --dns`: healthy with a latency, NXDOMAIN, SERVFAIL, a query dropped on
// the way (the step named), a kube-dns Service without endpoints; and the agent's DNS metrics
// from the same real queries.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import type { DnsDiagnosis } from '../../src/flow/dnsVerdict';
import type { NettraceError } from '../../src/errors';
import { testbedDown, testbedUp } from '../../src/testbed/testbed';
import type { TestbedState } from '../../src/testbed/state';
import type { CniMode } from '../../src/topology/cni';
import { freePort, sample, scrape, startAgent, waitFor } from '../helpers/agent';
import { NETTRACE, nsExec, ROOT, withTestbed } from '../helpers/cluster';
import { needsRoot } from '../helpers/privileged';

const A = '10.244.1.5';
const DNS_VIP = '10.96.0.10';
const DNS_POD = '10.244.2.10';
const CLIENT = path.join(ROOT, 'dist/src/session/dnsQuery.js');

function diagnoseDns(tb: TestbedState, name: string, extra: string[] = []): { code: number | null; d: DnsDiagnosis; stderr: string } {
  const r = spawnSync(NETTRACE, ['diagnose', '--dns', name, '--from', A, '--netns', tb.nodes.map((n) => n.netns).join(','), '-o', 'json', ...extra],
    { encoding: 'utf8', timeout: 60_000 });
  assert.ok(r.stdout.trim(), `no verdict; stderr: ${r.stderr}`);
  return { code: r.status, d: JSON.parse(r.stdout) as DnsDiagnosis, stderr: r.stderr };
}

/** Runs an iptables command in a node now and its undo when the test ends. */
function iptables(t: TestContext, node: string, add: string[], undo: string[]): void {
  const r = spawnSync('ip', ['netns', 'exec', node, 'iptables', ...add], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  t.after(() => {
    spawnSync('ip', ['netns', 'exec', node, 'iptables', ...undo]);
  });
}

for (const cni of ['flannel-vxlan', 'calico-vxlan'] as CniMode[]) {
  test(`diagnose --dns (${cni}): healthy with a latency, NXDOMAIN, SERVFAIL, a dropped query's step, no endpoints`, async (t) => {
    if (!needsRoot(t)) return;
    const tb = withTestbed(t, { cni });
    const [node1, node2] = [tb.nodes[0]!.netns, tb.nodes[1]!.netns];
    const dnsPod = tb.pods.find((p) => p.name === 'dns')!;

    await t.test('healthy: NOERROR, the latency the pod saw, the path to the DNS pod on node2 through the DNAT', () => {
      const { code, d } = diagnoseDns(tb, 'iperf.default.svc.cluster.local');
      assert.equal(code, 0, JSON.stringify(d));
      assert.equal(d.healthy, true);
      assert.equal(d.cause, 'none');
      assert.equal(d.server, DNS_VIP, 'the pod\'s resolv.conf names the kube-dns ClusterIP');
      assert.equal(d.rcode, 'NOERROR');
      assert.ok(d.latency_ns! > 0 && d.latency_ns! < 1e9, `latency ${d.latency_ns}`);
      assert.equal(d.queries.answered, d.queries.sent);
      const last = d.path.steps.at(-1)!;
      assert.equal(last.node, node2, 'the query crossed to node2');
      assert.equal(last.pod, dnsPod.netns, 'and reached the DNS pod');
    });

    await t.test('the table: the DNS line, then the path', () => {
      const r = spawnSync(NETTRACE, ['diagnose', '--dns', 'kube-dns.kube-system.svc.cluster.local', '--from', A, '--netns', `${node1},${node2}`], { encoding: 'utf8', timeout: 60_000 });
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, new RegExp(`^diagnose dns kube-dns\\.kube-system\\.svc\\.cluster\\.local from ${A} via ${DNS_VIP}:53: HEALTHY\\n  queries 3: answered 3 \\(NOERROR, [\\d.]+ [µm]?s\\)`));
      assert.match(r.stdout, /^ {2}ok 9 veth to pod/m);
      assert.match(r.stdout, /^cause: none$/m);
    });

    await t.test('NXDOMAIN: an unknown name in cluster.local; BROKEN (exit 10), no step at fault', () => {
      const { code, d } = diagnoseDns(tb, 'nope.default.svc.cluster.local');
      assert.equal(code, 10);
      assert.equal(d.cause, 'dns-nxdomain');
      assert.equal(d.rcode, 'NXDOMAIN');
      assert.equal(d.step, null);
      assert.equal(d.path.healthy, true, 'the network delivered the queries and answers');
    });

    await t.test('SERVFAIL: a zone whose server refuses', () => {
      const { code, d } = diagnoseDns(tb, 'x.broken.cluster.local');
      assert.equal(code, 10);
      assert.equal(d.cause, 'dns-servfail');
      assert.equal(d.rcode, 'SERVFAIL');
    });

    await t.test('dns-timeout: udp/53 dropped in node2\'s FORWARD; the query died at the step after the last hop that saw it', (tt) => {
      iptables(tt, node2, ['-I', 'FORWARD', '-p', 'udp', '--dport', '53', '-j', 'DROP'], ['-D', 'FORWARD', '-p', 'udp', '--dport', '53', '-j', 'DROP']);
      const { code, d } = diagnoseDns(tb, 'iperf.default.svc.cluster.local');
      assert.equal(code, 10);
      assert.equal(d.cause, 'dns-timeout');
      assert.equal(d.died, 'query');
      assert.equal(d.node, node2);
      assert.equal(d.step, 8, 'routed to the pod side on node2: step 8');
      assert.equal(d.queries.timeouts, d.queries.sent);
      assert.match(d.detail, /the query died at step 8/);
    });

    await t.test('dns-timeout: answers dropped in node1\'s FORWARD on their way back; the answer died, on node1', (tt) => {
      iptables(tt, node1, ['-I', 'FORWARD', '-p', 'udp', '--sport', '53', '-j', 'DROP'], ['-D', 'FORWARD', '-p', 'udp', '--sport', '53', '-j', 'DROP']);
      const { code, d } = diagnoseDns(tb, 'iperf.default.svc.cluster.local');
      assert.equal(code, 10);
      assert.equal(d.cause, 'dns-timeout');
      assert.equal(d.died, 'answer', d.detail);
      assert.equal(d.node, node1);
      assert.match(d.detail, /the answer died at step \d/);
    });

    await t.test('dns-timeout: the DNS server stopped (SIGSTOP): the queries reached its pod, nothing answered', (tt) => {
      process.kill(tb.dns!.pid!, 'SIGSTOP');
      tt.after(() => process.kill(tb.dns!.pid!, 'SIGCONT'));
      const { code, d } = diagnoseDns(tb, 'iperf.default.svc.cluster.local');
      assert.equal(code, 10);
      assert.equal(d.cause, 'dns-timeout');
      assert.equal(d.died, null);
      assert.equal(d.path.healthy, true, 'the network delivered every query');
      assert.match(d.detail, /reached the DNS pod and 0 answers came back: the server did not answer/);
    });

    await t.test('dns-no-endpoints: kube-dns without endpoints, as kube-proxy writes it (no DNAT, a REJECT)', (tt) => {
      const jump = ['KUBE-SVC-KUBEDNS', '-j', 'KUBE-SEP-KUBEDNS0'];
      const reject = ['-d', `${DNS_VIP}/32`, '-p', 'udp', '-m', 'udp', '--dport', '53', '-m', 'comment', '--comment', 'kube-system/kube-dns:dns has no endpoints', '-j', 'REJECT', '--reject-with', 'icmp-port-unreachable'];
      for (const n of [node1, node2]) {
        iptables(tt, n, ['-t', 'nat', '-D', ...jump], ['-t', 'nat', '-A', ...jump]);
        iptables(tt, n, ['-I', 'FORWARD', ...reject], ['-D', 'FORWARD', ...reject]);
      }
      const { code, d } = diagnoseDns(tb, 'iperf.default.svc.cluster.local');
      assert.equal(code, 10, JSON.stringify(d));
      assert.equal(d.cause, 'dns-no-endpoints');
      assert.match(d.detail, /has no endpoints/);
    });

    await t.test('bad input: one line, exit 2, nothing attached', () => {
      const r = spawnSync(NETTRACE, ['diagnose', '--dns', 'a..b', '--from', A, '--netns', `${node1},${node2}`], { encoding: 'utf8', timeout: 30_000 });
      assert.equal(r.status, 2);
      assert.match(r.stderr, /^nettrace: E_USAGE: --dns "a\.\.b" is not a DNS name; /);
      const r2 = spawnSync(NETTRACE, ['diagnose', '--dns', 'iperf.default.svc.cluster.local', '--netns', `${node1},${node2}`], { encoding: 'utf8', timeout: 30_000 });
      assert.equal(r2.status, 2);
      assert.match(r2.stderr, /^nettrace: E_USAGE: --dns and --from go together/);
    });
  });
}

test('the agent on the client\'s node: DNS latency and answers by rcode from real queries, per server', async (t) => {
  if (!needsRoot(t)) return;
  const tb = withTestbed(t);
  const node1 = tb.nodes[0]!.netns;
  const podA = tb.pods.find((p) => p.name === 'pod-a')!.netns;
  const agent = await startAgent(t, await freePort(), ['--nodes', node1]);
  const ask = (name: string) => {
    const r = nsExec(podA, [process.execPath, CLIENT, name, DNS_VIP, '53', '3', '2000'], 20_000);
    assert.equal(r.status, 0, r.stderr);
    return r.stdout;
  };
  assert.match(ask('iperf.default.svc.cluster.local'), /"rcode":0/);
  assert.match(ask('nope.default.svc.cluster.local'), /"rcode":3/);
  const text = await waitFor('DNS metrics', async () => {
    const s = await scrape(agent.url);
    return (sample(s, 'nettrace_dns_responses_total', { server: DNS_POD, rcode: 'NXDOMAIN' }) ?? 0) >= 3 ? s : null;
  }, 10_000);
  // labelled by the server that answered: behind the ClusterIP, the DNS pod (from conntrack)
  assert.equal(sample(text, 'nettrace_dns_responses_total', { node: node1, server: DNS_POD, rcode: 'NOERROR' }), 3);
  assert.equal(sample(text, 'nettrace_dns_responses_total', { node: node1, server: DNS_POD, rcode: 'NXDOMAIN' }), 3);
  assert.equal(sample(text, 'nettrace_dns_request_duration_seconds_count', { node: node1, server: DNS_POD }), 6, 'each query timed once');
  assert.doesNotMatch(text, /server="10\.96\.0\.10"/, 'not by the ClusterIP');
  const sum = sample(text, 'nettrace_dns_request_duration_seconds_sum', { node: node1, server: DNS_POD })!;
  assert.ok(sum > 0 && sum < 6, `sum ${sum} s`);
  assert.equal(sample(text, 'nettrace_map_update_failures_total', { map: 'dns' }), 0);
  assert.doesNotMatch(text, /iperf\.default|nope\.default/, 'no payload in labels');
});

test('testbed down: unbound killed, its files and the pods\' resolv.conf gone; a failed up leaves none of them', (t) => {
  if (!needsRoot(t)) return;
  const tb = withTestbed(t);
  const pid = tb.dns!.pid!;
  assert.ok(existsSync(`/proc/${pid}`), 'unbound runs');
  for (const f of [tb.dns!.conf, ...tb.dns!.resolvConfs]) assert.ok(existsSync(f), f);
  testbedDown(tb.prefix);
  // a zombie is gone too: its reaper (init here) is not us
  assert.ok(!existsSync(`/proc/${pid}`) || /State:\s+Z/.test(readFileSync(`/proc/${pid}/status`, 'utf8')), 'unbound is gone');
  for (const f of [tb.dns!.conf, tb.dns!.pidFile, ...tb.dns!.resolvConfs]) assert.ok(!existsSync(f), `${f} removed`);
  assert.ok(!existsSync(path.dirname(tb.dns!.resolvConfs[0]!)), '/etc/netns/POD removed when empty');

  // unbound fails to start: up fails with one line and leaves nothing
  const prefix = `${tb.prefix}f-`;
  process.env.NETTRACE_UNBOUND = 'false';
  t.after(() => {
    delete process.env.NETTRACE_UNBOUND;
    testbedDown(prefix);
  });
  assert.throws(() => testbedUp({ prefix }), (e: NettraceError) => e.code === 'E_TESTBED' && /unbound|false/.test(e.message));
  delete process.env.NETTRACE_UNBOUND;
  for (const ns of ['node1', 'node2', 'pod-a', 'pod-b', 'dns']) assert.ok(!existsSync(`/run/netns/${prefix}${ns}`), `${prefix}${ns} removed`);
  for (const f of [`/etc/netns/${prefix}pod-a/resolv.conf`, `/run/nettrace/testbed/${prefix}.unbound.conf`, `/run/nettrace/testbed/${prefix}.json`]) assert.ok(!existsSync(f), `${f} removed`);
});
