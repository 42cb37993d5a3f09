import type { RetentionPolicy } from '../mirror/retention.js';
import type { HostedPolicy } from '../registry/retention.js';

/** Garbage-collection settings: the `gc:` section of the configuration document (entry/config/gc.ts). */
export interface GcConfig {
  /**
   * Content unreferenced (or stored and not yet referenced) for less than this is kept. It covers
   * a client between its blob uploads and the manifest that names them, and bytes a fill stored
   * for the next pull of another repository: hours, not seconds.
   */
  graceMs: number;
  /** How often a Node server runs a collection; 0: never (run `outpost gc` from cron instead). */
  intervalMs: number;
  /** Retention of mirrored content, run before each collection: evict by age, by size budget (none by default). */
  mirror: RetentionPolicy;
  /** Retention policies of hosted repositories (none by default: hosted content is kept unless a policy says). */
  hosted: HostedPolicy[];
}

/** A day: the longest a client plausibly takes between pushing a layer and its manifest. */
export const DEFAULT_GC_GRACE_MS = 24 * 60 * 60_000;
export const DEFAULT_GC_INTERVAL_MS = 60 * 60_000;

export const DEFAULT_GC_CONFIG: GcConfig = { graceMs: DEFAULT_GC_GRACE_MS, intervalMs: DEFAULT_GC_INTERVAL_MS, mirror: {}, hosted: [] };
