// Remove what a killed nettrace may have left: our tagged classic-tc filters (tcx links die with
// their process and need nothing). Looks in every named namespace and our own.
import { destroyClsact, detachTc, inNetns } from '../libbpf';
import { ipJson } from '../exec';
import { currentNetns, listNamedNetns, type NetnsRef, namedNetns } from '../topology/netns';
import { hasTcFilters, TC_TAG } from './tctag';

export interface Removed {
  netns: string;
  device: string;
  hook: 'ingress' | 'egress';
}

export function cleanupNetns(ns: NetnsRef): Removed[] {
  const removed: Removed[] = [];
  const nsArg = ns.path ? ns.name : null;
  const links = ipJson<{ ifindex: number; ifname: string }[]>(nsArg, ['link', 'show']);
  inNetns(ns.path, () => {
    for (const l of links) {
      let ours = false;
      for (const hook of ['ingress', 'egress'] as const) {
        if (detachTc(l.ifindex, hook, TC_TAG)) {
          removed.push({ netns: ns.name, device: l.ifname, hook });
          ours = true;
        }
      }
      // the clsact qdisc goes too when nothing else uses it
      if (ours && !hasTcFilters(nsArg, l.ifname)) destroyClsact(l.ifindex);
    }
  });
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
  return all.flatMap(cleanupNetns);
}
