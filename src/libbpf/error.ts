// The binding's own error: which libbpf/libc operation failed and with which errno. It knows
// nothing of nettrace; src/probe/advice.ts turns it into a NettraceError with the next step.
import { getSystemErrorMap } from 'node:util';

/** What was being done, so a caller can choose its advice without parsing messages. */
export type LibbpfOp =
  | 'load-library' | 'open-object' | 'load-object' | 'find' | 'attach-tracepoint'
  | 'attach-tcx' | 'attach-tc' | 'create-clsact' | 'detach-tc' | 'destroy-clsact'
  | 'map' | 'mmap-ring' | 'test-run' | 'open-netns' | 'enter-netns' | 'read-btf';

// libuv's table: errno -> [name, message], keyed by the negative errno
const system = getSystemErrorMap();

function errnoName(errno: number): string {
  return system.get(-Math.abs(errno))?.[0] ?? `errno ${Math.abs(errno)}`;
}

function describeErrno(errno: number): string {
  const e = system.get(-Math.abs(errno));
  return e ? `${e[0]} (${e[1]})` : `errno ${Math.abs(errno)}`;
}

export class LibbpfError extends Error {
  /** positive errno, 0 when the failure has none (a missing program, a bad BTF file) */
  readonly errno: number;

  /**
   * what: the operation in words ("tcx ingress attach to ifindex 3"); errno may be given
   * negative as libbpf returns it; log: libbpf's last lines (the verifier's reasoning).
   */
  constructor(readonly op: LibbpfOp, readonly what: string, errno: number, readonly log?: string, reason?: string) {
    super(`${what}: ${reason ?? describeErrno(errno)}`);
    this.name = 'LibbpfError';
    this.errno = Math.abs(errno);
  }

  get errnoName(): string {
    return this.errno ? errnoName(this.errno) : '';
  }
}
