// Run a function with the calling thread inside another network namespace (setns on this thread):
// ifindexes and tcx/tc attachments resolve in the namespace current at the syscall.
import { LibbpfError } from './error';
import { c, lastErrno } from './native';

const O_RDONLY_CLOEXEC = 0o2000000;
const CLONE_NEWNET = 0x40000000;

function openNs(path: string): number {
  const fd = c.open(path, O_RDONLY_CLOEXEC) as number;
  if (fd < 0) {
    throw new LibbpfError('open-netns', `opening network namespace ${path}`, lastErrno());
  }
  return fd;
}

function enter(fd: number, path: string): void {
  if ((c.setns(fd, CLONE_NEWNET) as number) < 0) {
    throw new LibbpfError('enter-netns', `entering network namespace ${path}`, lastErrno());
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
      enter(home, 'of this thread');
    }
  } finally {
    c.close(home);
  }
}
