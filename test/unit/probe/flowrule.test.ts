// The followed-flow rule as the kernel gets it: the pair filter's bit is one per address pair, whichever way.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pairBit, reverse, type FlowRule } from '../../../src/probe/flowrule';
import { ipBytes } from '../../helpers/packets';

const rule = (s: string, d: string, proto = 6): FlowRule => ({ family: s.includes(':') ? 6 : 4, proto, saddr: ipBytes(s), daddr: ipBytes(d), sport: 0, dport: 80, flowId: 1, direction: 'request' });

test('pair filter bit: both directions of a pair share it; ports do not change it; pairs spread over the 1024 bits', () => {
  for (const r of [rule('10.244.1.5', '10.244.2.8'), rule('fd00:244:1::5', 'fd00:244:2::8')]) {
    assert.equal(pairBit(reverse(r)), pairBit(r));
    assert.equal(pairBit({ ...r, sport: 1234, dport: 443 }), pairBit(r));
  }
  const bits = new Set<number>();
  for (let i = 0; i < 256; i++) bits.add(pairBit(rule(`10.244.1.${i}`, '10.244.2.8')));
  for (const b of bits) assert.ok(b >= 0 && b < 1024);
  // 256 pairs in 1024 bits: about 226 distinct if the hash spreads them; a poor one puts many in few
  assert.ok(bits.size > 180, `${bits.size} distinct bits of 256 pairs`);
});
