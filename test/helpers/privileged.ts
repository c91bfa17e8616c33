// Privileged tests skip with a reason only when not root; under CI=true that skip is a failure.
import type { TestContext } from 'node:test';

export function isRoot(): boolean {
  return process.getuid?.() === 0;
}

/** Call first in a privileged test; returns false when the test must stop (skipped). */
export function needsRoot(t: TestContext): boolean {
  if (isRoot()) return true;
  const reason = 'needs root: BPF programs, network namespaces';
  if (process.env.CI === 'true') throw new Error(`privileged test cannot run in CI without root (${reason})`);
  t.skip(reason);
  return false;
}

/** The `skip` option of a test that loads BPF programs: false as root, else the reason (under CI=true, throws). */
export function bpfSkipReason(): string | false {
  if (isRoot()) return false;
  if (process.env.CI === 'true') throw new Error('BPF tests cannot run in CI without root');
  return 'needs root: loads BPF programs';
}
