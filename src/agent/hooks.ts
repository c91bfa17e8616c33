// The node's devices and the agent's programs on them: attach to devices that appear (pods
// come and go), release those that go, one rescan at a time. Pods' addresses, which only
// labels need, are learned after attaching, a few at a time.
import { attachEach, detachManyAsync, type AttachMechanism, type HookSet } from '../probe/attach';
import type { BpfProgram } from '../libbpf';
import { ipJson } from '../exec';
import { discoverNode, podAddresses } from '../topology/discover';
import type { Device, NodeTopology } from '../topology/model';
import { ipNs, type NetnsRef } from '../topology/netns';
import { orderOf } from '../topology/steps';
import { podNetworks, type RouteEntry } from './labels';

function devKey(d: Device): string {
  return `${d.netns.ino}:${d.ifindex}`;
}

/** pods' devices (host veth, pod eth0): attached after the node's own, in the background */
function isPodDevice(d: Device): boolean {
  return d.role === 'host-veth' || d.role === 'pod';
}

/** pods' devices always attached before nodeReady: a small node's pods are all there at ready */
const READY_POD_DEVICES = 4;

/** yields to the event loop, so /metrics answers between attachments */
const turn = () => new Promise<void>((r) => setImmediate(r));

function nodeDevices(t: NodeTopology): Device[] {
  return [t.underlay, t.tunnel, t.bridge, ...t.pods.flatMap((p) => [p.hostVeth, p.eth])].filter((d): d is Device => d !== null);
}

/** how the agent attaches: one mechanism everywhere, or mixed (see NodeHooksOptions.attach) */
export type AgentAttach = AttachMechanism | 'mixed';

export interface NodeHooksOptions {
  node: NetnsRef;
  /** the agent's program for a hook point */
  program(order: number): BpfProgram;
  /** the namespaces whose drops and retransmits count: the node's and its pods' */
  watchNetns(inos: number[]): void;
  /**
   * tcx or tc on every device; mixed: tcx on the node's own devices (underlay, tunnel, bridge) and
   * classic tc filters on pods' (a tcx link costs an RCU grace period under rtnl to attach and to
   * release, 10-15 ms here: 250 pods' 1,000 links take 15 s either way; tc filters, 0.4 s)
   */
  attach: AgentAttach;
  /** a device that failed to attach: counted and logged by the caller */
  onAttachError(message: string): void;
  /** after each rescan: the attachment count may have changed */
  onSynced(): void;
  /** pods came or went, or a pod's addresses were learned: names must be joined again */
  onPods?(): void;
  /**
   * How long a rescan attaches pods' devices before nodeReady resolves (default 100 ms, and
   * at least the first 4: a small node is ready with every pod attached); the rest follow in
   * the background. A tcx link waits for an RCU grace period under the kernel's
   * rtnl lock (10-15 ms here), so 250 pods' 1,000 links take seconds whatever we do.
   */
  readyBudgetMs?: number;
  log(line: string): void;
}

export class NodeHooks {
  topology: NodeTopology;
  private readonly hooks = new Map<string, { device: Device; set: HookSet }>();
  private readonly podIps = new Map<string, string[]>();
  /** the prefixes of the node's routes that lead to pods (labels: "unknown" rather than "external") */
  podNetworks: string[] = [];
  private syncing: Promise<void> | null = null;
  private again = false;
  private learning = false;
  private stopped = false;
  /** pods' devices a running rescan has still to attach */
  private pendingDevices = 0;
  private markNodeReady: () => void = () => {};
  /** the first rescan attached the node's own devices (or could not): pods' may still be attaching */
  readonly nodeReady = new Promise<void>((resolve) => (this.markNodeReady = resolve));

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

  /** devices found but not attached yet (pods being attached in the background) */
  get pending(): number {
    return this.pendingDevices;
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
      this.pendingDevices = 0;
      this.markNodeReady();
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
    // tcx: each link's release waits for an RCU grace period under rtnl (10-15 ms here), one
    // after the other; closing them in any order, or exiting with them open, costs the same
    const sets = [...this.hooks.values()].map((h) => h.set);
    this.hooks.clear();
    await detachManyAsync(sets);
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
    this.opts.watchNetns([this.opts.node.ino, ...this.topology.pods.map((p) => p.netns.ino)]);
    // the node's own devices (underlay, tunnel, bridge) first; then pods', up to the budget
    // before nodeReady, the rest one device at a time between turns of the event loop
    this.attach(fresh.filter((d) => !isPodDevice(d)));
    try {
      const ns = ipNs(this.opts.node);
      this.podNetworks = podNetworks(this.topology, [...ipJson<RouteEntry[]>(ns, ['route', 'show']), ...ipJson<RouteEntry[]>(ns, ['-6', 'route', 'show'])]);
    } catch {
      // keeps the last ones: a failed read must not turn pod addresses into "external"
    }
    const live = new Set(this.topology.pods.map((p) => p.name));
    for (const name of this.podIps.keys()) if (!live.has(name)) this.podIps.delete(name);
    this.indexPodIps();
    void this.learnAddresses();
    const pods = fresh.filter(isPodDevice);
    const budgetEnd = performance.now() + (this.opts.readyBudgetMs ?? 100);
    this.pendingDevices = pods.length;
    for (const [i, d] of pods.entries()) {
      if (this.stopped) break;
      if (i >= READY_POD_DEVICES && performance.now() >= budgetEnd) {
        this.markNodeReady();
        this.opts.onSynced();
        await turn();
        if (this.stopped) break;
      }
      this.attach([d]);
      this.pendingDevices--;
    }
    this.pendingDevices = 0;
    this.opts.onSynced();
  }

  private attach(devices: Device[]): void {
    const program = (d: Device, dir: 'ingress' | 'egress') => this.opts.program(orderOf(d.role, dir).order);
    const mode = this.opts.attach;
    const mechanismOf = (d: Device): AttachMechanism => (mode !== 'mixed' ? mode : isPodDevice(d) ? 'tc' : 'tcx');
    for (const mechanism of ['tcx', 'tc'] as const) {
      const mine = devices.filter((d) => mechanismOf(d) === mechanism);
      if (mine.length === 0) continue;
      const { attached, failed } = attachEach(mine, program, mechanism);
      for (const { device, set } of attached) {
        if (this.stopped) set.detach();
        else this.hooks.set(devKey(device), { device, set });
      }
      for (const { error } of failed) this.opts.onAttachError(error.message);
    }
  }

  /** also gives the topology's pods the addresses learned so far (discovery without details has none) */
  private indexPodIps(): void {
    for (const p of this.topology.pods) p.ips = this.podIps.get(p.name) ?? [];
    this.opts.onPods?.();
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
