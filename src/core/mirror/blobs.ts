import { tooLargeToFill } from './fill-leader.js';
import { fillLimit } from './fill-state.js';
import { beingCollected } from '../registry/content.js';
import { OciError } from '../errors.js';
import type { Digest } from '../oci/digest.js';
import type { Metrics } from '../metrics.js';
import { resolveRange, type Blobs, type BlobRead, type RangeRequest } from '../registry/blobs.js';
import type { Ctx } from '../registry/context.js';
import { keys } from '../registry/keys.js';
import type { Upstream } from '../../ports/upstream.js';
import { upstreamError } from './failures.js';
import type { Defer, Fills } from './fills.js';
import type { Touches } from './retention.js';
import type { Target } from './routing.js';

/**
 * Mirrored blobs. A blob is served for a mirrored repository only once the upstream has
 * vouched for it THERE: the repository's manifest names it (vouch#<name>/<digest>, written when
 * the manifest is stored), or the upstream answered a HEAD for it in that repository. Content is
 * stored once per digest, so without this a private upstream repository's layers would become
 * readable under any other mirrored name.
 *
 *   link blob#<name>/<digest>  -> the content is here and vouched: served from the store
 *   vouched, content committed -> link, then served from the store
 *   vouched, not committed     -> lead or follow the digest's fill (core/mirror/fills.ts)
 *   not vouched                -> one HEAD upstream for this repository; 404 is BLOB_UNKNOWN
 *
 * A Range on a blob that is not cached is answered from the fill in flight when there is one,
 * else by a ranged request straight to the upstream (lazy-pull clients read small ranges of
 * blobs they never want whole; those bytes are not cached).
 */

type Mirrored = Extract<Target, { kind: 'mirror' }>;

export interface MirrorBlobRead extends BlobRead {
  /** Where the bytes come from, for metrics and logs. */
  source: 'cache' | 'fill' | 'upstream-range';
  /** Undefined when the upstream did not say (the response is then sent without a length). */
  size: number;
}

export interface MirrorBlobDeps {
  ctx: Ctx;
  metrics: Metrics;
  blobs: Blobs;
  fills: Fills;
  upstream: (name: string) => Upstream;
  /** Last-pulled times for retention (retention.ts). */
  touches: Touches;
}

export class MirrorBlobs {
  constructor(private readonly deps: MirrorBlobDeps) {}

  /** HEAD: the blob's size when it is cached or the upstream has it for this repository. */
  async stat(target: Mirrored, digest: Digest): Promise<{ size: number }> {
    const linked = await this.deps.blobs.stat(target.name, digest);
    if (linked) return { size: linked.size };
    return { size: await this.vouched(target, digest) };
  }

  async read(target: Mirrored, digest: Digest, range: RangeRequest | undefined, defer: Defer): Promise<MirrorBlobRead> {
    const { blobs, fills, metrics } = this.deps;
    const cached = await this.cached(target, digest, range);
    if (cached) return cached;
    // One count for the fill and the HEAD that may precede it.
    target.admit?.();
    const size = await this.vouched(target, digest, true);
    const limit = fillLimit(this.deps.ctx.options);
    // Refused before a fill starts: no lease, no part, no upstream download for bytes never kept.
    if (size > limit) throw tooLargeToFill(digest.value, limit);
    const resolved = range ? resolveRange(range, size) : undefined;
    const source = { upstream: target.upstream.name, repository: target.remote, name: target.name };
    if (resolved && (await fills.status(digest)) === 'none') return this.rangeFromUpstream(target, digest, resolved, size);
    const start = resolved?.offset ?? 0;
    const end = resolved ? resolved.offset + resolved.length : undefined;
    const opened = await fills.open(digest, source, start, end, defer, size);
    if (opened.kind === 'committed') {
      // Refused: a collecting run is deleting the bytes; once it is done the next request fills again.
      if (!(await blobs.link(target.name, digest.value, opened.size))) throw beingCollected(digest.value, 1000);
      const read = await this.cached(target, digest, range);
      if (read) return read;
      throw new OciError('BLOB_UNKNOWN', 'the blob was removed while it was being read; try again', { digest: digest.value });
    }
    metrics.count('outpost_cache_misses_total', { kind: 'blob' });
    return { digest: digest.value, size: opened.size ?? size, body: opened.body, range: resolved, source: 'fill' };
  }

  /**
   * The linked blob from the store, or undefined when this repository has no link or the
   * content is gone (a clean miss, which refills): one index read and one store read.
   */
  private async cached(target: Mirrored, digest: Digest, range: RangeRequest | undefined): Promise<MirrorBlobRead | undefined> {
    try {
      const read = await this.deps.blobs.read(target.name, digest, range);
      this.deps.metrics.count('outpost_cache_hits_total', { kind: 'blob' });
      this.deps.touches.touch(target.name, digest.value);
      return { ...read, source: 'cache' };
    } catch (err) {
      if (err instanceof OciError && err.kind === 'BLOB_UNKNOWN') return undefined;
      throw err;
    }
  }

  /** The size the upstream vouched for in this repository; asks it (HEAD) when nothing did yet. */
  private async vouched(target: Mirrored, digest: Digest, admitted = false): Promise<number> {
    const { ctx, metrics } = this.deps;
    const vouch = await ctx.index.get<{ size: number }>(keys.vouch(target.name, digest.value));
    if (vouch) return vouch.value.size;
    if (!admitted) target.admit?.();
    const upstream = this.upstreamOf(target);
    const answer = await upstream.blobHead(target.remote, digest.value);
    metrics.count('outpost_upstream_requests_total', { upstream: target.upstream.name, kind: 'blob-head', result: answer.kind });
    if (answer.kind !== 'ok') throw upstreamError(target.upstream.name, answer, () => unknown(target, digest));
    const size = answer.size ?? (await this.sizeByRange(target, digest));
    await ctx.index.put(keys.vouch(target.name, digest.value), { size });
    return size;
  }

  /**
   * A HEAD that did not say the size (a blob redirected to storage that refuses HEAD): one
   * byte by Range, whose Content-Range carries the whole size.
   */
  private async sizeByRange(target: Mirrored, digest: Digest): Promise<number> {
    const answer = await this.upstreamOf(target).blob(target.remote, digest.value, 0, 1);
    this.deps.metrics.count('outpost_upstream_requests_total', { upstream: target.upstream.name, kind: 'blob-range', result: answer.kind });
    if (answer.kind !== 'ok') throw upstreamError(target.upstream.name, answer, () => unknown(target, digest));
    await answer.body.cancel().catch(() => undefined);
    if (answer.size === undefined) throw new OciError('UPSTREAM_INVALID', `upstream "${target.upstream.name}" did not say the size of ${digest.value}`);
    return answer.size;
  }

  private async rangeFromUpstream(target: Mirrored, digest: Digest, range: { offset: number; length: number }, size: number): Promise<MirrorBlobRead> {
    const answer = await this.upstreamOf(target).blob(target.remote, digest.value, range.offset, range.length);
    this.deps.metrics.count('outpost_upstream_requests_total', { upstream: target.upstream.name, kind: 'blob-range', result: answer.kind });
    if (answer.kind !== 'ok') throw upstreamError(target.upstream.name, answer, () => unknown(target, digest));
    if (answer.offset > range.offset) {
      await answer.body.cancel().catch(() => undefined);
      throw new OciError('UPSTREAM_INVALID', `upstream "${target.upstream.name}" answered a range that starts after the one asked for`);
    }
    if (answer.offset !== range.offset) {
      // The upstream ignored the Range: cut the range out of the whole blob as it streams.
      return { digest: digest.value, size, body: cut(answer.body, range.offset - answer.offset, range.length), range, source: 'upstream-range' };
    }
    return { digest: digest.value, size, body: cut(answer.body, 0, range.length), range, source: 'upstream-range' };
  }

  private upstreamOf(target: Mirrored): Upstream {
    return this.deps.upstream(target.upstream.name);
  }

}

function unknown(target: Mirrored, digest: Digest): OciError {
  return new OciError('BLOB_UNKNOWN', `upstream "${target.upstream.name}" has no blob ${digest.value} in ${target.remote}`, { digest: digest.value });
}

/** Bytes [skip, skip + length) of a stream; errors when it ends before them (never a clean short body). */
function cut(body: ReadableStream<Uint8Array>, skip: number, length: number): ReadableStream<Uint8Array> {
  const reader = body.getReader();
  let toSkip = skip;
  let left = length;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      for (;;) {
        if (left === 0) {
          await reader.cancel().catch(() => undefined);
          return controller.close();
        }
        const next = await reader.read();
        if (next.done) return controller.error(new Error('the upstream ended the range early'));
        let bytes = next.value;
        if (toSkip > 0) {
          const n = Math.min(toSkip, bytes.byteLength);
          toSkip -= n;
          bytes = bytes.subarray(n);
        }
        if (bytes.byteLength === 0) continue;
        if (bytes.byteLength > left) bytes = bytes.subarray(0, left);
        left -= bytes.byteLength;
        return controller.enqueue(bytes);
      }
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  });
}
