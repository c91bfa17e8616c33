// The kernel floor the README states is checked: the programs call the kfunc
// bpf_cast_to_kern_ctx (Linux 6.2+), looked for in the kernel's BTF before anything is loaded.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { requireBtf } from '../../../src/cli/preflight';
import { NettraceError } from '../../../src/errors';
import { btfHasFunc } from '../../../src/libbpf/btf';

const dir = mkdtempSync(path.join(os.tmpdir(), 'nettrace-btf-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** A BTF blob with an INT and one FUNC per name (kind 12, no bytes after its header). */
function btfFile(name: string, funcs: string[]): string {
  const names = ['int', ...funcs];
  const strs = Buffer.from('\0' + names.map((n) => n + '\0').join(''), 'latin1');
  const offs: number[] = [];
  let o = 1;
  for (const n of names) {
    offs.push(o);
    o += n.length + 1;
  }
  const types: Buffer[] = [];
  const int = Buffer.alloc(16);
  int.writeUInt32LE(offs[0]!, 0);
  int.writeUInt32LE(1 << 24, 4); // INT
  int.writeUInt32LE(4, 8);
  int.writeUInt32LE(32, 12);
  types.push(int);
  funcs.forEach((_, i) => {
    const f = Buffer.alloc(12);
    f.writeUInt32LE(offs[i + 1]!, 0);
    f.writeUInt32LE(12 << 24, 4); // FUNC
    types.push(f);
  });
  const t = Buffer.concat(types);
  const hdr = Buffer.alloc(24);
  hdr.writeUInt16LE(0xeb9f, 0);
  hdr.writeUInt8(1, 2);
  hdr.writeUInt32LE(24, 4);
  hdr.writeUInt32LE(0, 8);
  hdr.writeUInt32LE(t.length, 12);
  hdr.writeUInt32LE(t.length, 16);
  hdr.writeUInt32LE(strs.length, 20);
  const file = path.join(dir, name);
  writeFileSync(file, Buffer.concat([hdr, t, strs]));
  return file;
}

test('btfHasFunc finds a FUNC by name, past other kinds', () => {
  const f = btfFile('with', ['bpf_skb_load_bytes', 'bpf_cast_to_kern_ctx']);
  assert.equal(btfHasFunc('bpf_cast_to_kern_ctx', f), true);
  assert.equal(btfHasFunc('int', f), false, 'an INT is not a function');
  assert.equal(btfHasFunc('bpf_nope', f), false);
});

test('a kernel without bpf_cast_to_kern_ctx: E_KERNEL, exit 4, naming Linux 6.2', () => {
  const old = btfFile('old', ['bpf_skb_load_bytes']);
  assert.throws(() => requireBtf(old), (e: unknown) => e instanceof NettraceError && e.code === 'E_KERNEL' && e.exitCode === 4
    && /bpf_cast_to_kern_ctx/.test(e.message) && /6\.2/.test(e.message) && /Linux 6\.2 or later/.test(e.next));
  assert.doesNotThrow(() => requireBtf(btfFile('new', ['bpf_cast_to_kern_ctx'])));
  assert.throws(() => requireBtf(path.join(dir, 'missing')), (e: unknown) => e instanceof NettraceError && e.code === 'E_KERNEL' && /no BTF/.test(e.message));
});

test('this machine: the running kernel passes when it has the kfunc', { skip: !btfHasFuncSafe() && 'no kernel BTF with the kfunc here' }, () => {
  assert.doesNotThrow(() => requireBtf());
});

function btfHasFuncSafe(): boolean {
  try {
    return btfHasFunc('bpf_cast_to_kern_ctx');
  } catch {
    return false;
  }
}
