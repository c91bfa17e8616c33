// diagnose --dns's verdict: what the pod's queries came to (answers, their rcode and latency, or
// silence), joined with the path of the query's packets to say where a query or its answer died.
// Pure: the queries' outcomes, the path verdict and the Service are passed in.
import { rcodeName, type QueryOutcome } from './dns';
import type { Diagnosis } from './verdict';
import { median } from './stats';

export type DnsCause = 'none' | 'dns-timeout' | 'dns-nxdomain' | 'dns-servfail' | 'dns-no-endpoints' | 'dns-refused' | 'dns-error';

export interface DnsDiagnosis {
  healthy: boolean;
  name: string;
  server: string;
  cause: DnsCause;
  /** the rcode of the answers (the first that was not NOERROR), null with no answer */
  rcode: string | null;
  /** query sent -> answer received at the pod: the median over answered queries */
  latency_ns: number | null;
  queries: { sent: number; answered: number; timeouts: number; refused: number };
  /** dns-timeout: what died on the way, the query or its answer; null when neither was seen dying */
  died: 'query' | 'answer' | null;
  /** where (from the path): the step that failed, its node and device; null when the network is not at fault */
  step: number | null;
  step_name: string | null;
  node: string | null;
  device: string | null;
  detail: string;
  next: string;
  /** the path verdict of the query's packets, as diagnose --flow gives it */
  path: Diagnosis;
}

export interface DnsInput {
  name: string;
  server: string;
  queries: QueryOutcome[];
  path: Diagnosis;
  /** which of the followed paths stopped first: a query (request) or an answer (reply) */
  stopped: 'query' | 'answer' | null;
  /** queries seen reaching the server's pod, and answers seen reaching the client pod */
  queriesDelivered: number;
  answersDelivered: number;
  /** the Service kube-proxy writes for server:53/udp: its endpoint count; null when server is no ClusterIP kube-proxy knows */
  serviceEndpoints: number | null;
}

function ms(ns: number): string {
  return ns >= 1e6 ? `${(ns / 1e6).toFixed(1)} ms` : `${(ns / 1e3).toFixed(1)} µs`;
}

export function diagnoseDns(input: DnsInput): DnsDiagnosis {
  const q = input.queries;
  const answers = q.filter((x): x is Extract<QueryOutcome, { outcome: 'answer' }> => x.outcome === 'answer');
  const counts = { sent: q.length, answered: answers.length, timeouts: q.filter((x) => x.outcome === 'timeout').length, refused: q.filter((x) => x.outcome === 'refused').length };
  const latency = answers.length ? median(answers.map((a) => a.latency_ns)) : null;
  const bad = answers.find((a) => a.rcode !== 0);
  const p = input.path;
  const base = {
    name: input.name, server: input.server, rcode: bad ? rcodeName(bad.rcode) : answers.length ? 'NOERROR' : null, latency_ns: latency,
    queries: counts, path: p, died: null, step: null, step_name: null, node: null, device: null,
  };
  const at = { step: p.step, step_name: p.step_name, node: p.node, device: p.device };
  const asked = `${input.name} from the pod to ${input.server}:53`;

  if (p.cause === 'no-endpoints' || input.serviceEndpoints === 0) {
    return {
      ...base, ...(p.cause === 'no-endpoints' ? at : {}), healthy: false, cause: 'dns-no-endpoints',
      detail: `the DNS Service ${input.server}:53 has no endpoints: no DNS pod is ready behind it, so ${counts.sent - counts.answered} of ${counts.sent} queries got no answer${p.cause === 'no-endpoints' ? ` (${p.detail})` : ''}`,
      next: 'check the DNS pods (kubectl -n kube-system get pods -l k8s-app=kube-dns) and the Service\'s EndpointSlices (kubectl -n kube-system get endpointslices -l kubernetes.io/service-name=kube-dns)',
    };
  }
  if (bad) {
    const rc = rcodeName(bad.rcode);
    const cause: DnsCause = rc === 'NXDOMAIN' ? 'dns-nxdomain' : rc === 'SERVFAIL' ? 'dns-servfail' : 'dns-error';
    const next = cause === 'dns-nxdomain' ? `the name does not exist where ${input.server} looks: check its spelling and namespace (NAME.NAMESPACE.svc.cluster.local) and that the Service or pod exists`
      : cause === 'dns-servfail' ? `the DNS server could not get an answer: check its logs and the servers it forwards that zone to`
        : `the DNS server answered ${rc}: check its configuration (kubectl -n kube-system get configmap coredns -o yaml)`;
    return { ...base, healthy: false, cause, detail: `${counts.answered} of ${counts.sent} queries for ${asked} were answered, ${rc} (median ${ms(latency!)}): the network delivered them; the server said no`, next };
  }
  if (answers.length === q.length && q.length > 0) {
    return {
      ...base, healthy: true, cause: 'none',
      detail: `${counts.answered} of ${counts.sent} queries for ${asked} answered NOERROR (${answers[0]!.answers} record${answers[0]!.answers === 1 ? '' : 's'}) in ${ms(latency!)} (median); path: ${p.detail}`,
      next: 'nothing to fix',
    };
  }
  if (counts.refused > 0 && answers.length === 0) {
    return {
      ...base, ...(p.healthy ? {} : at), healthy: false, cause: 'dns-refused',
      detail: `${counts.refused} of ${counts.sent} queries for ${asked} came back as ICMP port unreachable: nothing listens on port 53 where they were delivered${p.healthy ? '' : ` (${p.detail})`}`,
      next: 'check the DNS server runs and listens on port 53 in its pod',
    };
  }
  // some or all queries unanswered: where did they die?
  const lost = `${counts.timeouts} of ${counts.sent} queries for ${asked} got no answer`;
  if (!p.healthy && p.step !== null && input.stopped) {
    return {
      ...base, ...at, died: input.stopped, healthy: false, cause: 'dns-timeout',
      detail: `${lost}: the ${input.stopped} died at step ${p.step} (${p.step_name}) on ${p.node}; ${p.detail}`, next: p.next,
    };
  }
  if (input.queriesDelivered > 0 && input.answersDelivered < input.queriesDelivered) {
    return {
      ...base, healthy: false, cause: 'dns-timeout',
      detail: `${lost}: ${input.queriesDelivered} quer${input.queriesDelivered === 1 ? 'y' : 'ies'} reached the DNS pod and ${input.answersDelivered} answer${input.answersDelivered === 1 ? '' : 's'} came back: the server did not answer`,
      next: 'check the DNS server in its pod: is it running, and does it answer on its pod address?',
    };
  }
  return { ...base, ...(p.healthy ? {} : at), healthy: false, cause: 'dns-timeout', detail: `${lost}; path: ${p.detail}`, next: p.next };
}
