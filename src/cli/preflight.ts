// What follow needs from the machine, checked before anything is attached.
import { existsSync } from 'node:fs';
import { NettraceError } from '../errors';
import { btfHasFunc } from '../libbpf/btf';

export function requireRoot(uid = process.getuid?.()): void {
  if (uid !== 0) {
    throw new NettraceError('PERMISSION', 'nettrace must run as root to load BPF programs and enter namespaces', 'run it with sudo');
  }
}

/**
 * The kernel's BTF, and the one kfunc every program calls: bpf_cast_to_kern_ctx (Linux 6.2+)
 * reads the device's namespace from a tc program's skb. Checked here, by name rather than by
 * version (distributions backport it), so an older kernel gets this line, not a verifier log.
 */
export function requireBtf(path = '/sys/kernel/btf/vmlinux'): void {
  if (!existsSync(path)) {
    throw new NettraceError('KERNEL', `this kernel has no BTF (${path} is missing)`, 'use a kernel built with CONFIG_DEBUG_INFO_BTF=y (Debian, Ubuntu, Fedora kernels 5.8+ have it) and Linux 6.2 or later');
  }
  let has = true;
  try {
    has = btfHasFunc('bpf_cast_to_kern_ctx', path);
  } catch {
    // unreadable BTF: loading the programs will say what is wrong
  }
  if (!has) {
    throw new NettraceError('KERNEL', 'this kernel lacks the kfunc bpf_cast_to_kern_ctx, which nettrace\'s programs call (Linux 6.2+)',
      'run nettrace on Linux 6.2 or later (6.6+ for tcx links)');
  }
}
