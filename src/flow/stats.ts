// Small statistics over measured samples, shared by diagnose and the benchmarks.

/**
 * The median of xs: the middle value once sorted; of an even count, the upper of the two
 * middle ones (always a value that was measured). 0 for no values. xs is not changed.
 */
export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? 0;
}
