/**
 * The `gc:` section of the configuration document: the grace period of garbage collection, how
 * often a Node server runs it, the retention of mirrored content and the retention policies of
 * hosted content (src/core/gc/config.ts has the defaults and why; src/core/mirror/retention.ts
 * and src/core/registry/retention.ts what a pass does).
 */
import { DEFAULT_GC_CONFIG, type GcConfig } from '../../core/gc/config.js';
import type { RetentionPolicy } from '../../core/mirror/retention.js';
import type { HostedPolicy } from '../../core/registry/retention.js';
import { anchoredRegExp, child, duration, field, globs, integer, item, list, mapping, size, type SectionContext } from './values.js';

const GC_KEYS = ['grace', 'interval', 'mirror', 'hosted'] as const;
const MIRROR_KEYS = ['maxAge', 'sizeBudget'] as const;
const HOSTED_KEYS = ['repositories', 'tags', 'keepTags', 'untaggedAfter'] as const;

/** Hosted manifests deleted sooner than an hour after they lost their last tag would race the client retagging them. */
const MIN_UNTAGGED_MS = 60 * 60_000;
const MAX_KEEP_TAGS = 1_000_000;

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
  const entries = mapping(value, path, ctx.problems, { known: GC_KEYS });
  if (!entries) return DEFAULT_GC_CONFIG;
  const graceMs = duration(field(entries, 'grace'), child(path, 'grace'), ctx.problems, {
    min: MIN_GRACE_MS,
    max: MAX_GRACE_MS,
    fallback: DEFAULT_GC_CONFIG.graceMs,
  });
  const interval = field(entries, 'interval');
  // `interval: 0` (or 0s, 0m, ...) turns the server's own runs off.
  const intervalMs =
    interval === 0 || (typeof interval === 'string' && /^0+(ms|s|m|h|d)?$/.test(interval.trim()))
      ? 0
      : duration(interval, child(path, 'interval'), ctx.problems, { min: MIN_INTERVAL_MS, max: MAX_INTERVAL_MS, fallback: DEFAULT_GC_CONFIG.intervalMs });
  return {
    graceMs,
    intervalMs,
    mirror: readRetention(field(entries, 'mirror'), child(path, 'mirror'), ctx),
    hosted: readHosted(field(entries, 'hosted'), child(path, 'hosted'), ctx),
  };
}

/** `hosted:` a list of policies, each with its repositories and at least one of keepTags and untaggedAfter. */
function readHosted(value: unknown, path: string, ctx: SectionContext): HostedPolicy[] {
  const policies: HostedPolicy[] = [];
  list(value, path, ctx.problems).forEach((entry, i) => {
    const at = item(path, i);
    const entries = mapping(entry, at, ctx.problems, { known: HOSTED_KEYS });
    if (!entries) return;
    const repositories = globs(field(entries, 'repositories'), child(at, 'repositories'), ctx.problems);
    if (field(entries, 'repositories') === undefined) ctx.problems.at(child(at, 'repositories'), 'is required: the repository globs the policy applies to');
    const policy: HostedPolicy = { repositories };
    const tags = field(entries, 'tags');
    if (tags !== undefined) {
      const pattern = anchoredRegExp(tags, child(at, 'tags'), ctx.problems);
      if (pattern) policy.tags = pattern;
    }
    // 0 is the fallback: below the range, so only a valid count is kept.
    const keep = integer(field(entries, 'keepTags'), child(at, 'keepTags'), ctx.problems, { min: 1, max: MAX_KEEP_TAGS, fallback: 0 });
    if (keep > 0) policy.keepTags = keep;
    if (field(entries, 'untaggedAfter') !== undefined) {
      policy.untaggedAfterMs = duration(field(entries, 'untaggedAfter'), child(at, 'untaggedAfter'), ctx.problems, {
        min: MIN_UNTAGGED_MS,
        max: MAX_MAX_AGE_MS,
        fallback: MAX_MAX_AGE_MS,
      });
    }
    if (field(entries, 'keepTags') === undefined && field(entries, 'untaggedAfter') === undefined) ctx.problems.at(at, 'needs keepTags, untaggedAfter or both: a policy with neither deletes nothing');
    policies.push(policy);
  });
  return policies;
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
