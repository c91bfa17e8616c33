// Time options take durations (10s, 500ms, 2m, 1h30m) or a plain number in their old unit;
// --netns is the new name of --nodes, which still works.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';
import { parseDuration } from '../../../src/cli/duration';
import { NettraceError } from '../../../src/errors';

const MAIN = path.resolve(__dirname, '../../../src/cli/main.js');
const FLOW = ['--flow', '10.244.1.5 -> 10.244.2.8'];
// a namespace that does not exist: an option that parsed lets the command go on to stop there
// (not found as root, the root check otherwise), touching nothing
const NO_NODE = 'nt-no-such-node-ns';

function cli(args: string[]) {
  const r = spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8', timeout: 30_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Past option parsing: whatever stops the command, it is not a usage error. */
function assertParsed(args: string[]): void {
  const r = cli(args);
  assert.notEqual(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
  assert.doesNotMatch(r.stderr, /E_USAGE/);
}

function usageLine(args: string[]): string {
  const r = cli(args);
  assert.equal(r.status, 2, r.stderr);
  assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  return r.stderr.trim();
}

test('durations in seconds and milliseconds; plain numbers keep the option\'s unit', () => {
  const cases: [string, 's' | 'ms', number][] = [
    ['10s', 's', 10], ['500ms', 's', 0.5], ['2m', 's', 120], ['1h30m', 's', 5400], ['1.5s', 's', 1.5], ['24h', 's', 86_400],
    ['30', 's', 30], ['0.25', 's', 0.25], ['86400', 's', 86_400],
    ['10s', 'ms', 10_000], ['500ms', 'ms', 500], ['1m', 'ms', 60_000], ['1s500ms', 'ms', 1500], ['1000', 'ms', 1000], ['0.4ms', 'ms', 1],
    [' 5s ', 's', 5],
  ];
  for (const [text, unit, want] of cases) assert.equal(parseDuration('--x', text, unit), want, `${text} in ${unit}`);
});

test('a bad duration: E_USAGE saying how to write one', () => {
  const refused = (text: string, unit: 's' | 'ms', what: RegExp) => assert.throws(() => parseDuration('--timeout', text, unit),
    (e: unknown) => e instanceof NettraceError && e.code === 'E_USAGE' && what.test(e.line()), `${text}`);
  for (const bad of ['10x', '10 s', 's', '1.2.3s', '-5s', '-5', '5s-', '', '1e400', '10sec', 'ms10', '1h 30m']) {
    refused(bad, 's', /^nettrace: E_USAGE: --timeout ".*" is not a duration; write it as 10s, 500ms, 2m or 1h30m, or as a number of seconds$/);
  }
  refused('0', 's', /--timeout 0 is not above 0; give a duration such as 10s/);
  refused('0ms', 'ms', /is not above 0; give a duration such as 500ms/);
  refused('24h1s', 's', /--timeout 24h1s is more than 24 hours; give at most 24h \(86400 seconds\)/);
  refused('86400001', 'ms', /is more than 24 hours; give at most 24h \(86400000 milliseconds\)/);
});

test('every time option of the CLI takes a duration', () => {
  assertParsed(['follow', ...FLOW, '--netns', NO_NODE, '--timeout', '90s', '--grace', '1.5s']);
  assertParsed(['follow', ...FLOW, '--netns', NO_NODE, '--timeout', '30', '--grace', '250']);
  assertParsed(['diagnose', ...FLOW, '--netns', NO_NODE, '--passive', '--seconds', '2m']);
  // the agent's checks on its options come before its root check and its namespace
  assertParsed(['agent', '--netns', NO_NODE, '--rescan', '10s']);
});

test('a bad time option on the CLI: one E_USAGE line, exit 2', () => {
  assert.match(usageLine(['follow', ...FLOW, '--timeout', '10x']), /^nettrace: E_USAGE: --timeout "10x" is not a duration; write it as 10s, 500ms, 2m or 1h30m, or as a number of seconds$/);
  assert.match(usageLine(['follow', ...FLOW, '--grace', '1 s']), /--grace "1 s" is not a duration; .* a number of milliseconds$/);
  assert.match(usageLine(['diagnose', ...FLOW, '--seconds', '25h']), /--seconds 25h is more than 24 hours; give at most 24h \(86400 seconds\)$/);
  assert.match(usageLine(['agent', '--rescan', '0s']), /--rescan 0s is not above 0/);
});

test('help names durations and their defaults', () => {
  const follow = cli(['follow', '--help']).stdout;
  assert.match(follow, /--timeout <duration>/);
  assert.match(follow, /--grace <duration>[\s\S]*\(default:\s+1s\)/);
  assert.match(cli(['diagnose', '--help']).stdout, /--seconds <duration>[\s\S]*\(default:\s+5s\)/);
});

test('--netns names the namespaces acting as nodes; --nodes, its old name, still works and is out of the help', () => {
  for (const cmd of ['follow', 'diagnose']) {
    for (const flag of ['--netns', '--nodes']) {
      const r = cli([cmd, ...FLOW, flag, NO_NODE, '--timeout', '1s'].filter((a) => cmd === 'follow' || (a !== '--timeout' && a !== '1s')));
      assert.notEqual(r.status, 2, r.stderr);
      if (process.getuid?.() === 0) assert.match(r.stderr, new RegExp(`^nettrace: E_NOT_FOUND: no network namespace named ${NO_NODE}`), `${cmd} ${flag}`);
    }
    const help = cli([cmd, '--help']).stdout;
    assert.match(help, /--netns <name,\.\.\.>/);
    assert.doesNotMatch(help, /--nodes/);
  }
  assertParsed(['agent', '--nodes', NO_NODE]);
  assert.match(usageLine(['follow', ...FLOW, '--netns', 'a', '--nodes', 'b']), /E_USAGE: --nodes is the old name of --netns; give --netns only/);
  // the agent checks its namespace after the root check
  if (process.getuid?.() === 0) assert.match(usageLine(['agent', '--netns', 'a,b']), /an agent watches one node, not 2 \(a, b\); start one agent per node, e\.g\. `nettrace agent --netns node1`/);
  assert.match(usageLine(['follow', ...FLOW, '--netns', 'a', '--agents', 'http://127.0.0.1:1', '--token-file', '/dev/null']), /--netns and --agents do not go together/);
});
