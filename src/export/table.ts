// follow -o table: one block a packet, one row a hop, for a person at a terminal.
import type { PacketPath } from '../flow/path';

export function formatDuration(ns: number): string {
  if (ns < 1_000) return `${ns} ns`;
  if (ns < 1_000_000) return `${(ns / 1_000).toFixed(1)} µs`;
  return `${(ns / 1_000_000).toFixed(2)} ms`;
}

function packetLine(p: PacketPath): string {
  const k = p.packet;
  const ep = (a: string, port: number) => (port ? `${a}:${port}` : a);
  const what = k.tcp_flags !== undefined
    ? `seq ${k.seq} ack ${k.ack} [${k.tcp_flags}]`
    : k.icmp_type !== undefined ? `icmp type ${k.icmp_type}${k.icmp_id !== undefined ? ` id ${k.icmp_id} seq ${k.icmp_seq}` : ''}` : '';
  // TSO/GRO regrouped the skb between the nodes: how many segments left, in how many skbs they arrived
  const g = k.segments;
  const segs = g
    ? ` ${g.sent} ${g.sent === 1 ? 'segment' : 'segments'} → ${g.received_as}${g.merged ? ' (merged)' : ''}`
    : k.gso_segs > 1 ? ` ${k.gso_segs} segs` : '';
  // when the packet left its first hop, on the wall clock (as tcpdump starts its lines)
  const at = p.steps[0]?.time ? `${p.steps[0].time} ` : '';
  // the pods by name, when a source of names knows them: the reply comes from the flow's destination
  const [from, to] = p.direction === 'request' ? [p.pods?.src, p.pods?.dst] : [p.pods?.dst, p.pods?.src];
  const named = (r: typeof from) => (r ? ` (${r.namespace}/${r.name})` : '');
  return `${at}${p.direction.padEnd(7)} ${ep(k.src, k.sport)}${named(from)} -> ${ep(k.dst, k.dport)}${named(to)} ${k.icmp_type !== undefined ? 'icmp' : p.flow.proto} ip-id ${k.ip_id} len ${k.len}${segs} ${what}`.trimEnd();
}

/** Only the side of "SRC -> DST" that a translation changed. */
function changed(from: string, to: string): string {
  const [fs, fd] = from.split(' -> ');
  const [ts, td] = to.split(' -> ');
  return [fs !== ts ? `${fs} => ${ts}` : '', fd !== td ? `${fd} => ${td}` : ''].filter(Boolean).join(', ');
}

/** "steps 6-9", "steps 1-2, 4-5", "step 6" */
export function stepsText(steps: number[]): string {
  const parts: string[] = [];
  for (let i = 0; i < steps.length; i++) {
    let j = i;
    while (j + 1 < steps.length && steps[j + 1] === steps[j]! + 1) j++;
    parts.push(j > i ? `${steps[i]}-${steps[j]}` : `${steps[i]}`);
    i = j;
  }
  return `${steps.length === 1 ? 'step' : 'steps'} ${parts.join(', ')}`;
}

export function formatPathTable(p: PacketPath): string {
  const hops = p.steps.map((h) => ({ step: h.step, row: [
    String(h.step), h.name, h.node, h.k8s ? `${h.device}@${h.k8s.namespace}/${h.k8s.name}` : h.pod ? `${h.device}@${h.pod}` : h.device, h.hook, h === p.steps[0] ? '' : `+${formatDuration(h.latency_ns)}${h.clamped_ns ? ` (clock: ${formatDuration(h.clamped_ns)} early, shown as 0)` : ''}`,
  ] }));
  // a step the CNI mode does not have is a row of its own, in step order, saying why
  const skipped = (p.skipped ?? []).map((s) => ({ step: s.step, row: [String(s.step), s.name, s.node, `(${s.reason})`, '', ''] }));
  // a translation (a Service's DNAT) is a row too, before the hop that first saw the new addresses
  const nat = (p.translations ?? []).map((t) => ({ step: t.before_step - 0.5, row: ['', 'service NAT', t.node, changed(t.from, t.to), '', ''] }));
  const rows = [...hops, ...skipped, ...nat].sort((a, b) => a.step - b.step).map((r) => r.row);
  const head = ['step', 'what', 'node', 'device', 'hook', 'latency'];
  const widths = head.map((hd, i) => Math.max(hd.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) => '  ' + r.map((c, i) => (i === r.length - 1 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ');
  const nw = p.not_watched;
  const status = p.complete
    ? `complete, ${p.steps.length} hops`
    : nw && !p.drop
      ? `not watched: ${nw.node} (${nw.reason}): ${stepsText(nw.steps)}`
      : `INCOMPLETE: ${p.drop?.reason ?? 'path stopped'}`;
  return [packetLine(p), line(head), ...rows.map(line), `  total ${formatDuration(p.total_ns)}  ${status}`, ''].join('\n');
}
