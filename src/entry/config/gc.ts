/**
 * The `gc:` section of the configuration document: the grace period of garbage collection, how
 * often a Node server runs it, and the retention of mirrored content (src/core/gc/config.ts has
 * the defaults and why; src/core/mirror/retention.ts what a pass does).
 */
import { DEFAULT_GC_CONFIG, type GcConfig } from '../../core/gc/config.js';
import type { RetentionPolicy } from '../../core/mirror/retention.js';
import { child, duration, field, mapping, size, type SectionContext } from './values.js';

const GC_KEYS = ['grace', 'interval', 'mirror'] as const;
const MIRROR_KEYS = ['maxAge', 'sizeBudget'] as const;

/** Settings a later version reads; refused, so no one believes content is evicted when it is not. */
const LATER_KEYS: Readonly<Record<string, string>> = {
  hosted: 'retention policies for hosted content are not supported by this version of Outpost yet; nothing would be evicted',
};

/** Mirrored content evicted sooner than an hour after its last pull would be fetched again and again. */
const MIN_MAX_AGE_MS = 60 * 60_000;
const MAX_MAX_AGE_MS = 10 * 365 * 24 * 60 * 60_000;
const MIN_BUDGET_BYTES = 1024 * 1024;
const MAX_BUDGET_BYTES = 1024 ** 5;

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
  return { graceMs, intervalMs, mirror: readRetention(field(entries, 'mirror'), child(path, 'mirror'), ctx) };
}

function readRetention(value: unknown, path: string, ctx: SectionContext): RetentionPolicy {
  if (value === undefined || value === null) return {};
  const entries = mapping(value, path, ctx.problems, { known: MIRROR_KEYS });
  if (!entries) return {};
  const policy: RetentionPolicy = {};
  if (field(entries, 'maxAge') !== undefined) {
    policy.maxAgeMs = duration(field(entries, 'maxAge'), child(path, 'maxAge'), ctx.problems, { min: MIN_MAX_AGE_MS, max: MAX_MAX_AGE_MS, fallback: MAX_MAX_AGE_MS });
  }
  if (field(entries, 'sizeBudget') !== undefined) {
    policy.budgetBytes = size(field(entries, 'sizeBudget'), child(path, 'sizeBudget'), ctx.problems, { min: MIN_BUDGET_BYTES, max: MAX_BUDGET_BYTES, fallback: MAX_BUDGET_BYTES });
  }
  return policy;
}
