// What follow needs from the machine, checked before anything is attached.
import { existsSync } from 'node:fs';
import { NettraceError } from '../errors';

export function requireRoot(uid = process.getuid?.()): void {
  if (uid !== 0) {
    throw new NettraceError('PERMISSION', 'nettrace must run as root to load BPF programs and enter namespaces', 'run it with sudo');
  }
}

export function requireBtf(): void {
  if (!existsSync('/sys/kernel/btf/vmlinux')) {
    throw new NettraceError('KERNEL', 'this kernel has no BTF (/sys/kernel/btf/vmlinux is missing)', 'use a kernel built with CONFIG_DEBUG_INFO_BTF=y (Debian, Ubuntu, Fedora kernels 5.8+ have it)');
  }
}
