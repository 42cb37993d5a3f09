import { OciError } from '../errors.js';
import { parseDigest, type Digest } from '../oci/digest.js';
import { boundedBlob, type SignatureSource } from '../gate/gate.js';
import type { ByteStream } from '../streams.js';
import { Metrics } from '../metrics.js';
import type { Blobs } from '../registry/blobs.js';
import type { Ctx } from '../registry/context.js';
import type { Manifests } from '../registry/manifests.js';
import type { PageRequest } from '../registry/pages.js';
import type { Upstream } from '../../ports/upstream.js';
import { MAX_MANIFEST_BYTES } from '../oci/manifest.js';
import { tooLarge } from '../registry/manifests.js';
import { readCapped } from '../streams.js';
import { MirrorBlobs } from './blobs.js';
import { ByteBudget } from './budget.js';
import type { MirrorConfig } from './config.js';
import { upstreamError } from './failures.js';
import { Fills, type Defer } from './fills.js';
import type { FillLog } from './fill-state.js';
import { MirrorManifests } from './manifests.js';
import { retain, Touches, type RetainOptions, type RetentionDeps, type RetentionPolicy, type RetentionReport } from './retention.js';
import { route, type Target } from './routing.js';
import { TtlCache } from './ttl-cache.js';

/** Listings one instance keeps: a few hundred pages, at most 32 MiB in all. */
const LISTING_CACHE_ENTRIES = 512;
const LISTING_CACHE_BYTES = 32 * 1024 * 1024;

/**
 * The pull-through mirror: routing of names to upstreams, mirrored manifests, blob fills.
 * Everything it shares with other instances goes through the index and the store (ports);
 * what it keeps in memory (fills in flight, watches, counters) is only an optimisation.
 */
export interface MirrorDeps {
  config: MirrorConfig;
  /** One client per configured upstream, by the upstream's name. */
  upstreams: Map<string, Upstream>;
  metrics?: Metrics;
  /** Who this instance is in lease owners (default: a random id). */
  instance?: string;
  sleep?: (ms: number) => Promise<void>;
  /**
   * The runtime only reads the buffers of the chunks a response sends or a store's write is
   * handed, never takes them over (Node: its http module, and the stores' file and socket
   * writes): fills then serve their followers and write their parts without a copy of each
   * chunk. Default false (workerd's fetch and responses detach them).
   */
  runtimeKeepsBuffers?: boolean;
  /** Fill events for the structured log (FillsOptions.log). */
  log?: FillLog;
}

type Mirrored = Extract<Target, { kind: 'mirror' }>;

export class Mirror {
  readonly metrics: Metrics;
  readonly manifests: MirrorManifests;
  readonly blobs: MirrorBlobs;
  readonly fills: Fills;
  /** Upstream listings (tags/list pages, referrers), kept for the upstream's tagTtl. */
  private readonly upstream: (name: string) => Upstream;
  private readonly listings: TtlCache<{ tags?: string[]; next?: string; bytes?: Uint8Array; filtered?: boolean }>;

  constructor(
    ctx: Ctx,
    blobs: Blobs,
    manifests: Manifests,
    private readonly deps: MirrorDeps,
  ) {
    this.metrics = deps.metrics ?? new Metrics();
    const instance = deps.instance ?? crypto.randomUUID().slice(0, 12);
    const sleep = deps.sleep ?? ((ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms)));
    // The one lookup of an upstream's client; routing only yields configured upstreams, so a
    // miss here is a programming error, answered as an unavailable upstream rather than a 500.
    const upstream = (name: string): Upstream => {
      const client = deps.upstreams.get(name);
      if (!client) throw new OciError('UPSTREAM_UNAVAILABLE', `upstream "${name}" is not configured`);
      return client;
    };
    this.upstream = upstream;
    const touches = new Touches(ctx.index, ctx.clock);
    this.fills = new Fills({
      ctx,
      metrics: this.metrics,
      budget: new ByteBudget(deps.config.fillMemoryBytes),
      upstream,
      // A fill's bytes are linked into the repository that asked, which counts as its first pull.
      link: async (name, digest, size) => {
        const linked = await blobs.link(name, digest, size);
        if (linked) touches.touch(name, digest);
        return linked;
      },
      options: { partBytes: deps.config.fillPartBytes, leaseMs: deps.config.fillLeaseMs, instance, sleep, copyChunks: deps.runtimeKeepsBuffers !== true, log: deps.log },
    });
    this.manifests = new MirrorManifests({ ctx, metrics: this.metrics, manifests, upstream, instance, sleep, touches });
    this.blobs = new MirrorBlobs({ ctx, metrics: this.metrics, blobs, fills: this.fills, upstream, touches });
    this.retention = { index: ctx.index, clock: ctx.clock, blobs, manifests, config: deps.config };
    this.listings = new TtlCache(ctx.clock, LISTING_CACHE_ENTRIES, LISTING_CACHE_BYTES);
  }

  private readonly retention: RetentionDeps;

  /** One retention pass over the mirrored content (retention.ts): evicts by age and size budget. */
  retain(policy: RetentionPolicy, options: RetainOptions = {}): Promise<RetentionReport> {
    return retain(this.retention, policy, options);
  }

  /** A mirrored repository's manifest and signatures, for the gate: through the mirror, so they are cached like any content. */
  signatureSource(target: Mirrored, digest: string, defer: Defer): SignatureSource {
    const missing = (err: unknown) => {
      if (err instanceof OciError && (err.kind === 'MANIFEST_UNKNOWN' || err.kind === 'BLOB_UNKNOWN' || err.kind === 'DENIED')) return undefined;
      throw err;
    };
    const bytesOf = async (read: { body?: ByteStream } | undefined) => (read?.body ? readCapped(read.body, MAX_MANIFEST_BYTES, tooLarge) : undefined);
    return {
      manifest: async () => {
        const read = await this.manifests.get(target, { kind: 'digest', digest: parseDigest(digest) }, 'GET');
        return { bytes: (await bytesOf(read))!, mediaType: read.record.mediaType };
      },
      tagged: async (tag) => bytesOf(await this.manifests.get(target, { kind: 'tag', tag }, 'GET').catch(missing)),
      blob: async (d, limit) => boundedBlob(await this.blobs.read(target, parseDigest(d), undefined, defer).catch(missing), limit),
      referrers: async (artifactType) => (await this.referrers(target, parseDigest(digest), artifactType))?.bytes,
      manifestAt: async (d) => bytesOf(await this.manifests.get(target, { kind: 'digest', digest: parseDigest(d) }, 'GET').catch(missing)),
    };
  }

  /** Where a request for `name` goes (see routing.ts); throws for an unknown `ns` or a name the content rules refuse. */
  route(name: string, ns: string | undefined): Target {
    return route(this.deps.config, name, ns);
  }

  /** The namespaces of the configured upstreams (what `?ns=` may name). */
  namespaces(): string[] {
    return this.deps.config.upstreams.map((u) => u.namespace);
  }

  /** tags/list of a mirrored repository: the upstream's own list, one page, cached for the upstream's tagTtl. */
  async tags(target: Mirrored, request: PageRequest): Promise<{ tags: string[]; next?: string }> {
    const key = `tags\n${target.name}\n${request.n ?? ''}\n${request.last ?? ''}`;
    const cached = this.listings.get(key);
    if (cached?.tags) return { tags: cached.tags, next: cached.next };
    target.admit?.();
    const answer = await this.upstream(target.upstream.name).tags(target.remote, request.n, request.last);
    this.metrics.count('outpost_upstream_requests_total', { upstream: target.upstream.name, kind: 'tags', result: answer.kind });
    if (answer.kind !== 'ok') {
      throw upstreamError(target.upstream.name, answer, () => new OciError('NAME_UNKNOWN', `upstream "${target.upstream.name}" has no repository ${target.remote}`, { name: target.remote }));
    }
    const rule = target.upstream.content.tags;
    const page = { tags: rule ? answer.tags.filter((t) => rule.test(t)) : answer.tags, next: answer.next };
    this.listings.set(key, page, target.upstream.tagTtlMs, page.tags.reduce((n, t) => n + t.length + 8, 0));
    return page;
  }

  /**
   * The referrers of a mirrored digest: the upstream's referrers API as served; where the
   * upstream has none (404), the referrers tag schema (spec.md#referrers-tag-schema): the index
   * tagged `<algorithm>-<hex>`, mirrored like any tag (so cached with its TTL). Undefined when
   * neither has any.
   */
  async referrers(target: Mirrored, subject: Digest, artifactType: string | undefined): Promise<{ bytes: Uint8Array; filtered: boolean } | undefined> {
    const key = `referrers\n${target.name}\n${subject.value}\n${artifactType ?? ''}`;
    const cached = this.listings.get(key);
    if (cached?.bytes) return { bytes: cached.bytes, filtered: cached.filtered ?? false };
    target.admit?.();
    const answer = await this.upstream(target.upstream.name).referrers(target.remote, subject.value, artifactType);
    this.metrics.count('outpost_upstream_requests_total', { upstream: target.upstream.name, kind: 'referrers', result: answer.kind });
    if (answer.kind === 'ok') {
      this.listings.set(key, { bytes: answer.bytes, filtered: answer.filtered }, target.upstream.tagTtlMs, answer.bytes.byteLength);
      return { bytes: answer.bytes, filtered: answer.filtered };
    }
    if (answer.kind !== 'not-found') throw upstreamError(target.upstream.name, answer, () => new OciError('MANIFEST_UNKNOWN'));
    const tag = `${subject.algorithm}-${subject.encoded}`;
    let read;
    try {
      read = await this.manifests.get(target, { kind: 'tag', tag }, 'GET');
    } catch (err) {
      if (err instanceof OciError && (err.kind === 'MANIFEST_UNKNOWN' || err.kind === 'DENIED')) return undefined;
      throw err;
    }
    const bytes = await readCapped(read.body ?? null, MAX_MANIFEST_BYTES, tooLarge);
    if (artifactType === undefined) return { bytes, filtered: false };
    const index = JSON.parse(new TextDecoder().decode(bytes)) as { manifests?: Array<{ artifactType?: string }> };
    const manifests = (index.manifests ?? []).filter((d) => d.artifactType === artifactType);
    return { bytes: new TextEncoder().encode(JSON.stringify({ ...index, manifests })), filtered: true };
  }
}
