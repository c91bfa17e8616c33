// Drop reason names come from the running kernel's BTF, not from a copied table.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { readBtfEnum } from '../../../src/libbpf/btf';

test('skb_drop_reason from /sys/kernel/btf/vmlinux', (t) => {
  let reasons: Map<number, string>;
  try {
    reasons = readBtfEnum('skb_drop_reason');
  } catch (err) {
    if (process.env.CI === 'true') throw err;
    t.skip(`no kernel BTF here: ${(err as Error).message}`);
    return;
  }
  assert.equal(reasons.get(2), 'SKB_DROP_REASON_NOT_SPECIFIED');
  assert.ok([...reasons.values()].includes('SKB_DROP_REASON_NETFILTER_DROP'));
  assert.ok(reasons.size > 50);
  assert.throws(() => readBtfEnum('no_such_enum_here'), /enum no_such_enum_here: not in/);
});
