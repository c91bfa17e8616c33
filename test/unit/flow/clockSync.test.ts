// Placing another machine's clock on ours: the exchange's estimate and bound, and the wire symmetry.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { OffsetEstimate, WireSymmetry } from '../../../src/flow/clockSync';

test('the exchange: the shortest round trip wins, the offset is right within half of it', () => {
  const e = new OffsetEstimate();
  assert.equal(e.known, false);
  const skew = 25_000_000n; // the agent's clock reads 25 ms ahead
  // a queued answer (long, asymmetric round trip) and a quick one
  e.add({ t0: 1_000_000n, agentNs: 1_000_000n + skew + 900_000n, t2: 3_000_000n });
  e.add({ t0: 5_000_000n, agentNs: 5_000_000n + skew + 100_000n, t2: 5_200_000n });
  assert.equal(e.known, true);
  assert.equal(e.uncertaintyNs, 100_000);
  assert.equal(e.offsetNs, skew);
  // a sample whose answer came before the question is no sample
  e.add({ t0: 9n, agentNs: 9n, t2: 1n });
  assert.equal(e.offsetNs, skew);
});

test('the exchange keeps a window: an old quick sample gives way to recent ones', () => {
  const e = new OffsetEstimate();
  e.add({ t0: 0n, agentNs: 50n, t2: 100n });
  for (let i = 1; i <= 16; i++) e.add({ t0: BigInt(i * 1e6), agentNs: BigInt(i * 1e6 + 1000), t2: BigInt(i * 1e6 + 1000) });
  assert.equal(e.uncertaintyNs, 500);
  assert.equal(e.offsetNs, 500n);
});

test('wire symmetry: half the difference of the two directions, bounded, once both have samples', () => {
  const s = new WireSymmetry();
  // true wire 10 µs; the receiving node's offset is off by +40 µs
  for (let i = 0; i < 2; i++) {
    s.add(true, 50_000);
    s.add(false, -30_000);
  }
  assert.equal(s.correction(1_000_000), null, 'not before three samples each way');
  s.add(true, 50_000);
  s.add(false, -30_000);
  assert.equal(s.correction(1_000_000), 40_000);
  assert.equal(s.correction(25_000), 25_000, 'never beyond what the exchange allows');
  // one queued packet does not move it
  s.add(true, 5_000_000);
  assert.equal(s.correction(1_000_000), 40_000);
});
