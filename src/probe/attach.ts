// Put the hop programs on both hooks of every device of the path, inside each device's namespace.
import { attachTc, attachTcx, destroyClsact, deviceName, inNetns, type Attachment, type BpfProgram, type TcDirection } from '../libbpf';
import type { NettraceError } from '../errors';
import { advise } from './advice';
import type { Device } from '../topology/model';
import { devicesWithTcFilters, devicesWithTcFiltersAsync, forgetClsact, newTcTag, recordClsact } from './tctag';

export type AttachMechanism = 'tcx' | 'tc';

export interface HookSet {
  attachments: { device: Device; attachment: Attachment }[];
  detach(): void;
}

const live = new Set<HookSet>();

/** Detach everything still attached: for exit paths (signals, crashes of ours). */
export function detachAllLive(): void {
  for (const h of live) h.detach();
}

/** The program for a device's hook, or null to leave that hook alone. */
export type ProgramChoice = Record<TcDirection, BpfProgram> | ((device: Device, direction: TcDirection) => BpfProgram | null);

export function attachAll(devices: Device[], programs: ProgramChoice, mechanism: AttachMechanism = 'tcx'): HookSet {
  const choose = typeof programs === 'function' ? programs : (_d: Device, dir: TcDirection) => programs[dir];
  const attachments: HookSet['attachments'] = [];
  const set: HookSet = {
    attachments,
    detach() {
      detachMany([set]);
    },
  };
  live.add(set);
  try {
    for (const device of devices) {
      inNetns(device.netns.path, () => {
        for (const dir of ['ingress', 'egress'] as const) {
          const prog = choose(device, dir);
          if (!prog) continue;
          const fd = prog.fd;
          try {
            // tcx: first on the hook, so a program that ends the chain (Cilium, Calico eBPF) cannot hide packets from us
            const a = mechanism === 'tcx' ? attachTcx(fd, device.ifindex, dir, true) : attachTc(fd, device.ifindex, dir, newTcTag());
            // the kernel's name: a pod's eth0 found from the node side is known by its ifindex only
            if (a.ownsQdisc) recordClsact(device.netns, device.ifindex, deviceName(device.ifindex) ?? device.name);
            attachments.push({ device, attachment: a });
          } catch (err) {
            throw advise(err, `failed to attach to ${device.name} ${dir} in ${device.netns.name}`);
          }
        }
      });
    }
  } catch (err) {
    set.detach();
    throw advise(err);
  }
  return set;
}

/**
 * Detach several sets at once. Each filter or link goes on its own; the clsact qdiscs we created
 * are then checked for other filters with one `tc -batch` per namespace, not two `tc` runs a
 * device (which made stopping an agent on 250 pods take seconds).
 */
export function detachMany(sets: HookSet[]): void {
  for (const devices of release(sets)) {
    const ns = devices[0]!.device.netns;
    removeIdleClsact(devices, devicesWithTcFilters(ns.path ? ns.name : null, devices.map((d) => d.name)));
  }
}

/** detachMany, with up to `parallel` namespaces' `tc` runs at once (250 pods: 250 namespaces). */
export async function detachManyAsync(sets: HookSet[], parallel = 4): Promise<void> {
  const groups = release(sets);
  let next = 0;
  await Promise.all(Array.from({ length: parallel }, async () => {
    while (next < groups.length) {
      const devices = groups[next++]!;
      const ns = devices[0]!.device.netns;
      removeIdleClsact(devices, await devicesWithTcFiltersAsync(ns.path ? ns.name : null, devices.map((d) => d.name)));
    }
  }));
}

interface OwnedQdisc {
  device: Device;
  /** the kernel's name, which tc needs */
  name: string;
}

/** Detach every attachment; the clsact qdiscs we created and that are still there, by namespace. */
function release(sets: HookSet[]): OwnedQdisc[][] {
  const owned: OwnedQdisc[] = [];
  for (const set of sets) {
    const detached = set.attachments.splice(0);
    const gone = new Set<Device>();
    for (const { device, attachment } of detached) {
      try {
        inNetns(device.netns.path, () => attachment.detach());
      } catch {
        // the pod's namespace is gone, and the device with it: its ifindex may name another
        // device here, so touch nothing (a tcx link's fd is still ours to close)
        attachment.abandon();
        gone.add(device);
      }
    }
    for (const { device, attachment } of detached) {
      if (!attachment.ownsQdisc) continue;
      // a gone namespace took its qdiscs along: their records go too
      if (gone.has(device)) forgetClsact(device.netns, device.ifindex);
      else if (!owned.some((o) => o.device === device)) {
        // tc knows devices by name; a pod's eth0 found from the node side has only its ifindex
        const name = inNetnsOrNull(device.netns.path, () => deviceName(device.ifindex));
        if (name) owned.push({ device, name });
        else forgetClsact(device.netns, device.ifindex); // the device went, and its qdisc with it
      }
    }
    live.delete(set);
  }
  const byNetns = new Map<number, OwnedQdisc[]>();
  for (const o of owned) byNetns.set(o.device.netns.ino, [...(byNetns.get(o.device.netns.ino) ?? []), o]);
  return [...byNetns.values()];
}

/** a clsact qdisc we created goes too, once no filter (ours or another tool's) is left on it */
function removeIdleClsact(devices: OwnedQdisc[], busy: Set<string>): void {
  for (const { device, name } of devices) {
    if (busy.has(name)) continue;
    try {
      inNetns(device.netns.path, () => destroyClsact(device.ifindex));
      forgetClsact(device.netns, device.ifindex);
    } catch {
      // the namespace went meanwhile, and the qdisc with it
    }
  }
}

function inNetnsOrNull<T>(path: string | null, fn: () => T): T | null {
  try {
    return inNetns(path, fn);
  } catch {
    return null; // the namespace is gone
  }
}

/** One HookSet per device: a device that fails is reported in `failed` and holds nothing; the others are attached. */
export function attachEach(devices: Device[], programs: ProgramChoice, mechanism: AttachMechanism = 'tcx'):
  { attached: { device: Device; set: HookSet }[]; failed: { device: Device; error: NettraceError }[] } {
  const attached: { device: Device; set: HookSet }[] = [];
  const failed: { device: Device; error: NettraceError }[] = [];
  for (const device of devices) {
    try {
      attached.push({ device, set: attachAll([device], programs, mechanism) });
    } catch (err) {
      failed.push({ device, error: err as NettraceError });
    }
  }
  return { attached, failed };
}
