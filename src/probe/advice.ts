// What a user should do about a failure of the BPF binding: src/libbpf says what failed and
// with which errno, this layer knows nettrace's commands and flags and adds the next step.
import { LibbpfError, type LibbpfOp } from '../libbpf';
import { NettraceError, type ErrorKind } from '../errors';

const ADVICE: Record<LibbpfOp, { kind: ErrorKind; next: string }> = {
  'load-library': { kind: 'KERNEL', next: 'install it (Debian: apt-get install libbpf1) or run `make deps`' },
  'open-object': { kind: 'BPF', next: 'run `make build` to compile the BPF programs' },
  'load-object': { kind: 'BPF', next: 'check the kernel has BTF (/sys/kernel/btf/vmlinux) and you are root; the verifier log follows' },
  find: { kind: 'BPF', next: 'the BPF object does not match this nettrace: rebuild with `make build`' },
  'attach-tracepoint': { kind: 'BPF', next: 'check the kernel has BTF and the tracepoint exists' },
  'attach-tcx': { kind: 'BPF', next: 'tcx needs kernel 6.6+; use --attach tc on older kernels' },
  'attach-tc': { kind: 'BPF', next: 'run `nettrace cleanup` to remove leftovers, then retry' },
  'create-clsact': { kind: 'BPF', next: 'check the device exists and you are root' },
  'detach-tc': { kind: 'BPF', next: 'remove it by hand: tc filter del dev DEV ingress|egress' },
  'destroy-clsact': { kind: 'BPF', next: 'remove it by hand: tc qdisc del dev DEV clsact' },
  map: { kind: 'BPF', next: 'check you run as root and the kernel has BPF_MAP_LOOKUP_BATCH (5.6+)' },
  'mmap-ring': { kind: 'BPF', next: 'the kernel needs BPF ring buffers (5.8+)' },
  'test-run': { kind: 'BPF', next: 'run as root; the packet must be at least 14 bytes' },
  'open-netns': { kind: 'NOT_FOUND', next: 'check the namespace exists (`ip netns list`)' },
  'enter-netns': { kind: 'PERMISSION', next: 'run as root (CAP_SYS_ADMIN)' },
  'read-btf': { kind: 'KERNEL', next: 'nettrace needs a kernel built with CONFIG_DEBUG_INFO_BTF' },
};

/** A LibbpfError as the NettraceError a user reads; anything else unchanged. */
export function advise(err: unknown, context?: string): unknown {
  if (!(err instanceof LibbpfError)) return err;
  const a = ADVICE[err.op];
  const e = new NettraceError(a.kind, context ? `${context}: ${err.message}` : err.message, a.next, err.log || undefined);
  e.cause = err;
  return e;
}

/** Run fn; a binding failure comes out with advice. */
export function withAdvice<T>(fn: () => T, context?: string): T {
  try {
    return fn();
  } catch (err) {
    throw advise(err, context);
  }
}
