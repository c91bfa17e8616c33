// `nettrace agent` processes, Prometheus and an OTLP receiver, started by tests and stopped with them.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { TestContext } from 'node:test';
import { ROOT, sleep, startNettrace, type FollowRun } from './cluster';

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

export interface AgentRun extends FollowRun {
  url: string;
}

/** Starts `nettrace agent --metrics-addr 127.0.0.1:PORT ...args`, resolved once it printed `ready:`. */
export async function startAgent(t: TestContext, port: number, args: string[]): Promise<AgentRun> {
  const run = await startNettrace(t, ['agent', '--metrics-addr', `127.0.0.1:${port}`, ...args]);
  return { ...run, url: `http://127.0.0.1:${port}` };
}

export async function scrape(url: string): Promise<string> {
  const res = await fetch(`${url}/metrics`);
  return res.text();
}

/** The value of one sample line of an exposition, or null. */
export function sample(exposition: string, name: string, labels: Record<string, string>): number | null {
  for (const line of exposition.split('\n')) {
    if (!line.startsWith(name + '{') && !line.startsWith(name + ' ')) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return null;
}

export async function waitFor<T>(what: string, fn: () => Promise<T | null | undefined | false>, timeoutMs = 20000): Promise<T> {
  const end = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < end) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    await sleep(250);
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
}

export interface Prometheus {
  url: string;
  query(expr: string): Promise<{ metric: Record<string, string>; value: [number, string] }[]>;
}

/** Debian's prometheus scraping the targets every second, with our alert rules loaded. */
export async function startPrometheus(t: TestContext, targets: string[]): Promise<Prometheus> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'nettrace-prom-'));
  const port = await freePort();
  writeFileSync(path.join(dir, 'prometheus.yml'), [
    'global: { scrape_interval: 1s, evaluation_interval: 1s }',
    `rule_files: ['${path.join(ROOT, 'grafana/alerts.yaml')}']`,
    'scrape_configs:',
    '  - job_name: nettrace',
    `    static_configs: [{ targets: [${targets.map((x) => `'${x}'`).join(', ')}] }]`,
  ].join('\n'));
  const child = spawn('prometheus', [`--config.file=${path.join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${path.join(dir, 'data')}`,
    `--web.listen-address=127.0.0.1:${port}`], { stdio: 'ignore' });
  t.after(async () => {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
    rmSync(dir, { recursive: true, force: true });
  });
  const url = `http://127.0.0.1:${port}`;
  await waitFor('prometheus ready', async () => (await fetch(`${url}/-/ready`)).ok);
  const prom: Prometheus = {
    url,
    async query(expr) {
      const res = await fetch(`${url}/api/v1/query?query=${encodeURIComponent(expr)}`);
      const body = (await res.json()) as { status: string; error?: string; data: { result: { metric: Record<string, string>; value: [number, string] }[] } };
      if (body.status !== 'success') throw new Error(`PromQL ${expr}: ${body.error}`);
      return body.data.result;
    },
  };
  // each target scraped once before the test makes traffic: rate() needs a sample from before it
  await waitFor(`a first scrape of ${targets.join(', ')}`, async () => (await prom.query('up == 1')).length === targets.length, 10000);
  return prom;
}

export interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  startTimeUnixNano: string;
  endTimeUnixNano: string;
  attributes: { key: string; value: { stringValue?: string; intValue?: string | number } }[];
  events?: { name: string; attributes: OtlpSpan['attributes'] }[];
}

export function attr(s: OtlpSpan, key: string): string | number | undefined {
  const v = s.attributes.find((a) => a.key === key)?.value;
  return v?.stringValue ?? (v?.intValue !== undefined ? Number(v.intValue) : undefined);
}

/** An OTLP/HTTP receiver (JSON encoding, as the exporter sends): POST /v1/traces. */
export async function startOtlpReceiver(t: TestContext): Promise<{ url: string; spans: OtlpSpan[]; resources: OtlpSpan['attributes'][]; requests: () => number }> {
  const spans: OtlpSpan[] = [];
  /** each request's resource attributes */
  const resources: OtlpSpan['attributes'][] = [];
  let requests = 0;
  const server = createHttpServer((req, res) => {
    let body = '';
    req.on('data', (d: Buffer) => (body += d.toString()));
    req.on('end', () => {
      requests++;
      if (req.url !== '/v1/traces' || !String(req.headers['content-type']).startsWith('application/json')) {
        res.writeHead(415).end();
        return;
      }
      const msg = JSON.parse(body) as { resourceSpans: { resource?: { attributes: OtlpSpan['attributes'] }; scopeSpans: { spans: OtlpSpan[] }[] }[] };
      for (const rs of msg.resourceSpans) {
        resources.push(rs.resource?.attributes ?? []);
        for (const ss of rs.scopeSpans) spans.push(...ss.spans);
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  const port = await freePort();
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  t.after(() => new Promise<void>((r) => server.close(() => r())));
  return { url: `http://127.0.0.1:${port}`, spans, resources, requests: () => requests };
}
