// The node's devices and the agent's programs on them: attach to devices that appear (pods
// come and go), release those that go, one rescan at a time. Pods' addresses, which only
// labels need, are learned after attaching, a few at a time.
import { attachEach, type AttachMechanism, type HookSet } from '../probe/attach';
import type { BpfProgram } from '../libbpf';
import { discoverNode, podAddresses } from '../topology/discover';
import type { Device, NodeTopology } from '../topology/model';
import type { NetnsRef } from '../topology/netns';
import { orderOf } from '../topology/steps';

function devKey(d: Device): string {
  return `${d.netns.ino}:${d.ifindex}`;
}

function nodeDevices(t: NodeTopology): Device[] {
  return [t.underlay, t.tunnel, t.bridge, ...t.pods.flatMap((p) => [p.hostVeth, p.eth])].filter((d): d is Device => d !== null);
}

export interface NodeHooksOptions {
  node: NetnsRef;
  /** the agent's program for a hook point */
  program(order: number): BpfProgram;
  /** the namespaces whose drops and retransmits count: the node's and its pods' */
  watchNetns(inos: number[]): void;
  attach: AttachMechanism;
  /** a device that failed to attach: counted and logged by the caller */
  onAttachError(message: string): void;
  /** after each rescan: the attachment count may have changed */
  onSynced(): void;
  log(line: string): void;
}

export class NodeHooks {
  topology: NodeTopology;
  private readonly hooks = new Map<string, { device: Device; set: HookSet }>();
  private readonly podIps = new Map<string, string[]>();
  private podByIp = new Map<string, string>();
  private syncing: Promise<void> | null = null;
  private again = false;
  private learning = false;
  private stopped = false;

  constructor(private readonly opts: NodeHooksOptions) {
    this.topology = this.discover();
  }

  /** tc filters and tcx links the agent holds */
  get attachments(): number {
    let n = 0;
    for (const h of this.hooks.values()) n += h.set.attachments.length;
    return n;
  }

  get devices(): number {
    return this.hooks.size;
  }

  /** the pod (its namespace) that has this address, '' when none we know */
  podOf(ip: string): string {
    return this.podByIp.get(ip) ?? '';
  }

  /** Attach to devices that appeared, release those that went; a call while one runs waits for it. */
  sync(): Promise<void> {
    if (this.stopped) return Promise.resolve();
    if (this.syncing) {
      this.again = true;
      return this.syncing;
    }
    this.syncing = this.syncOnce().finally(() => {
      this.syncing = null;
      if (this.again && !this.stopped) {
        this.again = false;
        void this.sync();
      }
    });
    return this.syncing;
  }

  /** Release everything, once a running rescan is done. */
  async detachAll(): Promise<void> {
    this.stopped = true;
    await this.syncing;
    // tcx: each link's release waits for an RCU grace period (~10 ms here)
    for (const h of this.hooks.values()) h.set.detach();
    this.hooks.clear();
  }

  private discover(): NodeTopology {
    return discoverNode(this.opts.node, new Set(), { podDetails: false });
  }

  private async syncOnce(): Promise<void> {
    try {
      this.topology = this.discover();
    } catch (err) {
      this.opts.log(`warning: rescanning ${this.opts.node.name} failed: ${(err as Error).message}`);
      return;
    }
    const want = new Map(nodeDevices(this.topology).map((d) => [devKey(d), d]));
    for (const [key, h] of this.hooks) {
      if (want.has(key)) continue;
      h.set.detach();
      this.hooks.delete(key);
    }
    const fresh = [...want].filter(([key]) => !this.hooks.has(key)).map(([, d]) => d);
    const { attached, failed } = attachEach(fresh, (d, dir) => this.opts.program(orderOf(d.role, dir).order), this.opts.attach);
    for (const { device, set } of attached) {
      if (this.stopped) set.detach();
      else this.hooks.set(devKey(device), { device, set });
    }
    for (const { error } of failed) this.opts.onAttachError(error.message);
    this.opts.watchNetns([this.opts.node.ino, ...this.topology.pods.map((p) => p.netns.ino)]);
    const live = new Set(this.topology.pods.map((p) => p.name));
    for (const name of this.podIps.keys()) if (!live.has(name)) this.podIps.delete(name);
    this.indexPodIps();
    void this.learnAddresses();
    this.opts.onSynced();
  }

  private indexPodIps(): void {
    this.podByIp = new Map(this.topology.pods.flatMap((p) => (this.podIps.get(p.name) ?? []).map((ip) => [ip, p.name] as const)));
  }

  private async learnAddresses(): Promise<void> {
    if (this.learning) return;
    this.learning = true;
    try {
      for (const p of this.topology.pods) {
        if (this.stopped) return;
        if (this.podIps.has(p.name)) continue;
        this.podIps.set(p.name, await podAddresses(p).catch(() => [])); // a pod gone meanwhile has none
        this.indexPodIps();
      }
    } finally {
      this.learning = false;
    }
  }
}
