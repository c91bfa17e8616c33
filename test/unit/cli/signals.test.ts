// follow and diagnose stop on SIGINT, SIGTERM and SIGHUP (a closed terminal) instead of dying
// with their programs attached, and exit 128 + the signal's number. Driven through the real CLI
// against an "agent" that never answers: no root, nothing attached anywhere.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';

const MAIN = path.resolve(__dirname, '../../../src/cli/main.js');
const dir = mkdtempSync(path.join(os.tmpdir(), 'nettrace-signals-'));
const token = path.join(dir, 'token');
writeFileSync(token, 'signals-test-token-0123456789\n');

let server: Server;
let url = '';
/** called on each request the silent agent gets: the CLI is past its signal handlers by then */
let onRequest: () => void = () => {};

before(async () => {
  // answers nothing until told to hang up (closeAllConnections), which fails the CLI's request at once
  server = createServer(() => onRequest());
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
after(() => {
  server.closeAllConnections();
  server.close();
  rmSync(dir, { recursive: true, force: true });
});

interface Exit { status: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string; ms: number }

/** Runs the command, sends the signals once the agent is asked something, waits for the exit. */
async function interrupted(cmd: string, signals: NodeJS.Signals[]): Promise<Exit> {
  const asked = new Promise<void>((r) => (onRequest = r));
  const child = spawn(process.execPath, [MAIN, cmd, '--agents', url, '--token-file', token, '--flow', '10.244.1.5 -> 10.244.2.8'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d));
  child.stderr.on('data', (d: Buffer) => (stderr += d));
  const exited = new Promise<{ status: number | null; signal: NodeJS.Signals | null }>((r) => child.on('exit', (status, signal) => r({ status, signal })));
  await asked;
  const t0 = Date.now();
  for (const sig of signals) {
    child.kill(sig);
    await new Promise((r) => setTimeout(r, 100));
  }
  // what the CLI waited for fails now, rather than at its 5 s timeout: it goes on stopping
  server.closeAllConnections();
  const killer = setTimeout(() => child.kill('SIGKILL'), 20_000);
  const e = await exited;
  clearTimeout(killer);
  return { ...e, stdout, stderr, ms: Date.now() - t0 };
}

for (const cmd of ['diagnose', 'follow']) {
  for (const [sig, code] of [['SIGHUP', 129], ['SIGTERM', 143], ['SIGINT', 130]] as const) {
    test(`${cmd}: ${sig} stops it (handled, not the default action), exit ${code}, no verdict`, async () => {
      const r = await interrupted(cmd, [sig]);
      assert.equal(r.signal, null, `killed by ${r.signal}: no handler`);
      assert.equal(r.status, code, r.stderr);
      assert.doesNotMatch(r.stdout, /HEALTHY|BROKEN|SLOW/);
    });
  }
  test(`${cmd}: a second signal while stopping exits at once`, async () => {
    const r = await interrupted(cmd, ['SIGINT', 'SIGTERM']);
    assert.equal(r.signal, null);
    assert.equal(r.status, 143, r.stderr);
    assert.ok(r.ms < 3000, `took ${r.ms} ms`);
  });
}
