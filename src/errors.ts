// One error class for the whole tool: a stable code, an exit code, and the next step for the user.

export const ErrorCodes = {
  USAGE: { code: 'E_USAGE', exit: 2 },
  PERMISSION: { code: 'E_PERMISSION', exit: 3 },
  KERNEL: { code: 'E_KERNEL', exit: 4 },
  NOT_FOUND: { code: 'E_NOT_FOUND', exit: 5 },
  BPF: { code: 'E_BPF', exit: 6 },
  TESTBED: { code: 'E_TESTBED', exit: 7 },
  INTERNAL: { code: 'E_INTERNAL', exit: 1 },
} as const;

export type ErrorKind = keyof typeof ErrorCodes;

export class NettraceError extends Error {
  readonly code: string;
  readonly exitCode: number;

  /** message says what failed; next says what the user should do about it. */
  constructor(kind: ErrorKind, message: string, readonly next: string, readonly detail?: string) {
    super(message);
    this.name = 'NettraceError';
    this.code = ErrorCodes[kind].code;
    this.exitCode = ErrorCodes[kind].exit;
  }

  /** The one line printed to the user. */
  line(): string {
    return `nettrace: ${this.code}: ${this.message}; ${this.next}`;
  }
}

export function usageError(message: string, next: string): NettraceError {
  return new NettraceError('USAGE', message, next);
}
