// Remove what a killed nettrace left behind: our classic-tc filters whose owning process is gone
// (tcx links die with their process and need nothing), and a clsact qdisc only where we recorded
// creating it and no filter is left on it. Another tool's filters, and a live nettrace's, stay.
import { existsSync } from 'node:fs';
import { destroyClsact, detachTc, inNetns } from '../libbpf';
import { ipJson } from '../exec';
import { currentNetns, listNamedNetns, type NetnsRef, namedNetns } from '../topology/netns';
import { clsactRecorded, forgetClsact, hasTcFilters, isOurs, listTcFilters, listTcFiltersMany, ownerAlive, ownerPid, pruneClsactRecords, type TcFilter } from './tctag';

export interface Removed {
  netns: string;
  device: string;
  hook: 'ingress' | 'egress';
}

export function cleanupNetns(ns: NetnsRef): Removed[] {
  const removed: Removed[] = [];
  const nsArg = ns.path ? ns.name : null;
  const links = ipJson<{ ifindex: number; ifname: string }[]>(nsArg, ['link', 'show']);
  let many: Map<string, Record<'ingress' | 'egress', TcFilter[]>> | null = null;
  try {
    many = listTcFiltersMany(nsArg, links.map((l) => l.ifname));
  } catch {
    // a device gone meanwhile fails the batch: ask device by device
  }
  for (const l of links) {
    const stale: { hook: 'ingress' | 'egress'; f: TcFilter }[] = [];
    for (const hook of ['ingress', 'egress'] as const) {
      let filters: TcFilter[];
      try {
        filters = many?.get(l.ifname)?.[hook] ?? listTcFilters(nsArg, l.ifname, hook);
      } catch {
        continue; // tc cannot tell what is there: leave it all
      }
      for (const f of filters) if (isOurs(f) && !ownerAlive(ownerPid(f.handle))) stale.push({ hook, f });
    }
    const recorded = clsactRecorded(ns, l.ifindex, l.ifname);
    if (!stale.length && !recorded) continue;
    inNetns(ns.path, () => {
      for (const { hook, f } of stale) {
        if (detachTc(l.ifindex, hook, { handle: f.handle, priority: f.pref })) removed.push({ netns: ns.name, device: l.ifname, hook });
      }
      if (recorded && !hasTcFilters(nsArg, l.ifname)) {
        destroyClsact(l.ifindex);
        forgetClsact(ns, l.ifindex);
      }
    });
  }
  return removed;
}

export function cleanupEverywhere(): Removed[] {
  const all = [currentNetns(), ...listNamedNetns().flatMap((n) => {
    try {
      return [namedNetns(n)];
    } catch {
      return [];
    }
  })];
  pruneClsactRecords(all);
  return all.flatMap((ns) => {
    try {
      return cleanupNetns(ns);
    } catch (err) {
      // a namespace deleted since it was listed (pods come and go) took its filters along
      if (ns.path && !existsSync(ns.path)) return [];
      throw err;
    }
  });
}
