// Network namespaces acting as nodes and pods: named ones under /run/netns, or our own.
import { existsSync, readdirSync, statSync } from 'node:fs';
import os from 'node:os';
import { NettraceError } from '../errors';

export const NETNS_DIR = '/run/netns';

export interface NetnsRef {
  /** the name under /run/netns, or the host name for our own namespace */
  name: string;
  /** /run/netns/NAME, or null for the namespace nettrace runs in */
  path: string | null;
  /** what the BPF side reads from skb->dev's netns: names devices together with ifindex */
  ino: number;
}

export function namedNetns(name: string): NetnsRef {
  const p = `${NETNS_DIR}/${name}`;
  if (!/^[\w.-]+$/.test(name) || !existsSync(p)) {
    throw new NettraceError('NOT_FOUND', `no network namespace named ${name}`, 'list them with `ip netns list`, or start the test cluster with `nettrace testbed up`');
  }
  return { name, path: p, ino: statSync(p).ino };
}

export function currentNetns(): NetnsRef {
  return { name: os.hostname(), path: null, ino: statSync('/proc/self/ns/net').ino };
}

export function listNamedNetns(): string[] {
  return existsSync(NETNS_DIR) ? readdirSync(NETNS_DIR) : [];
}

/** ip's -n argument for a namespace */
export function ipNs(ns: NetnsRef): string | null {
  return ns.path ? ns.name : null;
}
