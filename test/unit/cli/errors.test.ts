// Bad input through the real CLI: one line naming what is wrong and what to do, a non-zero exit.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';
import { requireRoot } from '../../../src/cli/preflight';
import { NettraceError } from '../../../src/errors';

const NETTRACE = path.resolve(__dirname, '../../../../bin/nettrace');

function cli(args: string[], asUser?: string) {
  const cmd = asUser ? 'setpriv' : NETTRACE;
  const full = asUser ? ['--reuid', asUser, '--regid', asUser, '--clear-groups', NETTRACE, ...args] : args;
  const r = spawnSync(cmd, full, { encoding: 'utf8' });
  return { status: r.status, stderr: r.stderr, stdout: r.stdout };
}

test('a malformed --flow: usage error, exit 2, one line', () => {
  const r = cli(['follow', '--flow', '10.244.1.5 => 10.244.2.8']);
  assert.equal(r.status, 2);
  assert.equal(r.stderr.trim().split('\n').length, 1);
  assert.match(r.stderr, /^nettrace: E_USAGE: --flow: .* has no single "->"; write SRC\[:PORT\] -> DST\[:PORT\]/);
});

test('bad --proto, --count, --output are refused before anything is attached', () => {
  assert.match(cli(['follow', '--flow', '1.2.3.4 -> 5.6.7.8', '--proto', 'sctp']).stderr, /E_USAGE: --proto: "sctp" is not tcp, udp or icmp/);
  const count = cli(['follow', '--flow', '1.2.3.4 -> 5.6.7.8', '--count', '0']);
  assert.equal(count.status, 2);
  assert.match(count.stderr, /--count takes a whole number/);
  assert.equal(cli(['follow', '--flow', '1.2.3.4 -> 5.6.7.8', '-o', 'xml']).status, 2);
});

test('an unknown node namespace: not-found error naming it, exit 5', { skip: process.getuid?.() !== 0 && 'needs root to get past the root check' }, () => {
  const r = cli(['follow', '--flow', '10.244.1.5 -> 10.244.2.8', '--nodes', 'no-such-node-ns']);
  assert.equal(r.status, 5);
  assert.match(r.stderr, /^nettrace: E_NOT_FOUND: no network namespace named no-such-node-ns; list them with `ip netns list`/);
});

// setpriv needs root, and nobody must be able to read the checkout (CI may clone under /root)
const nobodyCanRun = process.getuid?.() === 0 && spawnSync('setpriv', ['--reuid', '65534', '--regid', '65534', '--clear-groups', 'test', '-r', NETTRACE]).status === 0;

test('not root: the preflight error', () => {
  assert.throws(() => requireRoot(1000), (e: unknown) => e instanceof NettraceError && e.exitCode === 3 && /must run as root/.test(e.message) && /sudo/.test(e.next));
  assert.doesNotThrow(() => requireRoot(0));
});

test('not root: permission error from the CLI, exit 3', { skip: !nobodyCanRun && 'the checkout is not readable by nobody here; the preflight test above covers it' }, () => {
  const r = cli(['follow', '--flow', '10.244.1.5 -> 10.244.2.8'], '65534');
  assert.equal(r.status, 3, r.stderr);
  assert.match(r.stderr, /^nettrace: E_PERMISSION: nettrace must run as root.*; run it with sudo/);
});

test('an unknown testbed CNI mode', () => {
  const r = cli(['testbed', 'up', '--cni', 'cilium']);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /E_USAGE: --cni cilium is not a mode this testbed builds; use one of: flannel-vxlan/);
});
