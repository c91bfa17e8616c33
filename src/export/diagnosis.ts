// diagnose -o table: one screen for a person, the path drawn and the broken or slow step marked.
import type { Diagnosis } from '../flow/verdict';
import { formatFlow, type FlowSpec } from '../flow/spec';
import type { PodRef } from '../topology/model';
import { STEP_NAMES } from '../topology/steps';
import { formatDuration } from './table';

export type Verdict = 'HEALTHY' | 'BROKEN' | 'SLOW';

/** The word the first line shows: a slow step is a delay; anything else unhealthy is broken. */
export function verdictOf(d: Diagnosis): Verdict {
  return d.healthy ? 'HEALTHY' : d.cause === 'delay' ? 'SLOW' : 'BROKEN';
}

/**
 * diagnose's exit code by verdict, so a script can tell them apart: above the error codes
 * (1-7, src/errors.ts) so a verdict is never mistaken for nettrace failing.
 */
export const VERDICT_EXIT: Record<Verdict, number> = { HEALTHY: 0, BROKEN: 10, SLOW: 11 };

export function diagnosisExitCode(d: Diagnosis): number {
  return VERDICT_EXIT[verdictOf(d)];
}

export function formatDiagnosis(f: FlowSpec, d: Diagnosis, pods?: { src: PodRef | null; dst: PodRef | null } | null): string {
  const out: string[] = [];
  const unjudged = new Set(d.not_watched?.steps ?? []);
  const verdict = verdictOf(d);
  const head = verdict === 'HEALTHY' ? (unjudged.size ? `HEALTHY where watched; steps ${[...unjudged].join(',')} not watched` : 'HEALTHY')
    : verdict === 'SLOW' ? `SLOW at step ${d.step} (${d.step_name})` : `BROKEN at step ${d.step ?? '?'} (${d.step_name ?? 'unknown'})`;
  out.push(`diagnose ${formatFlow(f, pods)}: ${head}`);
  const seen = new Set(d.steps.map((h) => h.step));
  // broken: d.step is the step that failed, not a step the probes completed (step 9 may have its veth hop and still fail)
  const failed = verdict === 'BROKEN' ? d.step : null;
  for (let s = 1; s <= 9; s++) {
    const hops = d.steps.filter((h) => h.step === s);
    // a refused connection reached the pod: the pod, not the network, stopped it
    const stop = d.cause === 'connection-refused' ? ' <== refused by the pod' : ' <== packets stop here';
    const mark = verdict === 'SLOW' && d.step === s ? ' <== slow' : failed === s ? stop : '';
    const where = hops.map((h) => `${h.node} ${h.k8s ? `${h.device}@${h.k8s.namespace}/${h.k8s.name}` : h.device} ${h.hook}${h === d.steps[0] ? '' : ` +${formatDuration(h.latency_ns)}`}`).join(', ');
    const state = failed === s ? '!!' : seen.has(s) ? 'ok' : unjudged.has(s) ? '??' : failed !== null && s > failed ? '--' : '  ';
    const note = unjudged.has(s) && !seen.has(s) ? `not watched: ${d.not_watched!.node}` : '';
    out.push(`  ${state} ${s} ${(STEP_NAMES[s] ?? '').padEnd(21)} ${where}${note}${mark}`.trimEnd());
  }
  out.push(`cause: ${d.cause}${d.reason ? ` (kernel: ${d.reason})` : ''}`);
  out.push(`  ${d.detail}`);
  for (const c of d.caveats ?? []) out.push(`caveat: ${c}`);
  out.push(`next: ${d.next}`);
  return out.join('\n') + '\n';
}
