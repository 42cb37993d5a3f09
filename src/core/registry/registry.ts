import { Blobs } from './blobs.js';
import { Catalog } from './catalog.js';
import { gcPorts, referenceCheck } from './content.js';
import { runGc, type GcReport, type GcRunOptions } from '../gc/run.js';
import { DEFAULT_OPTIONS, type Ctx, type RegistryDeps } from './context.js';
import { reclaimLeftovers, type LeftoversReport, type ReclaimOptions } from './leftovers.js';
import { Manifests } from './manifests.js';
import { Referrers } from './referrers.js';
import { Tags } from './tags.js';
import { Uploads } from './uploads.js';
import { Mirror, type MirrorDeps } from '../mirror/mirror.js';
import type { RetainOptions, RetentionPolicy, RetentionReport } from '../mirror/retention.js';
import { retainHosted, type HostedEviction, type HostedPolicy, type HostedRetentionReport } from './retention.js';
import { DEFAULT_FILL_LEASE_MS, DEFAULT_FILL_MEMORY_BYTES, DEFAULT_FILL_PART_BYTES } from '../mirror/config.js';

export type { RegistryDeps, RegistryOptions } from './context.js';

/** The registry engine: one object per resource, all over the same ports. */
export interface Registry {
  blobs: Blobs;
  uploads: Uploads;
  manifests: Manifests;
  tags: Tags;
  referrers: Referrers;
  catalog: Catalog;
  /** The pull-through mirror; with no upstreams configured every name is hosted. */
  mirror: Mirror;
  /** Removes what crashes and abandoned uploads left behind (leftovers.ts); at start-up, hourly, and from `outpost gc`. */
  reclaim(options: ReclaimOptions): Promise<LeftoversReport>;
  /** One retention pass over mirrored content (core/mirror/retention.ts) when a policy is given, then one garbage-collection run (core/gc/run.ts). */
  gc(options: RegistryGcOptions): Promise<RegistryGcReport>;
}

export interface RegistryGcOptions extends GcRunOptions {
  /** Mirrored content to evict first (by age, by size budget); none when absent. */
  retention?: RetentionPolicy;
  onEvict?: RetainOptions['onEvict'];
  /** Hosted retention policies, applied after the mirror's and before the collection. */
  hosted?: HostedPolicy[];
  onHostedEvict?: (e: HostedEviction) => void;
}

export interface RegistryGcReport extends GcReport {
  retention?: RetentionReport;
  hosted?: HostedRetentionReport;
}

const NO_MIRROR: MirrorDeps = {
  config: { upstreams: [], hosted: [], fillPartBytes: DEFAULT_FILL_PART_BYTES, fillLeaseMs: DEFAULT_FILL_LEASE_MS, fillMemoryBytes: DEFAULT_FILL_MEMORY_BYTES },
  upstreams: new Map(),
};

export function createRegistry(deps: RegistryDeps & { mirror?: MirrorDeps }): Registry {
  const { mirror, ...rest } = deps;
  const ctx: Ctx = { ...rest, options: { ...DEFAULT_OPTIONS, ...deps.options } };
  const blobs = new Blobs(ctx);
  const tags = new Tags(ctx);
  const manifests = new Manifests(ctx, blobs, tags);
  const theMirror = new Mirror(ctx, blobs, manifests, mirror ?? NO_MIRROR);
  return {
    blobs,
    uploads: new Uploads(ctx, blobs),
    manifests,
    tags,
    referrers: new Referrers(ctx),
    catalog: new Catalog(ctx),
    mirror: theMirror,
    reclaim: (options) => reclaimLeftovers(ctx, options),
    gc: async (options) => {
      // Evicted first, so that a run without grace deletes what it evicted at once.
      const retention = options.retention ? await theMirror.retain(options.retention, { dryRun: options.dryRun, onEvict: options.onEvict }) : undefined;
      const hosted = options.hosted?.length
        ? await retainHosted({ index: ctx.index, clock: ctx.clock, manifests, mirror: (mirror ?? NO_MIRROR).config }, options.hosted, { dryRun: options.dryRun, onEvict: options.onHostedEvict })
        : undefined;
      const report: RegistryGcReport = await runGc(gcPorts(ctx), { ...options, check: referenceCheck(ctx) });
      if (retention) report.retention = retention;
      if (hosted) report.hosted = hosted;
      return report;
    },
  };
}
