import { holdForStore, type GcPorts, type ReferenceCheck } from '../gc/references.js';
import { OciError } from '../errors.js';
import type { Digest } from '../oci/digest.js';
import type { Ctx } from './context.js';
import { keys } from './keys.js';

/**
 * The one way bytes are written at a content key (blobs/<digest>): inside a writer's hold
 * (core/gc/references.ts, "Writers"), so that no collecting run can delete them between their
 * store and the reference that names them.
 *
 *   hold = holdForStore(digest)      not ready: 503 with Retry-After, nothing written
 *   written = write()                 the bytes, verified (put, move or compose)
 *   keep(written)                     the reference that names them: a link, a manifest record
 *   hold.release()                    whether write or keep failed or not
 *
 * A writer that has nothing to keep (a fill, whose bytes the next pull links) relies on the
 * grace period after the release, as any unlinked bytes do.
 */
export async function storeContent<T>(ctx: Ctx, digest: Digest, write: () => Promise<T>, keep: (written: T) => Promise<void> = async () => {}): Promise<T> {
  const hold = await holdForStore(gcPorts(ctx), digest.value, crypto.randomUUID());
  if (!hold.ready) throw beingCollected(digest.value, hold.retryAt - ctx.clock.now());
  try {
    const written = await write();
    await keep(written);
    return written;
  } finally {
    // A release that fails leaves the hold to expire: the bytes are kept longer, never lost.
    await hold.release().catch(() => undefined);
  }
}

export function gcPorts(ctx: Ctx): GcPorts {
  return { index: ctx.index, store: ctx.store, clock: ctx.clock };
}

/**
 * Whether the item a reference stands for still names the digest (collect's repair of dangling
 * references): a link's item is there, a manifest record is there with the nonce that made the
 * reference. One index read.
 */
export function referenceCheck(ctx: Pick<Ctx, 'index'>): ReferenceCheck {
  return async (digest, ref) => {
    if (ref.kind === 'link') {
      const key = ref.from === 'manifest' ? keys.manifest(ref.repository, digest) : keys.blobLink(ref.repository, digest);
      return (await ctx.index.get(key)) !== undefined;
    }
    if (ref.kind === 'manifest') {
      const slash = ref.from.lastIndexOf('/');
      const record = await ctx.index.get<{ nonce?: string }>(keys.manifest(ref.repository, ref.from.slice(0, slash)));
      return record !== undefined && record.value.nonce === ref.from.slice(slash + 1);
    }
    return true;
  };
}

/**
 * Older bytes of this digest may still be in deletion: nothing can be stored at its key yet, or
 * stored bytes cannot be referenced any more (a mirror refills them once the deletion is done).
 */
export function beingCollected(digest: string, waitMs: number): OciError {
  const seconds = Math.max(1, Math.ceil(waitMs / 1000));
  return new OciError('CONTENT_BEING_COLLECTED', undefined, { digest }, { 'Retry-After': String(seconds) });
}
