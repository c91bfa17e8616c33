// The hop program on crafted ICMP errors (BPF_PROG_TEST_RUN): an error keys like a reply of the
// packet it quotes (its ports, swapped), so a UDP flow's "port unreachable" is followed as its reply
// and an error for another port is not.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { HopProbe } from '../../src/probe/hop';
import type { HopRecord } from '../../src/probe/layout.generated';
import { ether, ipBytes, ipv4 } from '../helpers/packets';
import { runHop } from '../helpers/hopRun';
import { bpfSkipReason } from '../helpers/privileged';

const A = '10.244.1.5';
const B = '10.244.2.8';
let probe: HopProbe;
const skip = bpfSkipReason();

before(() => {
  if (skip) return;
  probe = HopProbe.load({ vxlanPorts: [8472, 4789], drops: false });
  // what follow writes for `A -> B:9 udp`: ICMP from B to A whose quoted packet went to port 9
  probe.follow({ family: 4, proto: 1, saddr: ipBytes(B), daddr: ipBytes(A), sport: 9, dport: 0, flowId: 6, direction: 'reply' });
});

after(() => probe?.close());

const run = (pkt: Buffer): HopRecord[] => runHop(probe, pkt);

/** B's kernel answering A's datagram to dport: type 3 (unreachable) code 3 (port), quoting its IPv4 header and UDP header. */
function portUnreachable(dport: number, type = 3): Buffer {
  const quoted = ipv4(A, B, { proto: 'udp', sport: 41000, dport, payload: 6 }).subarray(0, 28);
  const err = ipv4(B, A, { proto: 'icmp', icmpType: type, id: 0, icmpSeq: 0, payload: quoted.length });
  err[21] = 3;
  quoted.copy(err, 28);
  return ether(err);
}

test('an ICMP port unreachable quoting a datagram to the followed port: recorded as the reply, ports swapped', { skip }, () => {
  const recs = run(portUnreachable(9));
  assert.equal(recs.length, 2);
  const r = recs[0]!;
  assert.deepEqual([r.proto, r.icmp_type, r.sport, r.dport, r.flow_id, r.direction, r.payload_len], [1, 3, 9, 41000, 6, 1, 28]);
});

test('an error for another port, a time exceeded for it, and a truncated error', { skip }, () => {
  assert.equal(run(portUnreachable(10)).length, 0, 'another flow\'s error');
  assert.equal(run(portUnreachable(9, 11))[0]?.icmp_type, 11, 'time exceeded quotes the packet too');
  // cut inside the quoted header: nothing to read the ports from, so no match on port 9
  const short = portUnreachable(9).subarray(0, 14 + 20 + 8 + 12);
  assert.equal(run(short).length, 0);
});
