// Run a function with the calling thread inside another network namespace (design §3a):
// ifindexes and tcx/tc attachments resolve in the namespace current at the syscall.
import { NettraceError } from '../errors';
import { describeErrno } from './errno';
import { c, lastErrno } from './native';

const O_RDONLY_CLOEXEC = 0o2000000;
const CLONE_NEWNET = 0x40000000;

function openNs(path: string): number {
  const fd = c.open(path, O_RDONLY_CLOEXEC) as number;
  if (fd < 0) {
    throw new NettraceError('NOT_FOUND', `cannot open network namespace ${path}: ${describeErrno(lastErrno())}`,
      'check the namespace exists (`ip netns list`)');
  }
  return fd;
}

function enter(fd: number, path: string): void {
  if ((c.setns(fd, CLONE_NEWNET) as number) < 0) {
    throw new NettraceError('PERMISSION', `cannot enter network namespace ${path}: ${describeErrno(lastErrno())}`,
      'run as root (CAP_SYS_ADMIN)');
  }
}

/** nsPath null means "where we are": fn runs without switching. */
export function inNetns<T>(nsPath: string | null, fn: () => T): T {
  if (nsPath === null) return fn();
  const home = openNs('/proc/thread-self/ns/net');
  try {
    const target = openNs(nsPath);
    try {
      enter(target, nsPath);
    } finally {
      c.close(target);
    }
    try {
      return fn();
    } finally {
      enter(home, 'of nettrace itself');
    }
  } finally {
    c.close(home);
  }
}

export function ifNameToIndex(name: string): number {
  return c.if_nametoindex(name) as number;
}
