// Attaching a tc program to a device: tcx links (kernel >= 6.6) or classic clsact filters.
import { LibbpfError } from './error';
import { c } from './native';

export type TcDirection = 'ingress' | 'egress';

/** Where a program is attached; detach() is idempotent. */
export interface Attachment {
  readonly mechanism: 'tcx' | 'tc';
  readonly ifindex: number;
  readonly direction: TcDirection;
  /** classic tc only: this attach created the clsact qdisc, so it is ours to remove */
  readonly ownsQdisc: boolean;
  detach(): void;
}

const BPF_TCX_INGRESS = 46;
const BPF_TCX_EGRESS = 47;
const BPF_TC_INGRESS = 1;
const BPF_TC_EGRESS = 2;
const TC_HOOK_SIZE = 24;
const TC_OPTS_SIZE = 32;
const EEXIST = 17;
const ENOENT = 2;

/**
 * A tcx link: the kernel detaches it when its fd closes, so a killed process
 * leaves nothing behind, and it runs alongside other tools' programs.
 */
export function attachTcx(progFd: number, ifindex: number, direction: TcDirection): Attachment {
  const attachType = direction === 'ingress' ? BPF_TCX_INGRESS : BPF_TCX_EGRESS;
  const fd = c.bpf_link_create(progFd, ifindex, attachType, null) as number;
  if (fd < 0) throw new LibbpfError('attach-tcx', `tcx ${direction} attach to ifindex ${ifindex}`, fd);
  let open = true;
  return {
    mechanism: 'tcx', ifindex, direction, ownsQdisc: false,
    detach() {
      if (open) c.close(fd);
      open = false;
    },
  };
}

export interface TcTag {
  readonly handle: number;
  readonly priority: number;
}

function hook(ifindex: number, direction: TcDirection | 'both'): object {
  const point = direction === 'ingress' ? BPF_TC_INGRESS : direction === 'egress' ? BPF_TC_EGRESS : BPF_TC_INGRESS | BPF_TC_EGRESS;
  return { sz: TC_HOOK_SIZE, ifindex, attach_point: point, parent: 0 };
}

/**
 * A classic tc filter under clsact. It outlives the process, so it carries our
 * tag (handle, priority) and detachTc/cleanup remove it by that tag.
 */
export function attachTc(progFd: number, ifindex: number, direction: TcDirection, tag: TcTag): Attachment {
  const h = hook(ifindex, direction);
  const created = c.bpf_tc_hook_create(h) as number;
  if (created < 0 && created !== -EEXIST) throw new LibbpfError('create-clsact', `creating clsact on ifindex ${ifindex}`, created);
  const opts = { sz: TC_OPTS_SIZE, prog_fd: progFd, flags: 0, prog_id: 0, handle: tag.handle, priority: tag.priority };
  const ret = c.bpf_tc_attach(h, opts) as number;
  if (ret < 0) throw new LibbpfError('attach-tc', `tc ${direction} attach to ifindex ${ifindex}`, ret);
  let attached = true;
  return {
    mechanism: 'tc', ifindex, direction, ownsQdisc: created === 0,
    detach() {
      if (attached) detachTc(ifindex, direction, tag);
      attached = false;
    },
  };
}

/** Remove our tagged filter; true when there was one. */
export function detachTc(ifindex: number, direction: TcDirection, tag: TcTag): boolean {
  const opts = { sz: TC_OPTS_SIZE, prog_fd: 0, flags: 0, prog_id: 0, handle: tag.handle, priority: tag.priority };
  const ret = c.bpf_tc_detach(hook(ifindex, direction), opts) as number;
  if (ret === -ENOENT || ret === -22 /* EINVAL: no clsact at all */) return false;
  if (ret < 0) throw new LibbpfError('detach-tc', `tc ${direction} detach from ifindex ${ifindex}`, ret);
  return true;
}

/** Delete the clsact qdisc (and every filter under it). */
export function destroyClsact(ifindex: number): void {
  const ret = c.bpf_tc_hook_destroy(hook(ifindex, 'both')) as number;
  if (ret < 0 && ret !== -ENOENT && ret !== -22) {
    throw new LibbpfError('destroy-clsact', `removing clsact from ifindex ${ifindex}`, ret);
  }
}

