// Running system tools (ip, tc, sysctl) with errors that name the command.
import { execFile, execFileSync } from 'node:child_process';
import { NettraceError } from './errors';

/**
 * How long one tool may run. ip, tc, iptables and sysctl answer in milliseconds; one that hangs
 * (a wedged netlink socket, a held xtables lock) must fail with a message, not stall nettrace
 * with its programs attached.
 */
export const EXEC_TIMEOUT_MS = 30_000;

export function run(cmd: string, args: string[], opts: { allowFail?: boolean; input?: string; timeoutMs?: number } = {}): string {
  const timeout = opts.timeoutMs ?? EXEC_TIMEOUT_MS;
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'], input: opts.input, timeout, killSignal: 'SIGKILL' });
  } catch (err) {
    if (opts.allowFail) return '';
    const e = err as { stderr?: string; code?: string; message: string };
    if (e.code === 'ENOENT') {
      throw new NettraceError('NOT_FOUND', `${cmd} is not installed`, 'run `make deps` (Debian package iproute2)');
    }
    if (e.code === 'ETIMEDOUT') {
      throw new NettraceError('INTERNAL', `\`${[cmd, ...args].join(' ')}\` did not finish in ${timeout / 1000} s and was killed`, 'check the namespace and device exist and nothing holds the netlink or xtables lock');
    }
    const why = (e.stderr || e.message).trim().split('\n')[0];
    throw new NettraceError('INTERNAL', `\`${[cmd, ...args].join(' ')}\` failed: ${why}`, 'check the namespace and device exist');
  }
}

/** `ip -j ...` parsed; ns null runs in nettrace's own namespace. */
export function ipJson<T>(ns: string | null, args: string[]): T {
  const out = run('ip', [...(ns ? ['-n', ns] : []), '-j', ...args]).trim();
  return (out ? JSON.parse(out) : []) as T;
}

export function ip(ns: string | null, args: string[], allowFail = false): string {
  return run('ip', [...(ns ? ['-n', ns] : []), ...args], { allowFail });
}

/** `ip -j ...` without blocking the event loop (for work done while serving). */
export function ipJsonAsync<T>(ns: string | null, args: string[]): Promise<T> {
  return new Promise((resolve, reject) => {
    execFile('ip', [...(ns ? ['-n', ns] : []), '-j', ...args], { encoding: 'utf8', timeout: EXEC_TIMEOUT_MS, killSignal: 'SIGKILL' }, (err, out) => {
      if (err) reject(new NettraceError('INTERNAL', `\`ip ${args.join(' ')}\` failed: ${err.message.split('\n')[0]}`, 'check the namespace exists'));
      else resolve((out.trim() ? JSON.parse(out) : []) as T);
    });
  });
}
