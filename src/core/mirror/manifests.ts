import { OciError } from '../errors.js';
import { digestOf, tryParseDigest, type Digest } from '../oci/digest.js';
import { parseManifest, type ParsedManifest } from '../oci/manifest.js';
import { MediaType } from '../oci/media-types.js';
import type { Reference } from '../oci/reference.js';
import type { Metrics } from '../metrics.js';
import type { Ctx } from '../registry/context.js';
import { keys, objects } from '../registry/keys.js';
import type { ManifestRecord, Manifests } from '../registry/manifests.js';
import type { ByteStream } from '../streams.js';
import type { Json } from '../../ports/meta-index.js';
import type { Upstream, UpstreamManifest, UpstreamResult } from '../../ports/upstream.js';
import { errorOf, recordOf, upstreamError, type FailureRecord } from './failures.js';
import type { Touches } from './retention.js';
import type { Target } from './routing.js';

/**
 * Mirrored manifests.
 *
 *   by digest: immutable. In the index -> served, no upstream request. Else fetched once.
 *   by tag:    tag#<name>/<tag> = { digest, checkedAt }.
 *              now - checkedAt < tagTtl            -> served from cache, no upstream request
 *              else one HEAD upstream (free on Docker Hub): same digest -> checkedAt = now, served;
 *                   another digest (or none sent) -> GET, stored, tag moved
 *              upstream down, slow, 429 or 5xx and now - checkedAt < tagTtl + maxStale
 *                                                  -> served stale, with a Warning header
 *
 * Single flight across instances: every upstream fetch of one (repository, reference) runs
 * under the lease mfetch/<name>:<reference>. Whoever takes it asks the upstream; the others
 * serve what is cached when they have it (stale while it revalidates), or wait for the holder
 * and read what it stored, or answer with the failure it recorded in the lease's state.
 */

/** What the mirror asks upstreams for: every manifest type Outpost stores, so a tag's bytes are the upstream's own. */
export const MANIFEST_ACCEPT = [MediaType.OciIndex, MediaType.OciManifest, MediaType.DockerManifestList, MediaType.DockerManifest];

/**
 * The lease of one manifest fetch, renewed at a third of it while the fetch runs: the waiters
 * of a fetcher that died take over after this.
 */
const FETCH_LEASE_MS = 10_000;
/** A waiter polls the holder's lease this often. */
const FETCH_POLL_MS = 25;

interface TagItem {
  digest: string;
  checkedAt: number;
}

export interface MirrorManifestRead {
  record: ManifestRecord;
  /** Set for GET. */
  body?: ByteStream;
  /** A Warning header value when served stale. */
  warning?: string;
  cached: boolean;
}

export interface MirrorManifestDeps {
  ctx: Ctx;
  metrics: Metrics;
  manifests: Manifests;
  upstream: (name: string) => Upstream;
  instance: string;
  sleep: (ms: number) => Promise<void>;
  /** Last-pulled times for retention (retention.ts). */
  touches: Touches;
}

type Target_ = Extract<Target, { kind: 'mirror' }>;

export class MirrorManifests {
  constructor(private readonly deps: MirrorManifestDeps) {}

  async get(target: Target_, reference: Reference, method: 'GET' | 'HEAD'): Promise<MirrorManifestRead> {
    const read = reference.kind === 'digest' ? await this.byDigest(target, reference.digest) : await this.byTag(target, reference.tag);
    const { metrics } = this.deps;
    metrics.count(read.cached ? 'outpost_cache_hits_total' : 'outpost_cache_misses_total', { kind: 'manifest' });
    if (read.cached) this.deps.touches.touch(target.name, read.record.digest);
    if (read.warning) metrics.count('outpost_stale_serves_total');
    if (method === 'HEAD') return read;
    const object = await this.deps.ctx.store.get(objects.content(parseStored(read.record.digest)));
    if (!object) throw new OciError('MANIFEST_UNKNOWN', undefined, { digest: read.record.digest });
    return { ...read, body: object.body };
  }

  private async byDigest(target: Target_, digest: Digest): Promise<MirrorManifestRead> {
    const cached = await this.record(target.name, digest.value);
    if (cached) return { record: cached, cached: true };
    target.admit?.();
    const record = await this.singleFlight(target, digest.value, async () => {
      const answer = await this.fetch(target, digest.value, 'GET');
      if (answer.kind !== 'ok') throw this.failure(target, answer, digest.value);
      return this.store(target, answer, digest);
    }, () => this.record(target.name, digest.value));
    return { record, cached: false };
  }

  private async byTag(target: Target_, tag: string): Promise<MirrorManifestRead> {
    const { upstream } = target;
    if (upstream.content.tags && !upstream.content.tags.test(tag)) {
      throw new OciError('DENIED', `tag "${tag}" is not mirrored from upstream "${upstream.name}" (its content rules)`, { upstream: upstream.name });
    }
    const now = this.deps.ctx.clock.now();
    const item = (await this.deps.ctx.index.get<TagItem & Json>(keys.tag(target.name, tag)))?.value;
    const cached = item ? await this.record(target.name, item.digest) : undefined;
    const age = item ? now - (item.checkedAt ?? 0) : Infinity;
    if (cached && age < upstream.tagTtlMs) return { record: cached, cached: true };
    const stale = cached && age < upstream.tagTtlMs + upstream.maxStaleMs ? cached : undefined;
    if (!cached) target.admit?.();

    const refresh = async (): Promise<ManifestRecord> => {
      if (cached) {
        const head = await this.fetch(target, tag, 'HEAD');
        if (head.kind !== 'ok') throw this.failure(target, head, tag);
        if (head.digest === cached.digest) {
          await this.setTag(target.name, tag, cached.digest);
          return cached;
        }
        // Moved to a manifest we already have (a tag moved back, or pulled by digest): no GET.
        const known = head.digest ? await this.record(target.name, head.digest) : undefined;
        if (known) {
          await this.setTag(target.name, tag, known.digest);
          return known;
        }
      }
      const answer = await this.fetch(target, tag, 'GET');
      if (answer.kind !== 'ok') throw this.failure(target, answer, tag);
      const record = await this.store(target, answer);
      await this.setTag(target.name, tag, record.digest);
      return record;
    };
    try {
      const record = await this.singleFlight(target, tag, refresh, async () => {
        const after = (await this.deps.ctx.index.get<TagItem & Json>(keys.tag(target.name, tag)))?.value;
        // Only news counts: the tag was (re)checked since we read it.
        if (!after || (item && after.checkedAt === item.checkedAt)) return undefined;
        return this.record(target.name, after.digest);
      }, stale);
      return { record, cached: record === stale };
    } catch (err) {
      // Stale-if-error: the upstream is down, slow or rate-limiting. Not when it refuses us or
      // sends something invalid, and never for a miss: a tag the upstream says is gone is gone.
      if (stale && err instanceof OciError && (err.kind === 'UPSTREAM_UNAVAILABLE' || err.kind === 'UPSTREAM_RATE_LIMITED')) {
        return { record: stale, cached: true, warning: '110 - "Response is Stale"' };
      }
      throw err;
    }
  }

  /**
   * Runs `work` under the fetch lease of (repository, reference). When another instance holds
   * it: `stale` answers at once if given; otherwise waits for the holder, then `reread` (what it
   * stored) or the failure it recorded.
   */
  private async singleFlight(
    target: Target_,
    reference: string,
    work: () => Promise<ManifestRecord>,
    reread: () => Promise<ManifestRecord | undefined>,
    stale?: ManifestRecord,
  ): Promise<ManifestRecord> {
    const { ctx, metrics, instance, sleep } = this.deps;
    const key = keys.manifestFetch(target.name, reference);
    for (let attempt = 0; attempt < 3; attempt++) {
      const owner = `${instance}:${crypto.randomUUID().slice(0, 8)}`;
      const r = await ctx.index.acquireLease(key, owner, FETCH_LEASE_MS);
      if (r.acquired) {
        let lease = r.lease;
        // Renewed while the fetch runs: the upstream client may retry for longer than one lease.
        const heartbeat = setInterval(() => {
          void ctx.index.renewLease(lease, FETCH_LEASE_MS).then((renewed) => renewed && (lease = renewed), () => undefined);
        }, FETCH_LEASE_MS / 3);
        try {
          // Another instance may have fetched it between our read and our lease: use that.
          const record = (await reread()) ?? (await work());
          clearInterval(heartbeat);
          await ctx.index.releaseLease(lease, { at: ctx.clock.now(), token: lease.token });
          return record;
        } catch (err) {
          clearInterval(heartbeat);
          const failure: FailureRecord | undefined = err instanceof OciError ? recordOf(err) : undefined;
          const state = { at: ctx.clock.now(), token: lease.token, ...(failure ? { failure: failure as unknown as Json } : {}) };
          await ctx.index.releaseLease(lease, state).catch(() => undefined);
          throw err;
        }
      }
      if (stale) return stale;
      metrics.count('outpost_lease_waits_total');
      const waitedFor = r.token;
      for (;;) {
        await sleep(FETCH_POLL_MS);
        const view = await ctx.index.readLease<{ at: number; token?: number; failure?: FailureRecord } & Json>(key);
        if (view?.holder !== undefined && view.token === waitedFor) continue;
        // The failure of the holder we waited for, written by it (not an earlier holder's).
        if (view && view.token === waitedFor && view.state?.token === waitedFor && view.state.failure) throw errorOf(view.state.failure);
        const found = await reread();
        if (found) return found;
        break;
      }
    }
    throw new OciError('UPSTREAM_UNAVAILABLE', `the fetch of ${reference.slice(0, 80)} from upstream "${target.upstream.name}" kept changing hands; try again`);
  }

  private async fetch(target: Target_, reference: string, method: 'GET' | 'HEAD'): Promise<UpstreamResult<UpstreamManifest>> {
    const upstream = this.deps.upstream(target.upstream.name);
    const answer = await upstream.manifest(target.remote, reference, method, MANIFEST_ACCEPT);
    this.deps.metrics.count('outpost_upstream_requests_total', { upstream: target.upstream.name, kind: `manifest-${method.toLowerCase()}`, result: answer.kind });
    const limit = upstream.rateLimit();
    if (limit?.remaining !== undefined) this.deps.metrics.set('outpost_upstream_ratelimit_remaining', { upstream: target.upstream.name }, limit.remaining);
    return answer;
  }

  private failure(target: Target_, failure: Exclude<UpstreamResult<UpstreamManifest>, { kind: 'ok' }>, reference: string): OciError {
    return upstreamError(target.upstream.name, failure, () =>
      new OciError('MANIFEST_UNKNOWN', `upstream "${target.upstream.name}" has no manifest ${reference.slice(0, 140)} in ${target.remote}`, {
        reference: reference.slice(0, 140),
      }),
    );
  }

  /** Verifies and stores what the upstream sent; vouches for the blobs it names in this repository. */
  private async store(target: Target_, answer: UpstreamManifest, expected?: Digest): Promise<ManifestRecord> {
    const bytes = answer.bytes;
    const invalid = (why: string) => new OciError('UPSTREAM_INVALID', `upstream "${target.upstream.name}" sent an invalid manifest: ${why}`);
    if (!bytes) throw invalid('no body');
    const digest = digestOf(this.deps.ctx.hash, expected?.algorithm ?? 'sha256', bytes);
    if (expected && digest.value !== expected.value) throw invalid(`its content has digest ${digest.value}, not ${expected.value}`);
    if (!expected && answer.digest && answer.digest.startsWith('sha256:') && answer.digest !== digest.value) {
      throw invalid(`Docker-Content-Digest ${answer.digest.slice(0, 80)} does not match its content (${digest.value})`);
    }
    const parsed = parseManifest(bytes, answer.mediaType);
    if (!parsed.ok) throw invalid(parsed.reason);
    await this.vouch(target.name, parsed.manifest);
    const record = await this.deps.manifests.putMirrored(target.name, digest, bytes, answer.mediaType || parsed.manifest.mediaType, parsed.manifest);
    this.deps.touches.touch(target.name, record.digest);
    return record;
  }

  /** The upstream named these blobs in this repository's manifest: they may be served for it. */
  private async vouch(name: string, manifest: ParsedManifest): Promise<void> {
    const blobs = [...(manifest.config ? [manifest.config] : []), ...manifest.layers].filter((d) => !(d.urls && d.urls.length > 0));
    for (let i = 0; i < blobs.length; i += 16) {
      await Promise.all(blobs.slice(i, i + 16).map((d) => this.deps.ctx.index.put(keys.vouch(name, d.digest), { size: d.size })));
    }
  }

  private async setTag(name: string, tag: string, digest: string): Promise<void> {
    await this.deps.ctx.index.put(keys.tag(name, tag), { digest, checkedAt: this.deps.ctx.clock.now() });
  }

  private async record(name: string, digest: string): Promise<ManifestRecord | undefined> {
    return (await this.deps.ctx.index.get<ManifestRecord & Json>(keys.manifest(name, digest)))?.value;
  }
}

function parseStored(value: string): Digest {
  const digest = tryParseDigest(value);
  if (!digest) throw new OciError('INTERNAL', 'a stored manifest record has an invalid digest');
  return digest;
}
