// follow --every in the hop program (BPF_PROG_TEST_RUN): which TCP packets it keeps. The rule is
// stateless, so a packet is kept or not alike at every hook of both nodes, whatever skb it is in.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { HopProbe } from '../../src/probe/hop';
import { ether, ipBytes, ipv4 } from '../helpers/packets';
import { runHop } from '../helpers/hopRun';
import { bpfSkipReason } from '../helpers/privileged';

const A = '10.244.1.5';
const B = '10.244.2.8';
const EVERY = 4;
const UNIT = EVERY * 65536; // a kept data skb holds a byte at a multiple of this
let probe: HopProbe;
const skip = bpfSkipReason();

before(() => {
  if (skip) return;
  probe = HopProbe.load({ vxlanPorts: [8472], drops: false, every: EVERY });
  probe.follow({ family: 4, proto: 6, saddr: ipBytes(A), daddr: ipBytes(B), sport: 0, dport: 80, flowId: 1, direction: 'request' });
  probe.follow({ family: 4, proto: 17, saddr: ipBytes(A), daddr: ipBytes(B), sport: 0, dport: 53, flowId: 2, direction: 'request' });
});

after(() => probe?.close());

const kept = (seq: number, payload: number, over: object = {}) =>
  runHop(probe, ether(ipv4(A, B, { proto: 'tcp', dport: 80, seq: seq >>> 0, ack: 5, payload, ...over }))).length === 2;

test('--every: a data skb is kept iff it holds a byte at a multiple of every x 64 KiB', { skip }, () => {
  const k = 7 * UNIT;
  assert.equal(kept(k, 100), true, 'starts on the byte');
  assert.equal(kept(k - 99, 100), true, 'ends on the byte');
  assert.equal(kept(k - 100, 100), false, 'ends just before it');
  assert.equal(kept(k + 1, 1400), false, 'starts just after it');
  assert.equal(kept(0xffffff00, 0x200), true, 'wraps past 2^32 (0 is a multiple)');
  // a stream of MSS-sized segments: one in UNIT / 1400 is kept
  let n = 0;
  for (let seq = 1000; seq < 1000 + 4 * UNIT; seq += 1400) if (kept(seq, 1400)) n++;
  assert.equal(n, 4, 'one segment per sampled byte');
});

test('--every: SYN, RST and a FIN without data are always kept; a FIN on data by its bytes; pure ACKs 1 in every', { skip }, () => {
  // ack 1 is an ACK number the pure-ACK rule does not keep: what keeps these is their flag
  assert.equal(kept(UNIT + 5, 0, { tcpFlags: 0x10, ack: 1 }), false, 'a pure ACK of ack 1');
  for (const f of [0x02, 0x12, 0x11, 0x04, 0x14]) assert.equal(kept(UNIT + 5, 0, { tcpFlags: f, ack: 1 }), true, `flags 0x${f.toString(16)}`);
  assert.equal(kept(UNIT + 5, 100, { tcpFlags: 0x02, ack: 1 }), true, 'SYN with data (TFO) and no sampled byte');
  // GRO merges a FIN segment into the data before it: the FIN decides nothing there
  assert.equal(kept(UNIT + 5, 100, { tcpFlags: 0x19, ack: 1 }), false, 'FIN on data without a sampled byte');
  assert.equal(kept(UNIT - 5, 100, { tcpFlags: 0x19, ack: 1 }), true, 'FIN on data with one');
  let acks = 0;
  for (let a = 0; a < 4000; a++) {
    if (runHop(probe, ether(ipv4(A, B, { proto: 'tcp', dport: 80, seq: 9, ack: a * 1448, payload: 0, tcpFlags: 0x10 }))).length === 2) acks++;
  }
  assert.ok(acks > 4000 / EVERY / 2 && acks < (4000 / EVERY) * 2, `${acks} of 4000 pure ACKs kept (about 1 in ${EVERY})`);
  const udp = runHop(probe, ether(ipv4(A, B, { proto: 'udp', dport: 53, payload: 30 })));
  assert.equal(udp.length, 2, 'UDP is not sampled');
});
