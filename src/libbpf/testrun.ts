// BPF_PROG_TEST_RUN: feed a crafted packet through a loaded program.
import { LibbpfError } from './error';
import { address, c } from './native';

export interface TestRunResult {
  retval: number;
  dataOut: Buffer;
  /** mean ns per run as the kernel measured it */
  durationNs: number;
}

const OPTS_SIZE = 80;

/** ctx: the program's context to start from (for tc, a struct __sk_buff; the kernel takes only some fields from it) */
export function testRun(progFd: number, packet: Buffer, repeat = 1, ctx?: Buffer): TestRunResult {
  const out = Buffer.alloc(packet.length + 256);
  const opts = {
    sz: OPTS_SIZE, data_in: address(packet), data_out: address(out), data_size_in: packet.length, data_size_out: out.length,
    ctx_in: ctx ? address(ctx) : 0, ctx_out: 0, ctx_size_in: ctx?.length ?? 0, ctx_size_out: 0, retval: 0, repeat, duration: 0, flags: 0, cpu: 0, batch_size: 0,
  };
  const ret = c.bpf_prog_test_run_opts(progFd, opts) as number;
  if (ret < 0) throw new LibbpfError('test-run', 'BPF_PROG_TEST_RUN', ret);
  return { retval: opts.retval | 0, dataOut: out.subarray(0, opts.data_size_out), durationNs: opts.duration };
}
