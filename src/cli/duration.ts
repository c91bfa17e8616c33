// Time options: `10s`, `500ms`, `2m`, `1h30m`, or a plain number in the option's own unit, so
// command lines written before units were accepted keep their meaning.
import { usageError } from '../errors';

const UNIT_MS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 } as const;
export type DurationUnit = 's' | 'ms';

/**
 * The longest time option: 24 hours. Node's timers take at most 2^31-1 ms (under 25 days) and
 * fire at once beyond it, so a huge value would end a trace immediately instead of never.
 */
export const MAX_DURATION_MS = 86_400_000;

const PART = /(\d+(?:\.\d+)?|\.\d+)(ms|s|m|h)/y;

/** Milliseconds in text, or null when it is not a duration. */
function durationMs(text: string, plainUnit: DurationUnit): number | null {
  if (/^(\d+(\.\d+)?|\.\d+)(e[+-]?\d+)?$/i.test(text)) return Number(text) * UNIT_MS[plainUnit];
  if (text === '') return null;
  let ms = 0;
  PART.lastIndex = 0;
  while (PART.lastIndex < text.length) {
    const at = PART.lastIndex;
    const m = PART.exec(text);
    if (!m || m.index !== at) return null;
    ms += Number(m[1]) * UNIT_MS[m[2] as keyof typeof UNIT_MS];
  }
  return ms;
}

/**
 * A time option's value in its unit (seconds or milliseconds): above 0, at most 24 hours. A bad
 * value is one E_USAGE line that shows how to write it.
 */
export function parseDuration(flag: string, text: string, unit: DurationUnit): number {
  const plain = unit === 's' ? 'seconds' : 'milliseconds';
  const ms = durationMs(text.trim(), unit);
  if (ms === null || !Number.isFinite(ms)) {
    throw usageError(`${flag} ${JSON.stringify(text)} is not a duration`, `write it as 10s, 500ms, 2m or 1h30m, or as a number of ${plain}`);
  }
  if (ms <= 0) throw usageError(`${flag} ${text} is not above 0`, `give a duration such as ${unit === 's' ? '10s' : '500ms'}`);
  if (ms > MAX_DURATION_MS) throw usageError(`${flag} ${text} is more than 24 hours`, `give at most 24h (${MAX_DURATION_MS / UNIT_MS[unit]} ${plain})`);
  if (unit === 's') return ms / 1000;
  // timers count whole milliseconds: 0.4ms would be a timer of 0
  return Math.max(1, Math.round(ms));
}

/** A commander option parser for a time option. */
export const durationOption = (flag: string, unit: DurationUnit) => (text: string): number => parseDuration(flag, text, unit);
