// Kubernetes NetworkPolicies (networking.k8s.io/v1) for the test cluster's Calico modes: a YAML
// file checked field by field, and the iptables chains Calico's Felix would write for it on a
// node, in Felix's layout (cali-FORWARD -> dispatch -> cali-tw-/cali-fw-IFACE -> cali-pi-/cali-po-
// policy chains, the accept and pass mark bits, "cali:" rule comments), smaller: source pods are
// listed by address where Felix uses ipsets, and there are no profiles or host endpoints. Pure.
import { createHash } from 'node:crypto';
import { parseAllDocuments } from 'yaml';
import { usageError } from '../errors';

export type Labels = Record<string, string>;

/** Who a rule admits: pods by labels (in the policy's namespace, or in namespaces by labels), or a CIDR. */
export interface Peer {
  pods?: Labels;
  /** null: the policy's own namespace; {} every namespace */
  namespaces?: Labels | null;
  cidr?: string;
}

export interface PortSpec { protocol: 'tcp' | 'udp'; port?: number; endPort?: number }

/** peers null: from (or to) anywhere; ports null: every port and protocol */
export interface PolicyRule { peers: Peer[] | null; ports: PortSpec[] | null }

export interface NetPolicy {
  namespace: string;
  name: string;
  podSelector: Labels;
  /** null: the policy does not govern that direction; []: it allows nothing */
  ingress: PolicyRule[] | null;
  egress: PolicyRule[] | null;
}

/** A pod as a policy sees it: its namespace and labels, its address, its host-side veth. */
export interface Workload { name: string; namespace: string; labels: Labels; ip: string; iface: string }

/** The testbed's pods live in one namespace, labelled as the API server labels every namespace. */
export const NAMESPACE = 'default';
export const namespaceLabels = (ns: string): Labels => ({ 'kubernetes.io/metadata.name': ns });

const DNS1123 = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const MAX_FILE = 1 << 20;

type Obj = Record<string, unknown>;

/** Reads one NetworkPolicy; anything it does not support or that is not a NetworkPolicy is one E_USAGE line naming the field. */
export function parsePolicy(text: string, file: string): NetPolicy {
  const bad = (field: string, why: string, next = 'see `nettrace testbed policy apply --help` for the fields supported') =>
    usageError(`${file}: ${field} ${why}`, next);
  if (text.length > MAX_FILE) throw bad('', `is over ${MAX_FILE} bytes`);
  const docs = parseAllDocuments(text);
  const list = Array.isArray(docs) ? docs : [docs];
  const real = list.filter((d) => d.contents !== null);
  if (real.length !== 1) throw bad('', `holds ${real.length} YAML documents`, 'give one NetworkPolicy per file');
  const doc = real[0]!;
  if (doc.errors.length) throw bad('', `is not YAML: ${doc.errors[0]!.message.split('\n')[0]}`, 'fix the YAML');
  const root = doc.toJS({ maxAliasCount: 10 }) as unknown;
  const isObj = (v: unknown): v is Obj => !!v && typeof v === 'object' && !Array.isArray(v);
  const only = (o: Obj, at: string, keys: string[]) => {
    for (const k of Object.keys(o)) if (!keys.includes(k)) throw bad(`${at}${at ? '.' : ''}${k}`, 'is not supported');
  };
  const obj = (v: unknown, at: string): Obj => {
    if (v === null || v === undefined) return {};
    if (!isObj(v)) throw bad(at, 'is not a mapping');
    return v;
  };
  const list_ = (v: unknown, at: string): unknown[] => {
    if (!Array.isArray(v)) throw bad(at, 'is not a list');
    if (v.length > 256) throw bad(at, 'has over 256 entries');
    return v;
  };
  const labels = (v: unknown, at: string): Labels => {
    const o = obj(v, at);
    only(o, at, ['matchLabels', 'matchExpressions']);
    if (o.matchExpressions !== undefined) throw bad(`${at}.matchExpressions`, 'is not supported', 'use matchLabels');
    const ml = obj(o.matchLabels, `${at}.matchLabels`);
    const out: Labels = {};
    for (const [k, val] of Object.entries(ml)) {
      if (typeof val !== 'string' && typeof val !== 'number' && typeof val !== 'boolean') throw bad(`${at}.matchLabels.${k}`, 'is not a label value');
      out[k] = String(val);
    }
    return out;
  };
  if (!isObj(root)) throw bad('', 'is not a Kubernetes object');
  only(root, '', ['apiVersion', 'kind', 'metadata', 'spec']);
  if (root.apiVersion !== 'networking.k8s.io/v1') throw bad('apiVersion', `is ${JSON.stringify(root.apiVersion ?? null)}, not networking.k8s.io/v1`, 'give a networking.k8s.io/v1 NetworkPolicy');
  if (root.kind !== 'NetworkPolicy') throw bad('kind', `is ${JSON.stringify(root.kind ?? null)}, not NetworkPolicy`, 'give a networking.k8s.io/v1 NetworkPolicy');
  const meta = obj(root.metadata, 'metadata');
  only(meta, 'metadata', ['name', 'namespace', 'labels', 'annotations']);
  const name = meta.name;
  if (typeof name !== 'string' || name.length > 63 || !DNS1123.test(name)) throw bad('metadata.name', `${JSON.stringify(name ?? null)} is not a DNS-1123 label`, 'name it with up to 63 lowercase letters, digits and `-`');
  const namespace = meta.namespace ?? NAMESPACE;
  if (typeof namespace !== 'string' || namespace.length > 63 || !DNS1123.test(namespace)) throw bad('metadata.namespace', `${JSON.stringify(namespace)} is not a DNS-1123 label`, 'name an existing namespace, e.g. default');
  const spec = obj(root.spec, 'spec');
  only(spec, 'spec', ['podSelector', 'policyTypes', 'ingress', 'egress']);
  if (spec.podSelector === undefined) throw bad('spec.podSelector', 'is missing', 'give it ({} selects every pod in the namespace)');
  const podSelector = labels(spec.podSelector, 'spec.podSelector');

  const types = spec.policyTypes === undefined ? null : list_(spec.policyTypes, 'spec.policyTypes');
  for (const [i, t] of (types ?? []).entries()) if (t !== 'Ingress' && t !== 'Egress') throw bad(`spec.policyTypes[${i}]`, `is ${JSON.stringify(t)}, not Ingress or Egress`);
  // as the API server defaults it: Ingress always, Egress when there are egress rules
  const governs = (t: 'Ingress' | 'Egress') => (types ? types.includes(t) : t === 'Ingress' || spec.egress !== undefined);

  const peer = (v: unknown, at: string): Peer => {
    const o = obj(v, at);
    only(o, at, ['podSelector', 'namespaceSelector', 'ipBlock']);
    if (o.ipBlock !== undefined) {
      if (o.podSelector !== undefined || o.namespaceSelector !== undefined) throw bad(at, 'has ipBlock beside a selector', 'give ipBlock alone in its peer');
      const b = obj(o.ipBlock, `${at}.ipBlock`);
      only(b, `${at}.ipBlock`, ['cidr', 'except']);
      if (b.except !== undefined) throw bad(`${at}.ipBlock.except`, 'is not supported', 'split the CIDR into the blocks to allow');
      const m = typeof b.cidr === 'string' ? /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(b.cidr) : null;
      if (!m || m.slice(1, 5).some((x) => Number(x) > 255) || Number(m[5]) > 32) throw bad(`${at}.ipBlock.cidr`, `${JSON.stringify(b.cidr ?? null)} is not an IPv4 CIDR`, 'e.g. cidr: 10.244.1.0/24');
      return { cidr: b.cidr as string };
    }
    if (o.podSelector === undefined && o.namespaceSelector === undefined) throw bad(at, 'names no peer', 'give podSelector, namespaceSelector or ipBlock');
    return {
      pods: o.podSelector === undefined ? {} : labels(o.podSelector, `${at}.podSelector`),
      namespaces: o.namespaceSelector === undefined ? null : labels(o.namespaceSelector, `${at}.namespaceSelector`),
    };
  };
  const port = (v: unknown, at: string): PortSpec => {
    const o = obj(v, at);
    only(o, at, ['protocol', 'port', 'endPort']);
    const proto = o.protocol ?? 'TCP';
    if (proto !== 'TCP' && proto !== 'UDP') throw bad(`${at}.protocol`, `${JSON.stringify(proto)} is not supported`, 'use TCP or UDP');
    const out: PortSpec = { protocol: proto === 'TCP' ? 'tcp' : 'udp' };
    if (o.port !== undefined) {
      if (typeof o.port === 'string') throw bad(`${at}.port`, `is the named port ${JSON.stringify(o.port)}: named ports are not supported`, 'give the port number');
      if (!Number.isInteger(o.port) || (o.port as number) < 1 || (o.port as number) > 65535) throw bad(`${at}.port`, `${JSON.stringify(o.port)} is not a port`);
      out.port = o.port as number;
    }
    if (o.endPort !== undefined) {
      if (out.port === undefined || !Number.isInteger(o.endPort) || (o.endPort as number) < out.port || (o.endPort as number) > 65535) throw bad(`${at}.endPort`, `${JSON.stringify(o.endPort)} is not a port at or above port`);
      out.endPort = o.endPort as number;
    }
    return out;
  };
  const rules = (key: 'ingress' | 'egress', peerKey: 'from' | 'to'): PolicyRule[] | null => {
    if (!governs(key === 'ingress' ? 'Ingress' : 'Egress')) {
      if (spec[key] !== undefined) throw bad(`spec.${key}`, `is given but spec.policyTypes leaves out ${key === 'ingress' ? 'Ingress' : 'Egress'}`, 'add it to policyTypes, or remove the rules');
      return null;
    }
    // no rules: the direction is governed and nothing is allowed
    if (spec[key] === undefined || spec[key] === null) return [];
    return list_(spec[key], `spec.${key}`).map((r, i) => {
      const at = `spec.${key}[${i}]`;
      const o = obj(r, at);
      only(o, at, [peerKey, 'ports']);
      return {
        peers: o[peerKey] === undefined ? null : list_(o[peerKey], `${at}.${peerKey}`).map((p, j) => peer(p, `${at}.${peerKey}[${j}]`)),
        ports: o.ports === undefined ? null : list_(o.ports, `${at}.ports`).map((p, j) => port(p, `${at}.ports[${j}]`)),
      };
    });
  };
  return { namespace, name, podSelector, ingress: rules('ingress', 'from'), egress: rules('egress', 'to') };
}

function matches(sel: Labels, labels: Labels): boolean {
  return Object.entries(sel).every(([k, v]) => labels[k] === v);
}

/** The pods a policy applies to. */
export function selects(p: NetPolicy, w: Workload): boolean {
  return w.namespace === p.namespace && matches(p.podSelector, w.labels);
}

/** A peer's sources (or destinations) as iptables matches: one `-s`/`-d` per address, [''] for anywhere. */
function peerAddrs(p: NetPolicy, peers: Peer[] | null, all: Workload[]): string[] {
  if (!peers) return [''];
  const out: string[] = [];
  for (const peer of peers) {
    if (peer.cidr) out.push(peer.cidr);
    else {
      for (const w of all) {
        const nsOk = peer.namespaces ? matches(peer.namespaces, namespaceLabels(w.namespace)) : w.namespace === p.namespace;
        if (nsOk && matches(peer.pods ?? {}, w.labels)) out.push(`${w.ip}/32`);
      }
    }
  }
  return [...new Set(out)];
}

const b64 = (s: string, n: number) => createHash('sha256').update(s).digest('base64url').slice(0, n);

/** Felix's name of a policy in tier default, and of its chains: cali-pi-_HASH (ingress), cali-po-_HASH (egress), 28 characters. */
export function policyChain(p: NetPolicy, dir: 'ingress' | 'egress'): string {
  return `cali-p${dir === 'ingress' ? 'i' : 'o'}-_${b64(`default/${p.namespace}/knp.default.${p.name}`, 19)}`;
}

/** What Felix writes in a policy rule's comment: the policy named as Calico names a Kubernetes one. */
export function policyComment(p: NetPolicy, dir: 'ingress' | 'egress'): string {
  return `Policy ${p.namespace}/knp.default.${p.name} ${dir}`;
}

const ACCEPT = '0x10000';
const PASS = '0x20000';

/** A rule line with Felix's "cali:" comment, a hash of where it is and what it does. */
function rule(chain: string, body: string, comment?: string): string {
  const tag = b64(`${chain} ${body} ${comment ?? ''}`, 16);
  return `-A ${chain} -m comment --comment "cali:${tag}"${comment ? ` -m comment --comment "${comment}"` : ''}${body ? ` ${body}` : ''}`;
}

/** The rules of one policy chain: each peer x port that the policy allows sets the accept bit and returns. */
function policyRules(p: NetPolicy, dir: 'ingress' | 'egress', all: Workload[]): string[] {
  const chain = policyChain(p, dir);
  const flag = dir === 'ingress' ? '-s' : '-d';
  const out: string[] = [];
  for (const r of p[dir]!) {
    const ports = r.ports ?? [null];
    for (const addr of peerAddrs(p, r.peers, all)) {
      for (const port of ports) {
        const m: string[] = [];
        if (addr) m.push(flag, addr);
        if (port) {
          m.push('-p', port.protocol);
          if (port.port !== undefined) m.push('-m', 'multiport', '--dports', port.endPort ? `${port.port}:${port.endPort}` : String(port.port));
        }
        out.push(rule(chain, [...m, '-j', 'MARK', '--set-xmark', `${ACCEPT}/${ACCEPT}`].join(' '), policyComment(p, dir)));
      }
    }
  }
  if (out.length) out.push(rule(chain, `-m mark --mark ${ACCEPT}/${ACCEPT} -j RETURN`, 'Return if policy accepted'));
  return out;
}

/** The rule that hooks Calico into FORWARD (Felix's own comment tag). */
export const FORWARD_HOOK = '-A FORWARD -m comment --comment "cali:wUHhoiAYhphO9Mso" -j cali-FORWARD';

/** The filter table's chains and rules for a node's workloads under these policies; empty when none applies. */
export function renderNode(policies: NetPolicy[], local: Workload[], all: Workload[]): { chains: string[]; rules: string[] } {
  const chains = new Set<string>();
  const rules: string[] = [];
  const dispatch: string[] = [];
  const policyChains = new Map<string, string[]>();
  for (const w of local) {
    for (const dir of ['ingress', 'egress'] as const) {
      const pols = policies.filter((p) => p[dir] !== null && selects(p, w));
      if (!pols.length) continue;
      const wl = `cali-${dir === 'ingress' ? 'tw' : 'fw'}-${w.iface}`;
      chains.add(wl);
      dispatch.push(dir === 'ingress'
        ? rule('cali-to-wl-dispatch', `-o ${w.iface} -g ${wl}`)
        : rule('cali-from-wl-dispatch', `-i ${w.iface} -g ${wl}`));
      rules.push(
        rule(wl, '-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT'),
        rule(wl, '-m conntrack --ctstate INVALID -j DROP'),
        rule(wl, `-j MARK --set-xmark 0x0/0x30000`),
        rule(wl, `-j MARK --set-xmark 0x0/${PASS}`, 'Start of tier default'),
      );
      for (const p of pols) {
        const pc = policyChain(p, dir);
        if (!policyChains.has(pc)) policyChains.set(pc, policyRules(p, dir, all));
        // the policy's name on the jump too: a policy with no rules (deny all) has no rule comment to carry it
        rules.push(rule(wl, `-m mark --mark 0x0/${PASS} -j ${pc}`, policyComment(p, dir)),
          rule(wl, `-m mark --mark ${ACCEPT}/${ACCEPT} -j RETURN`, 'Return if policy accepted'));
      }
      rules.push(rule(wl, `-m mark --mark 0x0/${PASS} -j DROP`, 'End of tier default. Drop if no policies passed packet'));
    }
  }
  if (!chains.size) return { chains: [], rules: [] };
  for (const [pc, r] of policyChains) {
    chains.add(pc);
    rules.push(...r);
  }
  const top = [
    rule('cali-FORWARD', `-j MARK --set-xmark 0x0/0x30000`),
    rule('cali-FORWARD', '-i cali+ -j cali-from-wl-dispatch'),
    rule('cali-FORWARD', '-o cali+ -j cali-to-wl-dispatch'),
    rule('cali-FORWARD', `-m mark --mark ${ACCEPT}/${ACCEPT} -j ACCEPT`, 'Policy explicitly accepted packet.'),
  ];
  return { chains: ['cali-FORWARD', 'cali-from-wl-dispatch', 'cali-to-wl-dispatch', ...chains], rules: [...top, ...dispatch, ...rules] };
}

/**
 * iptables-restore --noflush input that turns a node's filter table from what it has (its
 * iptables-save) into this: every cali- chain it has or will have is declared (which empties it),
 * refilled, and those no longer needed are deleted; one transaction, so nothing is half applied.
 */
export function restoreInput(saved: string, want: { chains: string[]; rules: string[] }): string {
  const have = [...saved.matchAll(/^:(cali-\S+)/gm)].map((m) => m[1]!);
  const hooked = saved.split('\n').some((l) => l.trim() === FORWARD_HOOK);
  const keep = new Set(want.chains);
  const lines = ['*filter', ...[...new Set([...have, ...want.chains])].map((c) => `:${c} - [0:0]`)];
  if (want.chains.length && !hooked) lines.push(FORWARD_HOOK.replace(/^-A FORWARD/, '-I FORWARD 1'));
  if (!want.chains.length && hooked) lines.push(FORWARD_HOOK.replace(/^-A/, '-D'));
  lines.push(...want.rules);
  for (const c of have) if (!keep.has(c)) lines.push(`-X ${c}`);
  lines.push('COMMIT', '');
  return lines.join('\n');
}
