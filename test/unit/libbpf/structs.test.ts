// Our koffi struct layouts against libbpf's own headers, compiled and printed by C: a wrong size lets the kernel read past our buffer.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { BpfTcHook, BpfTcOpts, BpfTestRunOpts, koffi } from '../../../src/libbpf/native';

test('bpf_tc_hook, bpf_tc_opts, bpf_test_run_opts: sizes and offsets as in <bpf/libbpf.h>', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'nt-structs-'));
  try {
    const fields: [string, string[]][] = [
      ['bpf_tc_hook', ['ifindex', 'attach_point', 'parent']],
      ['bpf_tc_opts', ['prog_fd', 'flags', 'prog_id', 'handle', 'priority']],
      ['bpf_test_run_opts', ['data_in', 'data_out', 'data_size_in', 'data_size_out', 'ctx_in', 'retval', 'repeat', 'duration', 'batch_size']],
    ];
    const lines = fields.flatMap(([st, fs]) => [
      `printf("${st} %zu\\n", sizeof(struct ${st}));`,
      ...fs.map((f) => `printf("${st}.${f} %zu\\n", offsetof(struct ${st}, ${f}));`),
    ]);
    const src = `#include <stdio.h>\n#include <stddef.h>\n#include <bpf/libbpf.h>\n#include <bpf/bpf.h>\nint main(void){${lines.join('')}return 0;}\n`;
    writeFileSync(path.join(dir, 's.c'), src);
    execFileSync('cc', ['-o', path.join(dir, 's'), path.join(dir, 's.c')]);
    const c = new Map(execFileSync(path.join(dir, 's'), { encoding: 'utf8' }).trim().split('\n').map((l) => l.split(' ') as [string, string]));
    const ours = { bpf_tc_hook: BpfTcHook, bpf_tc_opts: BpfTcOpts, bpf_test_run_opts: BpfTestRunOpts };
    for (const [st, fs] of fields) {
      const type = ours[st as keyof typeof ours];
      assert.equal(koffi.sizeof(type), Number(c.get(st)), `sizeof ${st}`);
      for (const f of fs) assert.equal(koffi.offsetof(type, f), Number(c.get(`${st}.${f}`)), `${st}.${f}`);
    }
    assert.deepEqual([Number(c.get('bpf_tc_hook')), Number(c.get('bpf_tc_opts')), Number(c.get('bpf_test_run_opts'))], [24, 32, 80]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
