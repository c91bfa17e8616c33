// libbpf failures as NettraceErrors that carry the operation and the errno name (STYLE §5).
import os from 'node:os';
import { NettraceError } from '../errors';
import { c } from './native';

const names = new Map<number, string>(
  Object.entries(os.constants.errno).map(([name, value]) => [value, name]),
);

export function errnoName(errno: number): string {
  return names.get(Math.abs(errno)) ?? `errno ${Math.abs(errno)}`;
}

export function describeErrno(errno: number): string {
  return `${errnoName(errno)} (${c.strerror(Math.abs(errno)) as string})`;
}

/** An int-returning libbpf call failed with -errno. */
export function bpfError(operation: string, ret: number, next: string, detail?: string): NettraceError {
  return new NettraceError('BPF', `${operation}: ${describeErrno(ret)}`, next, detail);
}
