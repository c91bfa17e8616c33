// kube-proxy's iptables rules read back as ClusterIP services (src/topology/services.ts).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseKubeProxyRules } from '../../../src/topology/services';

const VIP = '10.96.0.10';
const B = '10.244.2.8';

test('kube-proxy rules are read back as services with their endpoints', () => {
  const save = [
    '*nat', ':KUBE-SERVICES - [0:0]', '-A PREROUTING -j KUBE-SERVICES',
    '-A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m tcp --dport 5201 -j KUBE-SVC-IPERF',
    '-A KUBE-SVC-IPERF -j KUBE-SEP-IPERF0', '-A KUBE-SEP-IPERF0 -p tcp -m tcp -j DNAT --to-destination 10.244.2.8:5201', 'COMMIT',
  ].join('\n');
  assert.deepEqual(parseKubeProxyRules(save), [{ clusterIp: VIP, proto: 'tcp', port: 5201, endpoints: [{ ip: B, port: 5201 }] }]);
});

