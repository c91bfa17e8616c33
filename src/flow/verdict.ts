// Where and why a flow breaks or slows, from the paths of probe packets: what an operator
// would otherwise find with tcpdump at each device by hand. Pure: what the node says is passed in.
import type { ReachCheck } from '../topology/inspect';
import type { FilterRule } from '../topology/netfilter';
import { STEP_NAMES } from '../topology/steps';
import type { HopView, LastSeen, PacketPath } from './path';
import { median } from './stats';

export type Cause = 'mtu' | 'netfilter-drop' | 'network-policy' | 'no-route' | 'no-neighbour' | 'no-fdb' | 'no-endpoints' | 'connection-refused' | 'delay' | 'loss' | 'none';

export interface Diagnosis {
  healthy: boolean;
  /** broken: the step that failed (the first the probes did not complete); slow: the step that took long */
  step: number | null;
  step_name: string | null;
  /** where to look: broken, the node and device the probes were last seen on (they stopped after it); slow, the hop that arrived late */
  node: string | null;
  device: string | null;
  /** broken: the last hop that saw the stopped probe (the failed step comes after it); null otherwise */
  last_seen: LastSeen | null;
  /** the kernel's drop reason, when it dropped the probes */
  reason: string | null;
  cause: Cause;
  detail: string;
  /** what to check or change next */
  next: string;
  /** per-step latency of a complete probe, as follow prints it */
  steps: HopView[];
  /** steps on a node nothing watched (no agent there): not judged, neither healthy nor broken */
  not_watched?: { node: string; reason: string; steps: number[] };
  /** what limits the conclusion, e.g. records nettrace itself lost; diagnose() always sets it, [] when nothing does */
  caveats?: string[];
}

export interface DiagnoseInput {
  paths: PacketPath[];
  /** the full-size probe with DF set (seed case 3): its size and what became of it */
  mtuProbe: { size: number; podMtu: number; paths: PacketPath[] } | null;
  /** what the node where a probe stopped knows about reaching the destination */
  reach: (node: string) => ReachCheck;
  dropRules: (node: string) => string[];
  /**
   * The node's drop rules that took the probes: counters that grew while they ran, most first (or,
   * for an nft rule without a counter, one that matches the flow: packets null)
   */
  dropHits?: (node: string) => FilterRule[];
  /** the probes' flow, to say what a policy did not allow */
  flow?: { src: string; proto: string; dport?: number };
  /** a device's MTU by node and name */
  mtu: (node: string, dev: string) => number | null;
  dst: string;
  /** hop records lost on the way to us (a full ring, a slow reader), and why */
  lostRecords?: { records: number; why: string[] };
}

const DELAY_MIN_NS = 1_000_000;
const DELAY_FACTOR = 10;

function ms(ns: number): string {
  return ns >= 1e6 ? `${(ns / 1e6).toFixed(1)} ms` : `${(ns / 1e3).toFixed(1)} µs`;
}

/** A stopped probe's diagnosis: its own hops are the steps shown, up to where it stopped. */
function broken(p: PacketPath, cause: Cause, detail: string, next: string): Diagnosis {
  const d = p.drop!;
  return {
    healthy: false, step: d.step, step_name: d.step_name, node: d.node, device: d.device, last_seen: d.last_seen,
    reason: d.kernel_reason ?? null, cause, detail, next, steps: p.steps,
  };
}

/** Where a stopped probe was last seen and the step that failed, e.g. "cni0 ingress on node1 (last seen step 3, bridge): step 4 (routing) failed". */
function stopText(d: NonNullable<PacketPath['drop']>): string {
  const l = d.last_seen;
  return `${l.device} ${l.hook} on ${l.node} (last seen step ${l.step}, ${l.name}): step ${d.step} (${d.step_name}) failed`;
}

/** The fields of kube-proxy's REJECT for a Service without endpoints (filter table, KUBE-SERVICES). */
export function parseNoEndpointsRule(rule: string): { ip: string; proto: string; port: number; service: string | null } | null {
  if (!/^-A KUBE-SERVICES\b.*-j REJECT\b/.test(rule)) return null;
  const ip = / -d (\d+\.\d+\.\d+\.\d+)\/32\b/.exec(rule)?.[1];
  const proto = / -p (tcp|udp|sctp)\b/.exec(rule)?.[1];
  const port = / --dport (\d+)\b/.exec(rule)?.[1];
  if (!ip || !proto || !port) return null;
  // "NS/NAME:PORTNAME has no endpoints", quoted by iptables-save when it has spaces
  const service = /--comment "?([^" ]+) has no endpoints"?/.exec(rule)?.[1] ?? null;
  return { ip, proto, port: Number(port), service };
}

/** A probe to a ClusterIP that kube-proxy rejects because the Service has no endpoints. */
function noEndpoints(p: PacketPath, node: string, rules: string[], input: DiagnoseInput): Diagnosis | null {
  const k = p.packet;
  const hit = rules.find((r) => {
    const x = parseNoEndpointsRule(r);
    return x && x.ip === k.dst && x.port === k.dport && x.proto === p.flow.proto;
  });
  if (!hit) return null;
  const svc = parseNoEndpointsRule(hit)!.service;
  const [ns, name] = svc ? [svc.split('/')[0]!, svc.split('/')[1]!.split(':')[0]!] : [null, null];
  const vip = `${k.dst}:${k.dport}`;
  // the REJECT's answer, followed back to the pod: an ICMP error the node itself sent
  const icmp = input.paths.find((x) => x.direction === 'reply' && x.packet.icmp_type === 3 && x.steps[0]?.node === node && x.steps[0]?.pod === undefined);
  const answered = icmp ? `; ${icmp.packet.src} on ${node} answered with an ICMP destination unreachable, seen reaching ${icmp.steps[icmp.steps.length - 1]!.device} ${icmp.steps[icmp.steps.length - 1]!.hook}` : '';
  return broken(p, 'no-endpoints',
    `${svc ? `Service ${svc}` : 'the Service'} (ClusterIP ${vip}) has no endpoints: kube-proxy on ${node} rejects its connections with an ICMP port unreachable after ${stopText(p.drop!)}${answered} (${hit})`,
    name ? `check the Service's selector matches ready pods and its EndpointSlices: kubectl get endpointslices -n ${ns} -l kubernetes.io/service-name=${name}`
      : `find the Service with ClusterIP ${k.dst} (kubectl get svc -A | grep ${k.dst}), then its selector and EndpointSlices: kubectl get endpointslices -n NS -l kubernetes.io/service-name=NAME`);
}

/**
 * TCP resets that pods sent in answer to the SYN probes: the network delivered them to the
 * endpoint, and nothing listens on the port there.
 */
function refused(input: DiagnoseInput): Diagnosis | null {
  const syns = input.paths.filter((p) => p.direction === 'request' && p.packet.tcp_flags?.includes('S') && !p.packet.tcp_flags.includes('A'));
  // the kernel's answer to a SYN on a closed port acknowledges the SYN itself: a reset later in a
  // connection (an app closing with unread data) is not a refusal
  const answersSyn = (r: PacketPath) => syns.some((s) => s.packet.sport === r.packet.dport && ((s.packet.seq ?? 0) + 1) % 2 ** 32 === r.packet.ack);
  const resets = input.paths.filter((p) => p.direction === 'reply' && p.packet.tcp_flags?.includes('R') && p.steps[0]?.pod !== undefined && answersSyn(p));
  // UDP: a destination unreachable (ICMP type 3, ICMPv6 type 1) that the pod itself sent
  const udp = input.paths.filter((p) => p.direction === 'request' && p.flow.proto === 'udp');
  const unreachable = input.paths.filter((p) => p.direction === 'reply' && p.flow.proto === 'udp' && p.steps[0]?.pod !== undefined
    && (p.packet.icmp_type === 3 || (p.packet.icmp_type === 1 && p.packet.src.includes(':'))));
  const r = resets[0] ?? unreachable[0];
  if (!r) return null;
  const isTcp = r === resets[0];
  const port = isTcp ? r.packet.sport : r.flow.dport;
  const ep = isTcp ? `${r.packet.src}:${port}` : r.packet.src;
  const from = r.steps[0]!;
  // the reply leaves the pod with the endpoint's address; the followed flow names the Service's
  const via = r.flow.dst !== r.packet.src ? `, reached through the Service ${r.flow.dst}:${r.flow.dport}` : '';
  const sent = isTcp ? syns : udp;
  const req = sent.find((p) => p.complete) ?? sent[0];
  const last = req?.steps[req.steps.length - 1];
  const n = isTcp ? resets.length : unreachable.length;
  const answer = isTcp ? `${n} of ${Math.max(syns.length, n)} SYN probes with a TCP reset, nothing listens on port ${port} there`
    // the record has the ICMP type, not its code: a closed port is what a pod's own kernel answers with
    : `${n} of ${Math.max(udp.length, n)} UDP probes with an ICMP destination unreachable, nothing listens on the port there`;
  return {
    healthy: false, step: 9, step_name: STEP_NAMES[9] ?? null, node: from.node, device: from.device,
    last_seen: last ? { step: last.step, name: last.name, node: last.node, device: last.device, hook: last.hook } : null,
    reason: null, cause: 'connection-refused',
    detail: `${ep} (pod ${from.pod} on ${from.node}) refused the connection: it answered ${answer}${via}`,
    next: `check the pod listens on ${isTcp ? port : `the ${r.flow.proto} port the probes were sent to`} (ss -l${isTcp ? 't' : 'u'}n in the pod) and that the Service's targetPort is the port the container serves`,
    steps: req?.steps ?? r.steps,
  };
}

/** Where a rule is, as its tool names it: "iptables filter table, chain FORWARD" or "nft table inet filter, chain forward". */
function ruleWhere(r: FilterRule): string {
  return r.backend === 'iptables' ? `iptables ${r.table} table, chain ${r.chain}` : `nft table ${r.family} ${r.table}, chain ${r.chain}`;
}

function counted(r: FilterRule): string {
  return r.packets === null ? 'no counter; it matches the flow' : `${r.packets} packet${r.packets === 1 ? '' : 's'} during the probes`;
}

/** The drop rule that took the probes: a NetworkPolicy's (a Calico Felix chain), or a rule nobody names. */
function ruleDrop(p: PacketPath, r: FilterRule, input: DiagnoseInput): Diagnosis {
  const d = p.drop!;
  const c = r.calico;
  if (!c) {
    const look = r.backend === 'iptables' ? `iptables -t ${r.table} -L ${r.chain} -v -n --line-numbers` : `nft -a list chain ${r.family} ${r.table} ${r.chain}`;
    return broken(p, 'netfilter-drop', `netfilter dropped the packet after ${stopText(d)}: ${ruleWhere(r)}: ${r.rule} (${counted(r)})`,
      `check that rule on ${d.node} (${look}): who wrote it, and whether ${input.dst} should be dropped`);
  }
  const f = input.flow;
  const what = f ? (f.dport !== undefined && f.proto !== 'icmp' ? `${f.proto}/${f.dport}` : f.proto) : 'the flow';
  const pod = c.workload ? (c.workload.includes('/') ? c.workload : `pod ${c.workload}`) : `the workload on ${c.iface}`;
  const peer = c.direction === 'ingress' ? `from ${f?.src ?? 'its source'}` : `to ${input.dst}`;
  const named = c.policies.filter((x) => x.name !== null);
  const names = c.policies.map((x) => (x.name !== null ? `${x.namespace ? `${x.namespace}/` : ''}${x.name}` : `policy chain ${x.chain}`));
  const head = names.length ? names.join(', ') : 'no NetworkPolicy';
  const why = c.explicit ? `a rule of the policy denies ${what} ${peer}` : names.length ? `no rule allows ${what} ${peer}` : `no policy or profile allows ${what} ${peer}`;
  const detail = `${head}: ${c.direction} ${c.direction === 'ingress' ? 'to' : 'from'} ${pod}, ${why}; dropped on ${d.node} by ${ruleWhere(r)}: ${r.rule} (${counted(r)}), after ${stopText(d)}`;
  const next = named.length
    ? `${named.map((x) => `kubectl describe networkpolicy ${x.name}${x.namespace ? ` -n ${x.namespace}` : ''}`).join('; ')}: add an ${c.direction} rule that allows ${what} ${peer}, if it should pass`
    : `find the policy behind ${c.policies[0]?.chain ?? r.chain} on ${d.node} (iptables-save -t filter | grep ${c.policies[0]?.chain ?? r.chain}) and the NetworkPolicies selecting ${pod}`;
  return broken(p, 'network-policy', detail, next);
}

/** Why one stopped path stopped, reading the node it stopped on. */
function whyStopped(p: PacketPath, input: DiagnoseInput): Diagnosis | null {
  const d = p.drop!;
  if (d.kernel_reason === 'NETFILTER_DROP') {
    const rules = input.dropRules(d.node);
    const empty = noEndpoints(p, d.node, rules, input);
    if (empty) return empty;
    const hit = input.dropHits?.(d.node)[0];
    if (hit) return ruleDrop(p, hit, input);
    const where = rules.length ? `; the node's filter table, FORWARD chain, has: ${rules.join(' | ')}` : '';
    return broken(p, 'netfilter-drop', `netfilter dropped the packet after ${stopText(d)}${where}`,
      `check the node's iptables/nftables FORWARD rules and NetworkPolicies for ${input.dst}`);
  }
  const reach = input.reach(d.node);
  if (!reach.route) {
    return broken(p, 'no-route', `${d.node} has no route to ${input.dst}${d.kernel_reason ? ` (kernel: ${d.kernel_reason})` : ''}`,
      `the CNI should have added a route to the other node's pod CIDR: check it is running (flannel: flanneld) and \`ip route\` on ${d.node}`);
  }
  if (reach.neighbour && !reach.neighbour.mac) {
    return broken(p, 'no-neighbour', `${d.node} routes ${input.dst} via ${reach.neighbour.ip} on ${reach.route.dev}, and has no neighbour entry for ${reach.neighbour.ip}`,
      `the CNI writes it (flannel: a permanent entry with the other node's VTEP MAC): \`ip neigh show dev ${reach.route.dev}\` on ${d.node}`);
  }
  if (reach.fdb && !reach.fdb.dst) {
    return broken(p, 'no-fdb', `${d.node} knows ${reach.neighbour!.ip} is ${reach.fdb.mac} on ${reach.route.dev}, and its FDB has no node to send ${reach.fdb.mac} to`,
      `the CNI writes it (flannel: bridge fdb ... dst NODE_IP): \`bridge fdb show dev ${reach.route.dev}\` on ${d.node}`);
  }
  return null;
}

export function diagnose(input: DiagnoseInput): Diagnosis {
  const d = judge(input);
  const caveats: string[] = [];
  const lost = input.lostRecords;
  // a probe whose records we lost looks like a probe the network lost
  if (d.cause === 'loss' && lost && lost.records > 0) {
    caveats.push(`${lost.records} hop records were lost before nettrace read them (${lost.why.join('; ') || 'unknown'}): some probes counted as lost may have arrived, so part of the loss may be nettrace's own; run diagnose again to confirm`);
  }
  return { ...d, caveats };
}

function judge(input: DiagnoseInput): Diagnosis {
  // a probe that crossed every step we watch, up to a node nothing watches, is judged on those steps
  const complete = input.paths.filter((p) => p.complete || (!p.drop && p.not_watched));
  const unjudged = complete.find((p) => p.not_watched)?.not_watched;
  const stopped = input.paths.filter((p) => !p.complete && p.drop);
  const steps = (complete.find((p) => p.direction === 'request') ?? complete[0])?.steps ?? [];

  // the seed's case 3: a full-size packet with DF set that does not fit a device on the way
  const big = input.mtuProbe?.paths.find((p) => !p.complete && p.drop);
  if (big && (big.drop!.kernel_reason === 'PKT_TOO_BIG' || big.drop!.kernel_reason === 'FRAG_NEEDED')) {
    const reach = input.reach(big.drop!.node);
    const dev = reach.route?.dev ?? big.drop!.device;
    const devMtu = input.mtu(big.drop!.node, dev);
    return broken(big, 'mtu',
      `a ${input.mtuProbe!.size}-byte packet with DF set (the pod's MTU is ${input.mtuProbe!.podMtu}) does not fit ${dev} on ${big.drop!.node}, MTU ${devMtu ?? '?'}${big.drop!.kernel_reason ? ` (kernel: ${big.drop!.kernel_reason})` : ''}`,
      `set the pods' MTU to ${devMtu ?? 'the tunnel MTU'} (the CNI's MTU setting; VXLAN takes 50 bytes) or raise the underlay MTU by 50`);
  }

  if (stopped.length > 0) {
    const first = stopped.find((p) => p.direction === 'request') ?? stopped[0]!;
    const why = whyStopped(first, input);
    if (why) return why;
    const total = input.paths.length;
    const rate = stopped.length / Math.max(1, total);
    const d = first.drop!;
    return broken(first, 'loss', `${stopped.length} of ${total} probe packets (${(rate * 100).toFixed(0)} %) stopped after ${stopText(d)}${d.kernel_reason ? `, dropped by the kernel: ${d.kernel_reason}` : ''}`,
      `look at what comes after ${d.device} on ${d.node}: its counters (ip -s link), qdisc (tc -s qdisc) and the next device`);
  }

  const refusedBy = refused(input);
  if (refusedBy) return refusedBy;

  if (complete.length === 0) {
    return { healthy: false, step: null, step_name: null, node: null, device: null, last_seen: null, reason: null, cause: 'loss', detail: 'no probe packet was seen on any hook', next: 'check the source pod can send at all (its eth0 and default route)', steps: [] };
  }

  // delay: one step much slower than all the others
  const byStep = new Map<string, { hop: HopView; prev: HopView; lat: number[] }>();
  for (const p of complete) {
    p.steps.forEach((h, i) => {
      if (i === 0) return;
      const k = `${p.direction}/${h.step}/${h.node}/${h.device}/${h.hook}`;
      const prev = p.steps[i - 1]!;
      const e = byStep.get(k) ?? { hop: h, prev, lat: [] };
      // between two machines' clocks, only what exceeds their uncertainty is time the packet spent
      const clockBound = h.node !== prev.node && h.clock && prev.clock ? h.clock.uncertainty_ns + prev.clock.uncertainty_ns : 0;
      e.lat.push(Math.max(0, h.latency_ns - clockBound));
      byStep.set(k, e);
    });
  }
  const ranked = [...byStep.values()].map((e) => ({ hop: e.hop, prev: e.prev, med: median(e.lat) })).sort((a, b) => b.med - a.med);
  const slow = ranked[0];
  const others = ranked.filter((r) => r.hop.step !== slow?.hop.step || r.hop.device !== slow?.hop.device);
  const rest = median(others.map((r) => r.med));
  if (slow && slow.med >= DELAY_MIN_NS && slow.med >= DELAY_FACTOR * Math.max(rest, 1)) {
    const h = slow.hop;
    const from = `${slow.prev.device} ${slow.prev.hook} on ${slow.prev.node}`;
    // show a packet that met the delay: the slowest at that step
    const at = (p: PacketPath) => p.steps.find((x) => x.step === h.step && x.device === h.device && x.node === h.node)?.latency_ns ?? 0;
    const shown = complete.reduce((a, b) => (at(b) > at(a) ? b : a));
    return {
      healthy: false, step: h.step, step_name: STEP_NAMES[h.step] ?? null, node: h.node, device: h.device, last_seen: null, reason: null, cause: 'delay',
      detail: `step ${h.step} (${STEP_NAMES[h.step]}), from ${from} to ${h.device} ${h.hook} on ${h.node}, holds ${ms(slow.med)} (median of ${complete.length} packets); the other steps take ${ms(rest)} (median)`,
      next: `look between ${from} and ${h.device} on ${h.node}: qdiscs (tc -s qdisc show dev ${slow.prev.device}), shaping, or a busy CPU`, steps: shown.steps,
    };
  }
  const total = median(complete.map((p) => p.total_ns));
  if (unjudged) {
    const range = `${unjudged.steps[0]}-${unjudged.steps[unjudged.steps.length - 1]}`;
    return {
      healthy: true, step: null, step_name: null, node: null, device: null, last_seen: null, reason: null, cause: 'none',
      detail: `all ${complete.length} probe packets crossed every step watched; steps ${range} on ${unjudged.node} are not watched (${unjudged.reason}): they cannot be judged`,
      next: `to judge steps ${range}, run an agent on ${unjudged.node} and trace with --agents`, steps, not_watched: unjudged,
    };
  }
  return {
    healthy: true, step: null, step_name: null, node: null, device: null, last_seen: null, reason: null, cause: 'none',
    detail: `all ${complete.length} probe packets crossed every step; median path ${ms(total)}`, next: 'nothing to fix on the path', steps,
  };
}
