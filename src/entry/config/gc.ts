/**
 * The `gc:` section of the configuration document: the grace period of garbage collection and
 * how often a Node server runs it (src/core/gc/config.ts has the defaults and why).
 */
import { DEFAULT_GC_CONFIG, type GcConfig } from '../../core/gc/config.js';
import { child, duration, field, mapping, type SectionContext } from './values.js';

const GC_KEYS = ['grace', 'interval'] as const;

/** Settings a later version reads; refused, so no one believes content is evicted when it is not. */
const LATER_KEYS: Readonly<Record<string, string>> = {
  mirror: 'retention of mirrored content (maximum age, size budget) is not supported by this version of Outpost yet; nothing would be evicted',
  hosted: 'retention policies for hosted content are not supported by this version of Outpost yet; nothing would be evicted',
};

/** Shorter than a minute and content would go while its client is still between two requests. */
const MIN_GRACE_MS = 60_000;
const MAX_GRACE_MS = 365 * 24 * 60 * 60_000;
/** A run every few seconds would only repeat itself. */
const MIN_INTERVAL_MS = 60_000;
const MAX_INTERVAL_MS = 7 * 24 * 60 * 60_000;

export function readGc(value: unknown, path: string, ctx: SectionContext): GcConfig {
  const entries = mapping(value, path, ctx.problems, { known: GC_KEYS, refused: LATER_KEYS });
  if (!entries) return DEFAULT_GC_CONFIG;
  const graceMs = duration(field(entries, 'grace'), child(path, 'grace'), ctx.problems, {
    min: MIN_GRACE_MS,
    max: MAX_GRACE_MS,
    fallback: DEFAULT_GC_CONFIG.graceMs,
  });
  const interval = field(entries, 'interval');
  // `interval: 0` (or "0s") turns the server's own runs off.
  const intervalMs =
    interval === 0 || interval === '0' || interval === '0s'
      ? 0
      : duration(interval, child(path, 'interval'), ctx.problems, { min: MIN_INTERVAL_MS, max: MAX_INTERVAL_MS, fallback: DEFAULT_GC_CONFIG.intervalMs });
  return { graceMs, intervalMs };
}
