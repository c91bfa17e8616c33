// A system tool that hangs is killed after its timeout and named in a one-line error, rather
// than stalling nettrace with its programs attached.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { NettraceError } from '../../src/errors';
import { EXEC_TIMEOUT_MS, run } from '../../src/exec';

test('run: a command past its timeout is killed, and the error names it', () => {
  const t0 = Date.now();
  assert.throws(() => run('sleep', ['30'], { timeoutMs: 200 }),
    (e: unknown) => e instanceof NettraceError && e.code === 'E_INTERNAL' && /`sleep 30` did not finish in 0\.2 s and was killed/.test(e.message));
  assert.ok(Date.now() - t0 < 5000, 'killed, not waited for');
  assert.equal(run('sleep', ['30'], { timeoutMs: 200, allowFail: true }), '');
});

test('run: every call has a timeout by default', () => {
  assert.ok(EXEC_TIMEOUT_MS > 0 && EXEC_TIMEOUT_MS <= 60_000);
  assert.equal(run('echo', ['ok']), 'ok\n');
  assert.throws(() => run('false', []), /`false` failed/);
});
