// ClusterIP services as kube-proxy's iptables mode implements them in a node: the nat table's
// KUBE-SERVICES rules, their KUBE-SVC chains, and the DNAT of each KUBE-SEP endpoint.
import { run } from '../exec';
import type { NodeTopology } from './model';
import { ipNs } from './netns';

export interface Service {
  clusterIp: string;
  port: number;
  proto: string;
  /** "IP:PORT" of each endpoint */
  endpoints: { ip: string; port: number }[];
}

export function parseKubeProxyRules(iptablesSave: string): Service[] {
  const lines = iptablesSave.split('\n');
  const rulesOf = (chain: string) => lines.filter((l) => l.startsWith(`-A ${chain} `));
  const out: Service[] = [];
  for (const l of rulesOf('KUBE-SERVICES')) {
    const m = /-d (\d+\.\d+\.\d+\.\d+)(?:\/32)? .*-p (\w+) .*--dport (\d+) .*-j (KUBE-SVC-\S+)/.exec(l);
    if (!m) continue;
    const endpoints = rulesOf(m[4]!).flatMap((svcRule) => {
      const sep = /-j (KUBE-SEP-\S+)/.exec(svcRule)?.[1];
      return sep ? rulesOf(sep).flatMap((r) => {
        const d = /--to-destination (\d+\.\d+\.\d+\.\d+):(\d+)/.exec(r);
        return d ? [{ ip: d[1]!, port: Number(d[2]) }] : [];
      }) : [];
    });
    out.push({ clusterIp: m[1]!, proto: m[2]!, port: Number(m[3]), endpoints });
  }
  return out;
}

export function nodeServices(node: NodeTopology): Service[] {
  const ns = ipNs(node.netns);
  const save = ns ? run('ip', ['netns', 'exec', ns, 'iptables-save', '-t', 'nat'], { allowFail: true }) : run('iptables-save', ['-t', 'nat'], { allowFail: true });
  return parseKubeProxyRules(save);
}
