// A test cluster of our own (unique namespace prefix), taken down even when the test fails,
// and a `nettrace follow` process driven like a user would.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import type { TestContext } from 'node:test';
import { testbedDown, testbedUp, type TestbedState } from '../../src/testbed/testbed';
import type { CniMode } from '../../src/topology/cni';

export const ROOT = path.resolve(__dirname, '../../..');
export const NETTRACE = path.join(ROOT, 'bin/nettrace');

let counter = 0;

export function withTestbed(t: TestContext, opts: { podMtu?: number; cni?: CniMode } = {}): TestbedState {
  const prefix = `nt${process.pid % 10000}x${counter++}-`;
  t.after(() => {
    testbedDown(prefix);
  });
  return testbedUp({ prefix, ...opts });
}

export function nsExec(ns: string, cmd: string[], timeoutMs = 15000): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync('ip', ['netns', 'exec', ns, ...cmd], { encoding: 'utf8', timeout: timeoutMs });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** A background process inside a namespace, killed when the test ends. */
export function nsSpawn(t: TestContext, ns: string, cmd: string[]): ChildProcess {
  const child = spawn('ip', ['netns', 'exec', ns, ...cmd], { stdio: 'ignore' });
  t.after(() => {
    child.kill('SIGKILL');
  });
  return child;
}

export interface FollowRun {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<number | null>;
}

/**
 * Starts `nettrace ARGS...` and resolves once it printed a `ready:` line on stderr; killed when the test ends.
 * prefix: a command that runs it elsewhere, e.g. ['ip', 'netns', 'exec', NS].
 */
export async function startNettrace(t: TestContext, args: string[], prefix: string[] = []): Promise<FollowRun> {
  const child = prefix.length
    ? spawn(prefix[0]!, [...prefix.slice(1), NETTRACE, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    : spawn(NETTRACE, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code, sig) => resolve(code ?? (sig ? 128 : null))));
  t.after(() => {
    child.kill('SIGKILL');
  });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${args[0]} printed no ready: line in 20 s; stderr: ${err}`)), 20000);
    child.stderr!.on('data', (d: Buffer) => {
      err += d.toString();
      if (/^ready:/m.test(err)) {
        clearTimeout(timer);
        resolve();
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`${args[0]} exited (${code}) before ready: ${err}`));
    });
  });
  return { child, stdout: () => out, stderr: () => err, exited };
}

/** Starts `nettrace follow ...args` and resolves once it printed `ready:`. */
export function startFollow(t: TestContext, args: string[]): Promise<FollowRun> {
  return startNettrace(t, ['follow', ...args]);
}

export function jsonLines<T>(text: string): T[] {
  return text.split('\n').filter((l) => l.trim() !== '').map((l) => JSON.parse(l) as T);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
