// The alert rules and dashboards that ship in grafana/: valid for Prometheus, every alert unit-tested.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { parse } from 'yaml';
import { ROOT } from '../helpers/cluster';
import { metricNames, shippedExpressions } from '../helpers/promql';

function promtool(args: string[], cwd = path.join(ROOT, 'grafana')): { status: number | null; out: string } {
  const r = spawnSync('promtool', args, { cwd, encoding: 'utf8' });
  if (r.error) throw new Error(`promtool is missing (make deps installs Debian's prometheus): ${r.error.message}`);
  return { status: r.status, out: r.stdout + r.stderr };
}

const alertNames = () => [...readFileSync(path.join(ROOT, 'grafana/alerts.yaml'), 'utf8').matchAll(/- alert: (\w+)/g)].map((m) => m[1]!);

test('promtool check rules accepts grafana/alerts.yaml', () => {
  const r = promtool(['check', 'rules', 'alerts.yaml']);
  assert.equal(r.status, 0, r.out);
  assert.match(r.out, new RegExp(`SUCCESS: ${alertNames().length} rules found`));
  assert.ok(alertNames().length >= 12);
});

interface Rule { alert: string; expr: string; labels?: Record<string, string>; annotations?: Record<string, string> }

/** The anchors of docs/runbooks.md's sections, as GitHub and most renderers make them from `## Heading`. */
function runbookAnchors(): Set<string> {
  const md = readFileSync(path.join(ROOT, 'docs/runbooks.md'), 'utf8');
  return new Set([...md.matchAll(/^## (.+)$/gm)].map((m) => m[1]!.trim().toLowerCase().replace(/[^\w\- ]/g, '').replace(/ /g, '-')));
}

test('every alert has a severity that matches impact, a templated summary and description, and a runbook_url to its own section', () => {
  const doc = parse(readFileSync(path.join(ROOT, 'grafana/alerts.yaml'), 'utf8')) as { groups: { rules: Rule[] }[] };
  const rules = doc.groups.flatMap((g) => g.rules);
  assert.deepEqual(rules.map((r) => r.alert), alertNames());
  const anchors = runbookAnchors();
  const severities = new Map<string, string>();
  for (const r of rules) {
    const sev = r.labels?.severity ?? '';
    assert.match(sev, /^(critical|warning|info)$/, `${r.alert}: severity ${sev}`);
    severities.set(r.alert, sev);
    const a = r.annotations ?? {};
    assert.deepEqual(Object.keys(a).sort(), ['description', 'runbook_url', 'summary'], `${r.alert}: annotations`);
    for (const k of ['summary', 'description'] as const) assert.match(a[k]!, /\{\{ \$(labels\.\w+|value)/, `${r.alert}: ${k} names what fired`);
    // a path relative to the repository: there is no public host for the docs (see alerts.yaml)
    assert.equal(a.runbook_url, `docs/runbooks.md#${r.alert.toLowerCase()}`, r.alert);
    assert.ok(anchors.has(r.alert.toLowerCase()), `${r.alert}: docs/runbooks.md has no section "## ${r.alert}"`);
  }
  assert.deepEqual([...anchors].sort(), rules.map((r) => r.alert.toLowerCase()).sort(), 'one runbook section per alert, no other');
  // what breaks traffic pages; nettrace's own bookkeeping does not
  for (const a of ['NettraceStepLossHigh', 'NettraceStepLatencyCritical']) assert.equal(severities.get(a), 'critical', a);
  for (const a of ['NettraceRecordsLost', 'NettraceNetfilterReadFailing']) assert.equal(severities.get(a), 'info', a);
  assert.notEqual(severities.get('NettraceAgentDown'), 'critical', 'an agent that is down does not break traffic');
});

interface Panel {
  title: string; type: string;
  datasource?: { type: string; uid: string };
  fieldConfig?: { defaults?: { unit?: string } };
  targets?: { expr: string; datasource?: { uid: string } }[];
}
interface Variable { name: string; type: string; query?: string; includeAll?: boolean; allValue?: string; datasource?: { uid: string } }

function dashboard(): { panels: Panel[]; templating: { list: Variable[] } } {
  return JSON.parse(readFileSync(path.join(ROOT, 'grafana/nettrace-dashboard.json'), 'utf8'));
}

/**
 * What is wrong with an expression's selectors: each must be filtered by cluster, job and node.
 * Metrics without a node label (process_*, the agent's own) get it, and the node filter, from a join
 * with nettrace_agent_info; up has none at all (a down agent's node is not known).
 */
function unfiltered(expr: string): string[] {
  const problems: string[] = [];
  const nodeJoin = /on \(instance, job\) group_left \(node\) nettrace_agent_info\{[^}]*node=~"\$node"/.test(expr);
  for (const m of expr.matchAll(/([a-zA-Z_:][\w:]*)\{([^}]*)\}/g)) {
    const [, name, matchers] = m;
    const want = name === 'up' || nodeJoin ? ['cluster', 'job'] : ['cluster', 'job', 'node'];
    for (const l of want) if (!matchers!.includes(`${l}=~"$${l}"`)) problems.push(`${name}: no ${l}=~"$${l}"`);
  }
  // a metric without {...} at all is not filtered either
  for (const name of metricNames(expr.replace(/([a-zA-Z_:][\w:]*)\{[^}]*\}/g, ' '))) problems.push(`${name}: no selector`);
  return problems;
}

test('the filter check: a selector without the variables, or a bare metric, is found', () => {
  assert.deepEqual(unfiltered('rate(x_total{cluster=~"$cluster", job=~"$job", node=~"$node"}[5m]) / up{cluster=~"$cluster", job=~"$job"}'), []);
  assert.deepEqual(unfiltered('sum by (node) (rate(x_total{node=~"$node"}[5m]))'), ['x_total: no cluster=~"$cluster"', 'x_total: no job=~"$job"']);
  assert.deepEqual(unfiltered('nettrace_agent_attached_hooks * on (instance, job) group_left (node) nettrace_agent_info{cluster=~"$cluster", job=~"$job", node=~"$node"}'), ['nettrace_agent_attached_hooks: no selector']);
  assert.deepEqual(unfiltered('rate(process_cpu_seconds_total{cluster=~"$cluster", job=~"$job"}[1m]) * on (instance, job) group_left (node) nettrace_agent_info{cluster=~"$cluster", job=~"$job", node=~"$node"}'), []);
  assert.deepEqual(unfiltered('rate(process_cpu_seconds_total{cluster=~"$cluster", job=~"$job"}[1m])'), ['process_cpu_seconds_total: no node=~"$node"']);
});

test('dashboard: datasource, cluster, job and node variables; every panel has a unit and the datasource, every query uses the variables', () => {
  const d = dashboard();
  const vars = new Map(d.templating.list.map((v) => [v.name, v]));
  const ds = vars.get('datasource');
  assert.deepEqual([ds?.type, ds?.query], ['datasource', 'prometheus']);
  for (const name of ['cluster', 'job', 'node']) {
    const v = vars.get(name);
    assert.equal(v?.type, 'query', name);
    assert.equal(v?.datasource?.uid, '${datasource}', name);
    assert.equal(v?.includeAll, true, `${name}: has All`);
    assert.match(v?.query ?? '', new RegExp(`^label_values\\(nettrace_agent_info.*, ${name}\\)$`), name);
  }
  // agents set no cluster label: All must also match series without one
  assert.equal(vars.get('cluster')?.allValue, '.*');
  // All jobs = the jobs of nettrace agents, never .* (up{} of every other target would match)
  assert.equal(vars.get('job')?.allValue, undefined);
  assert.match(vars.get('node')?.query ?? '', /cluster=~"\$cluster", job=~"\$job"/);
  const panels = d.panels.filter((p) => p.type !== 'row');
  assert.ok(panels.length >= 17, `${panels.length} panels`);
  for (const p of panels) {
    assert.equal(p.datasource?.uid, '${datasource}', `${p.title}: datasource`);
    assert.ok(p.fieldConfig?.defaults?.unit, `${p.title}: no unit`);
    assert.ok(p.targets?.length, `${p.title}: no query`);
    for (const t of p.targets!) {
      assert.equal(t.datasource?.uid, '${datasource}', `${p.title}: target datasource`);
      assert.deepEqual(unfiltered(t.expr), [], `${p.title}: ${t.expr}`);
    }
  }
  const titles = panels.map((p) => p.title);
  for (const want of ['Throughput per step', 'Packets per step', 'Packet loss rate per step', 'TCP retransmission rate', 'Netfilter rules per node', 'DNS latency P50 / P95 / P99 by server', 'DNS responses by rcode']) {
    assert.ok(titles.includes(want), `no panel "${want}"`);
  }
  const unit = (title: string) => panels.find((p) => p.title === title)?.fieldConfig?.defaults?.unit;
  assert.equal(unit('Throughput per step'), 'Bps');
  assert.equal(unit('Packets per step'), 'pps');
  assert.equal(unit('Packet loss rate per step'), 'percentunit');
  assert.equal(unit('TCP retransmission rate'), 'percentunit');
  // the retransmit series carry workloads, not addresses
  const exprs = panels.flatMap((p) => p.targets!.map((t) => t.expr)).join('\n');
  assert.doesNotMatch(exprs + readFileSync(path.join(ROOT, 'grafana/alerts.yaml'), 'utf8'), /source_ip|destination_ip|source_pod/);
});

test('the job the alerts select is the job the shipped PodMonitor gives the agents (the Prometheus Operator: the pods\' jobLabel label, else NAMESPACE/NAME)', () => {
  const pm = parse(readFileSync(path.join(ROOT, 'deploy/podmonitor.yaml'), 'utf8')) as { metadata: { name: string; namespace: string }; spec: { jobLabel?: string } };
  const ds = parse(readFileSync(path.join(ROOT, 'deploy/daemonset.yaml'), 'utf8')) as { spec: { template: { metadata: { labels: Record<string, string> } } } };
  const job = pm.spec.jobLabel !== undefined ? ds.spec.template.metadata.labels[pm.spec.jobLabel] : `${pm.metadata.namespace}/${pm.metadata.name}`;
  const selected = [...readFileSync(path.join(ROOT, 'grafana/alerts.yaml'), 'utf8').matchAll(/job="([^"]*)"/g)].map((m) => m[1]);
  assert.ok(selected.length > 0);
  for (const j of selected) assert.equal(j, job, 'an alert selects a job the shipped deployment does not have: it can never fire');
});

test('promtool test rules: every alert has a firing case, and all pass', () => {
  const r = promtool(['test', 'rules', 'alerts.test.yaml']);
  assert.equal(r.status, 0, r.out);
  const tests = readFileSync(path.join(ROOT, 'grafana/alerts.test.yaml'), 'utf8');
  for (const alert of alertNames()) {
    assert.match(tests, new RegExp(`alertname: ${alert}\\n\\s+exp_alerts:\\n\\s+- exp_labels`), `${alert} has no test where it fires`);
    assert.match(tests, new RegExp(`alertname: ${alert}\\n\\s+exp_alerts: \\[\\]`), `${alert} has no test where it does not fire`);
  }
});

test('every PromQL expression of the dashboards and rules parses', () => {
  const exprs = shippedExpressions();
  assert.ok(exprs.length >= 15, `only ${exprs.length} expressions found`);
  // promtool parses expressions of recording rules: one rule per shipped expression
  const dir = mkdtempSync(path.join(os.tmpdir(), 'nettrace-promql-'));
  try {
    const file = path.join(dir, 'exprs.yaml');
    writeFileSync(file, ['groups:', '  - name: shipped', '    rules:',
      ...exprs.flatMap((e, i) => [`      - record: shipped:expr${i}`, `        expr: ${JSON.stringify(e.expr)}`])].join('\n'));
    const r = promtool(['check', 'rules', file], dir);
    assert.equal(r.status, 0, r.out);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('metric names are found in expressions, and nothing else is', () => {
  assert.deepEqual(metricNames('histogram_quantile(0.99, sum by (le, step) (rate(nettrace_hop_latency_seconds_bucket{node=~".*"}[5m]))) > 0.005'),
    ['nettrace_hop_latency_seconds_bucket']);
  assert.deepEqual(metricNames('process_resident_memory_bytes / 1e6'), ['process_resident_memory_bytes']);
  assert.deepEqual(metricNames('up{job="nettrace"} == 0 or absent(nettrace_agent_info)'), ['up', 'nettrace_agent_info']);
});
