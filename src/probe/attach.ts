// Put the hop programs on both hooks of every device of the path, inside each device's namespace.
import { attachTc, attachTcx, destroyClsact, inNetns, type Attachment, type BpfProgram, type TcDirection } from '../libbpf';
import type { NettraceError } from '../errors';
import { advise } from './advice';
import type { Device } from '../topology/model';
import { forgetClsact, hasTcFilters, newTcTag, recordClsact } from './tctag';

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
      const detached = attachments.splice(0);
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
      // a gone namespace took its qdiscs along: their records go too
      for (const { device } of detached.filter((d) => d.attachment.ownsQdisc && gone.has(d.device))) forgetClsact(device.netns, device.ifindex);
      // a clsact qdisc we created goes too, once no filter (ours or another tool's) is left on it
      for (const { device } of detached.filter((d) => d.attachment.ownsQdisc && !gone.has(d.device))) {
        try {
          const ns = device.netns.path ? device.netns.name : null;
          if (!hasTcFilters(ns, device.name)) {
            inNetns(device.netns.path, () => destroyClsact(device.ifindex));
            forgetClsact(device.netns, device.ifindex);
          }
        } catch {
          // the namespace went meanwhile, and the qdisc with it
        }
      }
      live.delete(set);
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
            if (a.ownsQdisc) recordClsact(device.netns, device.ifindex, device.name);
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
