import { MAX_LIST_KEYS, type StoreReclaimReport } from '../../ports/blob-store.js';
import { EXPIRED_ITEM_RETENTION_MS } from '../../ports/meta-index.js';
import { reclaimFills, type FillReclaimReport } from '../mirror/fill-reclaim.js';
import type { Ctx } from './context.js';
import { keys, objects } from './keys.js';

/**
 * Leftover upload parts. A chunk's bytes live at uploads/<id>/<n>-<nonce> while its upload is in
 * progress; they become garbage when the upload's state item is gone and nothing deleted them:
 * the upload expired, a cancel or a commit died after deleting the state (uploads.ts deletes the
 * state first, then the parts), or a request died between storing a chunk and recording it.
 *
 * reclaimUploads lists the store under uploads/, page by page, and deletes each object whose
 * upload has no live state item and that is older than `olderThanMs` by the store's own clock
 * (ObjectInfo.lastModified; an object whose store reports no age is kept). Safe to run at any
 * time, on any number of instances at once:
 *   - A state item, once absent, never comes back: ids are random UUIDs, created once by
 *     putIfAbsent, and no step of the protocol recreates a deleted state. So "no state" read at
 *     any moment means the upload is over for good, and its parts can never be read again.
 *   - A live upload's parts are never deleted, whatever their age, an append in flight included:
 *     that append read a live state, and its object is only ever part of that upload. Should the
 *     state be gone by the time the append records its chunk, the append fails with 404 anyway.
 *   - The grace period is a second guard, for what the index cannot say: it must be far longer
 *     than the clock skew between the store and this instance (minutes, not seconds), and for
 *     parts of expired uploads it is the only delay.
 * Part items in the index need no reclaiming: they expire at their upload's `until`.
 *
 * Runs with the other leftovers (reclaimLeftovers below, Registry.reclaim): at start-up and
 * hourly on Node (entry/node.ts), and later from the garbage collector.
 */

export interface ReclaimOptions {
  /** Objects written more recently than this (by their lastModified) are kept whatever the index says. */
  olderThanMs: number;
}

export interface ReclaimReport {
  /** Part objects deleted. */
  deleted: number;
  /** Objects under uploads/ left alone: of live uploads, too young, of unknown age, or not a part key. */
  kept: number;
}

/** Deletes at most this many objects at once. */
const DELETE_CONCURRENCY = 16;

/** uploads/<id>/<anything>: the id of the upload an object belongs to. */
const PART_KEY = /^uploads\/([^/]+)\/[^/]+$/;

export async function reclaimUploads(ctx: Pick<Ctx, 'store' | 'index' | 'clock'>, options: ReclaimOptions): Promise<ReclaimReport> {
  const cutoff = ctx.clock.now() - options.olderThanMs;
  const report: ReclaimReport = { deleted: 0, kept: 0 };
  // Keys sort by upload id, so one upload's parts are listed together: one state read each.
  let upload: { id: string; live: boolean } | undefined;
  let after: string | undefined;
  for (;;) {
    const page = await ctx.store.list(objects.uploadsPrefix, { after, limit: MAX_LIST_KEYS });
    const doomed: string[] = [];
    for (const object of page.keys) {
      const id = PART_KEY.exec(object.key)?.[1];
      if (id === undefined || object.lastModified === undefined || object.lastModified > cutoff) {
        report.kept++;
        continue;
      }
      if (upload?.id !== id) upload = { id, live: (await ctx.index.get(keys.upload(id))) !== undefined };
      if (upload.live) report.kept++;
      else doomed.push(object.key);
    }
    for (let i = 0; i < doomed.length; i += DELETE_CONCURRENCY) {
      await Promise.all(doomed.slice(i, i + DELETE_CONCURRENCY).map((key) => ctx.store.delete(key)));
    }
    report.deleted += doomed.length;
    if (page.next === undefined) return report;
    after = page.next;
  }
}

/** What one pass over the leftovers of crashes and abandoned uploads removed. */
export interface LeftoversReport {
  uploads: ReclaimReport;
  /** Parts of fills committed or abandoned long ago (core/mirror/fill-reclaim.ts). */
  fills: FillReclaimReport;
  /** The store's own leftovers (temporary files, incomplete multipart uploads), when it can say. */
  store?: StoreReclaimReport;
  /** Index items erased by housekeeping (expired or deleted a week ago), on indexes without TTL deletion. */
  indexItems?: number;
}

/**
 * Everything a crash or an abandoned upload leaves behind, older than `olderThanMs`: the store's
 * own (BlobStore.reclaim: temporary files, incomplete multipart uploads, empty directories), the
 * parts of uploads that are over, the parts of fills committed or abandoned, and index items expired or deleted a week ago (MetaIndex.sweep:
 * an upload's chunk items, tombstones; DynamoDB's TTL does this by itself). Never anything visible or live; safe on many instances.
 */
export async function reclaimLeftovers(ctx: Pick<Ctx, 'store' | 'index' | 'clock'>, options: ReclaimOptions): Promise<LeftoversReport> {
  const [store, uploads, fills, swept] = await Promise.all([
    ctx.store.reclaim?.(options.olderThanMs),
    reclaimUploads(ctx, options),
    reclaimFills(ctx, { olderThanMs: options.olderThanMs, owner: `reclaim:${crypto.randomUUID()}` }),
    ctx.index.sweep?.(EXPIRED_ITEM_RETENTION_MS),
  ]);
  const report: LeftoversReport = { uploads, fills };
  if (store) report.store = store;
  if (swept !== undefined) report.indexItems = swept;
  return report;
}
