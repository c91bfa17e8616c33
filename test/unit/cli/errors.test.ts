// Bad input through the real CLI: one line naming what is wrong and what to do, a non-zero exit.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';
import { requireRoot } from '../../../src/cli/preflight';
import { NettraceError } from '../../../src/errors';

// what bin/nettrace loads, beside this test wherever it was compiled (dist/, or a private --outDir)
const MAIN = path.resolve(__dirname, '../../../src/cli/main.js');

function cli(args: string[], asUser?: string) {
  const cmd = asUser ? 'setpriv' : process.execPath;
  const full = asUser ? ['--reuid', asUser, '--regid', asUser, '--clear-groups', process.execPath, MAIN, ...args] : [MAIN, ...args];
  const r = spawnSync(cmd, full, { encoding: 'utf8', timeout: 30_000 });
  return { status: r.status, stderr: r.stderr, stdout: r.stdout };
}

/** One line, exit 2, `nettrace: E_USAGE: what; next`. */
function assertUsageLine(r: { status: number | null; stderr: string }, what: RegExp, label = ''): void {
  assert.equal(r.status, 2, `${label}: ${r.stderr}`);
  assert.equal(r.stderr.trim().split('\n').length, 1, `${label}: ${r.stderr}`);
  assert.match(r.stderr, /^nettrace: E_USAGE: [^;\n]+; \S/, label);
  assert.match(r.stderr, what, label);
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

test('--every: a power of two up to 1024, of a TCP flow; anything else is refused before anything is attached', { skip: process.getuid?.() !== 0 && 'needs root to get past the root check' }, () => {
  assertUsageLine(cli(['follow', '--flow', '1.2.3.4 -> 5.6.7.8:80', '--every', '3']), /--every takes a power of two from 1 to 1024/, '3');
  assertUsageLine(cli(['follow', '--flow', '1.2.3.4 -> 5.6.7.8:80', '--every', '2048']), /--every takes a power of two/, '2048');
  assertUsageLine(cli(['follow', '--flow', '1.2.3.4 -> 5.6.7.8:53', '--proto', 'udp', '--every', '16']), /--every samples TCP flows only; this flow is udp/, 'udp');
  assertUsageLine(cli(['follow', '--flow', '1.2.3.4 -> 5.6.7.8', '--every', '16']), /this flow is icmp/, 'icmp');
});

test('an unknown node namespace: not-found error naming it, exit 5', { skip: process.getuid?.() !== 0 && 'needs root to get past the root check' }, () => {
  const r = cli(['follow', '--flow', '10.244.1.5 -> 10.244.2.8', '--nodes', 'no-such-node-ns']);
  assert.equal(r.status, 5);
  assert.match(r.stderr, /^nettrace: E_NOT_FOUND: no network namespace named no-such-node-ns; list them with `ip netns list`/);
});

// setpriv needs root, and nobody must be able to read the checkout (CI may clone under /root)
const nobodyCanRun = process.getuid?.() === 0 && spawnSync('setpriv', ['--reuid', '65534', '--regid', '65534', '--clear-groups', 'test', '-r', MAIN]).status === 0;

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

// a namespace that does not exist: were an option let through, the command stops there, touching nothing
const NO_NODE = ['--nodes', 'nt-no-such-node-ns'];
const FLOW = ['--flow', '10.244.1.5 -> 10.244.2.8'];

test("commander's own errors: the one-line E_USAGE format, exit 2, pointing to the command's help", () => {
  assertUsageLine(cli(['follow', ...FLOW, '--flw', 'x']), /E_USAGE: unknown option '--flw'.*; see `nettrace follow --help`$/m, 'unknown option');
  assertUsageLine(cli(['diagnose', '--flow']), /E_USAGE: option '--flow <spec>' argument missing; see `nettrace diagnose --help`/, 'missing value');
  assertUsageLine(cli(['follow']), /E_USAGE: required option '--flow <spec>' not specified; see `nettrace follow --help`/, 'missing option');
  assertUsageLine(cli(['folow', ...FLOW]), /E_USAGE: unknown command 'folow' \(Did you mean follow\?\); see `nettrace --help`/, 'unknown command');
  assertUsageLine(cli(['testbed', 'up', '--cni']), /E_USAGE: option '--cni <mode>' argument missing; see `nettrace testbed up --help`/, 'nested command');
  assertUsageLine(cli(['follow', ...FLOW, '-o', 'xml']), /argument 'xml' is invalid. Allowed choices are table, json; see/, 'bad choice');
  assertUsageLine(cli(['follow', ...FLOW, '--count', '0']), /--count takes a whole number of at least 1; see/, 'option parser');
  assert.doesNotMatch(cli(['follow', '--flw']).stderr, /^error:/m, 'commander prints nothing of its own');
});

test('--help: exit 0, and the exit codes are listed', () => {
  const r = cli(['--help']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^Exit codes:$/m);
  for (const re of [/^ {2}2 +usage/m, /^ {2}10 +diagnose: the flow is BROKEN/m, /^ {2}11 +diagnose: the flow is SLOW/m, /130/]) assert.match(r.stdout, re);
  assert.match(cli(['diagnose', '--help']).stdout, /exits 0 when healthy, 10 when broken,\s+11 when slow/);
});

test('a huge --timeout, --seconds or --grace is refused, not turned into a timer that fires at once', () => {
  // Node's timers overflow above 2^31-1 ms (under 25 days): such a value would end the trace at once
  assertUsageLine(cli(['follow', ...FLOW, ...NO_NODE, '--timeout', '2147484']), /^nettrace: E_USAGE: --timeout 2147484 is more than 24 hours; give at most 24h \(86400 seconds\)$/m, '--timeout');
  assertUsageLine(cli(['follow', ...FLOW, ...NO_NODE, '--timeout', '1e300']), /--timeout 1e300 is more than 24 hours/, '--timeout 1e300');
  assertUsageLine(cli(['diagnose', ...FLOW, ...NO_NODE, '--passive', '--seconds', '100000']), /--seconds 100000 is more than 24 hours/, '--seconds');
  assertUsageLine(cli(['follow', ...FLOW, ...NO_NODE, '--grace', '2147483648']), /--grace 2147483648 is more than 24 hours; give at most 24h \(86400000 milliseconds\)/, '--grace');
  // 24 hours itself is fine: past parsing, the command goes on (to the root check, or the missing namespace)
  const ok = cli(['follow', ...FLOW, ...NO_NODE, '--timeout', '86400']);
  assert.notEqual(ok.status, 2, ok.stderr);
});

test('testbed --prefix: no path separators or dot-dot, refused before anything is read or deleted', () => {
  for (const cmd of ['up', 'down', 'status']) {
    for (const prefix of ['../x', '/etc/', 'a/b', '..', '.hidden', 'a b', 'default']) {
      assertUsageLine(cli(['testbed', cmd, '--prefix', prefix]), /E_USAGE: --prefix /, `testbed ${cmd} --prefix ${prefix}`);
    }
  }
});

test('a reader that goes away (`nettrace --help | true`): exit 141 as SIGPIPE would, no stack trace', () => {
  // `true` exits at once, long before node has started: the help text meets a closed pipe
  const s = spawnSync('bash', ['-c', `set -o pipefail; "${process.execPath}" "${MAIN}" --help 2>/tmp/nt-epipe-$$ | true; echo "$?"; cat /tmp/nt-epipe-$$; rm -f /tmp/nt-epipe-$$`], { encoding: 'utf8', timeout: 30_000 });
  const [code, ...stderr] = s.stdout.split('\n');
  assert.equal(code, '141', s.stdout);
  assert.equal(stderr.join('\n').trim(), '', 'nothing on stderr');
});
