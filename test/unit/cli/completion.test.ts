// --version, `completion bash|zsh` and the examples in every command's help, through the real CLI.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { Command, Option } from 'commander';
import { bashCompletion, zshCompletion } from '../../../src/cli/completion';
import { packageRoot } from '../../../src/probe/paths';
import { CNI_MODES } from '../../../src/topology/cni';

const MAIN = path.resolve(__dirname, '../../../src/cli/main.js');

function cli(args: string[]) {
  const r = spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8', timeout: 30_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

const has = (tool: string) => spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0;

/** What bash completes for the words of a command line; the last word is the one being typed. */
function bashComplete(script: string, words: string[]): string[] {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'nt-compl-'));
  try {
    const file = path.join(dir, 'nettrace.bash');
    writeFileSync(file, script);
    const quoted = words.map((w) => `'${w.replace(/'/g, `'\\''`)}'`).join(' ');
    const r = spawnSync('bash', ['--norc', '-c', `source '${file}'; COMP_WORDS=(${quoted}); COMP_CWORD=${words.length - 1}; _nettrace; printf '%s\\n' "\${COMPREPLY[@]}"`],
      { encoding: 'utf8', timeout: 10_000, cwd: dir });
    assert.equal(r.status, 0, r.stderr);
    return r.stdout.split('\n').filter(Boolean);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('--version and -V print package.json\'s version, exit 0', () => {
  // the checkout's package.json; compiled into a private --outDir, the one where the tests run from
  const { version } = JSON.parse(readFileSync(path.join(packageRoot(), 'package.json'), 'utf8')) as { version: string };
  assert.match(version, /^\d+\.\d+\.\d+/);
  for (const flag of ['--version', '-V']) {
    const r = cli([flag]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, `${version}\n`);
  }
});

test('every command\'s --help ends with examples', () => {
  for (const cmd of [[], ['follow'], ['diagnose'], ['agent'], ['testbed', 'up'], ['cleanup'], ['completion']]) {
    const r = cli([...cmd, '--help']);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^Examples:\n {2}# .+\n {2}(nettrace|source) /m, `nettrace ${cmd.join(' ')} --help`);
  }
});

test('completion bash: commands, options, choices and files, from the real program', { skip: !has('bash') && 'no bash' }, () => {
  const r = cli(['completion', 'bash']);
  assert.equal(r.status, 0, r.stderr);
  const script = r.stdout;
  const top = bashComplete(script, ['nettrace', '']);
  for (const c of ['follow', 'diagnose', 'agent', 'testbed', 'cleanup', 'completion', 'help']) assert.ok(top.includes(c), `${c} in ${top}`);
  assert.deepEqual(bashComplete(script, ['nettrace', 'di']), ['diagnose']);
  assert.deepEqual(bashComplete(script, ['nettrace', '--v']), ['--version']);

  const follow = bashComplete(script, ['nettrace', 'follow', '--']);
  for (const o of ['--flow', '--netns', '--count', '--timeout', '--grace', '--agents', '--output', '--help']) assert.ok(follow.includes(o), `${o} in ${follow}`);
  // hidden options do not complete: the old --nodes, the agent's test-only flags
  assert.ok(!follow.includes('--nodes'));
  assert.ok(!bashComplete(script, ['nettrace', 'agent', '--']).includes('--clock-skew-ms'));

  assert.deepEqual(bashComplete(script, ['nettrace', 'follow', '-o', '']), ['table', 'json']);
  assert.deepEqual(bashComplete(script, ['nettrace', 'follow', '--flow', '1.2.3.4 -> 5.6.7.8', '--output', 'j']), ['json']);
  assert.deepEqual(bashComplete(script, ['nettrace', 'agent', '--attach', '']), ['tcx', 'tc', 'mixed']);
  assert.deepEqual(bashComplete(script, ['nettrace', 'follow', '--attach', '']), ['tcx', 'tc']);
  assert.deepEqual(bashComplete(script, ['nettrace', 'testbed', '']).sort(), ['down', 'help', 'policy', 'status', 'up']);
  assert.deepEqual(bashComplete(script, ['nettrace', 'testbed', 'policy', '']).sort(), ['apply', 'delete', 'help', 'list']);
  assert.deepEqual(bashComplete(script, ['nettrace', 'diagnose', '--cni', '']), [...CNI_MODES]);
  assert.deepEqual(bashComplete(script, ['nettrace', 'completion', '']), ['bash', 'zsh']);
  assert.deepEqual(bashComplete(script, ['nettrace', 'help', 'fo']), ['follow']);
  // a value is not taken for a command: `--netns testbed` does not switch to testbed's options
  assert.ok(bashComplete(script, ['nettrace', 'follow', '--netns', 'testbed', '--']).includes('--flow'));
  // a --token-file completes file names (mkdtemp's directory holds the script only)
  assert.deepEqual(bashComplete(script, ['nettrace', 'follow', '--token-file', 'nett']), ['nettrace.bash']);
});

test('completion scripts come from the program: a new command or option completes without editing a list', { skip: !has('bash') && 'no bash' }, () => {
  const toy = new Command('nettrace');
  toy.command('probe').option('--shiny <mode>', 'a new option').addOption(new Option('--level <n>', 'a level').choices(['low', 'high']));
  const script = bashCompletion(toy);
  assert.deepEqual(bashComplete(script, ['nettrace', 'pr']), ['probe']);
  assert.ok(bashComplete(script, ['nettrace', 'probe', '--']).includes('--shiny'));
  assert.deepEqual(bashComplete(script, ['nettrace', 'probe', '--level', '']), ['low', 'high']);
  assert.match(zshCompletion(toy), /^_nettrace__probe\(\) \{$/m);
  assert.match(zshCompletion(toy), /'--level\[a level\]:n:\(low high\)'/);
});

test('completion zsh: a script zsh parses and registers for nettrace', () => {
  const r = cli(['completion', 'zsh']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^#compdef nettrace\n/);
  for (const fn of ['_nettrace', '_nettrace__follow', '_nettrace__testbed__up', '_nettrace__completion']) assert.match(r.stdout, new RegExp(`^${fn}\\(\\) \\{$`, 'm'));
  assert.match(r.stdout, /'\(-o --output\)'\{-o,--output\}'\[output format\]:format:\(table json\)'/);
  assert.match(r.stdout, /'--token-file\[with --agents: the token the agents were given\]:file:_files'/);
  assert.doesNotMatch(r.stdout, /--nodes|--clock-skew-ms/);
  if (!has('zsh')) return; // the checks above stand; zsh itself is not installed here
  const dir = mkdtempSync(path.join(os.tmpdir(), 'nt-compl-'));
  try {
    const file = path.join(dir, '_nettrace');
    writeFileSync(file, r.stdout);
    assert.equal(spawnSync('zsh', ['-n', file]).status, 0, 'zsh -n');
    const listed = (line: string) => zshComplete(dir, file, line);
    assert.deepEqual(listed('nettrace follow -o ').split(/\s+/).filter(Boolean).sort(), ['json', 'table']);
    assert.match(listed('nettrace testbed '), /^up +-- build it$/m);
    assert.match(listed('nettrace follow --to'), /--token-file +-- with --agents: the token the agents were given/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/**
 * What an interactive zsh lists for a command line (list-choices bound to ^X), driven through a
 * pseudo-terminal (zsh's zpty): the completion system itself runs the script.
 */
function zshComplete(dir: string, file: string, line: string): string {
  const driver = path.join(dir, 'driver.zsh');
  writeFileSync(driver, `zmodload zsh/zpty
zpty z 'zsh -f -i'
zpty -w z 'PS1="> "; autoload -U compinit; compinit -u -D; source ${file}; setopt nobeep'
zpty -w z 'zle -C _lst list-choices _main_complete; bindkey "^X" _lst; print READY'
zpty -r -m z _ '*READY*'
zpty -w -n z "$1"$'\\C-x'
sleep 1
out=""
while zpty -r -t z chunk; do out+=$chunk; done
zpty -d z
print -r -- "$out"
`);
  const z = spawnSync('zsh', ['-f', driver, line], { encoding: 'utf8', timeout: 15_000, env: { ...process.env, HOME: dir } });
  assert.equal(z.status, 0, z.stderr);
  // zsh echoes the line, lists the choices under it, then draws the line again
  const screen = z.stdout.replace(/\x1b\[[0-9;?]*[a-zA-Z]/g, '').replace(/\r/g, '');
  const typed = line.trimEnd();
  const after = screen.slice(screen.indexOf(typed) + typed.length);
  return after.slice(0, after.lastIndexOf(typed)).trim();
}

test('completion with an unknown shell: the E_USAGE line naming the choices', () => {
  const r = cli(['completion', 'fish']);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /^nettrace: E_USAGE: .*'fish' is invalid.* bash, zsh; see `nettrace completion --help`\n$/);
});
