// bin/nettrace starts node with a small young generation (V8 would otherwise grow it to 32 MB)
// and two malloc arenas, memory an always-on agent would keep resident (the soak of `make bench`).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

const BIN = path.resolve(__dirname, '../../../../bin/nettrace');

test('nettrace runs with its young generation capped at 4 MB, however much it allocates, and two malloc arenas', (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'nettrace-bin-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  // preloaded into the process bin/nettrace starts: allocates as a busy agent would, then reports
  const probe = path.join(dir, 'probe.js');
  writeFileSync(probe, `const v8 = require('v8');
let keep = [];
let most = 0;
for (let i = 0; i < 2e6; i++) {
  keep.push({ i, s: 'x' + i });
  if (keep.length > 100000) keep = [];
  if (i % 50000 === 0) most = Math.max(most, v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space').space_size);
}
console.log(JSON.stringify({ most, execArgv: process.execArgv, arenas: process.env.MALLOC_ARENA_MAX }));
process.exit(0);
`);
  const out = execFileSync(BIN, ['--version'], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, NODE_OPTIONS: `--require ${probe}` } });
  const { most, execArgv, arenas } = JSON.parse(out) as { most: number; execArgv: string[]; arenas?: string };
  assert.equal(arenas, '2');
  assert.ok(execArgv.includes('--max-semi-space-size=2'), `node started with ${JSON.stringify(execArgv)}`);
  assert.ok(most <= 4 * 2 ** 20, `the young generation reached ${(most / 2 ** 20).toFixed(1)} MB (want <= 4)`);
});
