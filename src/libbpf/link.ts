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
  /** Forget it without touching the kernel: its device went away with its namespace. */
  abandon(): void;
}

const BPF_TCX_INGRESS = 46;
const BPF_TCX_EGRESS = 47;
const BPF_TC_INGRESS = 1;
const BPF_TC_EGRESS = 2;
const TC_HOOK_SIZE = 24;
const TC_OPTS_SIZE = 32;
const EEXIST = 17;
const ENOENT = 2;
/** link_create flag: put the program before the others on the hook (uapi BPF_F_BEFORE) */
const BPF_F_BEFORE = 1 << 3;
/** bpf_link_create_opts up to its flags field, zero-padded: libbpf passes flags to the kernel for tcx */
const LINK_OPTS_SIZE = 16;

/**
 * A tcx link: the kernel detaches it when its fd closes, so a killed process
 * leaves nothing behind, and it runs alongside other tools' programs.
 * first: ahead of every program already there. A program that ends the chain (returns
 * OK, REDIRECT or SHOT, as Cilium's and Calico's do) hides the packet from those after it.
 */
export function attachTcx(progFd: number, ifindex: number, direction: TcDirection, first = false): Attachment {
  const attachType = direction === 'ingress' ? BPF_TCX_INGRESS : BPF_TCX_EGRESS;
  let opts: Buffer | null = null;
  if (first) {
    opts = Buffer.alloc(LINK_OPTS_SIZE);
    opts.writeBigUInt64LE(BigInt(LINK_OPTS_SIZE), 0);
    opts.writeUInt32LE(BPF_F_BEFORE, 8);
  }
  const fd = c.bpf_link_create(progFd, ifindex, attachType, opts) as number;
  if (fd < 0) throw new LibbpfError('attach-tcx', `tcx ${direction} attach to ifindex ${ifindex}`, fd);
  let open = true;
  return {
    mechanism: 'tcx', ifindex, direction, ownsQdisc: false,
    detach() {
      if (open) c.close(fd);
      open = false;
    },
    // the fd is ours whatever became of the device: closing it is always right
    abandon() {
      this.detach();
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
    // the ifindex means nothing outside its namespace: another device may carry it here
    abandon() {
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

/** The name of a device of the calling thread's namespace, null when there is none. */
export function deviceName(ifindex: number): string | null {
  const buf = Buffer.alloc(16); // IF_NAMESIZE
  if (!c.if_indextoname(ifindex, buf)) return null;
  const end = buf.indexOf(0);
  return buf.subarray(0, end < 0 ? buf.length : end).toString('utf8');
}

/** Delete the clsact qdisc (and every filter under it). */
export function destroyClsact(ifindex: number): void {
  const ret = c.bpf_tc_hook_destroy(hook(ifindex, 'both')) as number;
  if (ret < 0 && ret !== -ENOENT && ret !== -22) {
    throw new LibbpfError('destroy-clsact', `removing clsact from ifindex ${ifindex}`, ret);
  }
}

