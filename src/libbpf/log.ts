// libbpf's own messages (the verifier log among them) kept for the error that follows them.
import { c, koffi, PrintFnProto } from './native';

const MAX_LINES = 400;
let lines: string[] = [];
let registered: unknown = null;
const echo = process.env.LIBBPF_DEBUG === '1';

function onPrint(_level: number, fmt: string, args: unknown): number {
  const buf = Buffer.alloc(8192);
  const n = c.vsnprintf(buf, buf.length, fmt, args) as number;
  const text = buf.subarray(0, Math.max(0, Math.min(n, buf.length - 1))).toString('utf8');
  if (echo) process.stderr.write(text);
  for (const line of text.split('\n')) if (line !== '') lines.push(line);
  if (lines.length > MAX_LINES) lines = lines.slice(-MAX_LINES);
  return 0;
}

/** Route libbpf's printing to us (it would otherwise write to stderr); idempotent. */
export function captureLibbpfLog(): void {
  if (registered) return;
  registered = koffi.register(onPrint, koffi.pointer(PrintFnProto));
  c.libbpf_set_print(registered);
}

/** Forget what was printed so far: call before an operation whose log you want. */
export function resetLibbpfLog(): void {
  lines = [];
}

/** The last n lines libbpf printed since the reset. */
export function libbpfLogTail(n: number): string[] {
  return lines.slice(-n);
}
