// A crafted packet through a loaded hop program pair (BPF_PROG_TEST_RUN), as the bpf tests use it.
import assert from 'node:assert/strict';
import { testRun } from '../../src/libbpf';
import type { HopProbe } from '../../src/probe/hop';
import { decodeHopRecord, type HopRecord } from '../../src/probe/layout.generated';

/** what a tc program returns to leave a packet's fate to what follows */
export const TC_ACT_UNSPEC = -1;

/** Runs the packet through both programs; asserts it passed unchanged; returns what was recorded. */
export function runHop(probe: HopProbe, pkt: Buffer): HopRecord[] {
  const out: HopRecord[] = [];
  for (const prog of [probe.ingress, probe.egress]) {
    const r = testRun(prog.fd, pkt);
    assert.equal(r.retval, TC_ACT_UNSPEC, 'the program must never decide a packet\'s fate');
    assert.ok(r.dataOut.equals(pkt), 'the packet must pass unchanged');
  }
  probe.drain((v, o) => out.push(decodeHopRecord(v, o)));
  return out;
}
