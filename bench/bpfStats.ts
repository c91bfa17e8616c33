// Our programs' run counts and run time as the kernel counts them (kernel.bpf_stats_enabled),
// to say where the time goes under load: runs per second and ns per run of each program.
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';

type Stats = Map<string, { runs: number; ns: number }>;

function progStats(): Stats {
  const r = spawnSync('bpftool', ['-j', 'prog', 'show'], { encoding: 'utf8', timeout: 10000 });
  const progs = JSON.parse(r.stdout || '[]') as { id: number; name?: string; run_cnt?: number; run_time_ns?: number }[];
  return new Map(progs.filter((p) => p.name?.startsWith('nt_')).map((p) => [`${p.name} (id ${p.id})`, { runs: p.run_cnt ?? 0, ns: p.run_time_ns ?? 0 }]));
}

/** CPU seconds a process used so far (utime + stime of /proc/PID/stat). */
export function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  // utime and stime: fields 14 and 15 of stat, 12 and 13 after "pid (comm) "; USER_HZ is 100 on Linux
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** Runs fn with the kernel counting our programs' runs; returns fn's result and prints one line per program that ran. */
export async function withProgramStats<T>(indent: string, fn: () => Promise<T>): Promise<{ result: T; seconds: number; print(): void }> {
  const was = readFileSync('/proc/sys/kernel/bpf_stats_enabled', 'utf8').trim();
  writeFileSync('/proc/sys/kernel/bpf_stats_enabled', '1');
  try {
    const before = progStats();
    const t0 = process.hrtime.bigint();
    const result = await fn();
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    const after = progStats();
    return {
      result, seconds,
      print() {
        for (const [name, a] of after) {
          const b = before.get(name) ?? { runs: 0, ns: 0 };
          const runs = a.runs - b.runs;
          if (runs === 0) continue;
          const ns = a.ns - b.ns;
          console.log(`${indent}${name.padEnd(26)} ${(runs / seconds / 1e3).toFixed(1).padStart(7)} k runs/s ${(ns / runs).toFixed(0).padStart(5)} ns/run ${(ns / seconds / 1e7).toFixed(2).padStart(6)} % of a core`);
        }
      },
    };
  } finally {
    writeFileSync('/proc/sys/kernel/bpf_stats_enabled', was);
  }
}
