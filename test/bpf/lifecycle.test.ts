// A closed BPF object is never touched again: every use after close throws a clear error, so a
// request still in flight during shutdown cannot read freed memory or a reused file descriptor.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BpfObject } from '../../src/libbpf';
import { bpfObjectPath } from '../../src/probe/paths';
import { bpfSkipReason } from '../helpers/privileged';

test('after close: the object and the maps it handed out refuse, by name', { skip: bpfSkipReason() }, () => {
  const obj = BpfObject.open(bpfObjectPath('hop'));
  obj.load();
  const lost = obj.map('nt_lost');
  assert.ok(lost.lookup(Buffer.alloc(lost.keySize), Buffer.alloc(lost.valueSize * 64)));
  obj.close();
  assert.throws(() => lost.lookup(Buffer.alloc(lost.keySize), Buffer.alloc(lost.valueSize * 64)), /using map nt_lost: its object is closed/);
  assert.throws(() => lost.lookupAll(), /its object is closed/);
  assert.throws(() => obj.map('nt_lost'), /map nt_lost of .*hop\.bpf\.o: the object is closed/);
  assert.throws(() => obj.program('nt_ingress'), /the object is closed/);
  obj.close(); // twice is fine
});
