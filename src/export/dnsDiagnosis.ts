// diagnose --dns -o table: the DNS verdict first (rcode, latency, cause), then the path of the
// query's packets as diagnose --flow draws it.
import type { DnsDiagnosis } from '../flow/dnsVerdict';
import type { FlowSpec } from '../flow/spec';
import { formatDiagnosis, VERDICT_EXIT } from './diagnosis';
import { formatDuration } from './table';

/** Healthy 0, anything else BROKEN (10), as diagnose's verdicts. */
export function dnsExitCode(d: DnsDiagnosis): number {
  return d.healthy ? VERDICT_EXIT.HEALTHY : VERDICT_EXIT.BROKEN;
}

export function formatDnsDiagnosis(from: string, d: DnsDiagnosis): string {
  const q = d.queries;
  const lat = d.latency_ns !== null ? `, ${formatDuration(d.latency_ns)}` : '';
  const head = d.healthy ? 'HEALTHY' : d.step !== null ? `BROKEN at step ${d.step} (${d.step_name})` : 'BROKEN';
  const out = [
    `diagnose dns ${d.name} from ${from} via ${d.server}:53: ${head}`,
    `  queries ${q.sent}: answered ${q.answered}${d.rcode ? ` (${d.rcode}${lat})` : ''}, timed out ${q.timeouts}, refused ${q.refused}`,
  ];
  const flow: FlowSpec = { src: from, dst: d.server, sport: 0, dport: 53, proto: 'udp', family: 4 };
  // the path's own table, without its cause lines: the DNS cause below says what they would
  const pathLines = formatDiagnosis(flow, d.path).trimEnd().split('\n');
  const end = pathLines.findIndex((l) => l.startsWith('cause: '));
  out.push(`path: ${pathLines[0]!.replace(/^diagnose /, '')}`, ...pathLines.slice(1, end < 0 ? undefined : end));
  out.push(`cause: ${d.cause}${d.died ? ` (the ${d.died} died)` : ''}`, `  ${d.detail}`, `next: ${d.next}`);
  return out.join('\n') + '\n';
}
