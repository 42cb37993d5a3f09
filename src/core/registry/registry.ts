import { Blobs } from './blobs.js';
import { Catalog } from './catalog.js';
import { boundedBlob, Gate, type GateDecision, type GatePolicy, type SignatureSource } from '../gate/gate.js';
import type { BundleVerifier } from '../../ports/bundle-verifier.js';
import type { Defer } from '../mirror/fills.js';
import { parseDigest } from '../oci/digest.js';
import { MAX_MANIFEST_BYTES } from '../oci/manifest.js';
import { MediaType } from '../oci/media-types.js';
import { readCapped } from '../streams.js';
import { OciError } from '../errors.js';
import { tooLarge } from './manifests.js';
import { gcPorts, referenceCheck } from './content.js';
import { runGc, type GcReport, type GcRunOptions } from '../gc/run.js';
import { DEFAULT_OPTIONS, type Ctx, type RegistryDeps } from './context.js';
import { reclaimLeftovers, type LeftoversReport, type ReclaimOptions } from './leftovers.js';
import { Manifests } from './manifests.js';
import { immutableTags } from './immutable-tags.js';
import { isMirrored } from '../mirror/retention.js';
import { Referrers } from './referrers.js';
import { Tags } from './tags.js';
import { Uploads } from './uploads.js';
import { Mirror, type MirrorDeps } from '../mirror/mirror.js';
import type { Target } from '../mirror/routing.js';
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
  /**
   * The signature gate (core/gate/gate.ts): resolves when `digest` may be served from `name`
   * (hosted or mirrored), throws 403 DENIED naming the policy it fails. `defer` keeps a mirror's
   * fills of signature payloads alive (Workers); `target`, the request's own route, carries its
   * caller's admission to the upstream (an anonymous caller's signature fetches count).
   */
  gate(name: string, digest: string, defer?: Defer, target?: Target): Promise<GateDecision>;
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

export interface GateOptions {
  policies: GatePolicy[];
  /** Verifies certificates and Sigstore bundles (adapters/sigstore); without it only key-based `.sig` signatures count. */
  bundles?: BundleVerifier;
  /** Where the gate's refusals and warnings are written (details never go in a response). */
  log?: (record: Record<string, unknown>) => void;
}

export function createRegistry(deps: RegistryDeps & { mirror?: MirrorDeps; gate?: GateOptions }): Registry {
  const { mirror, gate: gateOptions, ...rest } = deps;
  const options = { ...DEFAULT_OPTIONS, ...deps.options };
  const mirrorConfig = (mirror ?? NO_MIRROR).config;
  const ctx: Ctx = { ...rest, options, immutable: immutableTags(options.immutableTags ?? [], (name) => isMirrored(mirrorConfig, name)) };
  const blobs = new Blobs(ctx);
  const tags = new Tags(ctx);
  const manifests = new Manifests(ctx, blobs, tags);
  const theMirror = new Mirror(ctx, blobs, manifests, mirror ?? NO_MIRROR);
  const referrers = new Referrers(ctx);
  const signatures = new Gate(gateOptions?.policies ?? [], { index: ctx.index, clock: ctx.clock, metrics: theMirror.metrics, bundles: gateOptions?.bundles, log: gateOptions?.log });
  const noDefer: Defer = (work) => void work.catch(() => undefined);
  const gate = async (name: string, digest: string, defer: Defer = noDefer, routed?: Target) => {
    if (!signatures.gates(name)) return { warned: [], allowed: [] };
    // The request's own target when it has one: it carries the caller's admission to the upstream.
    const target = routed ?? theMirror.route(name, undefined);
    return signatures.check(name, digest, target.kind === 'mirror' ? theMirror.signatureSource(target, digest, defer) : hostedSource(manifests, blobs, referrers, name, digest));
  };
  return {
    gate,
    blobs,
    uploads: new Uploads(ctx, blobs),
    manifests,
    tags,
    referrers,
    catalog: new Catalog(ctx),
    mirror: theMirror,
    reclaim: (options) => reclaimLeftovers(ctx, options),
    gc: async (options) => {
      // Evicted first, so that a run without grace deletes what it evicted at once.
      const retention = options.retention ? await theMirror.retain(options.retention, { dryRun: options.dryRun, onEvict: options.onEvict }) : undefined;
      const hosted = options.hosted?.length
        ? await retainHosted({ index: ctx.index, clock: ctx.clock, manifests, mirror: (mirror ?? NO_MIRROR).config, immutable: ctx.immutable }, options.hosted, { dryRun: options.dryRun, onEvict: options.onHostedEvict })
        : undefined;
      const report: RegistryGcReport = await runGc(gcPorts(ctx), { ...options, check: referenceCheck(ctx) });
      if (retention) report.retention = retention;
      if (hosted) report.hosted = hosted;
      return report;
    },
  };
}

/** A hosted repository's manifest and signatures, for the gate. */
function hostedSource(manifests: Manifests, blobs: Blobs, referrers: Referrers, name: string, digest: string): SignatureSource {
  const missing = (err: unknown) => {
    if (err instanceof OciError && (err.kind === 'MANIFEST_UNKNOWN' || err.kind === 'BLOB_UNKNOWN')) return undefined;
    throw err;
  };
  return {
    manifest: async () => {
      const read = await manifests.read(name, { kind: 'digest', digest: parseDigest(digest) });
      return { bytes: await readCapped(read.body, MAX_MANIFEST_BYTES, tooLarge), mediaType: read.record.mediaType };
    },
    tagged: async (tag) => {
      const read = await manifests.read(name, { kind: 'tag', tag }).catch(missing);
      return read && readCapped(read.body, MAX_MANIFEST_BYTES, tooLarge);
    },
    blob: async (d, limit) => boundedBlob(await blobs.read(name, parseDigest(d)).catch(missing), limit),
    // The first page is enough: the gate reads at most MAX_BUNDLES bundles.
    referrers: async (artifactType) => {
      const page = await referrers.list(name, parseDigest(digest), artifactType);
      return new TextEncoder().encode(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: page.manifests }));
    },
    manifestAt: async (d) => {
      const read = await manifests.read(name, { kind: 'digest', digest: parseDigest(d) }).catch(missing);
      return read && readCapped(read.body, MAX_MANIFEST_BYTES, tooLarge);
    },
  };
}
