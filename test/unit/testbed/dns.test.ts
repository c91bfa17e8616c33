// The test cluster's DNS: the records and zones unbound is given, the resolv.conf pods get, and
// the state's DNS paths down trusts (it deletes them).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { dnsLayout, dnsPathsOk, dnsRecords, resolvConf, unboundConf } from '../../../src/testbed/dns';
import type { TestbedState } from '../../../src/testbed/state';
import { podNameserver } from '../../../src/session/dnsDiagnose';

function state(prefix = 't1-'): TestbedState {
  return {
    cni: 'flannel-vxlan', prefix,
    nodes: [{ name: 'node1', netns: `${prefix}node1`, ip: '192.168.1.101', podCidr: '10.244.1.0/24' }],
    pods: [
      { name: 'pod-a', netns: `${prefix}pod-a`, ip: '10.244.1.5', node: `${prefix}node1` },
      { name: 'dns', netns: `${prefix}dns`, ip: '10.244.2.10', node: `${prefix}node2` },
    ],
    services: [
      { name: 'iperf', clusterIp: '10.96.0.20', port: 5201, endpoints: ['10.244.2.8:5201'] },
      { name: 'kube-dns', namespace: 'kube-system', clusterIp: '10.96.0.10', port: 53, proto: 'udp', endpoints: ['10.244.2.10:53'] },
      { name: 'kube-dns-tcp', namespace: 'kube-system', clusterIp: '10.96.0.10', port: 53, proto: 'tcp', endpoints: ['10.244.2.10:53'] },
    ],
    dns: dnsLayout(prefix, `${prefix}dns`, [`${prefix}pod-a`]),
  };
}

test('records: each pod as Kubernetes names it, each Service once (its tcp port is the same name)', () => {
  assert.deepEqual(dnsRecords(state()), [
    ['10-244-1-5.default.pod.cluster.local', '10.244.1.5'],
    ['10-244-2-10.default.pod.cluster.local', '10.244.2.10'],
    ['iperf.default.svc.cluster.local', '10.96.0.20'],
    ['kube-dns.kube-system.svc.cluster.local', '10.96.0.10'],
  ]);
});

test('unbound: authoritative for cluster.local (unknown names NXDOMAIN), a SERVFAIL zone, listening on the pod address', () => {
  const s = state();
  const conf = unboundConf(s, '10.244.2.10', s.dns!.pidFile);
  assert.match(conf, /^ {2}interface: 10\.244\.2\.10$/m);
  assert.match(conf, /^ {2}local-zone: "cluster\.local\." static$/m);
  assert.match(conf, /^ {2}local-data: "iperf\.default\.svc\.cluster\.local\. 5 IN A 10\.96\.0\.20"$/m);
  assert.match(conf, /^ {2}local-zone: "broken\.cluster\.local\." transparent$/m);
  assert.match(conf, /stub-zone:\n {2}name: "broken\.cluster\.local\."\n {2}stub-addr: 127\.0\.0\.1@53/);
  assert.match(conf, /access-control: 127\.0\.0\.0\/8 refuse/, 'the stub asks unbound itself over loopback, which refuses: SERVFAIL');
  assert.match(conf, new RegExp(`pidfile: "${s.dns!.pidFile}"`));
});

test('resolv.conf: the kube-dns ClusterIP, the search list and ndots of a pod in namespace default', () => {
  assert.equal(resolvConf(), 'nameserver 10.96.0.10\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n');
  assert.equal(podNameserver('x', () => resolvConf()), '10.96.0.10');
  assert.equal(podNameserver('x', () => '# none\nnameserver fe80::1\nnameserver 10.0.0.2\n'), '10.0.0.2', 'the first IPv4 one');
  assert.equal(podNameserver('x', () => null), null);
});

test('down trusts only DNS paths that are this cluster\'s: its run files and its pods\' resolv.conf', () => {
  assert.equal(dnsPathsOk(state()), true);
  const noDns = state();
  delete noDns.dns;
  assert.equal(dnsPathsOk(noDns), true, 'a state from before the DNS');
  for (const bad of [
    (s: TestbedState) => (s.dns!.conf = '/etc/passwd'),
    (s: TestbedState) => (s.dns!.pidFile = '/run/nettrace/testbed/other-.unbound.pid'),
    (s: TestbedState) => (s.dns!.resolvConfs = ['/etc/resolv.conf']),
    (s: TestbedState) => (s.dns!.resolvConfs = ['/etc/netns/someone-else/resolv.conf']),
    (s: TestbedState) => (s.dns!.resolvConfs = ['/etc/netns/t1-pod-a/../../shadow']),
    (s: TestbedState) => ((s.dns as { pid?: unknown }).pid = '1; rm -rf /'),
  ]) {
    const s = state();
    bad(s);
    assert.equal(dnsPathsOk(s), false, JSON.stringify(s.dns));
  }
});
