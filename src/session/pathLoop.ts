// What every follow does with the paths it rebuilds, wherever the records come from: hand
// them out until --count or --timeout, expire paths whose next hop is late, and on stop let
// the last records in before the remaining paths are reported.
import type { PacketPath } from '../flow/path';

export interface PathLoopOptions {
  count: number | null;
  timeoutS: number | null;
  onPath(p: PacketPath): void;
  /** take in what arrived (a ring to drain); pushes come through emit() instead */
  poll?(): void;
  /** paths whose next hop is overdue (all with force) */
  expire(force: boolean): PacketPath[];
  /** on stop: release the hooks and let the last records in */
  release(): void | Promise<void>;
  /** after the last paths are out */
  close(): void;
}

export interface PathLoop {
  emit(p: PacketPath): void;
  stop(): void;
  /** resolves with the number of paths handed out */
  done: Promise<number>;
}

/** how often a follow takes in what arrived */
export const POLL_MS = 5;
const EXPIRE_MS = 100;

export function pathLoop(o: PathLoopOptions): PathLoop {
  let handed = 0;
  let stopping = false;
  let resolveDone: (n: number) => void = () => {};
  const done = new Promise<number>((resolve) => (resolveDone = resolve));
  const emit = (p: PacketPath) => {
    if (o.count !== null && handed >= o.count) return;
    handed++;
    o.onPath(p);
    // not from inside a drain: stop() drains and unmaps the ring itself
    if (o.count !== null && handed >= o.count) setImmediate(stop);
  };
  let lastExpire = Date.now();
  const timer = setInterval(() => {
    o.poll?.();
    if (Date.now() - lastExpire >= EXPIRE_MS) {
      lastExpire = Date.now();
      for (const p of o.expire(false)) emit(p);
    }
  }, POLL_MS);
  const timeout = o.timeoutS !== null ? setTimeout(stop, o.timeoutS * 1000) : null;

  function stop(): void {
    if (stopping) return;
    stopping = true;
    clearInterval(timer);
    if (timeout) clearTimeout(timeout);
    void Promise.resolve()
      .then(() => o.release())
      .catch(() => {})
      .then(() => {
        o.poll?.();
        for (const p of o.expire(true)) emit(p);
        o.close();
        resolveDone(handed);
      });
  }
  return { emit, stop, done };
}
