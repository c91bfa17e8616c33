// How our classic-tc filters are recognised, and whether a device still has any filter.
import type { TcTag } from '../libbpf';
import { run } from '../exec';

/** Our classic-tc filters carry this handle and priority, so cleanup finds them. */
export const TC_TAG: TcTag = { handle: 0x4e54, priority: 0x4e54 };

/** ns: ip/tc -n name, null for our own namespace. */
export function hasTcFilters(ns: string | null, dev: string): boolean {
  const args = (dir: string) => [...(ns ? ['-n', ns] : []), 'filter', 'show', 'dev', dev, dir];
  return ['ingress', 'egress'].some((d) => run('tc', args(d), { allowFail: true }).trim() !== '');
}
