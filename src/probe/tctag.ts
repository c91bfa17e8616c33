// How our classic-tc filters are told from other tools' on the same hook. A filter is ours when
// it has our priority and runs a program named nt_*; its handle carries the owning process's id,
// so cleanup removes only what a process that is gone left behind, never a live agent's. A clsact
// qdisc is ours to remove only where we recorded creating it (a file per qdisc under /run).
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { TcDirection, TcTag } from '../libbpf';
import { execFile } from 'node:child_process';
import { EXEC_TIMEOUT_MS, run } from '../exec';
import type { NetnsRef } from '../topology/netns';

export const TC_PRIORITY = 0x4e54;
/** the handle's low bits count a process's attachments, the high bits hold its pid (up to 2^22) */
const SEQ_BITS = 10;
let seq = 0;

/** A tag for one attachment of this process. */
export function newTcTag(): TcTag {
  seq = (seq + 1) & ((1 << SEQ_BITS) - 1);
  return { handle: ((process.pid << SEQ_BITS) | seq) >>> 0, priority: TC_PRIORITY };
}

export function ownerPid(handle: number): number {
  return handle >>> SEQ_BITS;
}

/** A process that may still hold its filters: any process with that pid (a reused pid keeps them, the safe side). */
export function ownerAlive(pid: number): boolean {
  return pid > 0 && existsSync(`/proc/${pid}`);
}

export interface TcFilter {
  kind: string;
  pref: number;
  /** 0 when tc shows none */
  handle: number;
  /** the BPF program's name, for bpf filters */
  prog: string | null;
}

/** ns: ip/tc -n name, null for our own namespace. Throws when tc cannot tell: callers fail closed. */
export function listTcFilters(ns: string | null, dev: string, dir: TcDirection): TcFilter[] {
  const out = run('tc', [...(ns ? ['-n', ns] : []), '-j', 'filter', 'show', 'dev', dev, dir]).trim();
  return parseFilters(out ? JSON.parse(out) : []);
}

/**
 * Every device's filters on both hooks, in one `tc -batch` (a namespace with 250 veths took
 * 500 `tc` runs, seconds). Throws when tc cannot tell for each: callers fail closed.
 */
export function listTcFiltersMany(ns: string | null, devs: string[]): Map<string, Record<TcDirection, TcFilter[]>> {
  if (devs.length === 0) return new Map();
  return parseMany(run('tc', [...(ns ? ['-n', ns] : []), '-j', '-b', '-'], { input: showAll(devs) }), devs);
}

function showAll(devs: string[]): string {
  return devs.flatMap((d) => [`filter show dev ${d} ingress\n`, `filter show dev ${d} egress\n`]).join('');
}

function parseMany(out: string, devs: string[]): Map<string, Record<TcDirection, TcFilter[]>> {
  const all = new Map<string, Record<TcDirection, TcFilter[]>>();
  // one JSON array a line, in the order asked
  const lines = out.split('\n').filter((l) => l.trim());
  if (lines.length !== devs.length * 2) throw new Error(`tc -batch printed ${lines.length} lists for ${devs.length * 2} hooks`);
  devs.forEach((d, i) => all.set(d, { ingress: parseFilters(JSON.parse(lines[2 * i]!)), egress: parseFilters(JSON.parse(lines[2 * i + 1]!)) }));
  return all;
}

function parseFilters(rows: { kind?: string; pref?: number; options?: { handle?: string; prog?: { name?: string } } }[]): TcFilter[] {
  // tc prints a header row per priority and a row per filter (with options): keep the filters
  return rows.filter((r) => r.options).map((r) => ({
    kind: r.kind ?? '', pref: r.pref ?? 0,
    handle: r.options?.handle ? Number.parseInt(r.options.handle, 16) : 0,
    prog: r.options?.prog?.name ?? null,
  }));
}

export function isOurs(f: TcFilter): boolean {
  return f.kind === 'bpf' && f.pref === TC_PRIORITY && !!f.prog?.startsWith('nt_');
}

/** Whether a device has any filter, ours or another tool's; true when tc cannot tell. */
export function hasTcFilters(ns: string | null, dev: string): boolean {
  try {
    return ['ingress', 'egress'].some((d) => listTcFilters(ns, dev, d as TcDirection).length > 0);
  } catch {
    return true;
  }
}

/**
 * Of these devices of one namespace, those with any filter, ours or another tool's: one
 * `tc -batch` for all of them. Every device when tc cannot tell for each (callers fail closed).
 */
export function devicesWithTcFilters(ns: string | null, devs: string[]): Set<string> {
  try {
    return busyOf(listTcFiltersMany(ns, devs), devs);
  } catch {
    return new Set(devs);
  }
}

/** devicesWithTcFilters without blocking: stopping runs several namespaces' `tc` at once. */
export function devicesWithTcFiltersAsync(ns: string | null, devs: string[]): Promise<Set<string>> {
  if (devs.length === 0) return Promise.resolve(new Set());
  return new Promise((resolve) => {
    const child = execFile('tc', [...(ns ? ['-n', ns] : []), '-j', '-b', '-'], { encoding: 'utf8', timeout: EXEC_TIMEOUT_MS, killSignal: 'SIGKILL' }, (err, out) => {
      try {
        resolve(err ? new Set(devs) : busyOf(parseMany(out, devs), devs));
      } catch {
        resolve(new Set(devs));
      }
    });
    child.stdin?.on('error', () => {}); // tc gone early: its exit says so
    child.stdin?.end(showAll(devs));
  });
}

function busyOf(filters: Map<string, Record<TcDirection, TcFilter[]>>, devs: string[]): Set<string> {
  return new Set(devs.filter((d) => filters.get(d)!.ingress.length > 0 || filters.get(d)!.egress.length > 0));
}

const CLSACT_DIR = '/run/nettrace/clsact';

function clsactRecord(netns: NetnsRef, ifindex: number): string {
  return `${CLSACT_DIR}/${netns.ino}-${ifindex}`;
}

/** We created this device's clsact: a later process (cleanup after kill -9) may remove it. */
export function recordClsact(netns: NetnsRef, ifindex: number, ifname: string): void {
  mkdirSync(CLSACT_DIR, { recursive: true });
  writeFileSync(clsactRecord(netns, ifindex), ifname);
}

/** the device's name is kept too: an ifindex reused by another tool's device is not ours */
export function clsactRecorded(netns: NetnsRef, ifindex: number, ifname: string): boolean {
  try {
    return readFileSync(clsactRecord(netns, ifindex), 'utf8') === ifname;
  } catch {
    return false;
  }
}

export function forgetClsact(netns: NetnsRef, ifindex: number): void {
  rmSync(clsactRecord(netns, ifindex), { force: true });
}

/** Records of namespaces that no longer exist: their qdiscs went with them. */
export function pruneClsactRecords(live: NetnsRef[]): void {
  if (!existsSync(CLSACT_DIR)) return;
  const inos = new Set(live.map((n) => String(n.ino)));
  for (const f of readdirSync(CLSACT_DIR)) if (!inos.has(f.split('-')[0]!)) rmSync(`${CLSACT_DIR}/${f}`, { force: true });
}
