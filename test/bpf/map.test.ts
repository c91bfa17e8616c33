// Reading maps is what the agent does on every scrape, for as long as it runs: a read must not
// leave anything behind (one BpfMap per name, not one per call) nor allocate megabytes each time
// (batch buffers sized by max_entries and kept), and reused buffers must never show stale entries.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BpfObject, possibleCpus } from '../../src/libbpf';
import { LATENCY_SIZE } from '../../src/probe/layout.generated';
import { bpfObjectPath } from '../../src/probe/paths';
import { bpfSkipReason } from '../helpers/privileged';

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
}

test('a map is handed out once per name, and read again and again without allocating megabytes', { skip: bpfSkipReason() }, (t) => {
  const obj = BpfObject.open(bpfObjectPath('agent'));
  t.after(() => obj.close());
  obj.load();
  const lat = obj.map('nt_lat');
  assert.equal(obj.map('nt_lat'), lat, 'the same map object, not a new one kept per call');
  assert.equal(lat.maxEntries, obj.maxEntries('nt_lat'));
  // the per-CPU latency histograms: 10 entries of 520 bytes a CPU; a 4096-entry batch would be 4 MB a read
  const entry = Math.ceil(LATENCY_SIZE / 8) * 8 * possibleCpus();
  const base = process.memoryUsage().arrayBuffers;
  let most = 0;
  for (let i = 0; i < 50; i++) {
    const { count } = lat.lookupAll(entry);
    assert.equal(count, lat.maxEntries);
    most = Math.max(most, process.memoryUsage().arrayBuffers - base);
  }
  assert.ok(most < 1 << 20, `50 reads of nt_lat held ${(most / 2 ** 20).toFixed(1)} MB of buffers at most (want < 1 MB)`);
});

test('reused batch buffers: each read sees exactly what the map holds now, over several batches', { skip: bpfSkipReason() }, (t) => {
  const obj = BpfObject.open(bpfObjectPath('agent'));
  t.after(() => obj.close());
  obj.load();
  const netns = obj.map('nt_netns'); // a hash map: u32 namespace inode -> u32
  const read = () => {
    const keys: number[] = [];
    netns.lookupChunks((k, _v, got) => {
      for (let i = 0; i < got; i++) keys.push(k.readUInt32LE(i * netns.keySize));
    }, netns.valueSize, 100);
    return keys.sort((a, b) => a - b);
  };
  for (let i = 1; i <= 250; i++) netns.update(u32(i), u32(1));
  assert.deepEqual(read(), Array.from({ length: 250 }, (_, i) => i + 1));
  for (let i = 1; i <= 200; i++) netns.delete(u32(i));
  assert.deepEqual(read(), Array.from({ length: 50 }, (_, i) => i + 201));
  const all = netns.lookupAll();
  assert.equal(all.count, 50);
  assert.equal(all.keys.length, 50 * netns.keySize);
  // a read from inside a read of the same map gets its own buffers: the outer one is not overwritten
  const outer: number[] = [];
  netns.lookupChunks((k, _v, got) => {
    const inner = netns.lookupAll().count;
    for (let i = 0; i < got; i++) outer.push(k.readUInt32LE(i * netns.keySize));
    assert.equal(inner, 50);
  }, netns.valueSize, 20);
  assert.deepEqual(outer.sort((a, b) => a - b), Array.from({ length: 50 }, (_, i) => i + 201));
});
