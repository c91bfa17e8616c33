// A node's netfilter drop rules with their packet counters, from iptables (nft or legacy backend)
// and from nftables tables iptables does not own, so diagnose can name the one rule whose counter
// grew while its probes ran. A drop in one of Calico Felix's workload chains carries the
// NetworkPolicies that chain runs, named from Felix's rule comments ("Policy NS/knp.default.NAME ingress").
import { run } from '../exec';
import type { NodeTopology } from './model';
import { ipNs } from './netns';

export interface CalicoDrop {
  /** cali-tw-IFACE: traffic to the workload (its ingress); cali-fw-IFACE: from it (its egress) */
  direction: 'ingress' | 'egress';
  /** the workload's host-side veth, named in the chain */
  iface: string;
  /** the policies the chain ran before dropping; name null when no rule comment names it */
  policies: { namespace: string | null; name: string | null; chain: string }[];
  /** the drop is a policy's own rule (a Calico Deny), not the end of the tier */
  explicit: boolean;
  /** the pod behind iface, filled in by whoever knows the node's pods */
  workload?: string;
}

export interface FilterRule {
  backend: 'iptables' | 'nft';
  /** ip, ip6, inet...; iptables: ip */
  family: string;
  table: string;
  chain: string;
  /** the rule as iptables-save or nft prints it, without its counters */
  rule: string;
  /** packets its counter holds; null for an nft rule without `counter` */
  packets: number | null;
  comments: string[];
  /** for an nft rule without a counter: whether it matches a flow (its simple matches only) */
  match?: NftMatch;
  calico?: CalicoDrop;
}

/** Splits an iptables-save rule into words, keeping "quoted comments" whole. */
function words(line: string): string[] {
  const out: string[] = [];
  const re = /"((?:[^"\\]|\\.)*)"|(\S+)/g;
  for (let m = re.exec(line); m; m = re.exec(line)) out.push(m[1] !== undefined ? m[1].replace(/\\(.)/g, '$1') : m[2]!);
  return out;
}

interface IptRule { chain: string; rule: string; packets: number; comments: string[]; target: string | null }

/** iptables-save -c output, one table's rules (rules without counters count 0). */
export function parseIptablesSave(text: string, table = 'filter'): IptRule[] {
  const out: IptRule[] = [];
  let current: string | null = null;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line.startsWith('*')) current = line.slice(1);
    if (current !== table) continue;
    const m = /^(?:\[(\d+):\d+\]\s+)?(-A\s+(\S+).*)$/.exec(line);
    if (!m) continue;
    const w = words(m[2]!);
    const comments: string[] = [];
    let target: string | null = null;
    for (let i = 0; i < w.length - 1; i++) {
      if (w[i] === '--comment') comments.push(w[i + 1]!);
      if (w[i] === '-j' || w[i] === '-g') target = w[i + 1]!;
    }
    out.push({ chain: m[3]!, rule: m[2]!, packets: Number(m[1] ?? 0), comments, target });
  }
  return out;
}

const POLICY_COMMENT = /^Policy (\S+) (ingress|egress)$/;

/** "default/knp.default.deny-b": Calico names a Kubernetes NetworkPolicy knp.default.NAME in tier default. */
function policyName(full: string): { namespace: string | null; name: string } {
  const slash = full.indexOf('/');
  const ns = slash > 0 ? full.slice(0, slash) : null;
  const rest = slash > 0 ? full.slice(slash + 1) : full;
  return { namespace: ns, name: rest.replace(/^knp\.default\./, '') };
}

/** The policy a cali-pi-/cali-po- chain is, from a comment on its rules or on the rule that jumps to it. */
function policyOf(chain: string, rules: IptRule[], jump?: IptRule): CalicoDrop['policies'][number] {
  const comments = [...(jump?.comments ?? []), ...rules.filter((r) => r.chain === chain).flatMap((r) => r.comments)];
  for (const c of comments) {
    const m = POLICY_COMMENT.exec(c);
    if (m) return { ...policyName(m[1]!), chain };
  }
  return { namespace: null, name: null, chain };
}

/** For a DROP in a Felix chain: the workload, the direction and the policies that did not allow it. */
export function calicoContext(rules: IptRule[], drop: IptRule): CalicoDrop | undefined {
  // conntrack's verdict on a broken packet, before any policy runs: no policy's doing
  if (/--ctstate INVALID\b/.test(drop.rule)) return undefined;
  const wl = /^cali-(tw|fw)-(.+)$/.exec(drop.chain);
  if (wl) {
    const idx = rules.indexOf(drop);
    // the policy jumps before the drop, in the same chain
    const jumps = rules.filter((r, i) => r.chain === drop.chain && i < idx && r.target && /^cali-p[io]-/.test(r.target));
    return {
      direction: wl[1] === 'tw' ? 'ingress' : 'egress', iface: wl[2]!, explicit: false,
      policies: jumps.map((j) => policyOf(j.target!, rules, j)),
    };
  }
  const pol = /^cali-p([io])-/.exec(drop.chain);
  if (pol) {
    // a policy chain's own DROP (Calico's Deny): the workload chain that jumped here names the pod
    const from = rules.find((r) => r.target === drop.chain && /^cali-(tw|fw)-/.test(r.chain));
    return {
      direction: pol[1] === 'i' ? 'ingress' : 'egress', iface: from ? from.chain.replace(/^cali-(tw|fw)-/, '') : '?', explicit: true,
      policies: [policyOf(drop.chain, rules, from)],
    };
  }
  return undefined;
}

/** The DROP and REJECT rules of the filter table, every chain, with counters and Calico's context. */
export function iptablesDropRules(saveText: string): FilterRule[] {
  const rules = parseIptablesSave(saveText, 'filter');
  return rules.filter((r) => r.target === 'DROP' || r.target === 'REJECT').map((r) => {
    const calico = calicoContext(rules, r);
    return { backend: 'iptables' as const, family: 'ip', table: 'filter', chain: r.chain, rule: r.rule, packets: r.packets, comments: r.comments, ...(calico ? { calico } : {}) };
  });
}

// nftables (`nft -j list ruleset`): JSON, one object per table, chain and rule.

/** What an nft rule matches, from its simple matches; unknown: it has others we cannot judge. */
export interface NftMatch { saddr?: string[]; daddr?: string[]; proto?: string; sport?: number[]; dport?: number[]; unknown: boolean }

type Json = unknown;
const obj = (v: Json): Record<string, Json> | null => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, Json>) : null);

/** An nft JSON value as nft prints it: 10.0.0.0/24, { 80, 443 }, 1000-2000. */
function valueText(v: Json): string {
  const o = obj(v);
  if (o?.prefix) {
    const p = obj(o.prefix)!;
    return `${String(p.addr)}/${String(p.len)}`;
  }
  if (o?.set && Array.isArray(o.set)) return `{ ${o.set.map(valueText).join(', ')} }`;
  if (o?.range && Array.isArray(o.range)) return `${valueText(o.range[0])}-${valueText(o.range[1])}`;
  if (typeof v === 'string' || typeof v === 'number') return String(v);
  return JSON.stringify(v);
}

function values(v: Json): string[] {
  const o = obj(v);
  if (o?.set && Array.isArray(o.set)) return o.set.flatMap(values);
  return [valueText(v)];
}

/** One expression of a rule as nft prints it, and what it adds to the match. */
function exprText(e: Json, m: NftMatch): string {
  const o = obj(e) ?? {};
  const [k] = Object.keys(o);
  const v = o[k!];
  if (k === 'match') {
    const mm = obj(v)!;
    const left = obj(mm.left);
    const op = mm.op === '==' || mm.op === 'in' ? '' : `${String(mm.op)} `;
    const pl = obj(left?.payload);
    const meta = obj(left?.meta);
    const lhs = pl ? `${String(pl.protocol)} ${String(pl.field)}` : meta ? `meta ${String(meta.key)}` : JSON.stringify(mm.left);
    if (op === '' && pl && (pl.protocol === 'ip' || pl.protocol === 'ip6') && (pl.field === 'saddr' || pl.field === 'daddr')) m[pl.field] = values(mm.right);
    else if (op === '' && pl && (pl.protocol === 'tcp' || pl.protocol === 'udp' || pl.protocol === 'th') && (pl.field === 'dport' || pl.field === 'sport')) {
      if (pl.protocol !== 'th') m.proto = pl.protocol;
      m[pl.field] = values(mm.right).map(Number);
      if (m[pl.field]!.some((n) => !Number.isInteger(n))) m.unknown = true;
    } else if (op === '' && meta?.key === 'l4proto' && typeof mm.right === 'string') m.proto = mm.right;
    else if (op === '' && pl?.protocol === 'ip' && pl.field === 'protocol' && typeof mm.right === 'string') m.proto = mm.right;
    else m.unknown = true;
    return `${lhs} ${op}${valueText(mm.right)}`;
  }
  if (k === 'counter') return 'counter';
  if (k === 'drop' || k === 'accept' || k === 'return') return k;
  if (k === 'reject') return 'reject';
  if (k === 'jump' || k === 'goto') return `${k} ${String(obj(v)?.target)}`;
  if (k === 'xt') {
    m.unknown = true;
    return `xt ${String(obj(v)?.name)}`;
  }
  m.unknown = true;
  return k ?? '?';
}

/**
 * The drop and reject rules of `nft -j list ruleset`, with their counters. Tables iptables-nft
 * made are left out (skip): iptables-save reads those, with their real rule text.
 */
export function parseNftRuleset(text: string, skip: (family: string, table: string) => boolean = () => false): FilterRule[] {
  let doc: Json;
  try {
    doc = JSON.parse(text);
  } catch {
    return [];
  }
  const items = obj(doc)?.nftables;
  if (!Array.isArray(items)) return [];
  const rules = items.map((i) => obj(obj(i)?.rule)).filter((r): r is Record<string, Json> => !!r && Array.isArray(r.expr));
  // a table with iptables' xt expressions in it is iptables-nft's, whatever its name
  const xt = new Set(rules.filter((r) => (r.expr as Json[]).some((e) => obj(e)?.xt !== undefined)).map((r) => `${String(r.family)} ${String(r.table)}`));
  const out: FilterRule[] = [];
  for (const r of rules) {
    const family = String(r.family);
    const table = String(r.table);
    if (xt.has(`${family} ${table}`) || skip(family, table)) continue;
    const expr = r.expr as Json[];
    const verdict = expr.find((e) => obj(e) && ('drop' in obj(e)! || 'reject' in obj(e)!));
    if (!verdict) continue;
    const m: NftMatch = { unknown: false };
    const text = expr.map((e) => exprText(e, m)).join(' ');
    const counter = expr.map((e) => obj(obj(e)?.counter)).find(Boolean);
    const comment = typeof r.comment === 'string' ? [r.comment] : [];
    out.push({
      backend: 'nft', family, table, chain: String(r.chain), rule: `${text}${comment.length ? ` comment "${comment[0]}"` : ''} # handle ${String(r.handle)}`,
      packets: counter && typeof counter.packets === 'number' ? counter.packets : null, comments: comment, match: m,
    });
  }
  return out;
}

function inPrefix(ip: string, cidr: string): boolean {
  const [net, len] = cidr.includes('/') ? cidr.split('/') : [cidr, '32'];
  const n = (a: string) => a.split('.').reduce((x, o) => x * 256 + Number(o), 0);
  if (!/^\d+\.\d+\.\d+\.\d+$/.test(ip) || !/^\d+\.\d+\.\d+\.\d+$/.test(net!)) return ip === net;
  const bits = Number(len);
  const size = 2 ** (32 - bits);
  return Math.floor(n(ip) / size) === Math.floor(n(net!) / size);
}

/** Whether an nft rule's matches fit a flow: true, false, or null when it has matches we cannot judge. */
export function nftMatchesFlow(m: NftMatch, f: { src: string; dst: string; proto: string; sport?: number; dport?: number }): boolean | null {
  if (m.saddr && !m.saddr.some((c) => inPrefix(f.src, c))) return false;
  if (m.daddr && !m.daddr.some((c) => inPrefix(f.dst, c))) return false;
  if (m.proto && m.proto !== f.proto) return false;
  if (m.dport && (f.dport === undefined || !m.dport.includes(f.dport))) return false;
  if (m.sport && (f.sport === undefined || !m.sport.includes(f.sport))) return false;
  return m.unknown ? null : true;
}

const IPTABLES_TABLES = new Set(['filter', 'nat', 'mangle', 'raw', 'security']);

/** A node's drop rules, iptables first (the nft backend's tables are read through it), then nft's own tables. */
export function readDropRules(node: NodeTopology): FilterRule[] {
  const ns = ipNs(node.netns);
  const exec = (cmd: string, args: string[]) => (ns ? run('ip', ['netns', 'exec', ns, cmd, ...args], { allowFail: true }) : run(cmd, args, { allowFail: true }));
  const save = exec('iptables-save', ['-c', '-t', 'filter']);
  const out = iptablesDropRules(save);
  // with the nf_tables backend, iptables' own tables are nft tables of family ip: read once, through iptables
  const viaIptables = /\(nf_tables\)/.test(save);
  out.push(...parseNftRuleset(exec('nft', ['-j', 'list', 'ruleset']), (family, table) => viaIptables && family === 'ip' && IPTABLES_TABLES.has(table)));
  return out;
}

/** The identity of a rule across two readings of the same node. */
export function ruleKey(r: FilterRule): string {
  return `${r.backend} ${r.family} ${r.table} ${r.chain} ${r.rule}`;
}

/**
 * The rules whose counters grew between two readings (packets: how much), most first. A rule that
 * was not there before counts from 0.
 */
export function countedSince(before: FilterRule[] | null, after: FilterRule[]): FilterRule[] {
  const was = new Map<string, number>();
  for (const r of before ?? []) was.set(ruleKey(r), (was.get(ruleKey(r)) ?? 0) + (r.packets ?? 0));
  return after
    .filter((r) => r.packets !== null)
    .map((r) => ({ ...r, packets: r.packets! - (was.get(ruleKey(r)) ?? 0) }))
    .filter((r) => r.packets > 0)
    .sort((a, b) => b.packets! - a.packets!);
}

const MAX_RULES = 1000;

/**
 * Rules an agent sent (GET /v1/inspect's filter_rules), kept only with every field of the right
 * type and size: an agent's answer is read like any bytes from the network.
 */
export function checkedFilterRules(raw: unknown[]): FilterRule[] {
  const str = (v: unknown, max = 4096): v is string => typeof v === 'string' && v.length <= max;
  const out: FilterRule[] = [];
  for (const x of raw.slice(0, MAX_RULES)) {
    const r = obj(x);
    if (!r || (r.backend !== 'iptables' && r.backend !== 'nft') || !str(r.family, 16) || !str(r.table, 256) || !str(r.chain, 256) || !str(r.rule)) continue;
    if (r.packets !== null && !(typeof r.packets === 'number' && Number.isSafeInteger(r.packets) && r.packets >= 0)) continue;
    const comments = Array.isArray(r.comments) ? r.comments.filter((c): c is string => str(c, 256)).slice(0, 16) : [];
    const rule: FilterRule = { backend: r.backend, family: r.family, table: r.table, chain: r.chain, rule: r.rule, packets: r.packets as number | null, comments };
    const m = obj(r.match);
    if (m) {
      const strs = (v: unknown) => (Array.isArray(v) ? v.filter((s): s is string => str(s, 64)).slice(0, 64) : undefined);
      const nums = (v: unknown) => (Array.isArray(v) ? v.filter((n): n is number => Number.isInteger(n)).slice(0, 64) : undefined);
      const match: NftMatch = { unknown: m.unknown !== false };
      for (const [k, v] of [['saddr', strs(m.saddr)], ['daddr', strs(m.daddr)]] as const) if (v) match[k] = v;
      for (const [k, v] of [['sport', nums(m.sport)], ['dport', nums(m.dport)]] as const) if (v) match[k] = v;
      if (str(m.proto, 16)) match.proto = m.proto;
      rule.match = match;
    }
    const c = obj(r.calico);
    if (c && (c.direction === 'ingress' || c.direction === 'egress') && str(c.iface, 64) && Array.isArray(c.policies)) {
      const name = (v: unknown) => (v === null ? null : str(v, 253) ? v : undefined);
      const policies = c.policies.map(obj).filter((p): p is Record<string, Json> => !!p && name(p.namespace) !== undefined && name(p.name) !== undefined && str(p.chain, 64))
        .slice(0, 64).map((p) => ({ namespace: name(p.namespace) as string | null, name: name(p.name) as string | null, chain: p.chain as string }));
      rule.calico = { direction: c.direction, iface: c.iface, explicit: c.explicit === true, policies };
    }
    out.push(rule);
  }
  return out;
}
