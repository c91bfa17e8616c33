// Every PromQL expression nettrace ships (dashboards and alert rules), and the metric names in it.
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { ROOT } from './cluster';

export interface ShippedExpr {
  where: string;
  expr: string;
}

/** Grafana's variables replaced by values Prometheus accepts. */
function substitute(expr: string): string {
  return expr.replace(/\$__rate_interval|\$__interval/g, '1m').replace(/\$\{?\w+\}?/g, '.*');
}

export function shippedExpressions(): ShippedExpr[] {
  const dir = path.join(ROOT, 'grafana');
  const out: ShippedExpr[] = [];
  for (const f of readdirSync(dir).sort()) {
    const file = path.join(dir, f);
    if (f.endsWith('.json')) {
      const dash = JSON.parse(readFileSync(file, 'utf8')) as { panels: { title: string; targets?: { expr: string }[] }[]; templating?: { list: { name: string; query?: string | { query: string } }[] } };
      for (const p of dash.panels) for (const tgt of p.targets ?? []) out.push({ where: `${f}: ${p.title}`, expr: substitute(tgt.expr) });
      for (const v of dash.templating?.list ?? []) {
        const q = typeof v.query === 'string' ? v.query : v.query?.query;
        const m = q ? /^label_values\((.+),\s*\w+\)$/.exec(q) : null;
        if (m) out.push({ where: `${f}: variable ${v.name}`, expr: substitute(m[1]!) });
      }
    } else if (f.endsWith('.yaml') && !f.endsWith('.test.yaml')) {
      // the rules file's `expr: |` blocks: one indented line each
      const lines = readFileSync(file, 'utf8').split('\n');
      for (let i = 0; i < lines.length; i++) {
        if (/^\s*expr: \|\s*$/.test(lines[i]!)) out.push({ where: `${f}: line ${i + 2}`, expr: lines[i + 1]!.trim() });
      }
    }
  }
  return out;
}

const KEYWORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'bool', 'and', 'or', 'unless', 'offset', 'inf', 'nan']);

/** Metric names an expression selects: identifiers that are not functions, keywords, label names or durations. */
export function metricNames(expr: string): string[] {
  const stripped = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""') // strings
    .replace(/\{[^}]*\}/g, ' ') // label matchers
    .replace(/\[[^\]]*\]/g, ' ') // ranges
    .replace(/(^|[^\w:])\d[\d.]*(e[+-]?\d+)?/gi, '$1 ') // numbers, 1e6 included
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' '); // label lists
  const names = new Set<string>();
  for (const m of stripped.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*(\s*\()?/g)) {
    const id = m[0].replace(/\s*\($/, '');
    if (m[1] || KEYWORDS.has(id.toLowerCase())) continue;
    names.add(id);
  }
  return [...names];
}
