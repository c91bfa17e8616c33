// A stranger's bytes at a running agent: thousands of malformed HTTP requests on the metrics port
// and the trace API (random bytes, broken request lines, huge headers, requests dripped slowly,
// bad JSON to every POST). The agent never exits, its memory stays bounded, and it still answers.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { test } from 'node:test';
import { freePort, startAgent } from '../helpers/agent';
import { withTestbed } from '../helpers/cluster';
import { needsRoot } from '../helpers/privileged';
import { tokenFile } from '../helpers/remote';

function rssKb(pid: number): number {
  return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);
}

/** Send raw bytes, wait for the answer or the close (at most ms), then hang up. */
function raw(port: number, bytes: Buffer | string, ms = 300): Promise<string> {
  return new Promise((resolve) => {
    let got = '';
    const s = connect(port, '127.0.0.1');
    const done = () => {
      clearTimeout(timer);
      s.destroy();
      resolve(got);
    };
    const timer = setTimeout(done, ms);
    s.on('data', (d) => (got += d.toString('latin1')));
    s.on('error', done);
    s.on('close', done);
    s.write(bytes);
  });
}

/** Runs fn for 0..n-1, at most `width` at a time. */
async function pool(n: number, width: number, fn: (i: number) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: width }, async () => {
    while (next < n) await fn(next++);
  }));
}

test('fuzz: thousands of malformed requests; the agent keeps serving, its memory bounded', { timeout: 240_000 }, async (t) => {
  if (!needsRoot(t)) return;
  const tb = withTestbed(t);
  const token = tokenFile(t);
  const secret = readFileSync(token, 'utf8').trim();
  const [metrics, api] = [await freePort(), await freePort()];
  const agent = await startAgent(t, metrics, ['--nodes', tb.nodes[0]!.netns, '--token-file', token, '--api-addr', `127.0.0.1:${api}`]);
  const pid = agent.child.pid!;
  const alive = () => agent.child.exitCode === null && agent.child.signalCode === null;
  await fetch(`http://127.0.0.1:${metrics}/metrics`);
  const rssBefore = rssKb(pid);

  const answers = new Map<string, number>();
  const count = (reply: string) => {
    const status = /^HTTP\/1\.1 (\d{3})/.exec(reply)?.[1] ?? 'none';
    answers.set(status, (answers.get(status) ?? 0) + 1);
  };
  const lines = [
    'GET http://[/x HTTP/1.1', 'GET /%zz HTTP/1.1', 'GET //// HTTP/1.1', 'POST /v1/follow HTTP/9.9', 'GET /metrics HTTP/1.1\x00',
    'BREW /coffee HTCPCP/1.0', 'GET ' + '/a'.repeat(20_000) + ' HTTP/1.1', 'GET /v1/sessions/../../etc/passwd HTTP/1.1', '\x16\x03\x01\x02\x00\x01',
    'DELETE /v1/sessions/0123456789abcdef HTTP/1.1', 'GET /healthz?x=%ff%fe HTTP/1.1', 'GET /v1/departures?after=-1&limit=99999999999 HTTP/1.1',
  ];
  const auth = `Authorization: Bearer ${secret}\r\n`;
  const bodies = ['{', 'null', '[]', '"x"', '{"flow":1}', '{"flow":{"src":"x","dst":"y"}}', '{"flow":{"src":"10.244.1.5","dst":"10.244.2.8","dport":70000}}',
    '{"timeout_s":1e308,"flow":{"src":"10.244.1.5","dst":"10.244.2.8"}}', '{"__proto__":{"polluted":1}}', JSON.stringify({ flow: { src: 'a'.repeat(5000) } }), '\xff\xfe'];

  for (const port of [metrics, api]) {
    // random bytes
    await pool(1000, 16, async () => count(await raw(port, randomBytes(1 + Math.floor(Math.random() * 2048)))));
    // broken request lines, with and without the token
    await pool(lines.length * 20, 16, async (i) => count(await raw(port, `${lines[i % lines.length]}\r\nHost: x\r\n${i % 2 ? auth : ''}\r\n`)));
    // huge headers
    await pool(40, 8, async (i) => count(await raw(port, `GET /metrics HTTP/1.1\r\nHost: x\r\n${`X-${i}: ${'h'.repeat(1000)}\r\n`.repeat(120)}\r\n`)));
    // bad JSON to every POST, with the token, and an oversized body
    for (const path of ['/v1/follow', '/v1/probe']) {
      await pool(bodies.length * 10, 8, async (i) => {
        const body = bodies[i % bodies.length]!;
        count(await raw(port, `POST ${path} HTTP/1.1\r\nHost: x\r\n${auth}Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`));
      });
      count(await raw(port, `POST ${path} HTTP/1.1\r\nHost: x\r\n${auth}Content-Type: application/json\r\nContent-Length: 100000000\r\n\r\n${'{'.repeat(70_000)}`, 1000));
    }
    assert.ok(alive(), `the agent exited: ${agent.stderr()}`);
  }
  // slow partial requests: more than the connection cap, dripped; they are cut off, and the agent still answers
  const slow = Array.from({ length: 80 }, () => {
    const s = connect(api, '127.0.0.1');
    s.on('error', () => {});
    s.write('GET /v1/time HTTP/1.1\r\nHost: x\r\n');
    return s;
  });
  t.after(() => slow.forEach((s) => s.destroy()));
  const drip = setInterval(() => slow.forEach((s) => s.writable && s.write('X-a: b\r\n')), 1000);
  t.after(() => clearInterval(drip));
  await new Promise((r) => setTimeout(r, 13_000));
  clearInterval(drip);
  const cut = slow.filter((s) => s.destroyed || !s.writable || s.readableEnded).length;
  slow.forEach((s) => s.destroy());

  assert.ok(alive(), `the agent exited: ${agent.stderr()}`);
  const m = await fetch(`http://127.0.0.1:${metrics}/metrics`);
  assert.equal(m.status, 200);
  assert.match(await m.text(), /nettrace_agent_attached_hooks/);
  assert.equal((await fetch(`http://127.0.0.1:${metrics}/healthz`)).status, 200);
  const time = await fetch(`http://127.0.0.1:${api}/v1/time`, { headers: { authorization: `Bearer ${secret}` } });
  assert.equal(time.status, 200);
  assert.equal((await fetch(`http://127.0.0.1:${api}/v1/time`)).status, 401);
  const rssAfter = rssKb(pid);
  const sent = [...answers.values()].reduce((a, b) => a + b, 0);
  t.diagnostic(`${sent} malformed requests; answers ${JSON.stringify(Object.fromEntries(answers))}; ${cut}/80 slow connections cut; RSS ${rssBefore} -> ${rssAfter} kB`);
  assert.ok(!answers.has('500'), 'no request makes the agent fail inside');
  assert.ok(cut >= 70, `slow requests are cut off by the header timeout (${cut}/80)`);
  assert.ok(rssAfter < rssBefore + 64 * 1024, `RSS grew from ${rssBefore} to ${rssAfter} kB`);
});
