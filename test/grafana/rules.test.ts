// The alert rules and dashboards that ship in grafana/: valid for Prometheus, every alert unit-tested.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { ROOT } from '../helpers/cluster';
import { metricNames, shippedExpressions } from '../helpers/promql';

function promtool(args: string[], cwd = path.join(ROOT, 'grafana')): { status: number | null; out: string } {
  const r = spawnSync('promtool', args, { cwd, encoding: 'utf8' });
  if (r.error) throw new Error(`promtool is missing (make deps installs Debian's prometheus): ${r.error.message}`);
  return { status: r.status, out: r.stdout + r.stderr };
}

test('promtool check rules accepts grafana/alerts.yaml', () => {
  const r = promtool(['check', 'rules', 'alerts.yaml']);
  assert.equal(r.status, 0, r.out);
  assert.match(r.out, /SUCCESS: 6 rules found/);
});

test('promtool test rules: every alert has a firing case, and all pass', () => {
  const r = promtool(['test', 'rules', 'alerts.test.yaml']);
  assert.equal(r.status, 0, r.out);
  const rules = [...readFileSync(path.join(ROOT, 'grafana/alerts.yaml'), 'utf8').matchAll(/- alert: (\w+)/g)].map((m) => m[1]);
  const tests = readFileSync(path.join(ROOT, 'grafana/alerts.test.yaml'), 'utf8');
  for (const alert of rules) {
    assert.match(tests, new RegExp(`alertname: ${alert}\\n\\s+exp_alerts:\\n\\s+- exp_labels`), `${alert} has no test where it fires`);
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
